"""Never the wrong code, whatever the application's callables are: environments sharing a
cache (in one process, or two processes over one directory) render exactly what Jinja
renders without a cache, for named templates and for strings, when filters, tests,
finalize, autoescape or the undefined class differ between them in ways no description
of a callable can see (C-level callables: bound builtin methods, ``lru_cache`` wrappers,
``operator`` getters; state read through the environment).

The templates apply the callables to constants, because that is where Jinja's optimizer
calls them at compile time and bakes what they return into the code. The one documented
difference from Jinja is pinned too: with the cache, a filter applied to constants runs at
render time, so only an impure filter can tell.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jinja2 import (
    ChainableUndefined,
    DebugUndefined,
    DictLoader,
    Environment,
    StrictUndefined,
    Template,
    Undefined,
    nodes,
    pass_environment,
    pass_eval_context,
)
from jinja2.nodes import EvalContext

from tests.conftest import SECRET
from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache, cache_from_string

ROOT = Path(__file__).resolve().parents[1]

# -- the application's callables ----------------------------------------------------------

LABELS_DE = {"de": "Deutsch", "fr": "Französisch"}
LABELS_FR = {"de": "allemand", "fr": "français"}


def money_in(symbol: str) -> Callable[[float], str]:
    """A ``money`` filter behind ``functools.lru_cache``: a C-level wrapper, one name and
    one code object for every symbol."""

    @functools.lru_cache(maxsize=64)
    def money(value: float) -> str:
        return f"{symbol}{value:,.2f}"

    return money


class Labels(dict[str, str]):
    """A dict subclass whose method reads the dict's items, not attributes."""

    def label(self, key: str) -> str:
        return self.get(key, key).upper()


class Currency:
    """A class whose classmethod reads a class attribute a subclass overrides."""

    symbol = "$"

    @classmethod
    def format(cls, value: float) -> str:
        return f"{cls.symbol}{value:,.2f}"


class Euro(Currency):
    symbol = "€"


@pass_environment
def site_label(environment: Environment, value: object) -> str:
    """A filter reading the environment's globals (which do not split the cache)."""
    return f"{environment.globals['site']}:{value}"


@pass_eval_context
def site_label_in_eval_context(eval_ctx: EvalContext, value: object) -> str:
    """The same through the evaluation context."""
    return f"{eval_ctx.environment.globals['site']}:{value}"


@pass_environment
def finalize_with_site_mark(environment: Environment, value: object) -> object:
    """A finalize reading the environment's globals."""
    return f"{environment.globals['mark']}{value}"


def tick_from(start: int) -> Callable[[object], int]:
    """An impure filter: the next number of its own counter, whatever it is applied to."""
    return functools.partial(next, itertools.count(start))


# -- the table of pairs -------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One environment configuration of a pair; builds cached and cache-less twins."""

    options: Mapping[str, Any] = field(default_factory=dict)
    filters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    tests: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    globals: Mapping[str, Any] = field(default_factory=dict)

    def build(self, templates: Mapping[str, str], cache: TieredBytecodeCache | None) -> Environment:
        """An environment over ``templates`` whose every load goes through ``cache``
        (Jinja's template cache off), strings too; cache-less when ``cache`` is None."""
        env = Environment(
            loader=DictLoader(dict(templates)), bytecode_cache=cache, cache_size=0, **self.options
        )
        env.filters.update(self.filters)
        env.tests.update(self.tests)
        env.globals.update(self.globals)
        if cache is not None:
            cache_from_string(env)
        return env


@dataclass(frozen=True)
class Case:
    """Two environments differing only in what Jinja calls at compile time, and the
    templates (applying it to constants) that both render."""

    templates: Mapping[str, str]
    a: Side
    b: Side
    context: Mapping[str, Any] = field(default_factory=dict)


def differing_filter(name: str, a: Callable[..., Any], b: Callable[..., Any], source: str) -> Case:
    """A pair differing in the filter ``name`` only."""
    return Case({"t.html": source}, Side(filters={name: a}), Side(filters={name: b}))


