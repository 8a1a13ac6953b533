"""Templates from strings through the tiers: ``cache.from_string`` and ``cache_from_string``.

The reference is always Jinja itself: a cache-less environment with the same settings
calling its own ``from_string``. Whatever the tiers hold, a string template must render,
be named, see its globals and fail exactly as Jinja's does; the cache may only make it
cheaper.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import DictLoader, Environment, Template, TemplateSyntaxError
from jinja2.bccache import FileSystemBytecodeCache
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeEnvironment, NativeTemplate
from jinja2.sandbox import SandboxedEnvironment

import tiered_bccache.admission
from tests.conftest import SECRET, MemcachedServer
from tiered_bccache import (
    ConfigurationError,
    FileSystemTier,
    MemcachedTier,
    MemoryTier,
    TieredBytecodeCache,
    cache_from_string,
    uncache_from_string,
)
from tiered_bccache.entry import source_digest
from tiered_bccache.trace import read_trace
from tiered_bccache.tune import hit_curves

#: Generous timeouts: these tests count hits and misses exactly, and the production
#: defaults (50 ms, the breaker opening on the first timeout) would count a stall of a
#: loaded CI machine as a tier error.
GENEROUS: dict[str, Any] = {"connect_timeout": 5.0, "timeout": 5.0}

ROOT = Path(__file__).resolve().parent.parent

SOURCE = "{{ greeting }}, {{ user|title }}! {% for i in items %}[{{ i }}]{% endfor %} {{ site }}"
CONTEXT: dict[str, Any] = {"user": "ada lovelace", "items": [1, 2, 3]}


class MyTemplate(Template):
    """A template class of the application's own."""


def entries(directory: Path | str) -> list[str]:
    """The entry files a filesystem tier holds in ``directory``."""
    return sorted(name for name in os.listdir(directory) if name.endswith(".tbc"))


def make_cache(tiers: list[Any], **options: Any) -> TieredBytecodeCache:
    return TieredBytecodeCache(tiers, secret=SECRET, **options)


def outcome(make: Callable[[], Template], **context: Any) -> tuple[Any, ...]:
    """What making and rendering a template gives: its output, or its exception."""
    try:
        return ("ok", make().render(**context))
    except Exception as exc:  # the comparison is the point: any exception, as Jinja's
        return ("raised", type(exc), str(exc), getattr(exc, "lineno", None))


def describe(template: Template, **context: Any) -> tuple[Any, ...]:
    """Everything of a string template an application can see."""
    return (
        type(template),
        template.name,
        template.filename,
        dict(template.globals),
        template.render(**context),
    )


# -- what from_string returns, on a miss and on every kind of hit -------------------------


@pytest.fixture(params=["memory", "filesystem", "memcached"])
def restartable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], TieredBytecodeCache]]:
    """Makes caches over one tier of the kind named: each call is a new process's cache
    over the same directory or memcached prefix (or a new cache over the same memory
    tier, the nearest a memory tier comes to a restart)."""
    kind = request.param
    if kind == "memory":
        memory = MemoryTier()
        yield lambda: make_cache([memory], string_admission=1)
    elif kind == "filesystem":
        yield lambda: make_cache([FileSystemTier(tmp_path)], string_admission=1)
    else:
        server: MemcachedServer = request.getfixturevalue("memcached")
        prefix: str = request.getfixturevalue("mc_prefix")
        yield lambda: make_cache(
            [MemcachedTier(server.address, prefix=prefix, **GENEROUS)], string_admission=1
        )


