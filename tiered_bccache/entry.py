"""The entry a byte tier stores: a small header, the marshalled code, and a MAC.

Layout (all integers big-endian)::

    magic        4  b"\\x89TBC"
    format       1  FORMAT_VERSION
    flags        1  bit 0: payload is zlib-compressed
    py_magic     4  importlib.util.MAGIC_NUMBER of the writer
    stamp_len    1
    stamp        n  ASCII "jinja2 <version> bc<bc_version>" of the writer
    checksum    64  ASCII hex BLAKE3 of the template source (:func:`source_digest`)
    payload      *  marshal.dumps((dependencies, code)), possibly compressed: the
                    filters and tests the compile looked up (see
                    :mod:`tiered_bccache.compiling`), and the code
    mac         32  keyed BLAKE3(K, len(key) || key || everything above), where K is
                    derived from the secret (BLAKE3's derive_key mode)

BLAKE3, chosen by measurement (``tiered-bccache bench`` prints the breakdown): keyed
BLAKE3 authenticates a 42 kB entry in less than half the time of HMAC-SHA256 on the
machines measured, and digests a source faster than SHA-1 or SHA-256, while being
collision-resistant where SHA-1 is not (an application caching strings users supply
could otherwise be made to render one reviewed string as another).

Nothing here uses pickle: Jinja's own ``Bucket.load_bytecode`` unpickles the checksum
before any check, so whoever can write its cache runs code in the application. Here the
MAC is checked before a byte of the payload is interpreted, and ``marshal`` only ever sees
data this application's secret signed.
"""

import hmac
import importlib.util
import marshal
import struct
import types
import zlib
from typing import NamedTuple

import jinja2
from blake3 import blake3
from jinja2.bccache import bc_version

from .compiling import Dependencies, valid_dependencies
from .errors import EntryError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "EntryCodec",
    "EntryHeader",
    "source_bytes",
    "source_digest",
]

MAGIC = b"\x89TBC"
#: 2: the payload carries the compile's dependencies beside the code. 3: BLAKE3 for the
#: MAC and the source digest. 4: the digest over :func:`source_bytes` instead of UTF-8.
#: An entry of an older format is stale: a miss, overwritten.
FORMAT_VERSION = 4
FLAG_ZLIB = 0x01
MAC_SIZE = 32
CHECKSUM_SIZE = 64
#: A decompressed payload larger than this is refused (the MAC already vouches for the
#: writer; the bound keeps a buggy writer from exhausting memory).
MAX_PAYLOAD = 64 * 1024 * 1024

_PY_MAGIC = importlib.util.MAGIC_NUMBER
_STAMP = f"jinja2 {jinja2.__version__} bc{bc_version}".encode("ascii")
_FIXED = struct.Struct(">4sBB4sB")
#: Used as the key when the user opted out of signing: the MAC then only detects
#: corruption, never tampering.
UNSIGNED_KEY = b"tiered_bccache unsigned entries: integrity only"


#: Separates the MAC key from every other use of the secret.
_MAC_CONTEXT = "tiered_bccache 2026-12 entry MAC"


def is_compressed(entry: bytes) -> bool:
    """Whether an entry :meth:`EntryCodec.decode` accepted holds a compressed payload."""
    return bool(entry[5] & FLAG_ZLIB)


def source_digest(text: str) -> str:
    """The hex BLAKE3 digest of a template source or name (of :func:`source_bytes`):
    entries' checksums and cache keys."""
    return blake3(source_bytes(text)).hexdigest()


def source_bytes(text: str) -> bytes:
    """``text`` as the bytes its digest is taken of: a tag byte, then its code points in
    the narrowest fixed width that holds them all (Latin-1, UTF-16 with no surrogate
    pair, UTF-32), lone surrogates included. One-to-one, like UTF-8, and for most
    templates a copy of the string's own storage in CPython rather than an encoding
    pass: UTF-8 of a 12 kB source with accented letters costs 30 times Latin-1's copy,
    more than the digest itself."""
    try:
        return b"1" + text.encode("latin-1")
    except UnicodeEncodeError:
        pass
    data = text.encode("utf-16-le", "surrogatepass")
    # Two bytes a code point: none above U+FFFF, so no surrogate pair stands for one
    # (a lone surrogate is written as itself and is told apart from a pair's meaning).
    if len(data) == 2 * len(text):
        return b"2" + data
    return b"4" + text.encode("utf-32-le", "surrogatepass")


class EntryHeader(NamedTuple):
    """What an entry says about itself, read without verifying it (for diagnostics)."""

    format_version: int
    compressed: bool
    python_magic: bytes
    stamp: str
    checksum: str
    payload_size: int


