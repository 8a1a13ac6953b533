"""The real tools' environments: dbt, Ansible, MkDocs, Sphinx and django-jinja build
their Jinja environments here as the tools themselves do, and the cache is held to its
goals on them.

Per tool, each measured in new processes (the tools' imports are per process):

- **first fingerprint**: the first ``cache.fingerprint(env)`` of a process that has
  imported the tool and built its environment (describing the tool's classes and
  extensions is paid here), target <= 5 ms;
- **seen-configuration fingerprint**: then ``count`` new environments built the tool's
  way, each fingerprinted (the build is not timed), the median, target <= 100 us;
- **renders equal**: the tool's strings rendered the tool's way through the cache (a
  miss, then a new environment of the same configuration: a memory-tier hit) equal
  what the same tool renders without it, an exception being equal to the same
  exception; and the environment is keyed (its fingerprint neither ``p...``, private to
  the process, nor empty, compiled uncached);
- **shared across processes**: a first process renders the strings and loads the
  tool's named templates over ``[MemoryTier(), FileSystemTier(dir)]`` with
  ``string_admission=1``; a second one does the same over the same directory and must
  compile nothing (``compiles == 0``, ``string_compiles == 0``, ``string_hits > 0``).

How each environment is built (``build_*``; the tool is imported inside, never by this
module):

============= =============================================================================
dbt           ``dbt_common.clients.jinja.get_environment(None)``: ``MacroFuzzEnvironment``;
              rendered as ``get_template`` does (``from_string(s, globals=ctx)``, then
              ``render(ctx)``)
dbt-capture   the same with ``capture_macros=True`` (the parser's: a new ``Undefined``
              class per environment)
dbt-native    ``native=True``: ``NativeSandboxEnvironment`` and its native templates
ansible       ``ansible.template.Templar()``: its engine builds the ``AnsibleEnvironment``
              on first use (``Templar._engine.environment``, what the deprecated
              ``Templar.environment`` returns, without its warning). A bare
              ``AnsibleEnvironment`` cannot render (``TemplateContext`` is not active):
              strings go through ``Templar.template``, trusted, with
              ``escape_backslashes`` True and then False (Ansible compiles the same string
              both ways), a ``#jinja2:`` header (an overlay) among them; expressions
              through ``evaluate_expression`` (both ways) and ``evaluate_conditional``
mkdocs        ``mkdocs.theme.Theme(name="mkdocs").get_env()`` (one ``Theme`` per process, a
              new environment per ``get_env``, as ``mkdocs build`` gets it)
sphinx        a ``Sphinx`` html application over a one-page project in a temporary
              directory; a new environment is a new ``BuiltinTemplateLoader`` initialised
              for its builder and theme (what ``StandaloneHTMLBuilder.init_templates``
              does); strings through its ``render_string``
django-jinja  ``django_jinja.backend.Jinja2`` (settings configured in the child: the app
              installed, i18n on), a new backend per environment; strings through the
              backend's ``from_string``, templates through its ``get_template``
============= =============================================================================

The cache is attached to each environment as an application would
(``env.bytecode_cache = cache`` and :func:`~tiered_bccache.cache_from_string`), after
the tool built it, with the key context ``tiered-bccache run`` gives it
(:func:`tiered_bccache.tools.key_context`: Ansible's ``escape_backslashes``; without it
Ansible's unescaped renders of a string with a backslash in a ``{{ }}`` constant differ).
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .timing import Spread, rotated

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = [
    "FIRST_LIMIT_US",
    "SEEN_LIMIT_US",
    "TOOLS",
    "Built",
    "EnvironmentReport",
    "Tool",
    "build",
    "build_ansible",
    "build_dbt",
    "build_django_jinja",
    "build_mkdocs",
    "build_sphinx",
    "child_main",
    "keyed",
    "measure",
    "missing_modules",
    "run_environment_bench",
    "share",
]

#: The goals (issue 18): the first fingerprint of a process, and that of a new
#: environment of a configuration the process has seen, in microseconds.
FIRST_LIMIT_US = 5000.0
SEEN_LIMIT_US = 100.0

#: The tools, in the order of the report, and the modules each needs.
TOOLS: dict[str, tuple[str, ...]] = {
    "dbt": ("dbt", "dbt_common"),
    "dbt-capture": ("dbt", "dbt_common"),
    "dbt-native": ("dbt", "dbt_common"),
    "ansible": ("ansible",),
    "mkdocs": ("mkdocs",),
    "sphinx": ("sphinx",),
    "django-jinja": ("django", "django_jinja"),
}

#: Starts the line of a child's output that holds its result (tools print too).
_MARK = "@@toolenvs "
_CHILD = (
    "import sys\n"
    "from tiered_bccache.benchkit.toolenvs import child_main\n"
    "raise SystemExit(child_main(sys.argv[1:]))\n"
)


@dataclass(frozen=True, slots=True)
class Built:
    """One environment, built the tool's way, with how the tool renders a string with it
    and loads (and, where a small context does, renders) one of its named templates."""

    env: Environment
    render: Callable[[str], object]
    load: Callable[[str], object]


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool set up in this process: ``new()`` builds a new environment of the tool's
    configuration; ``strings`` are rendered and ``templates`` loaded through it."""

    name: str
    new: Callable[[], Built]
    strings: tuple[str, ...]
    templates: tuple[str, ...] = ()


