"""The environment fingerprint: equal for environments alike, different for every setting
code generation reads, blind to what application callables compute, and never holding
an application object."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from jinja2 import (
    ChainableUndefined,
    DebugUndefined,
    DictLoader,
    Environment,
    FileSystemBytecodeCache,
    StrictUndefined,
    pass_context,
    pass_environment,
    select_autoescape,
)
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.fingerprint import Fingerprinter, Unkeyable, environment_fingerprint

ROOT = Path(__file__).resolve().parent.parent


def shout(value: object) -> object:
    """A module-level finalize: what an application would pass."""
    return str(value).upper() if isinstance(value, str) else value


def whisper(value: object) -> object:
    return str(value).lower() if isinstance(value, str) else value


@pass_context
def shout_in_context(context: Context, value: object) -> object:
    return value


class QuietCodeGenerator(CodeGenerator):
    """A custom code generator: another class writes other code."""


def fp(env: Environment) -> str:
    return environment_fingerprint(env)


def with_translations(*, newstyle: bool) -> Environment:
    env = Environment(extensions=["jinja2.ext.i18n"])
    env.install_null_translations(newstyle=newstyle)  # type: ignore[attr-defined]
    return env


def with_policy(name: str, value: object) -> Environment:
    env = Environment(extensions=["jinja2.ext.i18n"])
    env.policies[name] = value
    return env


def test_environments_configured_alike_have_equal_fingerprints() -> None:
    """Two separately built environments with the same settings get the same digest."""

    def build() -> Environment:
        env = Environment(
            extensions=["jinja2.ext.i18n"], autoescape=True, finalize=shout, trim_blocks=True
        )
        env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
        return env

    assert fp(build()) == fp(build())
    assert len(fp(build())) == 32


SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    from jinja2 import Environment
    from jinja2.sandbox import SandboxedEnvironment
    from tiered_bccache.fingerprint import environment_fingerprint
    class Custom(SandboxedEnvironment):
        def getattr(self, obj, attribute):
            return super().getattr(obj, attribute)
    env = Custom(extensions=["jinja2.ext.i18n", "jinja2.ext.do"], autoescape=True)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "indent": 2}
    env.install_null_translations(newstyle=True)
    print(environment_fingerprint(env))
    """
)


def run_in_subprocess(hash_seed: str) -> str:
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
    return result.stdout.strip()


def test_fingerprint_is_equal_in_other_processes_with_other_hash_seeds() -> None:
    """The digest of an environment with an application subclass does not depend on the
    process: no id(), no str hash, no addresses."""
    first = run_in_subprocess("1")
    assert len(first) == 32
    assert run_in_subprocess("4242") == first


class VersionOne(Extension):
    tags = {"brand"}

    def parse(self, parser: Any) -> Any:
        from jinja2 import nodes

        lineno = next(parser.stream).lineno
        return nodes.Output([nodes.Const("v1")], lineno=lineno)


class VersionTwo(Extension):
    tags = {"brand"}

    def parse(self, parser: Any) -> Any:
        from jinja2 import nodes

        lineno = next(parser.stream).lineno
        return nodes.Output([nodes.Const("v2")], lineno=lineno)


VersionTwo.__qualname__ = VersionOne.__qualname__  # one name, two versions of its code


class OptionExtension(Extension):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.extend(brand_prefix="[")


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
    "application extension": lambda: Environment(extensions=[VersionOne]),
    "extension option": lambda: Environment(extensions=[OptionExtension]),
    "policy": lambda: with_policy("truncate.leeway", 0),
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
    "newstyle_gettext": (
        lambda: with_translations(newstyle=True),
        lambda: with_translations(newstyle=False),
    ),
    "policy ext.i18n.trimmed": (
        lambda: with_policy("ext.i18n.trimmed", True),
        lambda: with_policy("ext.i18n.trimmed", False),
    ),
    "two versions of an extension with one name": (
        lambda: Environment(extensions=[VersionOne]),
        lambda: Environment(extensions=[VersionTwo]),
    ),
    "sandboxed vs immutable sandboxed": (SandboxedEnvironment, ImmutableSandboxedEnvironment),
}