def differing_test(name: str, a: Callable[..., Any], b: Callable[..., Any], source: str) -> Case:
    """A pair differing in the test ``name`` only."""
    return Case({"t.html": source}, Side(tests={name: a}), Side(tests={name: b}))


def differing_options(
    a: Mapping[str, Any], b: Mapping[str, Any], templates: Mapping[str, str]
) -> Case:
    """A pair differing in Environment options only."""
    return Case(templates, Side(options=a), Side(options=b), {"v": "<b>"})


XSS = {"x.html": "{{ '<script>' }}|{{ v }}"}
UNDEFINED_TEMPLATES = {
    "missing.html": "[{{ {}.missing }}]",
    "default.html": "[{{ ().x|default('d') }}]",
    "chained.html": "[{{ {}.a.b }}]",
    "index.html": "[{{ [1][5] }}]",
}
UNDEFINED_CLASSES: dict[str, type[Undefined]] = {
    "Undefined": Undefined,
    "StrictUndefined": StrictUndefined,
    "DebugUndefined": DebugUndefined,
    "ChainableUndefined": ChainableUndefined,
}

CASES: dict[str, Case] = {
    "bound-str-format-filters": differing_filter(
        "money", "${:,.2f}".format, "€{:,.2f}".format, "{{ 1234.5|money }}"
    ),
    "bound-dict-get-filters": differing_filter(
        "label", LABELS_DE.get, LABELS_FR.get, "{{ 'de'|label }}"
    ),
    "bound-str-join-filters": differing_filter(
        "joined", ", ".join, " / ".join, "{{ ['a', 'b']|joined }}"
    ),
    "bound-pattern-search-tests": differing_test(
        "matching",
        re.compile("a").search,
        re.compile("z").search,
        "{{ 'yes' if 'abc' is matching else 'no' }}",
    ),
    "bound-frozenset-contains-tests": differing_test(
        "known",
        frozenset({"de"}).__contains__,
        frozenset({"fr"}).__contains__,
        "{% if 'de' is known %}known{% else %}unknown{% endif %}",
    ),
    "lru-cache-wrappers-of-one-name": differing_filter(
        "money", money_in("$"), money_in("€"), "{{ 1234.5|money }}"
    ),
    "operator-itemgetters": differing_filter(
        "pick", operator.itemgetter(0), operator.itemgetter(1), "{{ 'xy'|pick }}"
    ),
    "operator-attrgetters": differing_filter(
        "part", operator.attrgetter("real"), operator.attrgetter("imag"), "{{ 3|part }}"
    ),
    "operator-methodcallers": differing_filter(
        "cased",
        operator.methodcaller("upper"),
        operator.methodcaller("title"),
        "{{ 'ab cd'|cased }}",
    ),
    "methods-of-dict-subclass-instances": differing_filter(
        "label",
        Labels(LABELS_DE).label,
        Labels(LABELS_FR).label,
        "{{ 'de'|label }}",
    ),
    "classmethods-of-a-class-and-its-subclass": differing_filter(
        "money", Currency.format, Euro.format, "{{ 1234.5|money }}"
    ),
    "autoescape-pattern-searches": differing_options(
        {"autoescape": re.compile(r"\.html$").search},
        {"autoescape": re.compile(r"\.txt$").search},
        XSS,
    ),
    "autoescape-frozenset-contains": differing_options(
        {"autoescape": frozenset({None, "x.html"}).__contains__},
        {"autoescape": frozenset({"x.txt"}).__contains__},
        XSS,
    ),
    **{
        f"undefined-{a}-and-{b}": differing_options(
            {"undefined": UNDEFINED_CLASSES[a]},
            {"undefined": UNDEFINED_CLASSES[b]},
            UNDEFINED_TEMPLATES,
        )
        for a, b in itertools.combinations(UNDEFINED_CLASSES, 2)
    },
    "pass-environment-filter-reading-globals": Case(
        {"t.html": "{{ 'a'|site }}"},
        Side(filters={"site": site_label}, globals={"site": "one"}),
        Side(filters={"site": site_label}, globals={"site": "two"}),
    ),
    "pass-eval-context-filter-reading-globals": Case(
        {"t.html": "{{ 'a'|site }}"},
        Side(filters={"site": site_label_in_eval_context}, globals={"site": "one"}),
        Side(filters={"site": site_label_in_eval_context}, globals={"site": "two"}),
    ),
    "finalize-bound-str-formats": differing_options(
        {"finalize": "[{}]".format}, {"finalize": "<{}>".format}, {"t.html": "{{ 'a' }}{{ 1 }}"}
    ),
    "finalize-pass-environment-reading-globals": Case(
        {"t.html": "{{ 'a' }}{{ 1 }}"},
        Side(options={"finalize": finalize_with_site_mark}, globals={"mark": "+"}),
        Side(options={"finalize": finalize_with_site_mark}, globals={"mark": "-"}),
    ),
}