@pytest.mark.parametrize(
    "globals_, template_class",
    [(None, None), ({"greeting": "Hello", "site": "passed"}, None), (None, MyTemplate)],
    ids=["plain", "passed-globals", "template-class"],
)
def test_from_string_returns_what_jinja_returns_on_a_miss_and_on_a_hit(
    restartable: Callable[[], TieredBytecodeCache],
    globals_: dict[str, Any] | None,
    template_class: type[Template] | None,
) -> None:
    """Class, name (None), filename ("<template>"), globals and output are Jinja's, whether
    the code was compiled, read from the tier by the same cache, or by a restarted one."""
    plain = Environment()
    plain.globals.update(greeting="Hi", site="env")
    expected = describe(plain.from_string(SOURCE, globals_, template_class), **CONTEXT)
    assert expected[1:3] == (None, "<template>")

    first = restartable()
    env = Environment(bytecode_cache=first)
    env.globals.update(greeting="Hi", site="env")
    for _ in range(3):
        assert describe(first.from_string(env, SOURCE, globals_, template_class), **CONTEXT) == (
            expected
        )
    assert (first.stats().string_misses, first.stats().string_hits) == (1, 2)

    again = restartable()
    env = Environment(bytecode_cache=again)
    env.globals.update(greeting="Hi", site="env")
    assert describe(again.from_string(env, SOURCE, globals_, template_class), **CONTEXT) == (
        expected
    )
    assert (again.stats().string_hits, again.stats().string_misses) == (1, 0)


def test_passed_globals_shadow_the_environment_s_and_stay_live_on_a_hit(tmp_path: Path) -> None:
    """make_globals semantics on a hit: passed globals win over the environment's, and a
    global added to the environment later is seen, as with Jinja's own templates."""
    cache = make_cache([MemoryTier(), FileSystemTier(tmp_path)], string_admission=1)
    env, plain = Environment(bytecode_cache=cache), Environment()
    source = "{{ a }}-{{ b }}-{{ late }}"
    for _ in range(2):  # a miss, then a memory hit
        ours = cache.from_string(env, source, {"a": "passed"})
        theirs = plain.from_string(source, {"a": "passed"})
        for e in (env, plain):
            e.globals.update(a="env", b="env")
        assert ours.render() == theirs.render() == "passed-env-"
        for e in (env, plain):
            e.globals["late"] = "late"
        assert ours.render() == theirs.render() == "passed-env-late"
        for e in (env, plain):
            for name in ("a", "b", "late"):
                del e.globals[name]
    assert cache.stats().string_hits == 1


def test_the_environment_s_template_class_is_used_when_none_is_passed() -> None:
    """An environment's own template_class is honoured on a miss and on a hit."""
    cache = make_cache([MemoryTier()], string_admission=1)
    env = Environment(bytecode_cache=cache)
    env.template_class = MyTemplate
    assert [type(cache.from_string(env, "{{ 1 }}")) for _ in range(2)] == [MyTemplate] * 2
    assert cache.stats().string_hits == 1


# -- strings that do not compile ----------------------------------------------------------

BROKEN = [
    "{% if %}yes{% endif %}",
    "line one\n{{ x | }}",
    "{% for x in items %}\nno end\n",
    "{{ x|no_such_filter }}",
    "a\nb\n{% endblock %}",
    "{{ 'unclosed }}",
]