class EntryCodec:
    """Encodes and verifies entries under one secret.

    ``secret`` of None means unsigned (integrity only); the cache decides whether that is
    allowed. The codec is immutable and safe to share between threads.
    """

    __slots__ = ("_mac_base", "_prefix", "_prefix_z", "signed")

    def __init__(self, secret: bytes | None) -> None:
        self.signed = secret is not None
        material = secret if secret is not None else UNSIGNED_KEY
        key = blake3(material, derive_key_context=_MAC_CONTEXT).digest()
        self._mac_base = blake3(key=key)
        self._prefix = _FIXED.pack(MAGIC, FORMAT_VERSION, 0, _PY_MAGIC, len(_STAMP)) + _STAMP
        self._prefix_z = _FIXED.pack(MAGIC, FORMAT_VERSION, FLAG_ZLIB, _PY_MAGIC, len(_STAMP))
        self._prefix_z += _STAMP

    def _mac(self, key: bytes, body: bytes | memoryview) -> bytes:
        h = self._mac_base.copy()
        # The key is length-prefixed so that no (key, body) pair can be re-split into
        # another valid pair: an entry is bound to the one key it was written under.
        h.update(len(key).to_bytes(2, "big"))
        h.update(key)
        h.update(body)
        return h.digest()

    def encode(self, key: str, checksum: str, code: bytes, *, compress: bool = False) -> bytes:
        """Return the entry for marshalled ``code`` of a template whose source has
        ``checksum``, to be stored under ``key``."""
        if len(checksum) != CHECKSUM_SIZE:
            raise ValueError(f"checksum must be {CHECKSUM_SIZE} hex characters")
        if compress:
            body = self._prefix_z + checksum.encode("ascii") + zlib.compress(code, 1)
        else:
            body = self._prefix + checksum.encode("ascii") + code
        return body + self._mac(key.encode("ascii"), body)

    def decode(self, key: str, checksum: str, data: bytes) -> types.CodeType:
        """Return the code object of a valid entry for ``key`` and a source with
        ``checksum``; raise :class:`EntryError` for anything else, before unmarshalling."""
        return self.decode_sized(key, checksum, data)[0]

    def decode_sized(
        self, key: str, checksum: str, data: bytes
    ) -> tuple[types.CodeType, Dependencies, int]:
        """Like :meth:`decode`, with the compile's dependencies and the size of the
        marshalled payload (what a memory tier weighs the entry by, whether or not it
        was compressed)."""
        prefix = self._prefix
        start = len(prefix) + CHECKSUM_SIZE
        if not data.startswith(prefix):
            if not data.startswith(self._prefix_z):
                raise self._explain(data)
        if len(data) < start + MAC_SIZE + 1:
            raise EntryError("format", "truncated")
        view = memoryview(data)
        if not hmac.compare_digest(
            self._mac(key.encode("ascii"), view[:-MAC_SIZE]), view[-MAC_SIZE:]
        ):
            raise EntryError("mac", "MAC mismatch (tampered, corrupt, or another secret)")
        if view[len(prefix) : start] != checksum.encode("ascii"):
            raise EntryError("stale", "the template source changed")
        payload = view[start:-MAC_SIZE]
        try:
            if data[5] & FLAG_ZLIB:
                inflater = zlib.decompressobj()
                raw = inflater.decompress(payload, MAX_PAYLOAD)
                if inflater.unconsumed_tail or not inflater.eof:
                    raise EntryError("format", "compressed payload too large or cut short")
                value = marshal.loads(raw)
                size = len(raw)
            else:
                value = marshal.loads(payload)
                size = len(payload)
        except EntryError:
            raise
        except Exception as exc:  # marshal raises ValueError, EOFError, TypeError...
            raise EntryError("code", f"payload does not unmarshal: {exc!r}") from None
        if (
            type(value) is not tuple
            or len(value) != 2
            or not valid_dependencies(value[0])
            or not isinstance(value[1], types.CodeType)
        ):
            raise EntryError("code", f"payload is a {type(value).__name__}, not code")
        return value[1], value[0], size

    def _explain(self, data: bytes) -> EntryError:
        """Say why an entry whose header does not match ours was refused."""
        if len(data) > 4 and data[:4] == MAGIC and data[4] < FORMAT_VERSION:
            # Written before an upgrade of this package: routine, like an edited source.
            return EntryError("stale", f"entry format {data[4]}, now {FORMAT_VERSION}")
        try:
            header = read_header(data)
        except EntryError as exc:
            return exc
        if header.format_version != FORMAT_VERSION:
            return EntryError("version", f"entry format {header.format_version}")
        return EntryError(
            "version", f"written by Python magic {header.python_magic.hex()} / {header.stamp}"
        )


def read_header(data: bytes) -> EntryHeader:
    """Parse an entry's header without verifying it; raise :class:`EntryError` if it is
    not one of ours."""
    if len(data) < _FIXED.size or data[:4] != MAGIC:
        raise EntryError("format", "not a tiered_bccache entry")
    _, fmt, flags, py_magic, stamp_len = _FIXED.unpack_from(data)
    end = _FIXED.size + stamp_len + CHECKSUM_SIZE
    if len(data) < end + MAC_SIZE:
        raise EntryError("format", "truncated header")
    stamp = data[_FIXED.size : _FIXED.size + stamp_len].decode("ascii", "replace")
    checksum = data[end - CHECKSUM_SIZE : end].decode("ascii", "replace")
    return EntryHeader(
        fmt, bool(flags & FLAG_ZLIB), py_magic, stamp, checksum, len(data) - end - MAC_SIZE
    )
