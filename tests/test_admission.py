"""The admission policy of template strings: stored at the n-th compile, bounded."""

from __future__ import annotations

import pytest

import tiered_bccache.admission
from tiered_bccache.admission import Admission


def test_a_string_is_admitted_at_its_threshold_th_sighting_and_then_forgotten() -> None:
    admission = Admission(3)
    assert [admission.admit("a") for _ in range(3)] == [False, False, True]
    assert "a" not in admission.sightings
    # Forgotten once stored: three more compiles before it would be stored again.
    assert [admission.admit("a") for _ in range(3)] == [False, False, True]


def test_a_threshold_of_one_admits_every_string_and_remembers_nothing() -> None:
    admission = Admission(1)
    assert all(admission.admit(str(i)) for i in range(100))
    assert admission.sightings == {}


def test_strings_are_counted_apart() -> None:
    admission = Admission(2)
    assert (admission.admit("a"), admission.admit("b")) == (False, False)
    assert (admission.admit("b"), admission.admit("a")) == (True, True)


def test_the_sightings_start_over_past_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiered_bccache.admission, "MAX_SIGHTINGS", 10)
    admission = Admission(2)
    for i in range(95):
        assert not admission.admit(str(i))
        assert len(admission.sightings) <= 10
    # What was counted before the last start-over is forgotten: a first sighting again.
    assert not admission.admit("0")