@pytest.mark.parametrize("source", BROKEN)
def test_a_string_that_does_not_compile_raises_as_jinja_every_time_and_stores_nothing(
    source: str, tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """TemplateSyntaxError of the same class, message and line as Jinja's, on every try,
    and not a byte in any tier, even with string_admission=1."""
    with pytest.raises(TemplateSyntaxError) as jinja:
        Environment().from_string(source)
    memory = MemoryTier()
    cache = make_cache(
        [
            memory,
            FileSystemTier(tmp_path),
            MemcachedTier(memcached.address, prefix=mc_prefix, **GENEROUS),
        ],
        string_admission=1,
    )
    env = Environment(bytecode_cache=cache)
    for _ in range(3):
        with pytest.raises(TemplateSyntaxError) as ours:
            cache.from_string(env, source)
        assert (type(ours.value), str(ours.value), ours.value.lineno) == (
            type(jinja.value),
            str(jinja.value),
            jinja.value.lineno,
        )
    stats = cache.stats()
    assert (stats.string_lookups, stats.string_misses, stats.string_compiles) == (3, 3, 0)
    assert stats.strings_not_admitted == 0
    assert [t.writes for t in stats.tiers] == [0, 0, 0]
    assert len(memory) == 0 and entries(tmp_path) == []
    assert [k for k in memcached.keys() if mc_prefix in k and "-s" in k] == []


# -- admission ----------------------------------------------------------------------------


def test_one_off_strings_write_nothing_to_any_tier(tmp_path: Path) -> None:
    """Strings seen once are compiled, counted as not admitted, and stored nowhere."""
    memory = MemoryTier()
    cache = make_cache([memory, FileSystemTier(tmp_path)])
    env = Environment(bytecode_cache=cache)
    for i in range(20):
        assert cache.from_string(env, f"{{{{ x }}}} #{i}").render(x=i) == f"{i} #{i}"
    stats = cache.stats()
    assert (stats.string_misses, stats.strings_not_admitted, stats.string_compiles) == (20, 20, 0)
    assert len(memory) == 0 and entries(tmp_path) == []


@pytest.mark.parametrize("admission", [1, 2, 3])
def test_a_string_is_stored_at_its_admission_th_sighting_and_hits_after(
    admission: int, tmp_path: Path
) -> None:
    """string_admission=n: the first n-1 sightings compile and store nothing, the n-th
    compiles and stores once, every later one is a memory hit."""
    memory = MemoryTier()
    cache = make_cache([memory, FileSystemTier(tmp_path)], string_admission=admission)
    env = Environment(bytecode_cache=cache)
    for sighting in range(1, admission + 3):
        assert cache.from_string(env, "{{ x + 1 }}").render(x=1) == "2"
        stored = sighting >= admission
        assert (len(memory), len(entries(tmp_path))) == ((1, 1) if stored else (0, 0))
    stats = cache.stats()
    assert stats.strings_not_admitted == admission - 1
    assert (stats.string_misses, stats.string_compiles, stats.string_hits) == (admission, 1, 2)


def test_a_string_another_cache_stored_is_a_hit_at_first_sighting(tmp_path: Path) -> None:
    """Admission is about what this process compiles: a string already in the filesystem
    tier (written by another process) is loaded at once, never compiled."""
    writer = make_cache([FileSystemTier(tmp_path)], string_admission=1)
    writer.from_string(Environment(bytecode_cache=writer), SOURCE)
    reader = make_cache([MemoryTier(), FileSystemTier(tmp_path)])  # admission 2
    env = Environment(bytecode_cache=reader)
    expected = Environment().from_string(SOURCE).render(**CONTEXT)
    assert reader.from_string(env, SOURCE).render(**CONTEXT) == expected
    stats = reader.stats()
    assert (stats.string_hits, stats.string_misses, stats.strings_not_admitted) == (1, 0, 0)
    assert (stats.tiers[1].hits, stats.tiers[0].promotions) == (1, 1)


def test_many_one_off_strings_keep_the_tiers_empty_and_the_sightings_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten times more distinct one-off strings than the sightings bound: no tier grows and
    the count of sightings never exceeds its bound (shrunk here to keep the test short)."""
    monkeypatch.setattr(tiered_bccache.admission, "MAX_SIGHTINGS", 40)
    memory = MemoryTier()
    cache = make_cache([memory, FileSystemTier(tmp_path)])
    env = Environment(bytecode_cache=cache)
    for i in range(400):
        cache.from_string(env, f"{{{{ {i} }}}}")
        assert len(cache._sightings) <= 40
    assert len(memory) == 0 and entries(tmp_path) == []
    assert cache.stats().strings_not_admitted == 400


# -- cache_from_string -------------------------------------------------------------------


def test_cache_from_string_sends_environment_from_string_through_the_cache() -> None:
    """After cache_from_string, env.from_string is the cache's: counted, stored, hit, and
    the same templates as Jinja's; the environment is still an instance of its class."""
    cache = make_cache([MemoryTier()], string_admission=1)
    env = Environment(bytecode_cache=cache)
    env.globals["site"] = "s"
    cache_from_string(env)
    assert isinstance(env, Environment)
    plain = Environment()
    plain.globals["site"] = "s"
    expected = describe(plain.from_string(SOURCE, {"greeting": "Yo"}), **CONTEXT)
    for _ in range(3):
        assert describe(env.from_string(SOURCE, {"greeting": "Yo"}), **CONTEXT) == expected
    stats = cache.stats()
    assert (stats.string_lookups, stats.string_hits) == (3, 2)


def test_cache_from_string_leaves_the_fingerprint_alone(tmp_path: Path) -> None:
    """The subclass cache_from_string installs is invisible to keys: strings stored
    through cache.from_string on the plain environment hit through env.from_string."""
    cache = make_cache([FileSystemTier(tmp_path)], string_admission=1)
    env = Environment(bytecode_cache=cache)
    before = cache.fingerprint(env)
    cache.from_string(env, SOURCE)
    cache_from_string(env)
    assert cache.fingerprint(env) == before
    assert cache.fingerprint(Environment(bytecode_cache=cache)) == before
    env.from_string(SOURCE)
    assert cache.stats().string_hits == 1


def test_a_sandboxed_environment_still_refuses_unsafe_attributes_on_a_hit(
    tmp_path: Path,
) -> None:
    """SecurityError for an unsafe attribute, from a compiled string and from one loaded
    from memory and from disk; the sandbox is kept after cache_from_string."""
    source = "{{ x.__class__.__mro__ }}"
    for cache in (
        make_cache([MemoryTier(), FileSystemTier(tmp_path)], string_admission=1),
        make_cache([FileSystemTier(tmp_path)]),  # a restart: hit at first sighting
    ):
        env = SandboxedEnvironment(bytecode_cache=cache)
        cache_from_string(env)
        assert isinstance(env, SandboxedEnvironment)
        for _ in range(2):
            template = env.from_string(source)
            with pytest.raises(SecurityError, match="__class__"):
                template.render(x="")
        assert cache.stats().string_hits >= 1


def test_code_a_plain_environment_folded_is_never_served_to_a_sandboxed_one(
    tmp_path: Path,
) -> None:
    """A plain environment folds ''.__class__.__name__ into the text "str" at compile
    time; a sandboxed environment sharing the cache gets its own code, which refuses."""
    cache = make_cache([MemoryTier(), FileSystemTier(tmp_path)], string_admission=1)
    source = "{{ ''.__class__.__name__ }}"
    plain = Environment(bytecode_cache=cache)
    assert [cache.from_string(plain, source).render() for _ in range(2)] == ["str", "str"]
    sandboxed = SandboxedEnvironment(bytecode_cache=cache)
    cache_from_string(sandboxed)
    for _ in range(2):
        with pytest.raises(SecurityError):
            sandboxed.from_string(source).render()


async def numbers() -> AsyncIterator[int]:
    for i in range(3):
        await asyncio.sleep(0)
        yield i


def test_an_async_environment_renders_cached_strings_with_render_async(tmp_path: Path) -> None:
    """enable_async=True: a cached string renders with render_async (async iterables,
    awaitables) as Jinja's does, on a miss and on hits; sync and async code never mix."""
    source = "{% for i in items %}{{ i }}{% endfor %}|{{ value() }}"
    cache = make_cache([MemoryTier(), FileSystemTier(tmp_path)], string_admission=1)

    async def value() -> str:
        return "awaited"

    def run(env: Environment) -> str:
        return asyncio.run(env.from_string(source).render_async(items=numbers(), value=value))

    expected = run(Environment(enable_async=True))
    assert expected == "012|awaited"
    sync = Environment(bytecode_cache=cache)
    cache_from_string(sync)
    assert sync.from_string(source).render(items=[7], value=lambda: "v") == "7|v"
    for _ in range(3):  # a fresh environment each time, as a task runner makes them
        env = Environment(enable_async=True, bytecode_cache=cache)
        cache_from_string(env)
        assert run(env) == expected
    restarted = make_cache([FileSystemTier(tmp_path)])
    env = Environment(enable_async=True, bytecode_cache=restarted)
    cache_from_string(env)
    assert run(env) == expected
    assert restarted.stats().string_hits == 1
    assert cache.stats().string_hits == 2


def test_an_overlay_keeps_the_cached_from_string_and_gets_code_for_its_own_settings() -> None:
    """env.overlay(autoescape=True) goes through the cache too, and escapes: the parent's
    unescaped code for the same string is never served to it."""
    cache = make_cache([MemoryTier()], string_admission=1)
    env = Environment(bytecode_cache=cache)
    cache_from_string(env)
    source = "{{ html }}"
    assert [env.from_string(source).render(html="<b>") for _ in range(2)] == ["<b>"] * 2
    overlay = env.overlay(autoescape=True)
    expected = Environment().overlay(autoescape=True).from_string(source).render(html="<b>")
    assert expected == "&lt;b&gt;"
    lookups = cache.stats().string_lookups
    assert [overlay.from_string(source).render(html="<b>") for _ in range(2)] == [expected] * 2
    assert cache.stats().string_lookups == lookups + 2


def test_a_native_environment_gets_native_templates_and_its_own_code() -> None:
    """NativeEnvironment through the same cache as a plain one: its template class and
    code generator are kept apart, so it renders 3 where the plain one renders '3'."""
    cache = make_cache([MemoryTier()], string_admission=1)
    plain, native = Environment(bytecode_cache=cache), NativeEnvironment(bytecode_cache=cache)
    for env in (plain, native):
        cache_from_string(env)
    for _ in range(2):
        assert plain.from_string("{{ 1 + 2 }}").render() == "3"
        template = native.from_string("{{ 1 + 2 }}")
        assert isinstance(template, NativeTemplate) and template.render() == 3
    assert cache.stats().string_hits == 2


@pytest.mark.parametrize("how", ["returned", "uncache_from_string"])
def test_undoing_cache_from_string_leaves_the_cache_untouched(how: str) -> None:
    """After undo, env.from_string is Jinja's: its class is back and the cache's
    counters do not move; undoing twice is harmless."""
    cache = make_cache([MemoryTier()], string_admission=1)
    env = Environment(bytecode_cache=cache)
    undo = cache_from_string(env)
    env.from_string("{{ 1 }}")
    before = cache.stats()
    for _ in range(2):
        undo() if how == "returned" else uncache_from_string(env)
    assert type(env) is Environment
    assert env.from_string("{{ 1 }}").render() == "1"
    assert env.from_string("{{ 2 }}").render() == "2"
    assert cache.stats() == before


@pytest.mark.parametrize(
    "bytecode_cache",
    [None, "jinja-filesystem"],
    ids=["no-cache", "jinja-FileSystemBytecodeCache"],
)
def test_cache_from_string_refuses_an_environment_without_our_cache(
    bytecode_cache: str | None, tmp_path: Path
) -> None:
    """ConfigurationError, naming bytecode_cache, when it is not a TieredBytecodeCache;
    the environment is left as it was."""
    env = Environment(
        bytecode_cache=FileSystemBytecodeCache(str(tmp_path)) if bytecode_cache else None
    )
    with pytest.raises(ConfigurationError, match="bytecode_cache"):
        cache_from_string(env)
    assert type(env) is Environment


def test_cache_from_string_twice_is_one_subclass_and_one_lookup() -> None:
    """Calling cache_from_string twice changes nothing more: one lookup per from_string,
    and one undo gives back the original class."""
    cache = make_cache([MemoryTier()])
    env = SandboxedEnvironment(bytecode_cache=cache)
    cache_from_string(env)
    cls = type(env)
    undo = cache_from_string(env)
    assert type(env) is cls
    env.from_string("{{ 1 }}")
    assert cache.stats().string_lookups == 1
    undo()
    assert type(env) is SandboxedEnvironment


# -- stats and traces ---------------------------------------------------------------------

NAMED = {"page.html": "{% for i in items %}{{ i }}{% endfor %}", "tiny.txt": "{{ x }}"}


def test_string_lookups_are_counted_apart_from_named_templates() -> None:
    """Strings move only the string_* counters; named templates only the others; the
    tier counters hold both."""
    cache = make_cache([MemoryTier()])
    env = Environment(loader=DictLoader(NAMED), bytecode_cache=cache, cache_size=0)
    for _ in range(3):
        for name in NAMED:
            env.get_template(name)
    named = cache.stats()
    assert (named.lookups, named.hits, named.misses, named.compiles) == (6, 4, 2, 2)
    assert named.string_lookups == 0
    for _ in range(3):
        for source in ("{{ a }}", "{{ b }}"):
            cache.from_string(env, source)
    cache.from_string(env, "{{ once }}")
    both = cache.stats()
    assert (both.lookups, both.hits, both.misses, both.compiles) == (6, 4, 2, 2)
    assert (both.string_lookups, both.string_hits, both.string_misses) == (7, 2, 5)
    assert (both.string_compiles, both.strings_not_admitted) == (2, 3)
    assert both.tiers[0].hits == named.hits + both.string_hits
    assert both.tiers[0].writes == named.compiles + both.string_compiles
    assert both.as_dict()["string_hits"] == 2


def test_a_trace_holds_named_and_string_keys_and_feeds_hit_curves(tmp_path: Path) -> None:
    """start_trace records string lookups beside named ones, under a key carrying the
    source's SHA-1, and tune.hit_curves reads the mixed trace."""
    path = tmp_path / "trace.txt"
    cache = make_cache([MemoryTier(), FileSystemTier(tmp_path / "fs")], string_admission=1)
    env = Environment(loader=DictLoader(NAMED), bytecode_cache=cache, cache_size=0)
    cache.start_trace(path)
    for _ in range(3):
        env.get_template("page.html")
        cache.from_string(env, SOURCE)
    cache.stop_trace()
    records = list(read_trace(path))
    assert len(records) == 6
    keys = {record.key for record in records}
    string_keys = {key for key in keys if source_digest(SOURCE) in key}
    assert len(keys) == 2 and len(string_keys) == 1
    assert all(record.size > 0 for record in records)
    curves = hit_curves(read_trace(path))
    assert (curves.accesses, curves.distinct_keys, curves.best_hits) == (6, 2, 4)
    assert curves.entry_hits == (0, 4)  # alternating keys: one entry never hits


def test_a_trace_records_string_lookups_not_yet_admitted(tmp_path: Path) -> None:
    """Every string lookup is one trace line, a string compiled but not stored yet
    included (with its size unknown, 0), so tune sees one-off strings too."""
    path = tmp_path / "trace.txt"
    cache = make_cache([MemoryTier(), FileSystemTier(tmp_path / "fs")])  # admission 2
    env = Environment(bytecode_cache=cache)
    cache.start_trace(path)
    for _ in range(3):
        cache.from_string(env, SOURCE)
    cache.from_string(env, SOURCE + "<!-- once -->")
    cache.stop_trace()
    sizes = [record.size for record in read_trace(path)]
    assert len(sizes) == 4
    assert sizes[0] == 0 and sizes[1] > 0 and sizes[2] == sizes[1] and sizes[3] == 0


@pytest.mark.parametrize("value", [0, -1, None, True, 1.5, "2"])
def test_string_admission_must_be_a_positive_integer(value: object) -> None:
    """A wrong string_admission is refused at construction, naming the argument."""
    with pytest.raises(ConfigurationError, match="string_admission must be a positive integer"):
        TieredBytecodeCache([MemoryTier()], string_admission=value)  # type: ignore[arg-type]


# -- an Ansible-like run: a fresh sandboxed environment per task --------------------------

TASK_STRINGS = (
    "{{ item.name }} is {{ item.state | default('present') }}",
    "{% if os_family == 'Debian' %}apt{% else %}dnf{% endif %} install {{ packages|join(' ') }}",
    "{{ (port | int) + task }}",
    "{{ packages | map('upper') | list }}",
    "{% for k, v in facts|dictsort %}{{ k }}={{ v }};{% endfor %}",
)
TASKS = 30


def task_vars(task: int) -> dict[str, Any]:
    return {
        "task": task,
        "item": {"name": f"pkg{task}"} if task % 3 else {"name": "svc", "state": "absent"},
        "os_family": "Debian" if task % 2 else "RedHat",
        "packages": ["vim", f"lib{task}"],
        "port": "8000",
        "facts": {"cpus": task % 4, "arch": "x86_64"},
    }


def ansible_like_run(directory: str) -> dict[str, Any]:
    """The loop an Ansible-like tool runs: a new SandboxedEnvironment per task, every
    string through cache_from_string, one cache for the process. Returns the outputs and
    the string counters (also run in a subprocess, which prints them as JSON)."""
    cache = make_cache([MemoryTier(), FileSystemTier(directory)])
    outputs = []
    for task in range(TASKS):
        env = SandboxedEnvironment(bytecode_cache=cache)
        cache_from_string(env)
        outputs += [env.from_string(s).render(task_vars(task)) for s in TASK_STRINGS]
    stats = cache.stats()
    return {
        "outputs": outputs,
        "lookups": stats.string_lookups,
        "hits": stats.string_hits,
        "misses": stats.string_misses,
        "compiles": stats.string_compiles,
    }


def test_an_ansible_like_loop_compiles_each_string_twice_and_a_second_process_never(
    tmp_path: Path,
) -> None:
    """30 tasks x 5 strings, each task in a fresh SandboxedEnvironment: outputs are plain
    Jinja's, each distinct string is compiled string_admission (2) times and stored once;
    a second process over the same directory compiles nothing at all."""
    expected = [
        SandboxedEnvironment().from_string(s).render(task_vars(task))
        for task in range(TASKS)
        for s in TASK_STRINGS
    ]
    first = ansible_like_run(str(tmp_path))
    assert first["outputs"] == expected
    distinct = len(TASK_STRINGS)
    assert first["lookups"] == TASKS * distinct
    assert (first["misses"], first["compiles"]) == (2 * distinct, distinct)
    assert len(entries(tmp_path)) == distinct

    script = (
        "import json, sys\n"
        "from tests.test_strings import ansible_like_run\n"
        "print(json.dumps(ansible_like_run(sys.argv[1])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert second["outputs"] == expected
    assert (second["misses"], second["compiles"]) == (0, 0)
    assert second["hits"] == second["lookups"] == TASKS * distinct


def test_compile_expression_is_cached_and_evaluates_as_jinja(tmp_path: Path) -> None:
    """Jinja's compile_expression (Ansible's conditionals) compiles a parsed tree: keyed
    by the tree, it is a hit in a new environment and in a new process, and evaluates as
    plain Jinja does."""
    expression = "x > 3 and y|upper == 'A' and not (z is defined)"
    plain = Environment().compile_expression(expression)
    for round_ in range(2):
        cache = TieredBytecodeCache(
            [MemoryTier(), FileSystemTier(tmp_path)], secret=SECRET, string_admission=1
        )
        for _ in range(2):
            env = Environment(bytecode_cache=cache)
            cache_from_string(env)
            compiled = env.compile_expression(expression)
            for args in ({"x": 4, "y": "a"}, {"x": 1, "y": "a"}, {"x": 5, "y": "a", "z": 1}):
                assert compiled(**args) == plain(**args)
        stats = cache.stats()
        assert stats.string_compiles == (1 if round_ == 0 else 0)
        assert stats.string_hits == (1 if round_ == 0 else 2)