def missing_modules(name: str) -> list[str]:
    """The modules tool ``name`` needs that are not installed (empty when it can run)."""
    return [m for m in TOOLS[name] if importlib.util.find_spec(m) is None]


# -- the builders: each imports its tool, in the process that measures it --------------


def build_dbt(work: str, *, capture_macros: bool = False, native: bool = False) -> Tool:
    """dbt's environment: ``get_environment(None, capture_macros, native)``."""
    from dbt_common.clients import jinja as dbt_jinja

    def new() -> Built:
        env = dbt_jinja.get_environment(None, capture_macros=capture_macros, native=native)

        def render(source: str) -> object:
            ctx: dict[str, Any] = {}
            # MacroFuzzTemplate.render takes exactly one positional argument.
            return env.from_string(source, globals=ctx).render(ctx)

        return Built(env, render, _no_templates)

    strings = (
        "{{ 'x' | as_text }} {{ '1' | as_number }} {{ 'true' | as_bool }}",
        "{% set a = 1 + 2 %}{{ a | as_number }} {{ [1, 2] | is_list }} {{ 1 | as_text }}",
        "{% do [].append(1) %}{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}"
        "{{ i }}{% endfor %}",
        "{% macro m(x) %}{{ x }}!{% endmacro %}{{ dbt_macro__m('y') }}",
        "select {{ 'col' }} from {{ 'tbl' | upper }} where x = {{ '42' | as_number }}",
        "{{ undefined_thing }}|{{ undefined_thing.attr }}",
    )
    name = "dbt-native" if native else "dbt-capture" if capture_macros else "dbt"
    return Tool(name, new, strings)


