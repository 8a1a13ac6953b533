"""What the fault tests of the remote tiers share: a corpus with plain Jinja's output for
each template, and a rig of memory over the tier under test whose cold rounds check
every output."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jinja2 import Environment, FileSystemLoader

from tiered_bccache import MemoryTier, TieredBytecodeCache, TierStats
from tiered_bccache.benchkit.corpus import generate_corpus, render_context


@dataclass(frozen=True)
class Corpus:
    directory: Path
    names: tuple[str, ...]
    expected: dict[str, str]


def build_corpus(tmp_path_factory: pytest.TempPathFactory, *, seed: int) -> Corpus:
    """Sixteen corpus templates (layouts, macros, partials, pages) of 1 to 6 kB and what
    plain Jinja renders each of them to."""
    directory = tmp_path_factory.mktemp("corpus")
    names = generate_corpus(directory, count=16, seed=seed, min_size=1024, max_size=6 * 1024)
    env = Environment(loader=FileSystemLoader(directory))
    context = render_context()
    return Corpus(directory, tuple(names), {n: env.get_template(n).render(context) for n in names})


R = TypeVar("R", bound="Rig")


@dataclass
class Rig:
    """Memory over the remote tier under test, and an environment with no template
    cache of its own."""

    memory: MemoryTier
    tier: Any
    cache: TieredBytecodeCache
    env: Environment
    corpus: Corpus

    @classmethod
    def over(cls: type[R], tier: Any, corpus: Corpus, **cache_options: Any) -> R:
        """A rig of memory over ``tier``, the cache built with ``cache_options``."""
        memory = MemoryTier()
        cache = TieredBytecodeCache([memory, tier], **cache_options)
        env = Environment(
            loader=FileSystemLoader(corpus.directory), bytecode_cache=cache, cache_size=0
        )
        return cls(memory, tier, cache, env, corpus)

    def stats(self) -> TierStats:
        return self.cache.stats().tiers[1]

    def cold_round(self, names: Sequence[str] | None = None) -> float:
        """Empty the memory tier, so that every lookup reaches the tier under test, and
        render ``names`` (default: the whole corpus), checking each output against plain
        Jinja's; return the seconds it took."""
        self.memory.clear()
        context = render_context()
        started = time.monotonic()
        for name in names or self.corpus.names:
            assert self.env.get_template(name).render(context) == self.corpus.expected[name]
        return time.monotonic() - started
