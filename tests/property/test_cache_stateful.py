"""The stateful model of the composite: template edits, loads through differently
configured environments, process restarts, evicted tiers and corrupted entries, all over
one cache shared by every environment.

The model is deliberately dumb: the right output of a page is whatever a cache-less
environment with the same settings renders from the current sources. Whatever the cache
holds, in whatever state, it may only make loads faster, never change what renders.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from jinja2 import BaseLoader, Environment, FileSystemLoader, select_autoescape
from jinja2.bccache import Bucket
from jinja2.sandbox import SandboxedEnvironment

from tests.conftest import SECRET, MemcachedServer
from tiered_bccache import FileSystemTier, MemcachedTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.entry import FORMAT_VERSION
from tiered_bccache.fingerprint import autoescape_flag

# -- the templates ------------------------------------------------------------------------
#
# One set of sources serves every environment. They use ``{{ }}`` and ``[[ ]]`` side by
# side: under the default delimiters ``[[ x ]]`` is text, under ``[[``/``]]`` it is the
# variable and ``{{ x }}`` is text; block tags ``{% %}`` are common to both. Lines that
# start with ``#`` are text, except to the line-statement environment. So every source
# parses everywhere, and the same source under the same name compiles to different code
# in different environments: exactly the case a cache key must keep apart. Variants 0 and
# 1 of each template have the same length and differ in content.

VARIANTS: dict[str, tuple[str, ...]] = {
    "base.html": (
        "<title>{% block title %}Base{% endblock %}</title>\n"
        "  {% block body %}{% endblock %}\n"
        "<footer>{{ title }}|[[ title ]]|{{ none }}|[[ user ]]|{{ user }}</footer>\n",
        "<title>{% block title %}Root{% endblock %}</title>\n"
        "  {% block body %}{% endblock %}\n"
        "<footer>{{ title }}|[[ title ]]|{{ none }}|[[ user ]]|{{ user }}</footer>\n",
        "{% if count > 2 %}\n"
        "    <h1>{% block title %}Layout{% endblock %}</h1>\n"
        "{% endif %}\n"
        "<main>{% block body %}default body{% endblock %}</main>\n"
        "{{ '<b>' }}[[ '<b>' ]]{{ 'lit'|upper }}\n"
        "# for x in items\n"
        "<x>{{ x }}</x>[[ x ]]\n"
        "# endfor\n"
        "## a line comment\n",
    ),
    "partial.txt": (
        "<p>{{ title|upper }} [[ title|lower ]]</p>\n",
        "<p>{{ title|lower }} [[ title|upper ]]</p>\n",
        "{% for i in items %}\n  <i>{{ i }}</i>[[ i ]]\n{% endfor %}\n",
    ),
    "macros.html": (
        "{% macro item(x) %}<li>{{ x }}</li>[[ x ]]{% endmacro %}\n"
        "{% macro blank() %}{{ none }}[[ none ]]{% endmacro %}\n",
        "{% macro item(x) %}<LI>{{ x }}</LI>[[ x ]]{% endmacro %}\n"
        "{% macro blank() %}{{ none }}[[ none ]]{% endmacro %}\n",
        "{% macro item(x, sep='-') %}\n"
        "    <li>{{ x ~ sep }}</li>\n"
        "    [[ x ~ sep ]]\n"
        "{% endmacro %}\n"
        "{% macro blank() %}{{ user }}{% endmacro %}\n",
    ),
    "page.html": (
        '{% extends "base.html" %}\n'
        '{% import "macros.html" as m %}\n'
        "{% block title %}Page {{ title }}[[ title ]]{% endblock %}\n"
        "{% block body %}\n"
        '  {% include "partial.txt" %}\n'
        "  <ul>{% for x in items %}{{ m.item(x) }}[[ m.item(x) ]]{% endfor %}</ul>"
        "{{ m.blank() }}\n"
        "{% endblock %}\n",
        '{% extends "base.html" %}\n'
        '{% import "macros.html" as m %}\n'
        "{% block title %}Leaf {{ title }}[[ title ]]{% endblock %}\n"
        "{% block body %}\n"
        '  {% include "partial.txt" %}\n'
        "  <ul>{% for x in items %}{{ m.item(x) }}[[ m.item(x) ]]{% endfor %}</ul>"
        "{{ m.blank() }}\n"
        "{% endblock %}\n",
        '{% extends "base.html" %}\n'
        '{% from "macros.html" import item, blank %}\n'
        "{% block body %}{{ super() }}\n"
        "    {% for x in items|reverse %}\n"
        "      {{ item(x) }}\n"
        "    {% endfor %}\n"
        '    {% include "partial.txt" %}[[ blank() ]]\n'
        "{% endblock %}\n",
    ),
    "other.txt": (
        '{% extends "base.html" %}\n'
        '{% from "macros.html" import item with context %}\n'
        "{% block body %}{{ super() }}\n"
        '    {% set s = "<i>x</i>" %}\n'
        "    {{ s }}|{{ s|safe }}|[[ s ]]|[[ s|safe ]]|{{ item(title) }}\n"
        '    {% include ["missing.html", "partial.txt"] %}\n'
        "{% endblock %}\n",
        '{% extends "base.html" %}\n'
        '{% from "macros.html" import item with context %}\n'
        "{% block body %}{{ super() }}\n"
        '    {% set s = "<b>x</b>" %}\n'
        "    {{ s }}|{{ s|safe }}|[[ s ]]|[[ s|safe ]]|{{ item(title) }}\n"
        '    {% include ["missing.html", "partial.txt"] %}\n'
        "{% endblock %}\n",
        '{% import "macros.html" as m %}{{ m.item(count) }}[[ m.item(count) ]]\n'
        '{% include "partial.txt" %}\n',
    ),
    # Only environments with the i18n extension parse {% trans %}.
    "trans.html": (
        '{% extends "base.html" %}\n'
        "{% block title %}{% trans %}Hello {{ title }}!{% endtrans %}{% endblock %}\n"
        "{% block body %}{% trans count=count %}{{ count }} item{% pluralize %}"
        '{{ count }} items{% endtrans %}|{{ _("100%% sure") }}{% endblock %}\n',
        '{% extends "base.html" %}\n'
        "{% block title %}{% trans %}Howdy {{ title }}!{% endtrans %}{% endblock %}\n"
        "{% block body %}{% trans count=count %}{{ count }} item{% pluralize %}"
        '{{ count }} items{% endtrans %}|{{ _("100%% sure") }}{% endblock %}\n',
        '{% extends "base.html" %}\n'
        "{% block body %}{% trans trimmed %}\n"
        "    Hi   {{ title }}\n"
        "  there{% endtrans %}|{{ gettext('plain') }}{% endblock %}\n",
    ),
}
TEMPLATE_NAMES = sorted(VARIANTS)
PAGES = ("other.txt", "page.html")
I18N_PAGES = ("trans.html",)
CONTEXT: dict[str, Any] = {
    "title": "<Tom & Jerry>",
    "items": ["<a>", "b&c"],
    "user": None,
    "count": 3,
}


def none_as_empty(value: object) -> object:
    """The ``finalize`` of one environment: None renders as nothing (applied to
    constants at compile time, so it changes the generated code)."""
    return "" if value is None else value


# -- the environments ---------------------------------------------------------------------


@dataclass(frozen=True)
class EnvSpec:
    """One environment configuration; :meth:`build` makes a cached or cache-less one."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    sandboxed: bool = False
    #: None: no i18n extension; else the ``newstyle`` of ``install_null_translations``.
    newstyle: bool | None = None

    @property
    def pages(self) -> tuple[str, ...]:
        return PAGES + (I18N_PAGES if self.newstyle is not None else ())

    @property
    def names(self) -> tuple[str, ...]:
        """Every template this environment can parse."""
        return tuple(n for n in TEMPLATE_NAMES if self.newstyle is not None or n != "trans.html")

    def build(self, loader: BaseLoader, cache: TieredBytecodeCache | None) -> Environment:
        cls = SandboxedEnvironment if self.sandboxed else Environment
        env = cls(
            loader=loader,
            bytecode_cache=cache,
            cache_size=0,
            auto_reload=True,
            extensions=["jinja2.ext.i18n"] if self.newstyle is not None else [],
            **self.options,
        )
        if self.newstyle is not None:
            env.install_null_translations(newstyle=self.newstyle)  # type: ignore[attr-defined]
        return env