def build_ansible(work: str) -> Tool:
    """Ansible's environment, as ``ansible.template.Templar`` builds it."""
    from ansible._internal._datatag._tags import TrustedAsTemplate
    from ansible._internal._templating._jinja_bits import is_possibly_template
    from ansible.template import Templar

    trusted = TrustedAsTemplate()

    def new() -> Built:
        templar = Templar()
        env = templar._engine.environment  # built on first use

        def render(source: str) -> object:
            value = trusted.tag(source)
            # Each string both ways: Ansible's lexer escapes backslashes in string
            # constants when escape_backslashes is on (the default for templates and
            # expressions), not otherwise (conditionals; includes compiled at render).
            if is_possibly_template(source):
                return {
                    "escaped": _value(lambda: templar.template(value)),
                    "unescaped": _value(lambda: templar.template(value, escape_backslashes=False)),
                }
            return {
                "expression": _value(lambda: templar.evaluate_expression(value)),
                "unescaped": _value(
                    lambda: templar.evaluate_expression(value, escape_backslashes=False)
                ),
                "conditional": _value(lambda: templar.evaluate_conditional(value)),
            }

        return Built(env, render, _no_templates)

    strings = (
        "{{ 'a' | upper }} {{ [1, [2]] | ansible.builtin.flatten }} {{ [3, 1] | sort | first }}",
        "{{ 'x' is string }} {{ {'k': 1} | dict2items | items2dict }} {{ 'b' | b64encode }}",
        "{% for i in range(3) %}{{ i }}{% endfor %} {{ 'abc' | regex_replace('b', 'B') }}",
        "{{ undefined_var | default('d') }} {{ omit is defined }} {{ (1, 2) | list }}",
        "path {{ 'C:\\new\\dir' }} {{ 'ab' | regex_replace('(a)', '\\1x') }}",
        "#jinja2:variable_start_string:'[%', variable_end_string:'%]'\n"
        "[% 'over' | upper %] {{ 'kept' }}",
        # Expressions (no delimiters): evaluated, and as a conditional (a parsed tree).
        "'a' | upper == 'A' and [1, [2]] | flatten | length == 2",
        "'C:\\new' | regex_replace('\\\\', '/') == 'C:/new' or 'x\\1' | length == 3",
    )
    return Tool("ansible", new, strings)


def build_mkdocs(work: str) -> Tool:
    """MkDocs' environment: ``Theme(name="mkdocs").get_env()``."""
    from mkdocs.theme import Theme

    theme = Theme(name="mkdocs")
    contexts: dict[str, dict[str, Any]] = {
        "sitemap.xml": {"pages": []},
        "toc.html": {"page": {"toc": []}},
        "search-modal.html": {},
        "keyboard-modal.html": {},
    }

    def new() -> Built:
        env = theme.get_env()

        def render(source: str) -> object:
            return env.from_string(source).render(page=None, base_url=".")

        return Built(env, render, _loader(env, contexts))

    strings = (
        "{{ 'a/b.css' | url }} {{ 'x.js' | script_tag }}",
        "{% trans %}Next{% endtrans %} {{ _('Previous') }} {{ 'x' | tojson }}",
        "{{ 'x' | upper }} {% for i in range(3) %}{{ loop.index }}{% endfor %}",
    )
    templates = ("main.html", "base.html", "404.html", "content.html", *contexts)
    return Tool("mkdocs", new, strings, templates)


_SPHINX_CONF = "project = 'tiered-bccache'\n"
_SPHINX_INDEX = "Title\n=====\n\nA page.\n"


def build_sphinx(work: str) -> Tool:
    """Sphinx's html theme environment, from a one-page project's application."""
    import io

    from sphinx.application import Sphinx
    from sphinx.jinja2glue import BuiltinTemplateLoader

    project = tempfile.mkdtemp(prefix="sphinx-", dir=work)
    source = os.path.join(project, "source")
    os.makedirs(source)
    for name, text in (("conf.py", _SPHINX_CONF), ("index.rst", _SPHINX_INDEX)):
        with open(os.path.join(source, name), "w", encoding="utf-8") as f:
            f.write(text)
    app = Sphinx(
        source,
        source,
        os.path.join(project, "out"),
        os.path.join(project, "doctrees"),
        "html",
        status=None,
        warning=io.StringIO(),
        freshenv=True,
    )
    builder: Any = app.builder

    def pathto(name: str, *args: object) -> str:
        return name

    contexts: dict[str, dict[str, Any]] = {
        "relations.html": {"pathto": pathto},
        "searchbox.html": {"pathto": pathto, "builder": "html", "pagename": "index"},
        "sourcelink.html": {},
        "localtoc.html": {},
        "about.html": {"pathto": pathto, "theme_logo": "", "theme_description": "d"},
    }

    def new() -> Built:
        loader = BuiltinTemplateLoader()
        loader.init(builder, builder.theme)  # as StandaloneHTMLBuilder.init_templates
        env = loader.environment

        def render(source: str) -> object:
            return loader.render_string(source, {})

        return Built(env, render, _loader(env, contexts))

    strings = (
        "{{ '1' | toint + 1 }} {{ 'yes' | tobool }} {{ 3 | todim }} {{ 'auto' | todim }}",
        "{{ _('Contents') }} {{ gettext('Search') }} {% trans %}Index{% endtrans %}",
        "{{ debug is defined }} {{ idgen is defined }} {{ '<x>' | e }}",
    )
    templates = ("layout.html", "page.html", "genindex.html", *contexts)
    return Tool("sphinx", new, strings, templates)


