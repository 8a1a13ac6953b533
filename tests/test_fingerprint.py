"""The environment fingerprint: equal for environments alike, different for every setting
that changes generated code, and the reason it exists (no code shared across autoescape)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jinja2 import (
    ChainableUndefined,
    DictLoader,
    Environment,
    FileSystemBytecodeCache,
    StrictUndefined,
    pass_context,
    pass_eval_context,
    select_autoescape,
)
from jinja2 import tests as jinja_tests
from jinja2.compiler import CodeGenerator
from jinja2.filters import do_random, do_title
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from tiered_bccache import FileSystemTier, MemoryTier, Tier, TieredBytecodeCache
from tiered_bccache.fingerprint import (
    Fingerprinter,
    autoescape_flag,
    callable_identity,
    environment_fingerprint,
)

ROOT = Path(__file__).resolve().parent.parent


def shout(value: object) -> object:
    """A module-level finalize: what an application would pass."""
    return str(value).upper() if isinstance(value, str) else value


def whisper(value: object) -> object:
    return str(value).lower() if isinstance(value, str) else value


@pass_context
def shout_in_context(context: Context, value: object) -> object:
    return value


def double(value: int) -> int:
    return value * 2


def twice(value: int) -> int:
    return value + value


@pass_context
def double_in_context(context: Context, value: int) -> int:
    return value * 2


@pass_eval_context
def double_in_eval_context(eval_ctx: EvalContext, value: int) -> int:
    return value * 2


class QuietCodeGenerator(CodeGenerator):
    """A custom code generator: another class writes other code."""


def make_finalize(prefix: str) -> Callable[[object], str]:
    """A finalize factory: each closure bakes its own prefix into constant output."""
    return lambda value: prefix + str(value)


def with_filter(name: str, func: Callable[..., Any], **options: Any) -> Environment:
    env = Environment(**options)
    env.filters[name] = func
    return env


def with_test(name: str, func: Callable[..., Any]) -> Environment:
    env = Environment()
    env.tests[name] = func
    return env


def with_translations(*, newstyle: bool) -> Environment:
    env = Environment(extensions=["jinja2.ext.i18n"])
    env.install_null_translations(newstyle=newstyle)  # type: ignore[attr-defined]
    return env


def with_policy(name: str, value: object) -> Environment:
    env = Environment(extensions=["jinja2.ext.i18n"])
    env.policies[name] = value
    return env


def fp(env: Environment) -> str:
    return environment_fingerprint(env)


def test_environments_configured_alike_have_equal_fingerprints() -> None:
    """Two separately built environments with the same settings get the same digest."""

    def build() -> Environment:
        env = Environment(
            extensions=["jinja2.ext.i18n"], autoescape=True, finalize=shout, trim_blocks=True
        )
        env.filters["double"] = double
        env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
        return env

    assert fp(build()) == fp(build())
    assert len(fp(build())) == 32


def build_shared() -> Environment:
    """An environment built the same way here and in the subprocess below. Its callables
    come from installed libraries, whose module names are the same in every process (this
    test module's name depends on how pytest imports it): Jinja's own, named, and the
    standard library's ``textwrap.dedent``, hashed with the compiled regex it reads."""
    env = Environment(
        extensions=["jinja2.ext.i18n", "jinja2.ext.do"], autoescape=True, finalize=do_title
    )
    env.filters["title2"] = do_title
    env.filters["random2"] = do_random
    env.filters["dedent"] = textwrap.dedent
    env.tests["odd2"] = jinja_tests.test_odd
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return env


SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    import textwrap
    from jinja2 import Environment
    from jinja2.filters import do_random, do_title
    from jinja2.tests import test_odd
    from tiered_bccache.fingerprint import callable_identity, environment_fingerprint
    env = Environment(
        extensions=["jinja2.ext.i18n", "jinja2.ext.do"], autoescape=True, finalize=do_title
    )
    env.filters["title2"] = do_title
    env.filters["random2"] = do_random
    env.filters["dedent"] = textwrap.dedent
    env.tests["odd2"] = test_odd
    env.install_null_translations(newstyle=True)
    print(environment_fingerprint(env))
    print(callable_identity(textwrap.dedent))
    """
)


def run_in_subprocess(hash_seed: str) -> list[str]:
    """Run SUBPROCESS_SCRIPT in a fresh interpreter with the given PYTHONHASHSEED."""
    result = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SCRIPT],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split()


def test_fingerprint_is_equal_in_other_processes_with_other_hash_seeds() -> None:
    """The digest and a module-level function's identity do not depend on the process:
    no id(), no str hash, no addresses."""
    here = [fp(build_shared()), callable_identity(textwrap.dedent)]
    assert "#" in here[1]  # the identity includes the digest of the function's code
    assert run_in_subprocess("1") == here
    assert run_in_subprocess("4242") == here


def test_callable_identity_ignores_who_else_holds_a_constant() -> None:
    """A function's identity does not change when something else references its constants
    (marshal would otherwise flag shared objects differently)."""
    func = eval("lambda value: value + 'a long constant string' + str(10 ** 30)")
    before = callable_identity(func)
    held = list(func.__code__.co_consts)
    assert callable_identity(func) == before
    del held


DIFFERENT_FROM_DEFAULT: dict[str, Callable[[], Environment]] = {
    "block delimiters": lambda: Environment(block_start_string="<%", block_end_string="%>"),
    "variable delimiters": lambda: Environment(
        variable_start_string="[[", variable_end_string="]]"
    ),
    "comment delimiters": lambda: Environment(comment_start_string="<#", comment_end_string="#>"),
    "line_statement_prefix": lambda: Environment(line_statement_prefix="%"),
    "line_comment_prefix": lambda: Environment(line_comment_prefix="##"),
    "trim_blocks": lambda: Environment(trim_blocks=True),
    "lstrip_blocks": lambda: Environment(lstrip_blocks=True),
    "newline_sequence": lambda: Environment(newline_sequence="\r\n"),
    "keep_trailing_newline": lambda: Environment(keep_trailing_newline=True),
    "enable_async": lambda: Environment(enable_async=True),
    "optimized": lambda: Environment(optimized=False),
    "autoescape": lambda: Environment(autoescape=True),
    "autoescape callable": lambda: Environment(autoescape=select_autoescape(["html"])),
    "finalize": lambda: Environment(finalize=shout),
    "i18n extension": lambda: Environment(extensions=["jinja2.ext.i18n"]),
    "do extension": lambda: Environment(extensions=["jinja2.ext.do"]),
    "filter added": lambda: with_filter("double", double),
    "test added": lambda: with_test("double", double),
    "sandboxed": SandboxedEnvironment,
    "immutable sandboxed": ImmutableSandboxedEnvironment,
    "code generator": lambda: type(
        "QuietEnvironment", (Environment,), {"code_generator_class": QuietCodeGenerator}
    )(),
}


@pytest.mark.parametrize("build", DIFFERENT_FROM_DEFAULT.values(), ids=DIFFERENT_FROM_DEFAULT)
def test_setting_that_changes_generated_code_changes_the_fingerprint(
    build: Callable[[], Environment],
) -> None:
    """Each setting Jinja bakes into generated code gives a digest unlike the default's."""
    assert fp(build()) != fp(Environment())


DIFFERENT_PAIRS: dict[str, tuple[Callable[[], Environment], Callable[[], Environment]]] = {
    "autoescape True vs False": (
        lambda: Environment(autoescape=True),
        lambda: Environment(autoescape=False),
    ),
    "finalize none vs set": (lambda: Environment(), lambda: Environment(finalize=shout)),
    "finalize pass_context vs plain": (
        lambda: Environment(finalize=shout_in_context),
        lambda: Environment(finalize=shout),
    ),
    "two finalize functions": (
        lambda: Environment(finalize=shout),
        lambda: Environment(finalize=whisper),
    ),
    "two finalize lambdas": (
        lambda: Environment(finalize=lambda v: v if v is not None else ""),
        lambda: Environment(finalize=lambda v: v if v is not None else "-"),
    ),
    "two finalize closures of one factory": (
        lambda: Environment(finalize=make_finalize("A")),
        lambda: Environment(finalize=make_finalize("B")),
    ),
    "two finalize partials": (
        lambda: Environment(finalize=functools.partial(str.replace, "A")),
        lambda: Environment(finalize=functools.partial(str.replace, "B")),
    ),
    "two finalize keyword defaults": (
        lambda: Environment(finalize=lambda v, *, fill="A": fill if v is None else v),
        lambda: Environment(finalize=lambda v, *, fill="B": fill if v is None else v),
    ),
    "newstyle_gettext": (
        lambda: with_translations(newstyle=True),
        lambda: with_translations(newstyle=False),
    ),
    "policy ext.i18n.trimmed": (
        lambda: with_policy("ext.i18n.trimmed", True),
        lambda: with_policy("ext.i18n.trimmed", False),
    ),
    "filter plain vs pass_context": (
        lambda: with_filter("double", double),
        lambda: with_filter("double", double_in_context),
    ),
    "filter plain vs pass_eval_context": (
        lambda: with_filter("double", double),
        lambda: with_filter("double", double_in_eval_context),
    ),
    "sandboxed vs immutable sandboxed": (SandboxedEnvironment, ImmutableSandboxedEnvironment),
}


@pytest.mark.parametrize(("first", "second"), DIFFERENT_PAIRS.values(), ids=DIFFERENT_PAIRS)
def test_pairs_that_compile_differently_have_different_fingerprints(
    first: Callable[[], Environment], second: Callable[[], Environment]
) -> None:
    """Two environments that differ in one code-generating setting get different digests."""
    assert fp(first()) != fp(second())


def test_finalize_closures_really_compile_differently() -> None:
    """Why closures are in the digest: a plain finalize is applied to constants at compile
    time, so each closure's captured value is in the generated code."""
    a = Environment(finalize=make_finalize("A")).compile("{{ 'x' }}", raw=True)
    b = Environment(finalize=make_finalize("B")).compile("{{ 'x' }}", raw=True)
    assert "'Ax'" in a and "'Bx'" in b


SAME_AS_DEFAULT: dict[str, Callable[[], Environment]] = {
    "loader": lambda: Environment(loader=DictLoader({"a": "b"})),
    "cache_size": lambda: Environment(cache_size=3),
    "auto_reload": lambda: Environment(auto_reload=False),
    "globals": lambda: _with_globals(Environment()),
    "undefined strict": lambda: Environment(undefined=StrictUndefined),
    "undefined chainable": lambda: Environment(undefined=ChainableUndefined),
}


def _with_globals(env: Environment) -> Environment:
    env.globals["site"] = "example.org"
    return env


@pytest.mark.parametrize("build", SAME_AS_DEFAULT.values(), ids=SAME_AS_DEFAULT)
def test_render_time_settings_leave_the_fingerprint_alone(
    build: Callable[[], Environment],
) -> None:
    """Settings that only matter at render time do not split the cache."""
    assert fp(build()) == fp(Environment())


def test_bytecode_cache_leaves_the_fingerprint_alone(tmp_path: Path) -> None:
    """Which bytecode cache an environment uses is not part of its digest."""
    jinja_cache = Environment(bytecode_cache=FileSystemBytecodeCache(str(tmp_path)))
    ours = Environment(bytecode_cache=TieredBytecodeCache([MemoryTier()]))
    assert fp(jinja_cache) == fp(ours) == fp(Environment())


def test_filter_replaced_by_another_function_changes_the_fingerprint() -> None:
    """The optimizer calls a filter on constants at compile time, so its body is baked in:
    ``{{ 2|double }}`` compiles to the constant the filter returned."""
    assert fp(with_filter("double", double)) != fp(with_filter("double", twice))
    assert fp(with_filter("double", double)) == fp(with_filter("double", double))


@pytest.mark.parametrize(
    "change",
    [
        lambda env: env.filters.__setitem__("double", double),
        lambda env: env.tests.__setitem__("double", double),
        lambda env: setattr(env, "autoescape", False),
        lambda env: setattr(env, "finalize", whisper),
        lambda env: env.add_extension("jinja2.ext.do"),
    ],
    ids=["filter added", "test added", "autoescape", "finalize", "extension added"],
)
def test_a_live_environment_changed_after_first_use_gets_a_new_key(
    change: Callable[[Environment], None],
) -> None:
    """The settings users change after first use are noticed on the next lookup."""
    cache = TieredBytecodeCache([MemoryTier()])
    env = Environment(autoescape=True, finalize=shout)
    before = cache.fingerprint(env)
    change(env)
    assert cache.fingerprint(env) != before


def test_autoescape_flag_follows_the_template_name() -> None:
    """With select_autoescape the key part is "e" for escaped names and "r" for raw ones."""
    env = Environment(autoescape=select_autoescape(["html"]))
    assert autoescape_flag(env, "a.html") == "e"
    assert autoescape_flag(env, "a.txt") == "r"


@pytest.mark.parametrize("autoescape", [True, False])
def test_autoescape_flag_is_empty_for_a_bool(autoescape: bool) -> None:
    """A bool autoescape is in the fingerprint already, so the per-template part is empty."""
    assert autoescape_flag(Environment(autoescape=autoescape), "a.html") == ""


def test_callable_identity_differs_for_lambdas_with_different_bodies() -> None:
    """Two lambdas on one line of one module are told apart by their code."""
    first, second = (lambda v: v + 1), (lambda v: v * 2)
    assert callable_identity(first) != callable_identity(second)


def test_callable_identity_is_equal_for_equal_functions_at_other_addresses() -> None:
    """Identity depends on what a function is, not where it lives: two function objects
    made from the same source are alike, and another body is not."""
    source = "lambda value: str(value).upper() + '!'"
    first, second = eval(source), eval(source)  # noqa: S307 - a test's own literal
    assert first is not second
    assert callable_identity(first) == callable_identity(second)
    assert callable_identity(first) != callable_identity(eval(source.replace("!", "?")))  # noqa: S307
    assert callable_identity(shout).startswith(f"{__name__}.shout#")


def test_callable_identity_survives_a_recursive_closure() -> None:
    """A nested function that closes over itself gets an identity (no endless recursion)."""

    def factorial(n: int) -> int:
        return 1 if n < 2 else n * factorial(n - 1)

    assert callable_identity(factorial) == callable_identity(factorial)


def test_callable_identity_of_a_closure_over_an_unfilled_cell() -> None:
    """A nested function asked about before the variable it closes over is bound still
    gets an identity."""

    def uses_later(value: int) -> int:
        return value + later

    identity = callable_identity(uses_later)
    later = 1
    assert identity.startswith(f"{__name__}.")
    assert uses_later(1) == 2


def _tiers(kind: str, tmp_path: Path) -> list[Tier]:
    return [MemoryTier()] if kind == "memory" else [FileSystemTier(tmp_path / "cache")]


@pytest.mark.parametrize("kind", ["memory", "filesystem"])
@pytest.mark.parametrize("first", ["escaping", "plain"])
def test_no_xss_when_environments_share_a_cache(kind: str, first: str, tmp_path: Path) -> None:
    """An autoescaping and a non-escaping environment sharing one cache and one loader each
    get their own code: whichever loads the template first, escaping still escapes."""
    cache = TieredBytecodeCache(_tiers(kind, tmp_path))
    loader = DictLoader({"t.html": "{{ x }}"})
    envs = {
        "escaping": Environment(loader=loader, bytecode_cache=cache, autoescape=True),
        "plain": Environment(loader=loader, bytecode_cache=cache, autoescape=False),
    }
    expected = {"escaping": "&lt;b&gt;", "plain": "<b>"}
    second = "plain" if first == "escaping" else "escaping"
    for name in (first, second, first):
        assert envs[name].get_template("t.html").render(x="<b>") == expected[name]
    # And a fresh environment of each kind, served from the cache, still gets it right.
    for name in (first, second):
        fresh = Environment(loader=loader, bytecode_cache=cache, autoescape=name == "escaping")
        assert fresh.get_template("t.html").render(x="<b>") == expected[name]
    assert cache.stats().compiles == 2


def test_finalize_closures_sharing_a_cache_each_render_their_own(tmp_path: Path) -> None:
    """Two environments whose finalize closures differ only in a captured value never get
    each other's code from a shared cache."""
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path / "cache")])
    loader = DictLoader({"t.txt": "{{ 'x' }}"})
    a = Environment(loader=loader, bytecode_cache=cache, finalize=make_finalize("A"))
    b = Environment(loader=loader, bytecode_cache=cache, finalize=make_finalize("B"))
    assert a.get_template("t.txt").render() == "Ax"
    assert b.get_template("t.txt").render() == "Bx"


