"""One cache shared by differently configured environments (pallets/jinja#1738): each
environment renders exactly what it would render with no cache at all, whichever
environment loads a template first, and after a restart over warm shared tiers."""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jinja2 import (
    Environment,
    FileSystemLoader,
    pass_context,
    pass_environment,
    select_autoescape,
)
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from tests.conftest import SECRET, MemcachedServer
from tiered_bccache import FileSystemTier, MemcachedTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.tiers.base import Tier

CONTEXT: dict[str, Any] = {
    "title": "<Tom & Jerry>",
    "items": ["<a>", "b&c"],
    "user": None,
    "count": 3,
    "payload": "<script>alert(1)</script>",
}

# -- the templates ------------------------------------------------------------------------
#
# "std" sources parse under the default delimiters, under [[ ]] variable delimiters (where
# {{ }} is text and [[ ]] the variable) and under line statements (where the lines that
# start with # are statements): the same source, under the same name, becomes different
# code in each environment, which is what the key must keep apart. "angle" sources are the
# same templates for an environment whose block delimiters differ too.

STD: dict[str, str] = {
    "base.html": (
        "<title>{% block title %}Base{% endblock %}</title>\n"
        "    {% block body %}{% endblock %}\n"
        "<footer>{{ title }}|[[ title ]]|{{ none }}|[[ none ]]|{{ user }}|{{ '<b>' }}"
        "|{{ 'k'|shout }}|{{ title|shout }}</footer>\n"
        "# for x in items\n"
        "<x>{{ x }}</x>[[ x ]]\n"
        "# endfor\n"
        "## a line comment\n"
        "{% if 1 > 2 %}never{% endif %}\n"
    ),
    "page.html": (
        '{% extends "base.html" %}\n'
        '{% import "macros.html" as m %}\n'
        "{% block title %}Page {{ title }}[[ title ]]{% endblock %}\n"
        "{% block body %}\n"
        '    {% include "partial.txt" %}\n'
        "    <ul>{% for x in items %}{{ m.item(x) }}[[ m.item(x) ]]{% endfor %}</ul>\n"
        "    {{ m.blank() }}\n"
        "{% endblock %}\n"
    ),
    "partial.txt": "<p>{{ title|upper }} [[ title|lower ]] {{ '<i>'|safe }} {{ payload }}</p>\n",
    "macros.html": (
        "{% macro item(x) %}<li>{{ x }}</li>[[ x ]]{% endmacro %}\n"
        "{% macro blank() %}{{ none }}|{{ user }}{% endmacro %}\n"
    ),
    "mail.txt": (
        '{% extends "base.html" %}\n'
        '{% from "macros.html" import item with context %}\n'
        "{% block body %}{{ super() }}\n"
        '    {% set s = "<i>x</i>" %}\n'
        "    {{ s }}|{{ s|safe }}|[[ s ]]|{{ item(title) }}|{{ payload }}\n"
        "{% endblock %}\n"
    ),
    # Parsed only by environments with the i18n extension.
    "trans.html": (
        '{% extends "base.html" %}\n'
        "{% block title %}{% trans %}Hello {{ title }}!{% endtrans %}{% endblock %}\n"
        "{% block body %}"
        "{% trans count=count %}{{ count }} item{% pluralize %}{{ count }} items{% endtrans %}\n"
        "{% trans %}\n"
        "    Wrapped   {{ count }}\n"
        "    lines\n"
        "{% endtrans %}|{{ _('100%% sure') }}|{{ gettext('<plain>') }}"
        "{% endblock %}\n"
    ),
}
ANGLE_OPTIONS: dict[str, Any] = {
    "block_start_string": "<%",
    "block_end_string": "%>",
    "variable_start_string": "${",
    "variable_end_string": "}",
    "comment_start_string": "<#",
    "comment_end_string": "#>",
}
ANGLE: dict[str, str] = {
    "base.html": (
        "<title><% block title %>Base<% endblock %></title>\n"
        "<% block body %><% endblock %>\n"
        "<footer>${ title }|${ none }|{{ title }}|${ 'k'|shout }</footer>\n"
    ),
    "page.html": (
        '<% extends "base.html" %><% import "macros.html" as m %>\n'
        "<% block title %>Page ${ title }<% endblock %>\n"
        '<% block body %><# a comment #><% include "partial.txt" %>'
        "<ul><% for x in items %>${ m.item(x) }<% endfor %></ul><% endblock %>\n"
    ),
    "partial.txt": "<p>${ title|upper } {% raw %} ${ payload }</p>\n",
    "macros.html": "<% macro item(x) %><li>${ x }</li><% endmacro %>\n",
    "mail.txt": (
        '<% extends "base.html" %><% block body %>${ super() }'
        '<% set s = "<i>x</i>" %>${ s }|${ s|safe }|${ payload }<% endblock %>\n'
    ),
}
DIALECTS = {"std": STD, "angle": ANGLE}
NAMES = ("base.html", "macros.html", "partial.txt", "page.html", "mail.txt")