_DJANGO_TEMPLATES = {
    "base.jinja": "<h1>{% block title %}{% endblock %}</h1>{% block body %}{% endblock %}",
    "page.jinja": (
        "{% extends 'base.jinja' %}"
        "{% block title %}{{ n|add(1) }} {{ _('Hello') }}{% endblock %}"
        "{% block body %}{{ x }} {{ 'one two three'|truncatewords(2) }} {{ '<i>'|upper }}"
        "{% endblock %}"
    ),
}


def build_django_jinja(work: str) -> Tool:
    """django-jinja's backend environment (``django_jinja.backend.Jinja2``), Django's
    settings configured for this process."""
    import django
    from django.conf import settings

    directory = os.path.join(work, "django-jinja-templates")
    os.makedirs(directory, exist_ok=True)
    for name, text in _DJANGO_TEMPLATES.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if not settings.configured:
        settings.configure(INSTALLED_APPS=["django_jinja"], TEMPLATES=[], USE_I18N=True)
        django.setup()
    from django_jinja.backend import Jinja2

    params = {"NAME": "jinja2", "DIRS": [directory], "APP_DIRS": False, "OPTIONS": {}}

    def new() -> Built:
        backend = Jinja2(params)

        def render(source: str) -> object:
            return backend.from_string(source).render({"x": "<b>"})

        def load(name: str) -> object:
            return backend.get_template(name).render({"n": 1, "x": "&"})

        return Built(backend.env, render, load)

    strings = (
        "{{ x }} {{ 'A b'|slugify }} {{ 'one two three'|truncatewords(2) }} {{ 1|add(1) }}",
        "{{ _('Hello') }} {{ 'x' is none }} {{ '<i>'|upper }} {{ 'a,b'|cut(',') }}",
        "{% for i in range(3) %}{{ loop.index }}{% endfor %} {{ 1234567|filesizeformat }}",
    )
    return Tool("django-jinja", new, strings, tuple(_DJANGO_TEMPLATES)[::-1])


def _no_templates(name: str) -> object:
    raise LookupError(f"no named templates: {name}")


def _loader(env: Environment, contexts: Mapping[str, dict[str, Any]]) -> Callable[[str], object]:
    """Load a theme's template by name; render it when a small context is known for it,
    else say what was loaded (its blocks)."""

    def load(name: str) -> object:
        template = env.get_template(name)
        context = contexts.get(name)
        if context is None:
            return ("loaded", name, sorted(template.blocks))
        return template.render(context)

    return load


_BUILDERS: dict[str, Callable[[str], Tool]] = {
    "dbt": build_dbt,
    "dbt-capture": lambda work: build_dbt(work, capture_macros=True),
    "dbt-native": lambda work: build_dbt(work, native=True),
    "ansible": build_ansible,
    "mkdocs": build_mkdocs,
    "sphinx": build_sphinx,
    "django-jinja": build_django_jinja,
}


def build(name: str, work: str) -> Tool:
    """Set up tool ``name`` in this process (``work``: a directory for its files)."""
    return _BUILDERS[name](work)


