"""The entry format: round trips of real Jinja code, and every way an entry is refused."""

from __future__ import annotations

import importlib.util
import marshal
import pathlib
import pickle
import struct
import types
from pathlib import Path

import jinja2
import pytest
from blake3 import blake3
from jinja2 import Environment
from jinja2.bccache import Bucket, bc_magic, bc_version

from tiered_bccache.compiling import NO_DEPENDENCIES, Dependencies
from tiered_bccache.entry import (
    CHECKSUM_SIZE,
    FORMAT_VERSION,
    MAC_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    EntryCodec,
    read_header,
    source_bytes,
    source_digest,
)
from tiered_bccache.errors import EntryError

SECRET = b"0123456789abcdef-test-secret-key"
OTHER_SECRET = b"fedcba9876543210-another-secret"
KEY = "0f" * 16 + "-" + "ab" * 20
SOURCE = (
    "{% macro item(x) %}<li>{{ x|title }}</li>{% endmacro %}"
    "<ul>{% for x in items %}{{ item(x) }}{% else %}none{% endfor %}</ul>"
    "{% if user %}{{ user.name|default('anon')|e }}{% endif %}{# a comment #}"
)
TEMPLATES = {
    "text": "hello",
    "macro_loop": SOURCE,
    "blocks": "{% block title %}T{% endblock %}{% block body %}{{ self.title() }}{% endblock %}",
    "extends": "{% extends 'base.html' %}{% block body %}{{ super() }}!{% endblock %}",
    "set_filter": "{% set n = items|length %}{{ n * 2 }} {{ '%03d'|format(n) }}",
    "with_call": "{% with a = 1 %}{% call m() %}{{ a }}{% endcall %}{% endwith %}",
}


def checksum_of(source: str) -> str:
    """The checksum an entry carries for a template source."""
    return source_digest(source)


def compiled(source: str, *, enable_async: bool = False) -> types.CodeType:
    code = Environment(enable_async=enable_async).compile(source)
    assert isinstance(code, types.CodeType)
    return code


def payload(code: types.CodeType, dependencies: Dependencies = NO_DEPENDENCIES) -> bytes:
    """An entry's payload: the compile's dependencies and the code, marshalled."""
    return marshal.dumps((dependencies, code))


def entry(
    source: str = SOURCE, *, compress: bool = False, codec: EntryCodec | None = None
) -> bytes:
    return (codec or EntryCodec(SECRET)).encode(
        KEY, checksum_of(source), payload(compiled(source)), compress=compress
    )


def signed_entry(
    body_fields: dict[str, object], payload: bytes, *, secret: bytes = SECRET, key: str = KEY
) -> bytes:
    """An entry built by hand from the layout in the module docstring, with a valid MAC."""
    stamp = body_fields.get("stamp", f"jinja2 {jinja2.__version__} bc{bc_version}")
    assert isinstance(stamp, str)
    header = struct.pack(
        ">4sBB4sB",
        MAGIC,
        body_fields.get("format", FORMAT_VERSION),
        body_fields.get("flags", 0),
        body_fields.get("py_magic", importlib.util.MAGIC_NUMBER),
        len(stamp),
    )
    body = header + stamp.encode("ascii") + checksum_of(SOURCE).encode("ascii") + payload
    raw_key = key.encode("ascii")
    mac_key = blake3(secret, derive_key_context="tiered_bccache 2026-12 entry MAC").digest()
    mac = blake3(len(raw_key).to_bytes(2, "big") + raw_key + body, key=mac_key).digest()
    return body + mac


def reason(codec: EntryCodec, data: bytes, *, key: str = KEY, source: str = SOURCE) -> str:
    with pytest.raises(EntryError) as info:
        codec.decode(key, checksum_of(source), data)
    return info.value.reason


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zlib"])
@pytest.mark.parametrize("enable_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_round_trip_gives_back_the_code_jinja_compiled(
    name: str, enable_async: bool, compress: bool
) -> None:
    """encode then decode returns a code object equal to the one Jinja compiled."""
    source = TEMPLATES[name]
    code = compiled(source, enable_async=enable_async)
    codec = EntryCodec(SECRET)
    data = codec.encode(KEY, checksum_of(source), payload(code), compress=compress)
    assert codec.decode(KEY, checksum_of(source), data) == code


def test_decoded_code_renders_like_the_original() -> None:
    """The decoded code object is a working template, not just an equal-looking object."""
    env = Environment()
    codec = EntryCodec(SECRET)
    data = codec.encode(KEY, checksum_of(SOURCE), payload(env.compile(SOURCE)))
    template = env.template_class.from_code(
        env, codec.decode(KEY, checksum_of(SOURCE), data), env.make_globals(None)
    )
    assert template.render(items=["a"], user=None) == "<ul><li>A</li></ul>"


