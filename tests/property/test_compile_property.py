"""For environments whose application filters are any callables at all (bound builtin
methods, ``operator`` getters, ``lru_cache`` wrappers, closures, under every calling
convention), sharing one cache in any order and again after a restart: every render
through the cache equals Jinja's own render for the same configuration.

The filters of one name differ from environment to environment, and the templates apply
them to constants (which Jinja's optimizer folds at compile time) and to variables. The
filters are pure, so Jinja without a cache is the reference; what they read of the
environment (a global, the autoescape flag) is part of the configuration.
"""

from __future__ import annotations

import functools
import operator
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import (
    DictLoader,
    Environment,
    Template,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2.nodes import EvalContext
from jinja2.runtime import Context

from tests.conftest import SECRET
from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache, cache_from_string

NAMES = ("f", "g")
CONTEXT = {"v": "v<"}

# -- filters ------------------------------------------------------------------------------


def _prefixer(prefix: str) -> Callable[[object], str]:
    def prefixed(value: object) -> str:
        return f"{prefix}{value}"

    return prefixed


def _with_environment(inner: Callable[[Any], Any], environment: Environment, value: Any) -> str:
    return f"{inner(value)}{environment.globals['suffix']}"


def _with_eval_context(inner: Callable[[Any], Any], eval_ctx: EvalContext, value: Any) -> str:
    escaping = "E" if eval_ctx.autoescape else ""
    return f"{inner(value)}{eval_ctx.environment.globals['suffix']}{escaping}"


def _with_context(inner: Callable[[Any], Any], context: Context, value: Any) -> str:
    return f"{inner(value)}{context['suffix']}"


@dataclass(frozen=True)
class FilterSpec:
    """A filter described by data, so that hypothesis shows what it drew: a kind of
    callable, the values it holds, and the calling convention it is passed with."""

    kind: str
    text: str
    number: int
    convention: str

    def build(self) -> Callable[..., Any]:
        """The callable itself: C-level for every kind but ``closure``."""
        inner: Callable[[Any], Any]
        if self.kind == "format":
            inner = (self.text + "{}").format
        elif self.kind == "dict-get":
            inner = {"a": self.text, "b&a": str(self.number), "v<": self.text * 2}.get
        elif self.kind == "join":
            inner = self.text.join
        elif self.kind == "itemgetter":
            inner = operator.itemgetter(slice(self.number % 3, None))
        elif self.kind == "methodcaller":
            inner = operator.methodcaller("replace", "a", self.text)
        elif self.kind == "lru-cache":
            inner = functools.lru_cache(maxsize=16)(_prefixer(self.text))
        else:
            inner = _prefixer(self.text)
        if self.convention == "environment":
            return pass_environment(functools.partial(_with_environment, inner))
        if self.convention == "eval_context":
            return pass_eval_context(functools.partial(_with_eval_context, inner))
        if self.convention == "context":
            return pass_context(functools.partial(_with_context, inner))
        return inner


KINDS = ("format", "dict-get", "join", "itemgetter", "methodcaller", "lru-cache", "closure")
CONVENTIONS = ("none", "environment", "eval_context", "context")
#: Few values. Environment ``i`` shifts what it draws by ``i``, so that even the
#: simplest draw gives each environment values of its own.
TEXTS = ("", "a", "<", "$ ", "&b")


def texts(shift: int) -> st.SearchStrategy[str]:
    return st.integers(0, len(TEXTS) - 1).map(lambda k: TEXTS[(k + shift) % len(TEXTS)])


def filter_specs(
    shift: int, kind: str | None = None, convention: str | None = None
) -> st.SearchStrategy[FilterSpec]:
    """Filters of ``kind`` and ``convention`` (any when None), with values of their own."""
    return st.builds(
        FilterSpec,
        kind=st.sampled_from(KINDS) if kind is None else st.just(kind),
        text=texts(shift),
        number=st.integers(0, 9).map(lambda n: (n + shift) % 10),
        convention=st.sampled_from(CONVENTIONS) if convention is None else st.just(convention),
    )


@dataclass(frozen=True)
class EnvSpec:
    """One environment configuration: a filter for every name, maybe a finalize,
    autoescape, and the global the filters read."""

    filters: Mapping[str, FilterSpec]
    finalize: FilterSpec | None
    autoescape: bool
    suffix: str

    def build(self, templates: Mapping[str, str], cache: TieredBytecodeCache | None) -> Environment:
        """An environment over ``templates`` whose every load (strings too) goes through
        ``cache``, or a cache-less one when ``cache`` is None."""
        env = Environment(
            loader=DictLoader(dict(templates)),
            bytecode_cache=cache,
            cache_size=0,
            autoescape=self.autoescape,
            finalize=self.finalize.build() if self.finalize is not None else None,
        )
        env.filters.update({name: spec.build() for name, spec in self.filters.items()})
        env.globals["suffix"] = self.suffix
        if cache is not None:
            cache_from_string(env)
        return env


@st.composite
def env_specs(draw: st.DrawFn, shapes: Mapping[str, tuple[str, str]], shift: int) -> EnvSpec:
    """An environment whose filter of each name is mostly of the kind and convention
    ``shapes`` gives that name (what a description of the callable cannot tell apart
    from another environment's), with values of its own."""
    autoescape = draw(st.booleans())
    filters = {}
    for name, (kind, convention) in shapes.items():
        alike = draw(st.integers(0, 7)) < 7
        filters[name] = draw(
            filter_specs(shift, kind, convention) if alike else filter_specs(shift)
        )
    # No finalize under autoescape: on a constant Jinja escapes *before* finalize
    # (CodeGenerator._output_child_to_const), at render time *after* it, so Jinja alone
    # renders {{ '<' }} and {{ x }} with x='<' differently whenever finalize adds or
    # rearranges escapable characters (or {{ none }} as 'None' where finalize maps None
    # to ''). Code that must not depend on finalize cannot reproduce the folded order.
    finalize = None if autoescape else draw(st.none() | filter_specs(shift))
    return EnvSpec(filters, finalize, autoescape, draw(texts(shift)))


# -- templates ----------------------------------------------------------------------------

CONSTANTS = st.sampled_from(["'b&a'", "'a'", "'<'", "''"])
FILTER_NAMES = st.sampled_from(NAMES)
#: Filters applied to constants (what the optimizer folds) weigh twice the rest.
ON_CONSTANTS = [
    st.builds("{{{{ {}|{} }}}}".format, CONSTANTS, FILTER_NAMES),
    st.builds("{{{{ {}|{}|{} }}}}".format, CONSTANTS, FILTER_NAMES, FILTER_NAMES),
    st.builds("{{% set k = {}|{} %}}{{{{ k }}}}".format, CONSTANTS, FILTER_NAMES),
]
FRAGMENTS = st.one_of(
    *ON_CONSTANTS,
    *ON_CONSTANTS,
    st.sampled_from(["x", " | ", "<i>"]),
    st.builds("{{{{ v|{} }}}}".format, FILTER_NAMES),
    st.builds("{{{{ ({} ~ v)|{} }}}}".format, CONSTANTS, FILTER_NAMES),
    st.builds("{{{{ {} }}}}".format, CONSTANTS),
)
TEMPLATES = st.lists(
    st.lists(FRAGMENTS, min_size=1, max_size=4).map("".join), min_size=1, max_size=2
)


def outcome(render: Callable[[], str]) -> str:
    """The output, or the type of the exception raised (to compare with Jinja's)."""
    try:
        return render()
    except Exception as exc:  # any exception, to compare with Jinja's
        return f"raised {type(exc).__name__}"


def outputs(env: Environment, templates: Mapping[str, str]) -> dict[str, str]:
    """What ``env`` renders of every template, loaded by name and as a string."""
    out = {}
    for name, source in templates.items():
        out[name] = outcome(functools.partial(_render, env.get_template, name))
        out[f"string {name}"] = outcome(functools.partial(_render, env.from_string, source))
    return out


def _render(load: Callable[[str], Template], what: str) -> str:
    return load(what).render(CONTEXT)


def two_tiers(directory: Path) -> TieredBytecodeCache:
    """Memory over a directory; strings stored at first sight, so that every string one
    environment compiles is there for the next."""
    return TieredBytecodeCache(
        [MemoryTier(), FileSystemTier(directory)], secret=SECRET, string_admission=1
    )


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory for the module; each example makes its own subdirectory."""
    path = tmp_path_factory.mktemp("compile")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[EnvSpec], dict[str, str], list[int], list[int]]:
    """Two or three environments, their templates, and the order each process (the
    first, and the restarted one) takes them in."""
    kinds, conventions = st.sampled_from(KINDS), st.sampled_from(CONVENTIONS)
    shapes = {name: (draw(kinds), draw(conventions)) for name in NAMES}
    specs = [draw(env_specs(shapes, shift)) for shift in range(draw(st.integers(2, 3)))]
    sources = draw(TEMPLATES)
    templates = {f"t{i}.html": source for i, source in enumerate(sources)}
    order = list(range(len(specs)))
    return specs, templates, draw(st.permutations(order)), draw(st.permutations(order))


_PROFILE = settings()  # the profile tests/conftest.py loaded ("ci" unless HYPOTHESIS_PROFILE)
_THOROUGH = _PROFILE.max_examples > 100


@pytest.mark.timeout(0 if _THOROUGH else 120)
@settings(_PROFILE)
@given(scenario=scenarios())
def test_shared_cache_renders_as_jinja_for_any_application_filters(
    scenario: tuple[list[EnvSpec], dict[str, str], Sequence[int], Sequence[int]],
    base_dir: Path,
) -> None:
    """Envs with any pure filters of one name, in any order and after a restart, render as Jinja."""
    specs, templates, order, restarted_order = scenario
    want = [outputs(spec.build(templates, None), templates) for spec in specs]
    directory = base_dir / uuid.uuid4().hex
    try:
        for process, each in (("first process", order), ("restarted", restarted_order)):
            with two_tiers(directory) as cache:
                for i in each:
                    got = outputs(specs[i].build(templates, cache), templates)
                    assert got == want[i], (process, i)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
