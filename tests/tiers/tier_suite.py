"""The byte-tier contract, as one test class every tier runs.

:class:`TierContract` pins what the cache relies on from a tier: ``get`` of a missing key
is None, bytes round-trip exactly, ``set`` overwrites, ``delete`` is idempotent, ``clear``
empties, odd keys work and stay distinct, and keys do not share values. A user-written
tier runs the same suite by subclassing it in a ``test_*.py`` module and returning a
fresh, empty tier from ``make_tier`` (an autouse fixture can provide what it needs, as
the memcached tests do). Tests are not shipped with the package: outside a checkout,
copy this module. ::

    from myapp.tiers import SqliteTier
    from tests.tiers.tier_suite import TierContract

    class TestSqliteTier(TierContract):
        def make_tier(self) -> SqliteTier:
            return SqliteTier(":memory:")
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

import pytest

from tiered_bccache import Tier

__all__ = ["ODD_KEYS", "VALUES", "TierContract", "assert_holds"]

#: Keys that a naive tier would mangle, truncate, let escape its directory, or merge.
ODD_KEYS: tuple[str, ...] = (
    "k" * 10_000,
    "k" * 9_999 + "j",
    "ключ-キー-🔑",
    "a key with spaces",
    " ",
    "a/b",
    "/etc/passwd",
    "../../escape",
    "..",
    ".",
    "a\x00b",
    "a\nb\r\tc\x01\x7f",
    "Key",
    "key",
    # The SHA-256 of another key here: a tier that stores odd keys under their digest
    # must not let that digest and the same text given as a key share a slot.
    hashlib.sha256(b"a key with spaces").hexdigest(),
)

#: Values that must come back byte for byte.
VALUES: dict[str, bytes] = {
    "empty": b"",
    "one-byte": b"\x00",
    "every-byte-value": bytes(range(256)),
    "200kB": random.Random(0).randbytes(200_000),
}


def assert_holds(tier: Tier, expected: Mapping[str, bytes | None]) -> None:
    """Fail, naming the keys (shortened) whose value differs, unless ``tier`` holds
    exactly ``expected``. (Plain asserts here get no pytest introspection: this module
    is not a test module.)"""
    wrong = [
        f"{key[:40]!r}{'...' if len(key) > 40 else ''}: {got!r:.60} != {want!r:.60}"
        for key, want in expected.items()
        if (got := tier.get(key)) != want
    ]
    assert not wrong, f"wrong values for {len(wrong)} keys:\n" + "\n".join(wrong)


class TierContract:
    """Tests every byte tier must pass. Subclasses implement :meth:`make_tier`."""

    def make_tier(self) -> Tier:
        """A new, empty tier, private to the calling test."""
        raise NotImplementedError

    def test_tier_satisfies_the_tier_protocol(self) -> None:
        """The tier has the four methods the cache calls."""
        assert isinstance(self.make_tier(), Tier)

    def test_get_of_missing_key_is_none(self) -> None:
        """A key never set reads as None, not as an error or an empty value."""
        assert self.make_tier().get("missing") is None

    @pytest.mark.parametrize("name", sorted(VALUES))
    def test_set_then_get_returns_the_same_bytes(self, name: str) -> None:
        """Any value, empty to 200 kB and every byte value, round-trips exactly."""
        tier = self.make_tier()
        tier.set("entry", VALUES[name])
        got = tier.get("entry")
        assert isinstance(got, bytes), f"get returned {type(got).__name__}, not bytes"
        assert got == VALUES[name], f"{len(got)} bytes came back for {len(VALUES[name])}"

    def test_set_overwrites_a_longer_value_with_a_shorter_one(self) -> None:
        """A second set replaces the first value entirely, with nothing left over."""
        tier = self.make_tier()
        tier.set("entry", b"a much longer first value")
        tier.set("entry", b"short")
        assert tier.get("entry") == b"short"

    def test_delete_removes_the_value(self) -> None:
        """After delete the key reads as missing."""
        tier = self.make_tier()
        tier.set("entry", b"value")
        tier.delete("entry")
        assert tier.get("entry") is None

    def test_delete_is_idempotent(self) -> None:
        """Deleting a key that is missing, or already deleted, is not an error."""
        tier = self.make_tier()
        tier.delete("never-set")
        tier.set("entry", b"value")
        tier.delete("entry")
        tier.delete("entry")
        assert tier.get("entry") is None

    def test_clear_empties_the_tier_and_leaves_it_usable(self) -> None:
        """clear removes every entry; the tier stores again right after."""
        tier = self.make_tier()
        for i in range(10):
            tier.set(f"entry-{i}", b"value %d" % i)
        tier.clear()
        assert_holds(tier, {f"entry-{i}": None for i in range(10)})
        tier.set("entry-0", b"again")
        assert tier.get("entry-0") == b"again"

    def test_odd_keys_round_trip_and_stay_distinct(self) -> None:
        """Long, unicode, spaced, path-like and control-character keys each keep their
        own value."""
        tier = self.make_tier()
        expected = {key: b"value-%d" % i for i, key in enumerate(ODD_KEYS)}
        for key, value in expected.items():
            tier.set(key, value)
        assert_holds(tier, expected)
        for key in ODD_KEYS:
            tier.delete(key)
        assert_holds(tier, dict.fromkeys(ODD_KEYS))

    def test_values_are_isolated_per_key(self) -> None:
        """Writing, overwriting or deleting one key never changes another key's value."""
        tier = self.make_tier()
        keys = [f"entry-{i}" for i in range(20)]
        for key in keys:
            tier.set(key, key.encode())
        tier.set(keys[3], b"changed")
        tier.delete(keys[7])
        expected: dict[str, bytes | None] = {key: key.encode() for key in keys}
        expected[keys[3]] = b"changed"
        expected[keys[7]] = None
        assert_holds(tier, expected)