def test_a_second_codec_with_the_same_secret_reads_the_entry() -> None:
    """Entries are readable by any codec holding the secret (another process, another host)."""
    assert EntryCodec(SECRET).decode(KEY, checksum_of(SOURCE), entry()) == compiled(SOURCE)


def test_compression_shrinks_the_payload() -> None:
    """compress=True stores a zlib payload smaller than the marshalled code."""
    plain, packed = read_header(entry()), read_header(entry(compress=True))
    assert not plain.compressed and packed.compressed
    assert packed.payload_size < plain.payload_size


def test_read_header_reports_every_field() -> None:
    """read_header parses format, flags, Python magic, Jinja stamp, checksum and size."""
    code = payload(compiled(SOURCE))
    header = read_header(EntryCodec(SECRET).encode(KEY, checksum_of(SOURCE), code))
    assert header.format_version == FORMAT_VERSION
    assert header.compressed is False
    assert header.python_magic == importlib.util.MAGIC_NUMBER
    assert header.stamp == f"jinja2 {jinja2.__version__} bc{bc_version}"
    assert header.checksum == checksum_of(SOURCE)
    assert header.payload_size == len(code)


def test_another_secret_is_rejected_as_mac() -> None:
    """An entry signed under another secret fails its MAC."""
    assert reason(EntryCodec(OTHER_SECRET), entry()) == "mac"


def test_entry_moved_to_another_key_is_rejected_as_mac() -> None:
    """An entry copied under another key fails its MAC: entries are bound to their key."""
    assert reason(EntryCodec(SECRET), entry(), key="0f" * 16 + "-" + "cd" * 20) == "mac"


def test_entry_for_a_changed_source_is_rejected_as_stale() -> None:
    """A valid entry whose template source has changed since is reported stale."""
    assert reason(EntryCodec(SECRET), entry(), source=SOURCE + " edited") == "stale"


#: The bytecode magic of the Python after this one (a magic number is a 16-bit little-endian
#: counter and "\r\n"): another Python's on every interpreter the tests run on. A literal
#: would be one interpreter's own (b"\x6f\x0d\r\n" is 3.10's).
_OUR_MAGIC = int.from_bytes(importlib.util.MAGIC_NUMBER[:2], "little")
OTHER_PYTHON_MAGIC = (_OUR_MAGIC + 1).to_bytes(2, "little") + b"\r\n"
assert OTHER_PYTHON_MAGIC != importlib.util.MAGIC_NUMBER


@pytest.mark.parametrize(
    ("fields", "attribute", "expected"),
    [
        ({"format": FORMAT_VERSION + 1}, "format_version", FORMAT_VERSION + 1),
        ({"py_magic": OTHER_PYTHON_MAGIC}, "python_magic", OTHER_PYTHON_MAGIC),
        ({"stamp": "jinja2 2.11.3 bc4"}, "stamp", "jinja2 2.11.3 bc4"),
        (
            {"stamp": f"jinja2 {jinja2.__version__} bc{bc_version + 1}"},
            "stamp",
            f"jinja2 {jinja2.__version__} bc{bc_version + 1}",
        ),
    ],
    ids=["format", "python", "jinja", "bc_version"],
)
def test_entry_from_another_version_is_rejected_as_version(
    fields: dict[str, object], attribute: str, expected: object
) -> None:
    """A correctly signed entry from another format, Python or Jinja is refused as "version"
    before its payload is read, and read_header reports the field that differs."""
    data = signed_entry(fields, payload(compiled(SOURCE)))
    assert reason(EntryCodec(SECRET), data) == "version"
    assert getattr(read_header(data), attribute) == expected


@pytest.mark.parametrize(
    ("offset", "replacement", "attribute"),
    [(4, b"\x07", "format_version"), (6, b"\x00\x00\x0d\x0a", "python_magic"), (11, b"J", "stamp")],
    ids=["format", "python", "jinja"],
)
def test_edited_header_bytes_are_rejected_and_reported(
    offset: int, replacement: bytes, attribute: str
) -> None:
    """An entry whose header bytes were edited in place is refused as "version" and
    read_header shows the edited field."""
    original = entry()
    data = original[:offset] + replacement + original[offset + len(replacement) :]
    assert reason(EntryCodec(SECRET), data) == "version"
    assert getattr(read_header(data), attribute) != getattr(read_header(original), attribute)


def test_handmade_entry_in_our_layout_is_accepted() -> None:
    """The hand-built entries above follow the real layout: unchanged fields decode."""
    data = signed_entry({}, payload(compiled(SOURCE)))
    assert EntryCodec(SECRET).decode(KEY, checksum_of(SOURCE), data) == compiled(SOURCE)


