"""For every template string, in every environment configuration, through every tier and
across a restart: what the cache gives renders exactly as Jinja's own ``from_string``.

The strings come from a small grammar of Jinja fragments, valid and broken (unclosed
tags, unknown filters, ``{% if %}``, stray ends), mixed with random text made of the
characters Jinja's lexer cares about. The environments differ in what changes generated
code: autoescape, whitespace control, delimiters, the sandbox, and a filter the
optimizer folds into constants. The right answer is whatever a cache-less environment
with the same settings does: the same output, or the same exception and message.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jinja2 import Environment, TemplateSyntaxError
from jinja2.bccache import BytecodeCache
from jinja2.sandbox import SandboxedEnvironment

from tests.conftest import SECRET, MemcachedServer
from tiered_bccache import (
    FileSystemTier,
    MemcachedTier,
    MemoryTier,
    TieredBytecodeCache,
    cache_from_string,
)

#: Generous timeouts: these tests count hits and misses exactly, and the production
#: defaults (50 ms, the breaker opening on the first timeout) would count a stall of a
#: loaded CI machine as a tier error.
GENEROUS: dict[str, Any] = {"connect_timeout": 5.0, "timeout": 5.0}


def shout(value: object) -> str:
    """A filter the optimizer runs on constants at compile time."""
    return f"{value}!".upper()


def _default(cache: BytecodeCache | None) -> Environment:
    return Environment(bytecode_cache=cache)


def _autoescape(cache: BytecodeCache | None) -> Environment:
    return Environment(bytecode_cache=cache, autoescape=True)


def _trim(cache: BytecodeCache | None) -> Environment:
    return Environment(bytecode_cache=cache, trim_blocks=True, lstrip_blocks=True)


def _brackets(cache: BytecodeCache | None) -> Environment:
    return Environment(bytecode_cache=cache, variable_start_string="[[", variable_end_string="]]")


def _sandboxed(cache: BytecodeCache | None) -> Environment:
    return SandboxedEnvironment(bytecode_cache=cache)


def _folded_filter(cache: BytecodeCache | None) -> Environment:
    env = Environment(bytecode_cache=cache)
    env.filters["shout"] = shout
    return env


CONFIGS: dict[str, Callable[[BytecodeCache | None], Environment]] = {
    "default": _default,
    "autoescape": _autoescape,
    "trim_blocks": _trim,
    "brackets": _brackets,
    "sandboxed": _sandboxed,
    "folded_filter": _folded_filter,
}
#: The cache-less reference environments, one per configuration.
PLAIN = {name: make(None) for name, make in CONFIGS.items()}

VALID = [
    "{{ x }}",
    "{{ x|upper }}",
    "{{ html }}",
    "{{ html|safe }}",
    "[[ x ]]",
    "[[ html ]]",
    "{% if x %}yes{% else %}no{% endif %}",
    "{% for i in items %}{{ i }},{% endfor %}\n",
    "  {% if items %}\n  in\n  {% endif %}\n",
    "{{ 'abc'|shout }}",
    "{{ x|shout }}",
    "{{ x.__class__.__name__ }}",
    "{{ ''.__class__.__name__ }}",
    "{{ items|length + 1 }}",
    "{{ 1 + 2 * 3 }}",
    "{# a comment #}",
    "{% set y = 3 %}{{ y * 2 }}",
    "{% raw %}{{ raw }}{% endraw %}",
    "{{ missing }}",
    "{{ missing.attr }}",
    "{{ x + 1 }}",
    "{{ '<i>' ~ x }}",
    "{%- if true -%}  trim  {%- endif -%}",
]
BROKEN = [
    "{% if %}",
    "{{ x",
    "{% for x in %}",
    "{{ x|no_such_filter }}",
    "{% endif %}",
    "{{ x | }}",
    "{% block %}",
    "[[ x",
    "{{ 1 + }}",
    "{% if x %}unclosed",
    "{% for i in items %}",
    "{{ x is no_such_test }}",
]
TEXT = st.text(alphabet="ab <>&{}%#[]-\n", max_size=8)
#: Valid fragments weigh three times as much as the others, so that about half the
#: strings compile (random text is often a broken tag too).
SOURCES = st.lists(
    st.one_of(*[st.sampled_from(VALID)] * 3, TEXT, st.sampled_from(BROKEN)), max_size=5
).map("".join)
CONTEXT: dict[str, Any] = {"x": "<x>", "html": "<b>&</b>", "items": [1, 2]}


def outcome(env: Environment, source: str) -> tuple[Any, ...]:
    """What ``env.from_string(source).render(...)`` gives: the output, or the exception."""
    try:
        return ("ok", env.from_string(source).render(CONTEXT))
    except Exception as exc:  # any exception, to compare with Jinja's
        return ("raised", type(exc), str(exc), getattr(exc, "lineno", None))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory for the module; each example makes its own subdirectories."""
    path = tmp_path_factory.mktemp("strings")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tier_factories(base: Path, server: MemcachedServer) -> dict[str, Callable[[], Any]]:
    """Per tier kind, a function making that tier over this example's directory or
    memcached prefix: call it twice for a process and its restart."""
    directory, prefix = base / uuid.uuid4().hex, "p" + uuid.uuid4().hex[:12]
    return {
        "memory": MemoryTier,
        "filesystem": lambda: FileSystemTier(directory),
        "memcached": lambda: MemcachedTier(server.address, prefix=prefix, **GENEROUS),
    }