# -- inside a child process ---------------------------------------------------------------


def _outcome(call: Callable[[], object]) -> str:
    """What a render produced, comparable across caches and readable in a report: the
    value's type and repr, or the exception's type and message."""
    try:
        value = call()
    except Exception as exc:
        return f"raised {type(exc).__name__}: {str(exc)[:300]}"
    return f"{type(value).__name__} {value!r}"


def _value(call: Callable[[], object]) -> object:
    """The value of ``call()``, or what it raised (for a render made of several)."""
    try:
        return call()
    except Exception as exc:
        return f"raised {type(exc).__name__}: {str(exc)[:300]}"


def _cache_options() -> dict[str, Any]:
    """The options ``tiered-bccache run`` gives the cache for the tools: the key context
    of :mod:`tiered_bccache.tools` (Ansible's escape_backslashes), when the package has
    it."""
    try:
        tools = importlib.import_module("tiered_bccache.tools")
    except ImportError:
        return {}
    key_context = getattr(tools, "key_context", None)
    return {} if key_context is None else {"key_context": key_context}


def _attach(env: Environment, cache: Any) -> None:
    """Give ``env`` the cache, for named templates and strings, as an application does."""
    from tiered_bccache import cache_from_string

    env.bytecode_cache = cache
    cache_from_string(env)


def _measure_here(tool: Tool, count: int, seconds: float) -> dict[str, Any]:
    """The first fingerprint of this process, then those of ``count`` new environments
    (at most ``seconds`` of building, at least 5), in nanoseconds."""
    from tiered_bccache import MemoryTier, TieredBytecodeCache

    cache = TieredBytecodeCache([MemoryTier()], **_cache_options())
    built = tool.new()
    _attach(built.env, cache)
    perf = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        started = perf()
        first = cache.fingerprint(built.env)
        first_ns = perf() - started
    finally:
        gc.enable()
    seen_ns: list[int] = []
    keys = {first}
    deadline = time.monotonic() + seconds
    for i in range(count):
        if i >= 5 and time.monotonic() > deadline:
            break
        again = tool.new()
        _attach(again.env, cache)
        gc.disable()
        try:
            started = perf()
            key = cache.fingerprint(again.env)
            seen_ns.append(perf() - started)
        finally:
            gc.enable()
        keys.add(key)
    return {
        "fingerprint": first,
        "first_ns": first_ns,
        "seen_ns": seen_ns,
        "keys": sorted(keys),
        "uncached": cache.stats().uncached,
    }


def _render_here(tool: Tool, directory: str) -> dict[str, Any]:
    """Render the tool's strings and load its templates through a cache over
    ``directory``, in a new environment and then in another of the same configuration,
    each compared with the tool without the cache; the cache's counters after."""
    from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache

    cache = TieredBytecodeCache(
        [MemoryTier(), FileSystemTier(directory)], string_admission=1, **_cache_options()
    )
    plain = tool.new()
    compared = 0
    differences: list[dict[str, Any]] = []
    fingerprints = []
    for _ in range(2):  # a new environment, then another configured alike
        cached = tool.new()
        _attach(cached.env, cache)
        fingerprints.append(cache.fingerprint(cached.env))
        work: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
        for source in tool.strings:
            work.append((source, _bind(cached.render, source), _bind(plain.render, source)))
        for name in tool.templates:
            work.append((name, _bind(cached.load, name), _bind(plain.load, name)))
        for what, ours, theirs in work:
            got, expected = _outcome(ours), _outcome(theirs)
            compared += 1
            if got != expected and all(d["what"] != what for d in differences):
                differences.append({"what": what, "cached": got, "plain": expected})
    stats = cache.stats()
    return {
        "fingerprint": fingerprints[0],
        "fingerprints": fingerprints,
        "compared": compared,
        "differences": differences,
        "compiles": stats.compiles,
        "string_compiles": stats.string_compiles,
        "string_hits": stats.string_hits,
        "hits": [t.hits for t in stats.tiers],
        "writes": [t.writes for t in stats.tiers],
        "uncached": stats.uncached,
        "cache_options": sorted(_cache_options()),
    }