class CreatesFile:
    """A pickle that touches a file when it is loaded: what an attacker plants in a cache."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def jinja_format_entry(path: Path) -> bytes:
    """An entry in Jinja's own bytecode format whose checksum pickle creates ``path``."""
    return bc_magic + pickle.dumps(CreatesFile(path)) + payload(compiled(SOURCE))


def test_jinja_format_pickle_entry_is_refused_without_being_unpickled(tmp_path: Path) -> None:
    """A Jinja-format entry carrying a malicious pickle is rejected and its payload never
    runs, while Jinja's own loader does run it (proof that the planted entry is live)."""
    victim = tmp_path / "pwned"
    data = jinja_format_entry(victim)
    with pytest.raises(EntryError) as info:
        EntryCodec(SECRET).decode(KEY, checksum_of(SOURCE), data)
    assert info.value.reason == "format"
    assert not victim.exists()

    control = tmp_path / "pwned-by-jinja"
    Bucket(Environment(), KEY, checksum_of(SOURCE)).bytecode_from_string(
        jinja_format_entry(control)
    )
    assert control.exists()


def test_jinja_format_entry_is_refused_by_an_unsigned_codec_too(tmp_path: Path) -> None:
    """Even without a secret, foreign-format bytes never reach pickle or marshal."""
    victim = tmp_path / "pwned"
    with pytest.raises(EntryError):
        EntryCodec(None).decode(KEY, checksum_of(SOURCE), jinja_format_entry(victim))
    assert not victim.exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", MAGIC, b"garbage" * 40, MAGIC + b"\x01" * 200, bytes(range(256)) * 4],
    ids=["empty", "one-byte", "magic-only", "text", "magic-then-junk", "all-bytes"],
)
def test_garbage_is_rejected(data: bytes) -> None:
    """Empty, short and random bytes are refused with EntryError."""
    with pytest.raises(EntryError):
        EntryCodec(SECRET).decode(KEY, checksum_of(SOURCE), data)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zlib"])
@pytest.mark.parametrize(
    "body",
    [
        marshal.dumps(42),
        marshal.dumps(("not", "code")),
        b"\xff not marshal at all",
        marshal.dumps(compiled(SOURCE)),  # format 1's payload: code alone
        marshal.dumps(((), compiled(SOURCE))),
        marshal.dumps((((("upper", 3),), ()), compiled(SOURCE))),
        marshal.dumps((NO_DEPENDENCIES, "code")),
    ],
    ids=["int", "tuple", "junk", "bare-code", "short-deps", "bad-signature", "not-code"],
)
def test_signed_payload_that_is_not_code_is_rejected_as_code(body: bytes, compress: bool) -> None:
    """A validly signed entry whose payload is not dependencies and a code object is
    refused as "code"."""
    codec = EntryCodec(SECRET)
    data = codec.encode(KEY, checksum_of(SOURCE), body, compress=compress)
    assert reason(codec, data) == "code"


def test_payload_inflating_past_the_limit_is_rejected() -> None:
    """A signed zlib payload that inflates beyond MAX_PAYLOAD is refused, not inflated."""
    codec = EntryCodec(SECRET)
    data = codec.encode(KEY, checksum_of(SOURCE), bytes(MAX_PAYLOAD + 1), compress=True)
    assert reason(codec, data) == "format"


def test_unsigned_codec_round_trips() -> None:
    """A codec without a secret (integrity only) reads back its own entries."""
    codec = EntryCodec(None)
    assert not codec.signed
    assert codec.decode(KEY, checksum_of(SOURCE), entry(codec=codec)) == compiled(SOURCE)


def test_unsigned_entries_are_rejected_by_a_signed_codec() -> None:
    """An entry written without a secret fails the MAC of a codec that has one."""
    assert reason(EntryCodec(SECRET), entry(codec=EntryCodec(None))) == "mac"


def test_signed_entries_are_rejected_by_an_unsigned_codec() -> None:
    """An entry signed with a secret fails the integrity check of an unsigned codec."""
    assert reason(EntryCodec(None), entry()) == "mac"


def test_encode_refuses_a_checksum_of_the_wrong_length() -> None:
    """encode insists on a 40-character checksum, so the header layout stays fixed."""
    with pytest.raises(ValueError, match="checksum"):
        EntryCodec(SECRET).encode(KEY, "abc", payload(compiled(SOURCE)))


def test_read_header_refuses_bytes_that_are_not_an_entry() -> None:
    """read_header raises EntryError("format") for foreign or truncated bytes."""
    for data in (b"", b"j2" + b"\x00" * 100, entry()[:30]):
        with pytest.raises(EntryError) as info:
            read_header(data)
        assert info.value.reason == "format"