@pytest.mark.parametrize(("first", "second"), DIFFERENT_PAIRS.values(), ids=DIFFERENT_PAIRS)
def test_pairs_that_compile_differently_have_different_fingerprints(
    first: Callable[[], Environment], second: Callable[[], Environment]
) -> None:
    """Two environments that differ in one code-generating setting get different digests."""
    assert fp(first()) != fp(second())


def _with_filters(env: Environment) -> Environment:
    env.filters["money"] = "${:,.2f}".format
    env.tests["short"] = lambda value: len(value) < 3
    return env


SAME_AS_DEFAULT: dict[str, Callable[[], Environment]] = {
    "loader": lambda: Environment(loader=DictLoader({"a": "b"})),
    "cache_size": lambda: Environment(cache_size=3),
    "auto_reload": lambda: Environment(auto_reload=False),
    "globals": lambda: _with_globals(Environment()),
    "undefined strict": lambda: Environment(undefined=StrictUndefined),
    "undefined chainable": lambda: Environment(undefined=ChainableUndefined),
    "undefined debug": lambda: Environment(undefined=DebugUndefined),
    "filters and tests": lambda: _with_filters(Environment()),
}


def _with_globals(env: Environment) -> Environment:
    env.globals["site"] = "example.org"
    return env


@pytest.mark.parametrize("build", SAME_AS_DEFAULT.values(), ids=SAME_AS_DEFAULT)
def test_what_the_compile_does_not_read_leaves_the_fingerprint_alone(
    build: Callable[[], Environment],
) -> None:
    """Render-time settings, the undefined class (never folded: the compile's copy makes
    none) and the filters and tests (checked per entry) do not split the cache."""
    assert fp(build()) == fp(Environment())


def test_finalize_is_keyed_by_its_calling_convention_only() -> None:
    """Two finalize functions with one convention give one fingerprint: the compile never
    calls either, so the code is the same."""
    assert fp(Environment(finalize=shout)) == fp(Environment(finalize=whisper))
    assert fp(Environment(finalize="{}!".format)) == fp(Environment(finalize=shout))


def test_bytecode_cache_leaves_the_fingerprint_alone(tmp_path: Path) -> None:
    """Which bytecode cache an environment uses is not part of its digest."""
    jinja_cache = Environment(bytecode_cache=FileSystemBytecodeCache(str(tmp_path)))
    ours = Environment(bytecode_cache=TieredBytecodeCache([MemoryTier()]))
    assert fp(jinja_cache) == fp(ours) == fp(Environment())


def test_code_generators_with_one_name_and_other_code_have_different_fingerprints() -> None:
    """An application class is keyed by what it defines, not by its name alone."""

    def generator(body: str) -> type[CodeGenerator]:
        namespace: dict[str, Any] = {}
        exec(  # noqa: S102
            "from jinja2.compiler import CodeGenerator\n"
            f"class Gen(CodeGenerator):\n    def visit_Const(self, node, frame):\n{body}",
            namespace,
        )
        cls: type[CodeGenerator] = namespace["Gen"]
        return cls

    envs = [Environment(), Environment()]
    envs[0].code_generator_class = generator("        self.write('1')\n")
    envs[1].code_generator_class = generator("        self.write('2')\n")
    assert fp(envs[0]) != fp(envs[1])