def _bind(func: Callable[[str], object], arg: str) -> Callable[[], object]:
    return lambda: func(arg)


def child_main(argv: Sequence[str]) -> int:
    """A child process: ``measure NAME WORK COUNT SECONDS`` or ``render NAME WORK DIR``.
    Prints one line, ``_MARK`` and the result as JSON (an ``error`` on an exception)."""
    mode, name, work = argv[:3]
    phase = "build"
    try:
        tool = build(name, work)
        phase = mode
        if mode == "measure":
            result = _measure_here(tool, int(argv[3]), float(argv[4]))
        elif mode == "render":
            result = _render_here(tool, argv[3])
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except Exception as exc:
        lines = traceback.format_exception(exc)
        result = {"error": f"{phase}: {type(exc).__name__}: {exc}", "traceback": lines[-6:]}
    print(_MARK + json.dumps(result), flush=True)
    return 0


# -- in the parent ---------------------------------------------------------------------


_NOT_INHERITED = frozenset(
    (
        "TIERED_BCCACHE_TIERS",
        "TIERED_BCCACHE_AUTO",
        "TIERED_BCCACHE_RUN_STATS",
        "PYTHONDONTWRITEBYTECODE",
    )
)


def _child_environ(work: str, secret: str) -> dict[str, str]:
    import tiered_bccache

    environ = {
        k: v
        for k, v in os.environ.items()
        # Not the cache of ``tiered-bccache run``: the plain environments stay plain.
        if k not in _NOT_INHERITED
    }
    # The package the parent imported, whether or not it is installed where the child is.
    root = os.path.dirname(os.path.dirname(os.path.abspath(tiered_bccache.__file__)))
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, environ.get("PYTHONPATH")) if p)
    environ["TIERED_BCCACHE_SECRET"] = secret
    # Ansible keeps its temporary files and collections under its home: not the user's.
    environ["ANSIBLE_HOME"] = os.path.join(work, "ansible-home")
    environ["ANSIBLE_LOCAL_TEMP"] = os.path.join(work, "ansible-home", "tmp")
    return environ


def _run_child(
    args: Sequence[str], work: str, *, timeout: float, secret: str = ""
) -> dict[str, Any]:
    """Run a child (see :func:`child_main`) in ``work`` with ``secret`` the key of the
    entries it writes; its result, or ``{"error": ...}`` when it failed or printed none."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, *args],
            cwd=work,
            env=_child_environ(work, secret or os.urandom(32).hex()),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{args[0]}: timed out after {timeout:g} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARK):
            result: dict[str, Any] = json.loads(line[len(_MARK) :])
            return result
    tail = done.stderr.strip().splitlines()[-3:]
    return {"error": f"{args[0]}: exit status {done.returncode}: {' | '.join(tail)}"}


def measure(
    name: str, work: str, *, count: int = 200, seconds: float = 10.0, timeout: float = 300.0
) -> dict[str, Any]:
    """One new process of tool ``name``: its first fingerprint and ``count`` more of new
    environments (see :func:`_measure_here`), or ``{"error": ...}``."""
    args = ["measure", name, work, str(count), str(seconds)]
    return _run_child(args, work, timeout=timeout)


def share(name: str, work: str, *, timeout: float = 300.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two processes of tool ``name``, one after the other, over one filesystem tier in
    ``work``: what each rendered, compared and counted (see :func:`_render_here`)."""
    directory = os.path.join(work, f"{name}-fs")
    secret = os.urandom(32).hex()  # the two processes' key, as hosts sharing a tier have
    args = ["render", name, work, directory]
    first = _run_child(args, work, timeout=timeout, secret=secret)
    second = _run_child(args, work, timeout=timeout, secret=secret)
    return first, second