# -- filters and finalize functions the settings use -------------------------------------


def shout(value: object) -> str:
    """The ``shout`` filter of most environments (folded into constants at compile time)."""
    return f"{value}".upper() + "!"


@pass_context
def shout_in_context(context: Context, value: object) -> str:
    """A ``shout`` of the same name that takes the context: called at render time."""
    return f"{value}".upper() + "!" + str(context.get("count"))


def none_as_empty(value: object) -> object:
    return "" if value is None else value


@pass_context
def none_as_dash_in_context(context: Context, value: object) -> object:
    return "-" if value is None else value


@pass_environment
def none_as_marker_with_environment(environment: Environment, value: object) -> object:
    return "~" if value is None else value


def _or(marker: str, value: object) -> object:
    return marker if value is None else value


def finalize_replacing_none_with(marker: object) -> Callable[[object], object]:
    """A finalize made by a factory: the same code, different captured ``marker``."""

    def finalize(value: object) -> object:
        return marker if value is None else value

    return finalize


# -- the settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One environment configuration of the table; builds cached and cache-less twins."""

    id: str
    options: Mapping[str, Any] = field(default_factory=dict)
    sandboxed: bool = False
    #: None: no i18n extension; else the ``newstyle`` of ``install_null_translations``.
    newstyle: bool | None = None
    policies: Mapping[str, Any] = field(default_factory=dict)
    filters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    dialect: str = "std"

    @property
    def names(self) -> tuple[str, ...]:
        return NAMES + (("trans.html",) if self.newstyle is not None else ())

    def build(self, directory: Path, cache: TieredBytecodeCache | None) -> Environment:
        cls = SandboxedEnvironment if self.sandboxed else Environment
        env = cls(
            loader=FileSystemLoader(directory / self.dialect),
            bytecode_cache=cache,
            cache_size=0,
            auto_reload=True,
            extensions=["jinja2.ext.i18n"] if self.newstyle is not None else [],
            **self.options,
        )
        env.policies.update(self.policies)
        env.filters["shout"] = shout
        env.filters.update(self.filters)
        if self.newstyle is not None:
            env.install_null_translations(newstyle=self.newstyle)  # type: ignore[attr-defined]
        return env


SETTINGS: tuple[Setting, ...] = (
    Setting("default"),
    Setting("async", {"enable_async": True}),
    Setting("sandboxed", sandboxed=True),
    Setting("sandboxed-async", {"enable_async": True}, sandboxed=True),
    Setting("i18n-newstyle", newstyle=True),
    Setting("i18n-oldstyle", newstyle=False),
    Setting("i18n-newstyle-autoescape", {"autoescape": True}, newstyle=True),
    Setting("i18n-trimmed-policy", newstyle=True, policies={"ext.i18n.trimmed": True}),
    Setting("bracket-delimiters", {"variable_start_string": "[[", "variable_end_string": "]]"}),
    Setting("angle-delimiters", ANGLE_OPTIONS, dialect="angle"),
    Setting("line-statements", {"line_statement_prefix": "#", "line_comment_prefix": "##"}),
    Setting("autoescape-true", {"autoescape": True}),
    Setting("autoescape-false", {"autoescape": False}),
    Setting("autoescape-select", {"autoescape": select_autoescape(["html"])}),
    Setting("autoescape-select-txt", {"autoescape": select_autoescape(["txt"])}),
    Setting("finalize-none-as-empty", {"finalize": none_as_empty}),
    Setting("finalize-pass-context", {"finalize": none_as_dash_in_context}),
    Setting("finalize-pass-environment", {"finalize": none_as_marker_with_environment}),
    Setting("filter-pass-context", filters={"shout": shout_in_context}),
    Setting("trim-lstrip-blocks", {"trim_blocks": True, "lstrip_blocks": True}),
    Setting("keep-trailing-newline", {"keep_trailing_newline": True}),
    Setting("newline-crlf", {"newline_sequence": "\r\n"}),
    Setting("unoptimized", {"optimized": False}),
)
SETTING_IDS = [s.id for s in SETTINGS]