SET_LITERAL_SCRIPT = textwrap.dedent(
    """
    from tiered_bccache.fingerprint import callable_identity
    print(callable_identity(lambda v: v in {"alpha", "beta", "gamma", "delta", "epsilon"}))
    """
)


def test_callable_identity_of_a_set_literal_is_equal_across_hash_seeds() -> None:
    """A function testing membership in a set literal gets one identity in every process,
    although the set's iteration order depends on PYTHONHASHSEED."""
    identities = {
        subprocess.run(
            [sys.executable, "-c", SET_LITERAL_SCRIPT],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(identities) == 1


CURRENCY = "EUR"


def price(value: float) -> str:
    return f"{value:.2f} {CURRENCY}"


def test_module_globals_a_folded_filter_reads_are_part_of_its_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A filter reading a module constant is baked with its value: a new value, a new key."""
    before = fp(with_filter("price", price))
    monkeypatch.setitem(globals(), "CURRENCY", "USD")
    assert fp(with_filter("price", price)) != before


def test_unpicklable_state_fails_closed() -> None:
    """A finalize whose state cannot be described makes the fingerprint private: a token
    of one fingerprinter (one cache in one process), stable there so the memory tier
    still hits, and never equal to another's."""
    import threading

    class Locked:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __call__(self, value: object) -> object:
            with self.lock:  # what it reads of itself has no pickle form
                return value

    finalize = Locked()
    here = Fingerprinter()
    digest, private = here.fingerprint(Environment(finalize=finalize))
    assert private
    assert here.fingerprint(Environment(finalize=finalize)) == (digest, True)
    assert Fingerprinter().fingerprint(Environment(finalize=finalize))[0] != digest
    assert not here.fingerprint(Environment())[1]


# -- what is named, and what is hashed ------------------------------------------------


def test_jinja_own_callables_are_named_with_the_jinja_version() -> None:
    """Jinja's own filters, tests, extensions and code generator are named with Jinja's
    version (their code ships with it) rather than hashed."""
    import jinja2
    from jinja2.ext import InternationalizationExtension

    version = jinja2.__version__
    assert callable_identity(do_title) == f"jinja2:filter.title@{version}"
    assert callable_identity(jinja_tests.test_odd) == f"jinja2:test.odd@{version}"
    assert callable_identity(CodeGenerator) == f"jinja2:jinja2.compiler.CodeGenerator@{version}"
    assert callable_identity(InternationalizationExtension).endswith(f"@{version}")


EXTENSION_V1 = """
from jinja2 import nodes
from jinja2.ext import Extension

class Stamp(Extension):
    tags = {"stamp"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        return nodes.Output([nodes.TemplateData(%r)], lineno=lineno)
"""


def stamp_extension(text: str) -> type:
    """An extension class ``stamp_ext.Stamp`` whose ``{% stamp %}`` writes ``text``: two
    versions share their module and qualified name, as in a rolling deploy."""
    namespace: dict[str, Any] = {"__name__": "stamp_ext"}
    exec(EXTENSION_V1 % text, namespace)  # noqa: S102 - a test fixture's own source
    cls: type = namespace["Stamp"]
    return cls


def test_two_versions_of_an_extension_with_one_name_have_different_fingerprints() -> None:
    """Extensions are keyed by their code, not by name: two versions emitting different
    code never share entries."""
    v1, v2 = stamp_extension("one"), stamp_extension("two")
    assert f"{v1.__module__}.{v1.__qualname__}" == f"{v2.__module__}.{v2.__qualname__}"
    assert Environment(extensions=[v1]).from_string("{% stamp %}").render() == "one"
    assert fp(Environment(extensions=[v1])) != fp(Environment(extensions=[v2]))
    assert fp(Environment(extensions=[v1])) == fp(Environment(extensions=[stamp_extension("one")]))


def test_options_an_extension_puts_on_the_environment_change_the_fingerprint() -> None:
    """What an extension sets with environment.extend() is part of the key."""
    v1 = stamp_extension("one")
    first, second = Environment(extensions=[v1]), Environment(extensions=[v1])
    first.extend(stamp_style="plain")
    second.extend(stamp_style="fancy")
    assert fp(first) != fp(second)


def test_code_generators_with_one_name_and_other_code_have_different_fingerprints() -> None:
    """A code generator subclass is keyed by what it overrides, not by its name."""

    def generator(suffix: str) -> type:
        def visit_Output(self: Any, node: Any, frame: Any) -> None:  # noqa: N802
            CodeGenerator.visit_Output(self, node, frame)
            self.writeline(f"# {suffix}")

        return type("Quiet", (CodeGenerator,), {"visit_Output": visit_Output})

    def env(suffix: str) -> Environment:
        cls = type("Env", (Environment,), {"code_generator_class": generator(suffix)})
        return cls()  # type: ignore[no-any-return]

    assert fp(env("a")) != fp(env("b"))
    assert fp(env("a")) == fp(env("a"))


# -- one cache, many environments: what changes in place is still seen -----------------


def counter_filter() -> tuple[Callable[[str], str], Callable[[str], None]]:
    """A folded filter closing over a cell, and a way to rebind the cell."""
    suffix = "v1"

    def brand(value: str) -> str:
        return value + suffix

    def rebind(value: str) -> None:
        nonlocal suffix
        suffix = value

    return brand, rebind


def test_new_environments_see_a_closure_cell_rebound() -> None:
    """A cache fingerprinting new environments with the same filter object notices the
    value its closure holds change (the memo re-describes the application's callables)."""
    cache = TieredBytecodeCache([MemoryTier()])
    brand, rebind = counter_filter()
    before = cache.fingerprint(with_filter("brand", brand))
    assert cache.fingerprint(with_filter("brand", brand)) == before
    rebind("v2")
    assert cache.fingerprint(with_filter("brand", brand)) != before


def test_new_environments_see_a_module_constant_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache fingerprinting new environments notices a module constant a folded filter
    reads change."""
    cache = TieredBytecodeCache([MemoryTier()])
    before = cache.fingerprint(with_filter("price", price))
    assert cache.fingerprint(with_filter("price", price)) == before
    monkeypatch.setitem(globals(), "CURRENCY", "USD")
    assert cache.fingerprint(with_filter("price", price)) != before


def test_new_environments_see_a_policy_change() -> None:
    """A policy value differing between two environments gives them different keys, in
    one cache, whatever was remembered."""
    cache = TieredBytecodeCache([MemoryTier()])
    before = cache.fingerprint(with_policy("truncate.leeway", 5))
    assert cache.fingerprint(with_policy("truncate.leeway", 5)) == before
    assert cache.fingerprint(with_policy("truncate.leeway", 0)) != before
    kwargs = with_policy("json.dumps_kwargs", {"sort_keys": True})
    changed = with_policy("json.dumps_kwargs", {"sort_keys": True})
    changed.policies["json.dumps_kwargs"]["indent"] = 2  # mutated in place
    assert cache.fingerprint(kwargs) != cache.fingerprint(changed)


def test_new_environments_see_a_filter_replaced_under_its_name() -> None:
    """Another function under a known filter name gives another key in one cache."""
    cache = TieredBytecodeCache([MemoryTier()])
    assert cache.fingerprint(with_filter("x", double)) != cache.fingerprint(with_filter("x", twice))


def test_a_live_environment_sees_its_filter_replaced() -> None:
    """Replacing a filter of an environment in use (same name, same count) changes the
    key its next lookup uses."""
    cache = TieredBytecodeCache([MemoryTier()])
    env = Environment(loader=DictLoader({"t": "{{ 2|x }}"}), bytecode_cache=cache)
    env.filters["x"] = double
    before = cache.fingerprint(env)
    env.filters["x"] = twice
    assert cache.fingerprint(env) != before
