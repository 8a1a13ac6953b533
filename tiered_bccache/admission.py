"""Which template strings are stored: the admission policy of ``from_string``.

A named template is stored at its first compile: a loader's templates come back. A
template *string* may not: code that builds strings with values in them (an f-string
rendered once) would fill the tiers with entries nobody reads again. So a string is
stored once this process has compiled it ``threshold`` times (the cache's
``string_admission``, 2 by default); until then it is compiled, counted as not admitted,
and forgotten. The count of sightings is bounded: past :data:`MAX_SIGHTINGS` strings
seen and not yet stored, it starts over.
"""

from __future__ import annotations

from .errors import ConfigurationError

__all__ = ["MAX_SIGHTINGS", "Admission"]

#: Beyond this many strings seen but not yet stored, the count of sightings starts over.
MAX_SIGHTINGS = 16384


class Admission:
    """The sightings of template strings in this process, by digest."""

    __slots__ = ("sightings", "threshold")

    def __init__(self, threshold: int) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigurationError(
                f"string_admission must be a positive integer, got {threshold!r}"
            )
        self.threshold = threshold
        #: digest of a string -> times compiled here without being stored (bounded).
        self.sightings: dict[str, int] = {}

    def admit(self, digest: str) -> bool:
        """Count one more compile of the string with ``digest``: True when it is to be
        stored now (and its count forgotten), False while it has been seen too few times."""
        seen = self.sightings.get(digest, 0) + 1
        if seen >= self.threshold:
            self.sightings.pop(digest, None)
            return True
        if len(self.sightings) >= MAX_SIGHTINGS:
            self.sightings.clear()
        self.sightings[digest] = seen
        return False