def render(env: Environment, name: str) -> str:
    """Render ``name`` with the fixed context, awaiting it in an async environment."""
    template = env.get_template(name)
    if env.is_async:
        return asyncio.run(template.render_async(**CONTEXT))
    return template.render(**CONTEXT)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per dialect, holding its sources, shared by every test here."""
    root = tmp_path_factory.mktemp("sources")
    for dialect, templates in DIALECTS.items():
        (root / dialect).mkdir()
        for name, source in templates.items():
            (root / dialect / name).write_text(source, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def expected(sources: Path) -> dict[tuple[str, str], str]:
    """What every (setting, template) renders with no bytecode cache at all."""
    out = {}
    for setting in SETTINGS:
        env = setting.build(sources, None)
        for name in setting.names:
            out[setting.id, name] = render(env, name)
    return out


def three_tiers(fs_dir: Path, memcached: MemcachedServer, prefix: str) -> list[Tier]:
    # Timeouts generous enough that a stall of a loaded CI machine is not a tier error.
    return [
        MemoryTier(max_entries=512),
        FileSystemTier(fs_dir),
        MemcachedTier(memcached.address, prefix=prefix, connect_timeout=5, timeout=5),
    ]


def render_all(
    cache: TieredBytecodeCache,
    sources: Path,
    expected: Mapping[tuple[str, str], str],
    order: Sequence[Setting] = SETTINGS,
) -> None:
    """Render every template of every setting through ``cache``, in ``order``, and
    compare each output with the cache-less one."""
    envs = {s.id: s.build(sources, cache) for s in order}
    wrong = [
        (s.id, name)
        for s in order
        for name in s.names
        if render(envs[s.id], name) != expected[s.id, name]
    ]
    assert not wrong, f"rendered differently from a cache-less environment: {wrong}"
    errors = {t.name: t.errors for t in cache.stats().tiers if t.errors}
    assert not errors, f"tier errors: {errors}"


@pytest.fixture
def cache(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> Iterator[TieredBytecodeCache]:
    """A three-tier cache private to the test."""
    with TieredBytecodeCache(
        three_tiers(tmp_path / "fs", memcached, mc_prefix), secret=SECRET
    ) as c:
        yield c


# -- the table ----------------------------------------------------------------------------


def test_every_setting_generates_code_of_its_own(sources: Path) -> None:
    """Each setting but autoescape=False (the default) compiles the templates to its own code."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for setting in SETTINGS:
        env = setting.build(sources, None)
        assert env.loader is not None
        code = tuple(
            env.compile(env.loader.get_source(env, name)[0], name, raw=True)
            for name in setting.names
        )
        seen.setdefault(code, []).append(setting.id)
    assert [ids for ids in seen.values() if len(ids) > 1] == [["default", "autoescape-false"]]


@pytest.mark.parametrize("first", SETTING_IDS)
def test_shared_cache_renders_like_no_cache_whoever_loads_first(
    first: str,
    cache: TieredBytecodeCache,
    sources: Path,
    expected: dict[tuple[str, str], str],
) -> None:
    """Whoever loads first, every setting renders as uncached, from memory and from bytes."""
    order = sorted(SETTINGS, key=lambda s: s.id != first)
    render_all(cache, sources, expected, order)
    compiles = cache.stats().compiles
    memory = cache.tiers[0]
    memory.clear()
    render_all(cache, sources, expected, order[::-1])
    assert cache.stats().compiles == compiles


def test_restart_over_warm_shared_tiers_compiles_nothing(
    tmp_path: Path,
    memcached: MemcachedServer,
    mc_prefix: str,
    sources: Path,
    expected: dict[tuple[str, str], str],
) -> None:
    """A restart over warm filesystem or memcached tiers compiles nothing, renders alike."""
    with TieredBytecodeCache(
        three_tiers(tmp_path / "fs", memcached, mc_prefix), secret=SECRET
    ) as c:
        render_all(c, sources, expected)
        assert c.stats().compiles > 0
    with TieredBytecodeCache(
        three_tiers(tmp_path / "fs", memcached, mc_prefix), secret=SECRET
    ) as c:
        render_all(c, sources, expected, SETTINGS[::-1])
        stats = c.stats()
        assert stats.compiles == 0
        assert stats.tiers[1].hits > 0 and stats.tiers[2].hits == 0
    only_memcached = three_tiers(tmp_path / "fs", memcached, mc_prefix)[::2]
    with TieredBytecodeCache(only_memcached, secret=SECRET) as c:
        render_all(c, sources, expected)
        stats = c.stats()
        assert stats.compiles == 0 and stats.tiers[1].hits > 0