class LockingExtension(Extension):
    """An extension whose options are not plain data."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.lock = threading.Lock()


def test_what_is_not_plain_data_cannot_be_keyed() -> None:
    """An extension option holding a lock, or a function put on the environment, makes
    the environment unkeyable for other processes (private to this one)."""
    fingerprinter = Fingerprinter()
    with pytest.raises(Unkeyable, match="not plain data"):
        fingerprinter.fingerprint(Environment(extensions=[LockingExtension]), Environment)
    env = Environment()
    env.extend(render_hook=lambda value: value)
    with pytest.raises(Unkeyable, match="render_hook"):
        fingerprinter.fingerprint(env, Environment)


def test_classes_are_remembered_weakly_by_the_class_object() -> None:
    """A class keyed once is not described again for a new environment of it, and the
    fingerprinter does not keep it alive."""
    fingerprinter = Fingerprinter()
    cls: type[Environment] | None = type("PerTask", (Environment,), {"x": 1})
    assert cls is not None
    first = fingerprinter.fingerprint(cls(), cls)
    assert fingerprinter.fingerprint(cls(), cls) == first
    ref = weakref.ref(cls)
    del cls
    gc.collect()
    assert ref() is None


class RaisingMapping(Mapping[str, Any]):
    """A filter table that can be asked for a name but not listed (ansible-core's)."""

    def __init__(self, real: Mapping[str, Any]) -> None:
        self.real = dict(real)

    def __getitem__(self, name: str) -> Any:
        return self.real[name]

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError("dynamic container")

    def __len__(self) -> int:
        raise NotImplementedError("dynamic container")


def test_filter_tables_that_cannot_be_listed_are_keyed_and_cached(tmp_path: Path) -> None:
    """Environments whose filter and test tables raise on len() and iteration render,
    share entries across cache objects, and nothing raises into the render."""
    for round_ in range(2):
        cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)], secret=b"s" * 32)
        env = SandboxedEnvironment(
            loader=DictLoader({"t": "{{ x|upper }}{% if x is lower %}!{% endif %}"}),
            bytecode_cache=cache,
            cache_size=0,
        )
        env.filters = RaisingMapping(env.filters)  # type: ignore[assignment]
        env.tests = RaisingMapping(env.tests)  # type: ignore[assignment]
        assert env.get_template("t").render(x="a") == "A!"
        assert cache.stats().compiles == (1 if round_ == 0 else 0)


class UnlistablePolicies(dict[str, Any]):
    """Policies that answer lookups (all Jinja's filters make) but refuse to be listed."""

    def items(self) -> Any:
        raise NotImplementedError("no listing")


def test_an_environment_that_cannot_be_read_is_compiled_uncached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Computing a key never raises into a render: an environment whose settings cannot
    be read renders as plain Jinja renders it, compiled by Jinja, counted as uncached,
    logged once, and nothing is stored."""
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)], secret=b"s" * 32)
    env = Environment(
        loader=DictLoader({"t": "{{ 'a b'|truncate(3) }}"}), bytecode_cache=cache, cache_size=0
    )
    env.policies = UnlistablePolicies(env.policies)
    for _ in range(3):
        assert env.get_template("t").render() == "a b"
        assert cache.from_string(env, "{{ 1 + 1 }}").render() == "2"
    stats = cache.stats()
    assert stats.uncached == 6 and stats.hits == 0 and stats.compiles == 0
    assert [t.writes for t in stats.tiers] == [0, 0]
    assert caplog.text.count("compiled uncached") == 1


def test_fingerprint_holds_no_application_object() -> None:
    """An environment and the objects its filters, finalize and options close over are
    freed when the application drops them, while the cache lives on."""

    class Payload:
        pass

    cache = TieredBytecodeCache([MemoryTier()])
    refs = []
    for _ in range(3):
        payload = Payload()
        refs.append(weakref.ref(payload))
        env = Environment(
            loader=DictLoader({"t": "{{ 1|own }}{{ 'x' }}"}),
            bytecode_cache=cache,
            finalize=pass_environment(lambda e, v, p=payload: v),
        )
        env.filters["own"] = lambda v, p=payload: v
        env.get_template("t").render()
        cache.from_string(env, "{{ 2|own }}").render()
        del env, payload
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