# -- rendering and comparing --------------------------------------------------------------


def outcome(render: Callable[[], str]) -> str:
    """The output, or the type of the exception raised (to compare with Jinja's)."""
    try:
        return render()
    except Exception as exc:  # any exception, to compare with Jinja's
        return f"raised {type(exc).__name__}"


def outputs(env: Environment, case: Case) -> dict[str, str]:
    """What ``env`` renders of every template of ``case``, loaded by name and as a string."""
    out = {}
    for name, source in case.templates.items():
        out[name] = outcome(functools.partial(render_named, env, name, case.context))
        out[f"string {name}"] = outcome(functools.partial(render_string, env, source, case.context))
    return out


def render_named(env: Environment, name: str, context: Mapping[str, Any]) -> str:
    return env.get_template(name).render(context)


def render_string(env: Environment, source: str, context: Mapping[str, Any]) -> str:
    return env.from_string(source).render(context)


def two_tiers(directory: Path | str) -> TieredBytecodeCache:
    """Memory over a directory; strings stored at first sight, so that the first
    environment's string code is there for the second."""
    return TieredBytecodeCache(
        [MemoryTier(), FileSystemTier(directory)], secret=SECRET, string_admission=1
    )


def outputs_over(jobs: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Run in another process: for each (case, side, directory), what that side of the
    case renders through a fresh cache over the directory."""
    results = []
    for case_id, side, directory in jobs:
        case = CASES[case_id]
        with two_tiers(directory) as cache:
            results.append(outputs(getattr(case, side).build(case.templates, cache), case))
    return results


def in_another_process(function: str, *args: Any) -> Any:
    """``function(*args)`` of this module run by a new interpreter, its result through
    JSON (lone surrogates survive: JSON escapes them)."""
    code = (
        f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests import test_compiling as module\n"
        "result = getattr(module, sys.argv[1])(*json.loads(sys.argv[2]))\n"
        "sys.stdout.write(json.dumps(result))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, function, json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def differences(side: str, when: str, got: Mapping[str, str], want: Mapping[str, str]) -> list[str]:
    return [
        f"{side} {when}, {key}: {got.get(key)!r}, Jinja renders {want[key]!r}"
        for key in want
        if got.get(key) != want[key]
    ]


@pytest.fixture(scope="module")
def second_process(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """For every case and side: what a second process renders through a fresh cache over
    a directory this process filled by rendering the other side first (one process for
    all the cases: an interpreter costs more than the renders)."""
    base = tmp_path_factory.mktemp("shared")
    jobs = []
    for case_id, case in CASES.items():
        for first, second in (("a", "b"), ("b", "a")):
            shared = base / f"{case_id}-{first}-first"
            with two_tiers(shared) as cache:
                outputs(getattr(case, first).build(case.templates, cache), case)
            jobs.append((case_id, second, str(shared)))
    results = in_another_process("outputs_over", jobs)
    return {(case_id, side): got for (case_id, side, _), got in zip(jobs, results, strict=True)}


@pytest.mark.parametrize("case_id", list(CASES))
def test_environments_differing_in_what_is_folded_each_render_as_jinja(
    case_id: str, tmp_path: Path, second_process: dict[tuple[str, str], Any]
) -> None:
    """Envs differing in what Jinja calls at compile time each render as Jinja, in any order."""
    case = CASES[case_id]
    want = {side: outputs(getattr(case, side).build(case.templates, None), case) for side in "ab"}
    assert want["a"] != want["b"], "the case does not compile differently"
    wrong: list[str] = []
    for first, second in (("a", "b"), ("b", "a")):
        with two_tiers(tmp_path / f"{first}-first") as cache:
            for when in ("first", "from bytes"):
                for side in (first, second):
                    got = outputs(getattr(case, side).build(case.templates, cache), case)
                    wrong += differences(side, f"after {first}, {when}", got, want[side])
                cache.tiers[0].clear()
        got = second_process[case_id, second]
        wrong += differences(second, f"in a second process after {first}", got, want[second])
    assert not wrong, "\n".join(wrong)


def test_autoescape_by_a_c_level_function_never_serves_unescaped_code(tmp_path: Path) -> None:
    """An html template is escaped though an env whose autoescape said no compiled it first."""
    case = CASES["autoescape-pattern-searches"]
    with two_tiers(tmp_path / "fs") as cache:
        assert outputs(case.b.build(case.templates, cache), case)["x.html"] == "<script>|<b>"
        escaped = outputs(case.a.build(case.templates, cache), case)["x.html"]
    assert escaped == "&lt;script&gt;|&lt;b&gt;"


# -- an impure filter: the documented difference ------------------------------------------

IMPURE = {"t.html": "{{ 'x'|tick }}"}


def impure_outputs(cache: TieredBytecodeCache, start: int) -> list[str]:
    """Two renders of one named template and two of one string applying a counter that
    starts at ``start`` to a constant."""
    env = Side(filters={"tick": tick_from(start)}).build(IMPURE, cache)
    named = env.get_template("t.html")
    string = env.from_string(IMPURE["t.html"])
    return [named.render(), named.render(), string.render(), string.render()]


def impure_outputs_over(directory: str, start: int) -> list[str]:
    """Run in another process: :func:`impure_outputs` through a fresh cache over
    ``directory``."""
    with two_tiers(directory) as cache:
        return impure_outputs(cache, start)


def assert_counted_at_render(values: list[str], start: int) -> None:
    """Each render called this counter (and no other): two renders, two numbers."""
    numbers = [int(v) for v in values]
    assert all(start <= n < start + 100 for n in numbers), (values, start)
    assert numbers[0] != numbers[1] and numbers[2] != numbers[3], values


def test_filter_on_constants_runs_at_render_time_with_the_cache(tmp_path: Path) -> None:
    """With the cache, an impure filter on a constant runs at each render: a value per render."""
    plain = Side(filters={"tick": tick_from(0)}).build(IMPURE, None).get_template("t.html")
    assert plain.render() == plain.render()  # what Jinja alone does: folded
    with two_tiers(tmp_path / "fs") as cache:
        assert_counted_at_render(impure_outputs(cache, 100), 100)
        assert_counted_at_render(impure_outputs(cache, 100), 100)  # hits now


def test_impure_filters_of_one_name_each_give_their_own_values(tmp_path: Path) -> None:
    """Another impure filter of the same name gives its own values, never the first one's."""
    with two_tiers(tmp_path / "fs") as cache:
        assert_counted_at_render(impure_outputs(cache, 100), 100)
        assert_counted_at_render(impure_outputs(cache, 900), 900)
    assert_counted_at_render(
        in_another_process("impure_outputs_over", str(tmp_path / "fs"), 500), 500
    )


# -- an Environment subclass's own from_string ---------------------------------------------

MONEY_MACRO = "{% macro money(v) %}${{ '%.2f'|format(v) }}{% endmacro %}"


class SettingM(Environment):
    """An application's Environment whose ``from_string`` puts a prelude before every
    string (a variable the strings use)."""

    prelude = "{% set m = 3 %}"

    def from_string(
        self,
        source: str | nodes.Template,
        globals: MutableMapping[str, Any] | None = None,
        template_class: type[Template] | None = None,
    ) -> Template:
        if isinstance(source, str):
            source = self.prelude + source
        return super().from_string(source, globals, template_class)


class ImportingMoney(SettingM):
    """The same with a macro import as the prelude."""

    prelude = '{% from "money.j2" import money %}'


NORMALISING: dict[str, tuple[type[SettingM], str]] = {
    "SettingM": (SettingM, "Total: {{ m|money }}"),
    "ImportingMoney": (ImportingMoney, "Total: {{ money(3) }}"),
}


def normalising_env(class_name: str, cache: TieredBytecodeCache | None) -> Environment:
    env = NORMALISING[class_name][0](
        loader=DictLoader({"money.j2": MONEY_MACRO}), bytecode_cache=cache, cache_size=0
    )
    env.filters["money"] = "${:,.2f}".format
    if cache is not None:
        cache_from_string(env)
    return env


def normalising_outputs_over(directory: str, class_name: str) -> tuple[str, int]:
    """Run in another process: the subclass's string rendered through a fresh cache over
    ``directory``, and the string hits that took."""
    with two_tiers(directory) as cache:
        source = NORMALISING[class_name][1]
        out = outcome(lambda: normalising_env(class_name, cache).from_string(source).render())
        return out, cache.stats().string_hits


@pytest.mark.parametrize("class_name", list(NORMALISING))
def test_environment_subclass_from_string_runs_with_the_cache_underneath(
    class_name: str, tmp_path: Path
) -> None:
    """A subclass's own from_string runs under the cache: Jinja's output, a hit the second time."""
    source = NORMALISING[class_name][1]
    want = normalising_env(class_name, None).from_string(source).render()
    assert want == "Total: $3.00"
    with two_tiers(tmp_path / "fs") as cache:
        env = normalising_env(class_name, cache)
        assert outcome(lambda: env.from_string(source).render()) == want
        assert cache.stats().string_hits == 0
        assert outcome(lambda: env.from_string(source).render()) == want
        assert cache.stats().string_hits == 1
    again = in_another_process("normalising_outputs_over", str(tmp_path / "fs"), class_name)
    assert again == [want, 1]


# -- lone surrogates ----------------------------------------------------------------------

SURROGATE_SOURCE = "caf\udce9 {{ x }}"
SURROGATE_NAME = "t\udcff.html"


def surrogate_outputs(cache: TieredBytecodeCache | None) -> list[str]:
    """A string and a named template with lone surrogates in the source and the name,
    each loaded twice."""
    env = Environment(
        loader=DictLoader({SURROGATE_NAME: SURROGATE_SOURCE}), bytecode_cache=cache, cache_size=0
    )
    if cache is not None:
        cache_from_string(env)
    return [
        outcome(lambda: env.from_string(SURROGATE_SOURCE).render(x=1)),
        outcome(lambda: env.from_string(SURROGATE_SOURCE).render(x=2)),
        outcome(lambda: env.get_template(SURROGATE_NAME).render(x=3)),
        outcome(lambda: env.get_template(SURROGATE_NAME).render(x=4)),
    ]


def surrogate_outputs_over(directory: str) -> tuple[list[str], int, int, int]:
    """Run in another process: :func:`surrogate_outputs` through a fresh cache over
    ``directory``, with the string hits, hits and compiles that took."""
    with two_tiers(directory) as cache:
        out = surrogate_outputs(cache)
        stats = cache.stats()
        return out, stats.string_hits, stats.hits, stats.compiles


def test_lone_surrogates_in_source_and_name_render_as_jinja_and_hit(tmp_path: Path) -> None:
    """Lone surrogates in a source and a template name render as Jinja's; the second lookup hits."""
    want = surrogate_outputs(None)
    assert want == ["caf\udce9 1", "caf\udce9 2", "caf\udce9 3", "caf\udce9 4"]
    with two_tiers(tmp_path / "fs") as cache:
        assert surrogate_outputs(cache) == want
        stats = cache.stats()
        assert (stats.string_hits, stats.hits, stats.compiles) == (1, 1, 1)
    got = in_another_process("surrogate_outputs_over", str(tmp_path / "fs"))
    assert got == [want, 2, 2, 0]