# -- autoescape: the XSS case -------------------------------------------------------------

XSS = {"comment.html": "<p>{{ payload }}</p>", "note.txt": "<p>{{ payload }}</p>"}
ESCAPED = "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
RAW = "<p><script>alert(1)</script></p>"


def xss_env(directory: Path, cache: TieredBytecodeCache, autoescape: Any) -> Environment:
    return Environment(
        loader=FileSystemLoader(directory),
        bytecode_cache=cache,
        cache_size=0,
        autoescape=autoescape,
    )


@pytest.fixture
def xss_sources(tmp_path: Path) -> Path:
    directory = tmp_path / "xss"
    directory.mkdir()
    for name, source in XSS.items():
        (directory / name).write_text(source, encoding="utf-8")
    return directory


def test_autoescape_environment_never_receives_code_compiled_without_it(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str, xss_sources: Path
) -> None:
    """autoescape=True escapes from memory, disk, memcached and after a restart (XSS)."""
    cache = TieredBytecodeCache(three_tiers(tmp_path / "fs", memcached, mc_prefix), secret=SECRET)
    raw, escaping = xss_env(xss_sources, cache, False), xss_env(xss_sources, cache, True)
    assert render(raw, "comment.html") == RAW  # compiled unescaped, written to every tier
    cache.reset_stats()
    assert render(escaping, "comment.html") == ESCAPED
    assert cache.stats().compiles == 1  # the unescaped code was not taken for this one
    memory, fs, mc = cache.tiers
    for cleared, hit_in in (((), 0), ((memory,), 1), ((memory, fs), 2)):
        for tier in cleared:
            tier.clear()
        cache.reset_stats()
        assert render(escaping, "comment.html") == ESCAPED
        assert cache.stats().tiers[hit_in].hits == 1
    for tiers in (three_tiers(tmp_path / "fs", memcached, mc_prefix), [MemoryTier(), mc]):
        with TieredBytecodeCache(tiers, secret=SECRET) as fresh:
            assert render(xss_env(xss_sources, fresh, True), "comment.html") == ESCAPED
            assert render(xss_env(xss_sources, fresh, False), "comment.html") == RAW
            assert fresh.stats().compiles == 0


def test_autoescape_switched_on_after_first_use_is_not_served_old_code(
    tmp_path: Path, xss_sources: Path
) -> None:
    """Turning autoescape on after first use recompiles instead of reusing unescaped code."""
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path / "fs")], secret=SECRET)
    env = xss_env(xss_sources, cache, False)
    assert render(env, "comment.html") == RAW
    env.autoescape = True
    assert render(env, "comment.html") == ESCAPED


def test_select_autoescape_keys_each_template_by_its_own_flag(
    tmp_path: Path, xss_sources: Path
) -> None:
    """Opposite select_autoescape environments sharing a cache each escape just their own."""
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path / "fs")], secret=SECRET)
    html = xss_env(xss_sources, cache, select_autoescape(["html"]))
    txt = xss_env(xss_sources, cache, select_autoescape(["txt"]))
    for env, escaped, raw in (
        (html, "comment.html", "note.txt"),
        (txt, "note.txt", "comment.html"),
    ):
        assert render(env, escaped) == ESCAPED
        assert render(env, raw) == RAW
    cache.tiers[0].clear()
    for env, escaped, raw in (
        (txt, "note.txt", "comment.html"),
        (html, "comment.html", "note.txt"),
    ):
        assert render(env, escaped) == ESCAPED
        assert render(env, raw) == RAW


# -- what user callables and policies bake into the code at compile time -----------------
#
# Jinja folds constants at compile time: ``{{ none }}`` goes through ``finalize``, and a
# filter or test applied to constants is called then (with the environment and its
# policies when it asks for them). Whatever those return is a constant in the code, so two
# environments that differ only in them must not share compiled code.


