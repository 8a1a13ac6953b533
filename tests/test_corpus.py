"""Tests for the template corpus generator: shape, sizes, determinism, and that it renders."""

from __future__ import annotations

import asyncio
import math
import statistics
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2 import nodes

from tiered_bccache.benchkit.corpus import corpus_names, generate_corpus, render_context
from tiered_bccache.errors import ConfigurationError

DEFAULT_MIN = 1024
DEFAULT_MAX = 50 * 1024


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The default corpus (36 templates, seed 0), generated once for the module."""
    directory = tmp_path_factory.mktemp("corpus")
    return directory, generate_corpus(directory)


def _sizes(directory: Path, names: list[str]) -> list[int]:
    return [(directory / name).stat().st_size for name in names]


def _pages(names: list[str]) -> list[str]:
    return [name for name in names if name.startswith("pages/")]


def _environment(directory: Path, **options: Any) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(directory), **options)


def _render_all(env: jinja2.Environment, names: list[str]) -> list[str]:
    context = render_context()
    return [env.get_template(name).render(context) for name in names]


def _parsed(directory: Path, names: list[str]) -> list[nodes.Template]:
    env = jinja2.Environment()
    return [env.parse((directory / name).read_text(encoding="utf-8")) for name in names]


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    """Two runs with the same arguments write the same names with byte-identical sources."""
    first = generate_corpus(tmp_path / "a", count=40, seed=7)
    second = generate_corpus(tmp_path / "b", count=40, seed=7)
    assert first == second
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_different_seeds_write_different_sources(tmp_path: Path) -> None:
    """Another seed gives another corpus: no page source is shared between the two."""
    first = generate_corpus(tmp_path / "a", count=20, seed=1)
    second = generate_corpus(tmp_path / "b", count=20, seed=2)
    sources_a = {(tmp_path / "a" / name).read_bytes() for name in _pages(first)}
    sources_b = {(tmp_path / "b" / name).read_bytes() for name in _pages(second)}
    assert not sources_a & sources_b


def test_default_corpus_spans_one_to_fifty_kilobytes(
    default_corpus: tuple[Path, list[str]],
) -> None:
    """The default corpus has 36 templates whose smallest and largest sources sit within 20%
    of 1 kB and 50 kB."""
    directory, names = default_corpus
    sizes = _sizes(directory, names)
    assert len(names) == 36
    assert DEFAULT_MIN * 0.8 <= min(sizes) <= DEFAULT_MIN * 1.2
    assert DEFAULT_MAX * 0.8 <= max(sizes) <= DEFAULT_MAX * 1.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sizes_are_spread_log_uniformly(tmp_path: Path, seed: int) -> None:
    """Each quarter of the log-size range holds about a quarter of the templates, and the
    median is near the geometric mean of the bounds."""
    names = generate_corpus(tmp_path, count=80, seed=seed)
    logs = [math.log(size) for size in _sizes(tmp_path, names)]
    low, high = math.log(DEFAULT_MIN), math.log(DEFAULT_MAX)
    quarter = (high - low) / 4
    for k in range(4):
        share = sum(low + k * quarter <= x < low + (k + 1) * quarter for x in logs) / len(logs)
        assert 0.15 <= share <= 0.35, (k, share)
    geometric_mean = math.sqrt(DEFAULT_MIN * DEFAULT_MAX)
    assert 0.75 <= math.exp(statistics.median(logs)) / geometric_mean <= 1.33


def test_sizes_follow_custom_bounds(tmp_path: Path) -> None:
    """With min_size=2 kB and max_size=8 kB every source lands within 20% of that range."""
    names = generate_corpus(tmp_path, count=30, seed=3, min_size=2048, max_size=8192)
    sizes = _sizes(tmp_path, names)
    assert 2048 * 0.8 <= min(sizes) <= 2048 * 1.2
    assert 8192 * 0.8 <= max(sizes) <= 8192 * 1.2
    assert all(2048 * 0.8 <= size <= 8192 * 1.2 for size in sizes)


def test_every_template_compiles(default_corpus: tuple[Path, list[str]]) -> None:
    """Every generated template, shared or page, compiles with Environment.compile."""
    directory, names = default_corpus
    env = jinja2.Environment()
    for name in names:
        source = (directory / name).read_text(encoding="utf-8")
        env.compile(source, name, str(directory / name))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"undefined": jinja2.StrictUndefined},
        {"autoescape": True},
        {"autoescape": True, "undefined": jinja2.StrictUndefined},
    ],
    ids=["default", "strict", "autoescape", "autoescape-strict"],
)
def test_every_page_renders_with_render_context(
    default_corpus: tuple[Path, list[str]], options: dict[str, Any]
) -> None:
    """Every page renders to a whole HTML document with render_context(), including under
    StrictUndefined (no variable outside the context is used unguarded) and autoescape."""
    directory, names = default_corpus
    outputs = _render_all(_environment(directory, **options), _pages(names))
    for output in outputs:
        assert output.lstrip().startswith("<!DOCTYPE html>")
        assert output.rstrip().endswith("</html>")


def test_every_page_renders_async(default_corpus: tuple[Path, list[str]]) -> None:
    """With enable_async=True every page renders through render_async to the same output as
    the synchronous environment."""
    directory, names = default_corpus
    pages = _pages(names)
    options: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "autoescape": True}
    async_env = _environment(directory, enable_async=True, **options)
    context = render_context()

    async def render() -> list[str]:
        return [await async_env.get_template(name).render_async(context) for name in pages]

    assert asyncio.run(render()) == _render_all(_environment(directory, **options), pages)


def test_autoescape_escapes_context_but_not_safe_markup(
    default_corpus: tuple[Path, list[str]],
) -> None:
    """Under autoescape the context's angle brackets come out escaped somewhere, while the
    markup passed through ``safe`` stays raw."""
    directory, names = default_corpus
    joined = "".join(_render_all(_environment(directory, autoescape=True), _pages(names)))
    assert "&lt;soon&gt;" in joined or "&lt;point&gt;" in joined
    assert "<p>Written in Zürich.</p>" in joined


def test_corpus_uses_inheritance_imports_includes_and_call_blocks(
    default_corpus: tuple[Path, list[str]],
) -> None:
    """The default corpus really exercises extends (two levels), import, from-import, include,
    macros with defaults called through call blocks, loops with else, elif, set, filters,
    tests, whitespace control, comments, and is mostly literal HTML."""
    directory, names = default_corpus
    trees = _parsed(directory, names)

    def found(kind: type[nodes.Node]) -> list[Any]:
        return [node for tree in trees for node in tree.find_all(kind)]

    extended = {node.template.value for node in found(nodes.Extends)}
    assert {"layouts/base.html", "layouts/app.html"} <= extended
    assert found(nodes.Import) and found(nodes.FromImport) and found(nodes.Include)
    assert any(macro.defaults for macro in found(nodes.Macro))
    assert found(nodes.CallBlock)
    assert any(
        isinstance(call.node, nodes.Name) and call.node.name == "caller"
        for call in found(nodes.Call)
    )
    assert any(loop.else_ for loop in found(nodes.For))
    assert any(branch.elif_ for branch in found(nodes.If))
    assert found(nodes.Assign)
    assert any(
        isinstance(attr.node, nodes.Name) and attr.node.name == "loop" and attr.attr == "index"
        for attr in found(nodes.Getattr)
    )
    filters = {node.name for node in found(nodes.Filter)}
    wanted = {"upper", "title", "default", "join", "length", "truncate", "format", "e", "safe"}
    assert wanted <= filters
    assert any(
        node.name == "sort" and any(kw.key == "attribute" for kw in node.kwargs)
        for node in found(nodes.Filter)
    )
    assert {"defined", "divisibleby"} <= {node.name for node in found(nodes.Test)}

    sources = [(directory / name).read_text(encoding="utf-8") for name in names]
    assert any("{%-" in source for source in sources)
    assert any("{#" in source for source in sources)
    literal = sum(len(node.data) for node in found(nodes.TemplateData))
    assert literal / sum(len(source) for source in sources) >= 0.4


def test_pages_come_last_and_each_extends_a_layout(
    default_corpus: tuple[Path, list[str]],
) -> None:
    """The returned names list shared templates first and pages last, and every page extends
    one of the generated layouts."""
    directory, names = default_corpus
    first_page = next(i for i, name in enumerate(names) if name.startswith("pages/"))
    assert all(name.startswith("pages/") for name in names[first_page:])
    assert {name.split("/")[0] for name in names[:first_page]} == {"layouts", "macros", "partials"}
    layouts = {name for name in names if name.startswith("layouts/")}
    for tree in _parsed(directory, _pages(names)):
        (extends,) = tree.find_all(nodes.Extends)
        assert isinstance(extends.template, nodes.Const)
        assert extends.template.value in layouts


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_small_corpora_are_consistent_and_render(tmp_path: Path, count: int) -> None:
    """A corpus of any small size writes exactly ``count`` templates, only refers to templates
    it wrote, and every page renders under StrictUndefined."""
    names = generate_corpus(tmp_path, count=count, seed=count)
    assert len(names) == len(set(names)) == count
    assert sorted(corpus_names(tmp_path)) == sorted(names)
    pages = _pages(names)
    assert pages and pages == names[len(names) - len(pages) :]
    _render_all(_environment(tmp_path, undefined=jinja2.StrictUndefined), pages)


def test_single_template_corpus_is_one_self_contained_page(tmp_path: Path) -> None:
    """count=1 writes one page that extends nothing and still defines and calls a macro."""
    (name,) = generate_corpus(tmp_path, count=1)
    assert name.startswith("pages/")
    (tree,) = _parsed(tmp_path, [name])
    assert not list(tree.find_all(nodes.Extends))
    assert list(tree.find_all(nodes.CallBlock))


def test_large_corpus_is_mostly_pages_over_a_small_shared_set(tmp_path: Path) -> None:
    """count=2000 writes 2000 templates, at most a dozen of them shared, and a sample of its
    pages renders."""
    names = generate_corpus(tmp_path, count=2000, seed=5)
    assert len(names) == len(set(names)) == 2000
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 2000
    pages = _pages(names)
    assert len(names) - len(pages) <= 12
    sample = pages[:: len(pages) // 15]
    _render_all(_environment(tmp_path, undefined=jinja2.StrictUndefined), sample)


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"count": 0}, "count"),
        ({"count": -3}, "count"),
        ({"min_size": 255}, "min_size"),
        ({"min_size": 4096, "max_size": 2048}, "max_size"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(
    tmp_path: Path, options: dict[str, int], argument: str
) -> None:
    """A bad count or size bound raises a ValueError (ConfigurationError) whose message names
    the argument, before anything is written."""
    with pytest.raises(ValueError, match=argument) as raised:
        generate_corpus(tmp_path / "out", **options)
    assert isinstance(raised.value, ConfigurationError)
    assert not (tmp_path / "out").exists()


def test_corpus_names_lists_generated_templates(default_corpus: tuple[Path, list[str]]) -> None:
    """corpus_names on a generated directory returns the generated names, sorted."""
    directory, names = default_corpus
    assert corpus_names(directory) == sorted(names)


def test_corpus_names_keeps_template_suffixes_only(tmp_path: Path) -> None:
    """corpus_names finds .html, .j2, .jinja, .txt and .xml files at any depth, with ``/``
    separators, and ignores other files."""
    for name in ["a.html", "mail/b.txt", "deep/er/c.j2", "d.jinja", "feed.xml", "x.py", "y.css"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{{ 1 }}", encoding="utf-8")
    assert corpus_names(tmp_path) == ["a.html", "d.jinja", "deep/er/c.j2", "feed.xml", "mail/b.txt"]


def test_render_context_is_fresh_on_every_call() -> None:
    """render_context returns a new dict each time, so one test mutating it cannot leak."""
    first = render_context()
    first["users"] = []
    assert render_context()["users"]
    assert render_context() == render_context()