def keyed(fingerprint: str) -> str:
    """``keyed``, ``private`` (``p...``: the environment's entries stay in its process)
    or ``uncached`` (empty: it could not be read)."""
    if not fingerprint:
        return "uncached"
    return "private" if fingerprint.startswith("p") else "keyed"


@dataclass(frozen=True, slots=True)
class EnvironmentReport:
    """Per tool: the first and seen-configuration fingerprints of each round (us), the
    two sharing processes, and what failed."""

    tools: list[str]
    first_us: dict[str, list[float]]
    seen_us: dict[str, list[float]]
    keys: dict[str, list[str]]
    shared: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    errors: dict[str, list[str]]
    skipped: dict[str, str]
    #: Rounds asked for, and new environments fingerprinted per process (at most).
    rounds: int
    environments: int

    def verdicts(self, name: str) -> list[str]:
        """What misses a goal for tool ``name`` (empty: every goal met)."""
        out = list(dict.fromkeys(self.errors.get(name, [])))
        first, seen = self.first_us.get(name), self.seen_us.get(name)
        if first and statistics.median(first) > FIRST_LIMIT_US:
            out.append(f"first fingerprint > {FIRST_LIMIT_US / 1000:g} ms")
        if seen and statistics.median(seen) > SEEN_LIMIT_US:
            out.append(f"seen-configuration fingerprint > {SEEN_LIMIT_US:g} us")
        for key in self.keys.get(name, []):
            if keyed(key) != "keyed":
                out.append(f"environment {keyed(key)}")
        if len(set(self.keys.get(name, []))) > 1:
            out.append("environments configured alike got different keys")
        pair = self.shared.get(name)
        if pair is not None:
            for which, result in zip(("A", "B"), pair, strict=True):
                if "error" in result:
                    out.append(f"process {which} raised")
                    continue
                if result["differences"]:
                    out.append(f"process {which} renders differ")
                if result["uncached"]:
                    out.append(f"process {which} compiled uncached")
            b = pair[1]
            if "error" not in b and (b["compiles"] or b["string_compiles"]):
                out.append("process B compiled")
            if "error" not in b and not b["string_hits"]:
                out.append("process B hit no string")
        return list(dict.fromkeys(out))

    #: The columns of :meth:`rows`.
    HEADER: ClassVar[tuple[str, ...]] = (
        "tool",
        "first fingerprint",
        "seen-config fingerprint",
        "renders equal",
        "shared across processes (B compiles)",
        "target met",
    )

    def title(self) -> list[str]:
        """The lines above the table: what was measured, and the targets."""
        return [
            f"the tools' own environments: new processes, {self.rounds} rounds, up to "
            f"{self.environments} new environments per process (median, min..max over rounds)",
            f"targets: first fingerprint <= {FIRST_LIMIT_US / 1000:g} ms, seen-config "
            f"fingerprint <= {SEEN_LIMIT_US:g} us, renders equal, keyed, "
            "process B compiles nothing",
        ]

    def rows(self) -> list[list[str]]:
        """One row per tool, under :attr:`HEADER`."""
        rows = []
        for name in self.tools:
            if name in self.skipped:
                rows.append([name, "", "", "", "", f"not run: {self.skipped[name]}"])
                continue
            first = _spread(self.first_us.get(name, []))
            seen = _spread(self.seen_us.get(name, []))
            rows.append(
                [
                    name,
                    "" if first is None else f"{_us(first.median)} ({first.range('.0f')})",
                    "" if seen is None else f"{_us(seen.median)} ({seen.range('.1f')})",
                    self._renders(name),
                    self._shared(name),
                    "; ".join(self.verdicts(name)) or "met",
                ]
            )
        return rows

    def notes(self) -> list[str]:
        """What failed or differed, per tool, in words."""
        out = []
        for name in self.tools:
            out += [f"{name}: {e}" for e in dict.fromkeys(self.errors.get(name, []))]
            for which, result in zip(("A", "B"), self.shared.get(name, ()), strict=False):
                if "error" in result:
                    out.append(f"{name}: process {which}: {result['error']}")
                    continue
                for d in result["differences"][:3]:
                    out.append(
                        f"{name}: process {which} differs on {d['what']!r}:\n"
                        f"    cached {d['cached']}\n    plain  {d['plain']}"
                    )
        return out

    def _renders(self, name: str) -> str:
        pair = self.shared.get(name)
        if pair is None or any("error" in r for r in pair):
            return "raised" if pair is not None else ""
        compared = sum(r["compared"] for r in pair)
        differ = sum(len(r["differences"]) for r in pair)
        return f"{'yes' if not differ else 'NO'} {compared - differ}/{compared}"

    def _shared(self, name: str) -> str:
        pair = self.shared.get(name)
        if pair is None:
            return ""
        b = pair[1]
        if "error" in b:
            return "raised"
        state = keyed(b["fingerprint"])
        return f"{b['compiles'] + b['string_compiles']} ({b['string_hits']} string hits, {state})"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rounds": self.rounds,
            "environments": self.environments,
            "skipped": self.skipped,
            "tools": {},
        }
        for name in self.tools:
            if name in self.skipped:
                continue
            first = _spread(self.first_us.get(name, []))
            seen = _spread(self.seen_us.get(name, []))
            out["tools"][name] = {
                "first_fingerprint_us": None if first is None else first.as_dict(),
                "seen_fingerprint_us": None if seen is None else seen.as_dict(),
                "first_us": self.first_us.get(name, []),
                "seen_us": self.seen_us.get(name, []),
                "keys": sorted(set(self.keys.get(name, []))),
                "shared": list(self.shared.get(name, ())),
                "errors": self.errors.get(name, []),
                "missed": self.verdicts(name),
            }
        return out