class Placeholder:
    """A configured object whose bound method, or the object itself, is the finalize."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def finalize(self, value: object) -> object:
        return self.marker if value is None else value

    def __call__(self, value: object) -> object:
        return self.marker if value is None else value


class SlottedPlaceholder:
    """A callable object with ``__slots__``: its state is not in a ``__dict__``."""

    __slots__ = ("marker",)

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, value: object) -> object:
        return self.marker if value is None else value


class Dash(enum.Enum):
    """Values a finalize closes over that are neither plain data nor callables."""

    EM = "\u2014"
    EN = "\u2013"


def is_big(value: int) -> bool:
    return value > 10


def is_huge(value: int) -> bool:
    return value > 100


def _set_finalize(
    values: Sequence[Callable[[object], object]],
) -> Callable[[Environment, int], None]:
    def configure(env: Environment, which: int) -> None:
        env.finalize = values[which]

    return configure


def _set_filter(
    name: str, values: Sequence[Callable[..., Any]]
) -> Callable[[Environment, int], None]:
    def configure(env: Environment, which: int) -> None:
        env.filters[name] = values[which]

    return configure


def _set_test(
    name: str, values: Sequence[Callable[..., Any]]
) -> Callable[[Environment, int], None]:
    def configure(env: Environment, which: int) -> None:
        env.tests[name] = values[which]

    return configure


def _set_policy(name: str, values: Sequence[Any]) -> Callable[[Environment, int], None]:
    def configure(env: Environment, which: int) -> None:
        env.policies[name] = values[which]

    return configure


#: case: (template source, how to configure environment 0 or 1)
BAKED: dict[str, tuple[str, Callable[[Environment, int], None]]] = {
    "finalize-closures": (
        "[{{ none }}]",
        _set_finalize([finalize_replacing_none_with("-"), finalize_replacing_none_with("?")]),
    ),
    "finalize-partials": (
        "[{{ none }}]",
        _set_finalize([functools.partial(_or, "-"), functools.partial(_or, "?")]),
    ),
    "finalize-bound-methods": (
        "[{{ none }}]",
        _set_finalize([Placeholder("-").finalize, Placeholder("?").finalize]),
    ),
    "finalize-callable-objects": (
        "[{{ none }}]",
        _set_finalize([Placeholder("-"), Placeholder("?")]),
    ),
    "finalize-slotted-objects": (
        "[{{ none }}]",
        _set_finalize([SlottedPlaceholder("-"), SlottedPlaceholder("?")]),
    ),
    # Markup, the marker a Jinja application is most likely to close over, is a str
    # subclass; an enum member and a Decimal are values of other common types.
    "finalize-closures-over-markup": (
        "[{{ none }}]",
        _set_finalize(
            [
                finalize_replacing_none_with(Markup("&mdash;")),
                finalize_replacing_none_with(Markup("&ndash;")),
            ]
        ),
    ),
    "finalize-closures-over-enum-members": (
        "[{{ none }}]",
        _set_finalize(
            [finalize_replacing_none_with(Dash.EM), finalize_replacing_none_with(Dash.EN)]
        ),
    ),
    "finalize-closures-over-decimals": (
        "[{{ none }}]",
        _set_finalize(
            [finalize_replacing_none_with(Decimal("1")), finalize_replacing_none_with(Decimal("2"))]
        ),
    ),
    "filter-bodies": ("[{{ 'k'|shout }}]", _set_filter("shout", [shout, str.lower])),
    "test-bodies": (
        "[{% if 20 is big %}big{% else %}small{% endif %}]",
        _set_test("big", [is_big, is_huge]),
    ),
    "policy-urlize-rel": (
        "[{{ 'see http://example.org'|urlize }}]",
        _set_policy("urlize.rel", ["noopener", "nofollow"]),
    ),
    "policy-json-dumps-kwargs": (
        "[{{ {'b': 1, 'a': 2}|tojson }}]",
        _set_policy("json.dumps_kwargs", [{"sort_keys": True}, {"sort_keys": False}]),
    ),
    "policy-truncate-leeway": (
        "[{{ 'abcdefghijkl'|truncate(9) }}]",
        _set_policy("truncate.leeway", [5, 0]),
    ),
}


@pytest.mark.parametrize("case", sorted(BAKED))
def test_code_baked_from_a_setting_is_not_shared_by_environments_differing_in_it(
    case: str, tmp_path: Path
) -> None:
    """Environments differing only in what Jinja folds at compile time never share code."""
    source, configure = BAKED[case]
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "t.html").write_text(source, encoding="utf-8")
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path / "fs")], secret=SECRET)
    got: list[str] = []
    want: list[str] = []
    for which in (0, 1):
        for env_cache, out in ((cache, got), (None, want)):
            env = Environment(
                loader=FileSystemLoader(directory), bytecode_cache=env_cache, cache_size=0
            )
            configure(env, which)
            out.append(render(env, "t.html"))
    assert want[0] != want[1], "the case does not compile differently"
    assert got == want