SPECS: tuple[EnvSpec, ...] = (
    EnvSpec("default"),
    EnvSpec("autoescape", {"autoescape": True}),
    EnvSpec("select-autoescape", {"autoescape": select_autoescape(["html"])}),
    EnvSpec("async", {"enable_async": True}),
    EnvSpec("sandboxed", sandboxed=True),
    EnvSpec(
        "sandboxed-async-autoescape",
        {"enable_async": True, "autoescape": True},
        sandboxed=True,
    ),
    EnvSpec("brackets", {"variable_start_string": "[[", "variable_end_string": "]]"}),
    EnvSpec("line-statements", {"line_statement_prefix": "#", "line_comment_prefix": "##"}),
    EnvSpec("trim-lstrip", {"trim_blocks": True, "lstrip_blocks": True}),
    EnvSpec("finalize", {"finalize": none_as_empty}),
    EnvSpec("i18n-newstyle", newstyle=True),
    EnvSpec("i18n-oldstyle", newstyle=False),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
SPEC_NAMES = [spec.name for spec in SPECS]


def render(env: Environment, name: str) -> str:
    """Render ``name`` with the fixed context, awaiting it in an async environment."""
    template = env.get_template(name)
    if env.is_async:
        return asyncio.run(template.render_async(**CONTEXT))
    return template.render(**CONTEXT)


def entry_key(cache: TieredBytecodeCache, env: Environment, name: str, filename: str) -> str:
    """The composite key ``name`` is stored under for ``env`` (what ``get_bucket`` uses;
    the machine checks the two agree when it starts)."""
    return (
        cache.fingerprint(env)
        + autoescape_flag(env, name)
        + "-"
        + cache.get_cache_key(name, filename)
    )


#: What the cache-less environments render, by (spec, page, variant of every template):
#: the same in every machine, whichever directory holds the sources.
EXPECTED: dict[tuple[str, str, tuple[int, ...]], str] = {}


def position(data: st.DataObject, size: int, label: str) -> int:
    """An index below ``size``, drawn the same way whatever ``size`` is: an entry's length
    differs a little from run to run (marshal output depends on reference counts), and
    hypothesis replays a failing run only if every draw is made alike. Either end is
    the simplest example, so cuts at the start and at the very end are tried first."""
    from_end = data.draw(st.booleans(), label=f"{label} from the end")
    offset = data.draw(st.integers(0, 2**16 - 1), label=label) % size
    return size - 1 - offset if from_end else offset


# -- the machine --------------------------------------------------------------------------

BYTE_TIERS = ("filesystem", "memcached")
MEMORY_ENTRIES = st.sampled_from((3, 1, 4, 8))
DAMAGES = ("truncate", "flip", "garbage", "other-format-version")
PLANTS = (
    "copy-from-other-environment",
    "jinja-format",
    "copy-from-other-template",
    "replay-older-entry",
)


class CacheMachine(RuleBasedStateMachine):
    """Edits, loads, restarts, evictions and corruptions over one shared three-tier cache."""

    def __init__(self, memcached_address: str, workdir: str) -> None:
        super().__init__()
        self.address = memcached_address
        # Every machine of a run writes its sources to the same paths: a failure inside a
        # template then has the same traceback each time hypothesis replays it.
        self.templates = os.path.join(workdir, "templates")
        os.makedirs(self.templates, exist_ok=True)
        self.fs_dir = tempfile.mkdtemp(prefix="fs-", dir=workdir)
        self.prefix = "st" + uuid.uuid4().hex[:12]
        self.version: dict[str, int] = {}
        self.history: dict[str, list[int]] = {name: [] for name in TEMPLATE_NAMES}
        for name in TEMPLATE_NAMES:
            self._write(name, 0)
        loader = FileSystemLoader(self.templates)
        self.reference = {spec.name: spec.build(loader, None) for spec in SPECS}
        #: Entries seen under each key, to replay an older valid entry later.
        self.seen: dict[str, list[bytes]] = {}
        self.current = SPECS[0].name
        self.cache: TieredBytecodeCache  # set by start()
        self.envs: dict[str, Environment] = {}

    @initialize(memory_entries=MEMORY_ENTRIES, warm=st.booleans())
    def start(self, memory_entries: int, warm: bool) -> None:
        """The first process, whose memory tier holds ``memory_entries`` templates; when
        ``warm``, every environment has already rendered every page (so every byte tier
        holds an entry per environment and template to corrupt or copy)."""
        self._start(memory_entries)
        env = self.envs[self.current]
        render(env, "page.html")
        if warm:
            for spec in SPECS:
                for page in spec.pages:
                    self._check(spec.name, page)
        key = self._key(self.current, "page.html")
        assert os.path.exists(self.fs.path(key)), "entry_key() no longer matches get_bucket()"

    # -- helpers ------------------------------------------------------------------------

    def _filename(self, name: str) -> str:
        return os.path.join(self.templates, name)

    def _write(self, name: str, variant: int) -> None:
        with open(self._filename(name), "w", encoding="utf-8") as f:
            f.write(VARIANTS[name][variant])
        self.version[name] = variant

    def _start(self, memory_entries: int) -> None:
        # A memory tier smaller than one page's templates (a page, its layout, a partial,
        # a macro library) evicts on every render, so the byte tiers are read all the time.
        self.memory = MemoryTier(max_entries=memory_entries)
        self.fs = FileSystemTier(self.fs_dir)
        # Generous timeouts: the production defaults (50 ms, and the breaker opening on
        # the first timeout) would count a stall of a loaded CI machine as a tier error.
        self.mc = MemcachedTier(self.address, prefix=self.prefix, connect_timeout=5, timeout=5)
        self.cache = TieredBytecodeCache([self.memory, self.fs, self.mc], secret=SECRET)
        loader = FileSystemLoader(self.templates)
        self.envs = {spec.name: spec.build(loader, self.cache) for spec in SPECS}

    def _expected(self, spec: str, page: str) -> str:
        state = (spec, page, tuple(self.version[n] for n in TEMPLATE_NAMES))
        out = EXPECTED.get(state)
        if out is None:
            out = EXPECTED[state] = render(self.reference[spec], page)
        return out

    def _check(self, spec: str, page: str) -> None:
        got = render(self.envs[spec], page)
        assert got == self._expected(spec, page), f"{spec} rendered {page} wrongly"

    def _tier(self, which: str) -> FileSystemTier | MemcachedTier:
        return self.fs if which == "filesystem" else self.mc

    def _key(self, spec: str, name: str) -> str:
        return entry_key(self.cache, self.envs[spec], name, self._filename(name))

    def _read(self, which: str, key: str) -> bytes | None:
        data = self._tier(which).get(key)
        if data is not None:
            versions = self.seen.setdefault(key, [])
            if data not in versions:
                versions.append(data)
        return data

    # -- rules --------------------------------------------------------------------------

    @rule(name=st.sampled_from(TEMPLATE_NAMES), variant=st.integers(0, 2))
    def edit(self, name: str, variant: int) -> None:
        """Change a template's source (possibly to the same text, or to one of equal
        length)."""
        self.history[name].append(self.version[name])
        self._write(name, variant)

    @precondition(lambda self: any(self.history.values()))
    @rule(data=st.data())
    def revert(self, data: st.DataObject) -> None:
        """Put back the source a template had before its last edit."""
        name = data.draw(st.sampled_from([n for n in TEMPLATE_NAMES if self.history[n]]))
        self._write(name, self.history[name].pop())

    @rule(spec=st.sampled_from(SPEC_NAMES), data=st.data())
    def load_and_render(self, spec: str, data: st.DataObject) -> None:
        """Render one page through any environment."""
        self._check(spec, data.draw(st.sampled_from(SPEC_BY_NAME[spec].pages)))

    @rule(spec=st.sampled_from(SPEC_NAMES))
    def switch_environment(self, spec: str) -> None:
        """Make another environment the one the invariant renders through."""
        self.current = spec

    @rule(memory_entries=MEMORY_ENTRIES)
    def restart(self, memory_entries: int) -> None:
        """A new process: a new cache and new environments over the same directory and
        memcached prefix, with an empty memory tier."""
        self.cache.close()
        self._start(memory_entries)

    @rule(which=st.sampled_from(("memory", *BYTE_TIERS)))
    def clear_tier(self, which: str) -> None:
        """Empty one tier (memcached by namespace generation)."""
        tier: MemoryTier | FileSystemTier | MemcachedTier
        tier = self.memory if which == "memory" else self._tier(which)
        tier.clear()

    @rule(which=st.sampled_from(BYTE_TIERS), spec=st.sampled_from(SPEC_NAMES), data=st.data())
    def delete_entry(self, which: str, spec: str, data: st.DataObject) -> None:
        """Drop one entry from one byte tier."""
        name = data.draw(st.sampled_from(SPEC_BY_NAME[spec].names))
        self._tier(which).delete(self._key(spec, name))

    def _target(self, spec: str | None, data: st.DataObject) -> tuple[str, str, str]:
        """(spec, template name, key) of the entry a corruption hits; a ``spec`` of None
        means the environment the invariant renders through, whose entries are read next."""
        spec = spec or self.current
        name = data.draw(st.sampled_from(SPEC_BY_NAME[spec].names), label="name")
        return spec, name, self._key(spec, name)

    @rule(
        which=st.sampled_from(BYTE_TIERS),
        spec=st.none() | st.sampled_from(SPEC_NAMES),
        how=st.sampled_from(DAMAGES),
        data=st.data(),
    )
    def damage_entry(self, which: str, spec: str | None, how: str, data: st.DataObject) -> None:
        """Damage the entry of one template of one environment in one byte tier: cut it
        short, flip a byte, overwrite it with garbage or with another format version."""
        spec, name, key = self._target(spec, data)
        current = self._read(which, key)
        new: bytes | None = None
        if how == "truncate":
            if current:
                new = current[: position(data, len(current), "length")]
                if which == "filesystem":
                    # A torn file, as a crash mid-write without the rename would leave.
                    os.truncate(self.fs.path(key), len(new))
                    return
        elif how == "flip":
            if current:
                at = position(data, len(current), "at")
                mask = data.draw(st.integers(1, 255), label="mask")
                new = current[:at] + bytes([current[at] ^ mask]) + current[at + 1 :]
        elif how == "garbage":
            new = data.draw(st.binary(max_size=300), label="garbage")
        elif how == "other-format-version":
            base = current or self._any_entry(which, data)
            if base is not None and len(base) > 4:
                version = data.draw(
                    st.integers(0, 255).filter(lambda v: v != FORMAT_VERSION), label="version"
                )
                new = base[:4] + bytes([version]) + base[5:]
        if new is not None:
            self._tier(which).set(key, new)

    @rule(
        which=st.sampled_from(BYTE_TIERS),
        spec=st.none() | st.sampled_from(SPEC_NAMES),
        how=st.sampled_from(PLANTS),
        data=st.data(),
    )
    def plant_entry(self, which: str, spec: str | None, how: str, data: st.DataObject) -> None:
        """Put a well-formed entry that is not this one under the key of one template of
        one environment: Jinja's own format holding another environment's code, a valid
        entry of the same template for another environment, one of another template, or
        an older entry of this very key."""
        spec, name, key = self._target(spec, data)
        new: bytes | None = None
        if how == "jinja-format":
            new = self._jinja_entry(spec, name, key, data)
        elif how == "copy-from-other-environment":
            # The same template and source, compiled with other settings: the entry a
            # key without the fingerprint would confuse with this one.
            entries = [
                entry
                for s in SPECS
                if s.name != spec and name in s.names
                if (entry := self._entry(which, self._key(s.name, name))) is not None
            ]
            if entries:
                new = entries[position(data, len(entries), "entry of another spec")]
        elif how == "copy-from-other-template":
            new = self._any_entry(which, data, exclude=key)
        elif how == "replay-older-entry":
            current = self._read(which, key)
            older = [v for v in self.seen.get(key, []) if v != current]
            if older:
                new = older[position(data, len(older), "older entry")]
        if new is not None:
            self._tier(which).set(key, new)

    def _any_entry(
        self, which: str, data: st.DataObject, exclude: str | None = None
    ) -> bytes | None:
        """A valid entry of another (environment, template), from either byte tier."""
        spec = data.draw(st.sampled_from(SPEC_NAMES), label="other spec")
        name = data.draw(st.sampled_from(SPEC_BY_NAME[spec].names), label="other name")
        key = self._key(spec, name)
        return None if key == exclude else self._entry(which, key)

    def _entry(self, which: str, key: str) -> bytes | None:
        """The entry under ``key`` in tier ``which``, else in the other byte tier."""
        return self._read(which, key) or self._read(
            "memcached" if which == "filesystem" else "filesystem", key
        )

    def _jinja_entry(self, spec: str, name: str, key: str, data: st.DataObject) -> bytes:
        """Jinja's own bucket format (``j2`` + pickle + marshal) for this source, with code
        compiled by another environment: accepted, it would render wrongly."""
        other = data.draw(
            st.sampled_from([s.name for s in SPECS if name in s.names]), label="compiled by"
        )
        env = self.reference[other]
        with open(self._filename(name), encoding="utf-8") as f:
            source = f.read()
        bucket = Bucket(self.envs[spec], key, self.cache.get_source_checksum(source))
        bucket.code = env.compile(source, name, self._filename(name))
        return bucket.bytecode_to_string()

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def renders_like_no_cache(self) -> None:
        """Every page of the chosen environment renders as without any cache."""
        for page in SPEC_BY_NAME[self.current].pages:
            self._check(self.current, page)

    @invariant()
    def no_tier_errors(self) -> None:
        """Corrupt entries are rejections; no tier operation ever failed."""
        errors = {t.name: t.errors for t in self.cache.stats().tiers if t.errors}
        assert not errors, f"tier errors: {errors}"

    def teardown(self) -> None:
        if hasattr(self, "cache"):
            self.cache.close()
        shutil.rmtree(self.fs_dir, ignore_errors=True)


# -- the test -----------------------------------------------------------------------------

_PROFILE = settings()  # the profile tests/conftest.py loaded
#: "ci" asks for 40 examples and "thorough" for 1000; an example of this machine is dozens
#: of renders, so take three quarters of that, and much longer runs when thorough.
_THOROUGH = _PROFILE.max_examples > 100
MACHINE_SETTINGS = settings(
    _PROFILE,
    max_examples=max(_PROFILE.max_examples * 3 // 4, 10),
    stateful_step_count=100 if _THOROUGH else 40,
)


@pytest.mark.timeout(0 if _THOROUGH else 120)
def test_cache_state_machine(memcached: MemcachedServer, tmp_path: Path) -> None:
    """Any edits, loads, restarts, clears and corruptions: renders as uncached, no tier errs."""

    def factory() -> CacheMachine:
        return CacheMachine(memcached.address, str(tmp_path))

    # Typed differently across hypothesis releases (a class before 6.16x, any factory
    # after); the call itself has taken a factory all along.
    run: Any = run_state_machine_as_test
    run(factory, settings=MACHINE_SETTINGS)