def _spread(values: Iterable[float]) -> Spread | None:
    v = list(values)
    return Spread.of(v) if v else None


def _us(value: float) -> str:
    return f"{value:.0f} us" if value >= 100 else f"{value:.1f} us"


def run_environment_bench(
    tools: Sequence[str],
    work: str,
    *,
    rounds: int = 5,
    count: int = 200,
    seconds: float = 10.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> EnvironmentReport:
    """Measure every installed tool of ``tools`` in new processes (rounds interleaved
    across tools, the order rotated each round), then check sharing across two
    processes per tool. Tools not installed are reported as not run; a tool whose
    process raised is reported with the exception, never raised here."""
    skipped = {}
    for name in tools:
        gone = missing_modules(name)
        if gone:
            skipped[name] = f"{', '.join(gone)} not installed"
    runnable = [name for name in tools if name not in skipped]
    first: dict[str, list[float]] = {name: [] for name in runnable}
    seen: dict[str, list[float]] = {name: [] for name in runnable}
    keys: dict[str, list[str]] = {name: [] for name in runnable}
    errors: dict[str, list[str]] = {name: [] for name in runnable}
    for r in range(rounds):
        for name in rotated(runnable, r):
            result = measure(name, work, count=count, seconds=seconds)
            if "error" in result:
                errors[name].append(result["error"])
                continue
            first[name].append(result["first_ns"] / 1000)
            if result["seen_ns"]:
                seen[name].append(statistics.median(result["seen_ns"]) / 1000)
            keys[name] += result["keys"]
            if result["uncached"]:
                errors[name].append(f"{result['uncached']} compiles uncached")
        if progress:
            progress("rounds", r + 1, rounds)
    shared = {}
    for i, name in enumerate(runnable):
        shared[name] = share(name, work)
        if progress:
            progress("sharing", i + 1, len(runnable))
    return EnvironmentReport(list(tools), first, seen, keys, shared, errors, skipped, rounds, count)