_PROFILE = settings()  # the profile tests/conftest.py loaded ("ci" unless HYPOTHESIS_PROFILE)
_THOROUGH = _PROFILE.max_examples > 100


@pytest.mark.timeout(0 if _THOROUGH else 120)
@settings(_PROFILE)
@given(source=SOURCES, admission=st.sampled_from([1, 2]))
def test_a_cached_string_renders_as_jinja_s_in_every_tier_and_after_a_restart(
    source: str, admission: int, base_dir: Path, memcached: MemcachedServer
) -> None:
    """Miss, store, hit and restarted hit in memory, filesystem and memcached, in six
    configurations: the same output, or the same exception type and message, as Jinja."""
    event("compiles" if compiles(PLAIN["folded_filter"], source) else "does not compile")
    for config, make_env in CONFIGS.items():
        expected = outcome(PLAIN[config], source)
        # Tiers of their own: configurations alike but for their filters (default and
        # folded_filter) share entries, which would make the counts below another
        # configuration's.
        for kind, make_tier in tier_factories(base_dir, memcached).items():
            cache = TieredBytecodeCache([make_tier()], secret=SECRET, string_admission=admission)
            env = make_env(cache)
            cache_from_string(env)
            for _ in range(admission + 1):  # compiles, then stores, then hits
                got = outcome(env, source)
                assert got == expected, (config, kind, "first process")
            restarted = TieredBytecodeCache([make_tier()], secret=SECRET)
            env = make_env(restarted)
            cache_from_string(env)
            got = outcome(env, source)
            assert got == expected, (config, kind, "restarted")
            stats = cache.stats()
            assert stats.string_hits + stats.string_misses == stats.string_lookups
            if compiles(PLAIN[config], source):
                # Stored at the admission-th sighting and read back after it, here and
                # (but for a memory tier, which a restart empties) after the restart.
                assert (stats.string_compiles, stats.string_hits) == (1, 1), (config, kind)
                shared = kind != "memory"
                assert restarted.stats().string_hits == (1 if shared else 0), (config, kind)
            else:
                assert (stats.string_compiles, stats.string_hits) == (0, 0), (config, kind)
                assert [t.writes for t in stats.tiers] == [0], (config, kind)


def compiles(env: Environment, source: str) -> bool:
    """Whether Jinja compiles ``source`` in ``env`` (rendering may still raise)."""
    try:
        env.from_string(source)
    except TemplateSyntaxError:
        return False
    return True