def test_every_truncation_is_rejected() -> None:
    """Every proper prefix of an entry, compressed or not, is refused with EntryError."""
    codec = EntryCodec(SECRET)
    for compress in (False, True):
        data = entry("{{ x }}", compress=compress)
        for length in range(len(data)):
            with pytest.raises(EntryError):
                codec.decode(KEY, checksum_of("{{ x }}"), data[:length])


def test_every_single_byte_flip_is_rejected() -> None:
    """Any xor mask on any header byte, and the low, high or all bits of any payload or MAC
    byte, are refused with EntryError, compressed or not."""
    codec = EntryCodec(SECRET)
    for compress in (False, True):
        data = bytearray(entry("{{ x }}", compress=compress))
        header_end = len(data) - MAC_SIZE - read_header(bytes(data)).payload_size
        for position in range(len(data)):
            masks = range(1, 256) if position < header_end else (0x01, 0x80, 0xFF)
            for mask in masks:
                data[position] ^= mask
                with pytest.raises(EntryError):
                    codec.decode(KEY, checksum_of("{{ x }}"), bytes(data))
                data[position] ^= mask


def test_mac_covers_the_whole_entry() -> None:
    """A flip anywhere in the checksum, the payload or the MAC itself is a MAC failure."""
    codec = EntryCodec(SECRET)
    data = entry("{{ x }}")
    checksum_start = len(data) - MAC_SIZE - read_header(data).payload_size - CHECKSUM_SIZE
    for position in range(checksum_start, len(data)):
        flipped = data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
        assert reason(codec, flipped, source="{{ x }}") == "mac"


def test_dependencies_round_trip_with_the_code() -> None:
    """What a compile looked up travels with the code, and comes back as it went."""
    deps: Dependencies = ((("money", ""), ("upper", "jinja2.filter.upper")), (("odd", "-"),))
    codec = EntryCodec(SECRET)
    data = codec.encode(KEY, checksum_of(SOURCE), payload(compiled(SOURCE), deps))
    code, found, size = codec.decode_sized(KEY, checksum_of(SOURCE), data)
    assert code == compiled(SOURCE) and found == deps
    assert size == len(payload(compiled(SOURCE), deps))


@pytest.mark.parametrize("older", [1, 2, 3])
def test_entry_of_an_older_format_is_stale(older: int) -> None:
    """An entry written by an earlier release (format 1: the code alone; format 2:
    HMAC-SHA256 and a SHA-1 checksum; format 3: BLAKE3 of the UTF-8 source) is refused
    as stale, before its payload is read: a routine miss after an upgrade, not a
    warning."""
    data = signed_entry({"format": older}, marshal.dumps(compiled(SOURCE)))
    assert reason(EntryCodec(SECRET), data) == "stale"


def test_sources_are_told_apart_by_the_full_digest() -> None:
    """The checksum is the whole 256-bit BLAKE3 digest (no SHA-1, no truncation): two
    sources differing in one character anywhere get digests that differ, and an entry
    for one is stale for the other."""
    first, second = SOURCE, SOURCE[:-1] + "!"
    assert len(source_digest(first)) == CHECKSUM_SIZE == 64
    assert source_digest(first) != source_digest(second)
    data = EntryCodec(SECRET).encode(KEY, source_digest(first), payload(compiled(first)))
    assert reason(EntryCodec(SECRET), data, source=second) == "stale"


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("plain ascii {{ x }}", b"1"),
        ("caf\u00e9 {{ x }}", b"1"),
        ("\u20ac {{ x }}", b"2"),
        ("\ud83d\ude00 lone surrogates", b"2"),
        ("\U0001f600 astral", b"4"),
    ],
)
def test_source_bytes_are_the_narrowest_fixed_width(text: str, tag: bytes) -> None:
    """What the digest is taken of: a tag and the code points in the narrowest width
    that holds them (Latin-1, UTF-16 without pairs, UTF-32), read back exactly."""
    data = source_bytes(text)
    assert data[:1] == tag
    width = {b"1": 1, b"2": 2, b"4": 4}[tag]
    points = [int.from_bytes(data[i : i + width], "little") for i in range(1, len(data), width)]
    assert "".join(map(chr, points)) == text


def test_a_surrogate_pair_and_the_character_it_encodes_differ() -> None:
    """Two lone surrogates are not the astral character their pair would encode in
    UTF-16: their digests differ (UTF-16 with surrogatepass alone would give both the
    same bytes)."""
    pair, astral = "\ud83d\ude00", "\U0001f600"
    assert pair.encode("utf-16-le", "surrogatepass") == astral.encode("utf-16-le")
    assert source_digest(pair) != source_digest(astral)
