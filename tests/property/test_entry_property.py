"""Properties of the entry format that must hold for every template and every corruption."""

from __future__ import annotations

import marshal
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import Environment

from tiered_bccache.compiling import NO_DEPENDENCIES
from tiered_bccache.entry import EntryCodec, source_bytes, source_digest
from tiered_bccache.errors import EntryError

SECRET = b"0123456789abcdef-test-secret-key"
KEY = "0f" * 16 + "-" + "ab" * 20

NAMES = st.sampled_from(["x", "items", "user", "loop_var", "n"])
FILTERS = st.sampled_from(["upper", "lower", "title", "length", "e", "string", "trim"])
TEXT = st.text(st.characters(exclude_characters="{}%#", exclude_categories=["Cs"]), max_size=12)
LITERALS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.text(st.characters(categories=["L", "N", "Zs"]), max_size=8).map(repr),
)
EXPRESSIONS = st.one_of(
    NAMES,
    LITERALS,
    st.tuples(NAMES, FILTERS).map(lambda t: f"{t[0]}|{t[1]}"),
    st.tuples(LITERALS, st.sampled_from(["+", "~", "==", "and"]), NAMES).map(" ".join),
    st.tuples(NAMES, NAMES).map(lambda t: f"{t[0]}.{t[1]}"),
)


def _wrap(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(EXPRESSIONS, children).map(lambda t: f"{{% if {t[0]} %}}{t[1]}{{% endif %}}"),
        st.tuples(EXPRESSIONS, children, children).map(
            lambda t: f"{{% if {t[0]} %}}{t[1]}{{% else %}}{t[2]}{{% endif %}}"
        ),
        st.tuples(NAMES, children).map(
            lambda t: f"{{% for it in {t[0]} %}}{{{{ loop.index }}}}{t[1]}{{% endfor %}}"
        ),
        st.tuples(NAMES, EXPRESSIONS, children).map(lambda t: f"{{% set {t[0]} = {t[1]} %}}{t[2]}"),
        st.tuples(children, EXPRESSIONS).map(
            lambda t: f"{{% macro m(a) %}}{t[0]}{{% endmacro %}}{{{{ m({t[1]}) }}}}"
        ),
        st.lists(children, max_size=3).map("".join),
    )


LEAVES = st.one_of(
    TEXT,
    EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}"),
    TEXT.map(lambda t: f"{{# {t} #}}"),
)
SOURCES = st.recursive(LEAVES, _wrap, max_leaves=12)


def checksum_of(source: str) -> str:
    return source_digest(source)


def _entry(source: str, compress: bool) -> bytes:
    code = marshal.dumps((NO_DEPENDENCIES, Environment().compile(source)))
    return EntryCodec(SECRET).encode(KEY, checksum_of(source), code, compress=compress)


#: A few entries of different shapes to corrupt, compressed and not.
CORPUS = {
    (source, compress): _entry(source, compress)
    for source in ("hi", "{{ x|upper }}", "{% for i in items %}<li>{{ i }}</li>{% endfor %}")
    for compress in (False, True)
}
ENTRIES = st.sampled_from(sorted(CORPUS))


def assert_rejected(source: str, data: bytes) -> None:
    with pytest.raises(EntryError):
        EntryCodec(SECRET).decode(KEY, checksum_of(source), data)


@given(source=SOURCES, compress=st.booleans(), enable_async=st.booleans())
def test_any_template_round_trips_to_an_equal_code_object(
    source: str, compress: bool, enable_async: bool
) -> None:
    """For any generated template, decode(encode(code)) equals the code Jinja compiled."""
    code = Environment(enable_async=enable_async).compile(source)
    assert isinstance(code, types.CodeType)
    codec = EntryCodec(SECRET)
    payload = marshal.dumps((NO_DEPENDENCIES, code))
    data = codec.encode(KEY, checksum_of(source), payload, compress=compress)
    assert codec.decode(KEY, checksum_of(source), data) == code


@given(which=ENTRIES, data=st.data())
def test_any_truncation_is_rejected(which: tuple[str, bool], data: st.DataObject) -> None:
    """Any proper prefix of an entry is refused with EntryError, never decoded."""
    full = CORPUS[which]
    length = data.draw(st.integers(0, len(full) - 1), label="length")
    assert_rejected(which[0], full[:length])


@given(which=ENTRIES, data=st.data(), mask=st.integers(1, 255))
def test_any_single_byte_flip_is_rejected(
    which: tuple[str, bool], data: st.DataObject, mask: int
) -> None:
    """Xoring any byte of an entry with any non-zero mask makes it refused with EntryError."""
    full = bytearray(CORPUS[which])
    position = data.draw(st.integers(0, len(full) - 1), label="position")
    full[position] ^= mask
    assert_rejected(which[0], bytes(full))


@given(which=ENTRIES, tail=st.binary(min_size=1, max_size=64))
def test_any_appended_bytes_are_rejected(which: tuple[str, bool], tail: bytes) -> None:
    """An entry with anything appended is refused with EntryError."""
    assert_rejected(which[0], CORPUS[which] + tail)


@given(which=ENTRIES, junk=st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected(which: tuple[str, bool], junk: bytes) -> None:
    """Random bytes, and random bytes after a valid entry's header, are refused."""
    assert_rejected(which[0], junk)
    full = CORPUS[which]
    assert_rejected(which[0], full[: len(full) // 2] + junk)


#: Any text, lone surrogates and astral characters included.
TEXTS = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


@given(first=TEXTS, second=TEXTS)
def test_the_digested_bytes_tell_any_two_texts_apart(first: str, second: str) -> None:
    """``source_bytes`` is one-to-one: two texts that differ are digested from bytes
    that differ (so an entry of one source is never fresh for another)."""
    assert (source_bytes(first) == source_bytes(second)) == (first == second)
