"""The tier interface: what the cache asks of a storage, and nothing more.

A byte tier stores opaque ``bytes`` under ``str`` keys. It knows nothing about Jinja,
MACs or promotion: the cache hands it finished entries and verifies what comes back.
Four methods make a tier; optional attributes refine how the cache uses it, and two
optional methods, ``describe`` and ``probe``, let the command line report on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from filelock import FileLock

    from .filesystem import FileSystemTier

__all__ = ["ByteTier", "Capabilities", "Tier", "capabilities", "check_tiers", "tier_name"]


@runtime_checkable
class Tier(Protocol):
    """What every tier provides. ``get`` returns None for a missing key; ``delete`` of a
    missing key is not an error; any other failure raises, and the cache counts and logs
    it (a tier never swallows its own errors).

    ``get`` may raise :class:`~tiered_bccache.EntryError` (reason ``"format"``) when what
    is stored under the key is not an entry at all, such as a symlink or a FIFO planted
    where the filesystem tier keeps a file: the cache counts that as a rejected entry
    and a miss, as it does an entry that fails its checks, not as a failure of the tier.

    Optional attributes, read with defaults when absent:

    - ``name`` (str): how stats and logs call the tier.
    - ``remote`` (bool, default False): calls may stall on a network; the cache puts a
      circuit breaker in front of the tier.
    - ``max_entry_size`` (int or None): larger entries are skipped and counted.
    - ``compress`` (bool, default False): entries for this tier are zlib-compressed.

    - ``holds_objects`` (bool, default False): the tier keeps ready code objects, not
      bytes (:class:`~tiered_bccache.MemoryTier`); ``set`` takes a third argument, the
      entry's weight.
    - ``lease(key)``: a ``filelock`` lock the cache holds while it compiles the template
      under ``key``, so one process of the host compiles it (the filesystem tier).
    - ``events`` (mapping of str to int): counts of what the tier noticed itself, shown
      in ``stats()`` (the server tiers' namespace generations).
    - ``close()``: release connections (``cache.close()`` calls it).

    The cache reads these once, when it is built (:func:`capabilities`). Optional methods
    the command line calls when present (:class:`ByteTier` has both, with defaults; see
    there): ``describe()`` and ``probe()``.
    """

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> None: ...


class ByteTier:
    """Convenience base for a user-written tier: the optional attributes and methods
    with their defaults. Subclass it and implement the four methods of :class:`Tier`::

        class DictTier(ByteTier):
            name = "dict"

            def __init__(self) -> None:
                self.data: dict[str, bytes] = {}

            def get(self, key: str) -> bytes | None:
                return self.data.get(key)

            def set(self, key: str, value: bytes) -> None:
                self.data[key] = value

            def delete(self, key: str) -> None:
                self.data.pop(key, None)

            def clear(self) -> None:
                self.data.clear()
    """

    name: str = "custom"
    remote: bool = False
    max_entry_size: int | None = None
    compress: bool = False
    #: Only :class:`~tiered_bccache.MemoryTier` holds code objects instead of bytes.
    holds_objects: ClassVar[bool] = False

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def set(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        """What ``tiered-bccache stats`` shows of the tier (and ``--json`` prints): JSON
        values under at least ``name`` and ``kind``. This default gives those two.

        Some keys mean the same for every tier: ``entries`` and ``bytes`` (what it holds
        now), ``generation`` (the namespace generation, for a tier that clears by bumping
        one), ``this_process_only`` (True when what it holds lives in this process), and
        ``reachable`` (False makes ``stats`` exit 1) with ``error`` saying why. ``clear``
        prints ``entries`` and ``bytes`` as they were, and ``generation`` before and after.
        A tier on servers reports a server that does not answer under ``reachable`` rather
        than raising.
        """
        return {"name": self.name, "kind": type(self).__name__}

    def probe(self) -> None:
        """Raise, as the tier's calls would, when it cannot be reached: the command line
        probes the tiers before it changes anything. A local tier returns at once, as
        this default does."""


class Capabilities:
    """What the cache reads of a tier once, with the defaults of a tier that declares
    none (see :class:`Tier`). (A plain class: a ``NamedTuple`` costs every process that
    builds a cache a compile per field.)"""

    __slots__ = (
        "close",
        "compress",
        "events",
        "holds_objects",
        "lease",
        "max_entry_size",
        "name",
        "remote",
    )

    def __init__(self, tier: object) -> None:
        lease = getattr(tier, "lease", None)
        close = getattr(tier, "close", None)
        self.name = tier_name(tier)
        self.remote = bool(getattr(tier, "remote", False))
        self.compress = bool(getattr(tier, "compress", False))
        self.max_entry_size: int | None = getattr(tier, "max_entry_size", None)
        self.holds_objects = bool(getattr(tier, "holds_objects", False))
        self.lease: Callable[[str], FileLock] | None = lease if callable(lease) else None
        self.events: Mapping[str, int] | None = getattr(tier, "events", None)
        self.close: Callable[[], object] | None = close if callable(close) else None


def capabilities(tier: object) -> Capabilities:
    """What ``tier`` declares of the optional attributes and methods of :class:`Tier`."""
    return Capabilities(tier)


def tier_name(tier: object) -> str:
    """How logs and stats name ``tier``."""
    return str(getattr(tier, "name", type(tier).__name__))


def check_tiers(tiers: object, filesystem: type[FileSystemTier]) -> tuple[Tier, ...]:
    """``tiers`` as a cache takes them: a non-empty list of distinct tiers, no two
    ``filesystem`` tiers on one directory; else :class:`ConfigurationError` naming it."""
    if isinstance(tiers, (str, bytes)) or not isinstance(tiers, Sequence):
        raise ConfigurationError(f"tiers must be a list of tiers, got {type(tiers).__name__}")
    if not tiers:
        raise ConfigurationError("tiers must name at least one tier")
    seen: dict[int, int] = {}
    directories: dict[str, int] = {}
    for index, tier in enumerate(tiers):
        if not isinstance(tier, Tier):
            raise ConfigurationError(
                f"tiers[{index}] is a {type(tier).__name__}, not a tier "
                "(a tier has get, set, delete and clear methods)"
            )
        if id(tier) in seen:
            raise ConfigurationError(
                f"tiers[{index}] is the same object as tiers[{seen[id(tier)]}]"
            )
        seen[id(tier)] = index
        if isinstance(tier, filesystem):
            if tier.directory in directories:
                first = directories[tier.directory]
                raise ConfigurationError(
                    f"tiers[{index}] uses the same directory as tiers[{first}]"
                )
            directories[tier.directory] = index
    return tuple(tiers)
