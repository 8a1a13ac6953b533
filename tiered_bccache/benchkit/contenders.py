"""What our tiers are measured against: the floors (the least a bytecode cache of each kind
can do) and Jinja's anchors (the caches people use today, over clients with our options,
so that the comparison is of the caches, not of the client settings).

=============== ==========================================================================
DictFloor       code objects in a dict: the in-process floor
MarshalFileFloor one bare file of marshalled code per template: the on-disk floor
SignedFileFloor MarshalFileFloor plus a keyed BLAKE3 MAC and a BLAKE3 digest of the
                source: the floor of an authenticated hit
jinja_memcached_client pymemcache for Jinja's ``MemcachedBytecodeCache``
PlainRedisBytecodeCache Jinja's bucket format in Redis, as the existing Redis packages do
=============== ==========================================================================
"""

from __future__ import annotations

import hmac
import marshal
import os
from typing import Any

from jinja2 import Environment
from jinja2.bccache import Bucket, BytecodeCache

from ..entry import source_bytes

__all__ = [
    "DictFloor",
    "MarshalFileFloor",
    "PlainRedisBytecodeCache",
    "SignedFileFloor",
    "jinja_memcached_client",
    "redis_available",
    "redis_client",
]


class DictFloor(BytecodeCache):
    """The in-process floor: code objects in a dict, no key derivation, no checks."""

    def __init__(self) -> None:
        self.code: dict[str, Any] = {}

    def get_bucket(
        self, environment: Environment, name: str, filename: str | None, source: str
    ) -> Bucket:
        bucket = Bucket(environment, name, "")
        bucket.code = self.code.get(name)
        return bucket

    def set_bucket(self, bucket: Bucket) -> None:
        self.code[bucket.key] = bucket.code

    def load_bytecode(self, bucket: Bucket) -> None:  # pragma: no cover - unused
        pass

    def dump_bytecode(self, bucket: Bucket) -> None:  # pragma: no cover - unused
        pass


class MarshalFileFloor(DictFloor):
    """The on-disk floor: one bare file of marshalled code per template, read whole in
    one call and unmarshalled; no header, no key derivation, no checks."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name.replace("/", "__"))

    def _read(self, name: str) -> bytes | None:
        # One call, no stat first: the least a file cache can do (and no race).
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def get_bucket(
        self, environment: Environment, name: str, filename: str | None, source: str
    ) -> Bucket:
        bucket = Bucket(environment, name, "")
        data = self._read(name)
        if data is not None:
            bucket.code = marshal.loads(data)
        return bucket

    def set_bucket(self, bucket: Bucket) -> None:
        with open(self._path(bucket.key), "wb") as f:
            f.write(marshal.dumps(bucket.code))


class SignedFileFloor(MarshalFileFloor):
    """The floor of an *authenticated* hit: the bare file plus the two checks no safe
    cache can skip, with the entry format's algorithms: a keyed BLAKE3 MAC over the bytes
    read and a BLAKE3 digest of the source (to notice an edit), and nothing else: no
    header, no key derivation per entry, no promotion."""

    def __init__(self, directory: str, secret: bytes) -> None:
        super().__init__(directory)
        from blake3 import blake3

        self.secret = secret
        self._mac = blake3(key=blake3(secret, derive_key_context="floor").digest())

    def get_bucket(
        self, environment: Environment, name: str, filename: str | None, source: str
    ) -> Bucket:
        bucket = Bucket(environment, name, "")
        data = self._read(name)
        if data is None:
            return bucket
        from blake3 import blake3

        view = memoryview(data)
        mac = self._mac.copy()
        mac.update(view[:-64])
        digest = blake3(source_bytes(source)).digest()
        if hmac.compare_digest(mac.digest(), view[-32:]) and digest == view[-64:-32]:
            bucket.code = marshal.loads(view[:-64])
        return bucket

    def set_bucket(self, bucket: Bucket) -> None:
        raw = marshal.dumps(bucket.code)
        source = bucket.environment.loader.get_source(bucket.environment, bucket.key)[0]  # type: ignore[union-attr]
        from blake3 import blake3

        body = raw + blake3(source_bytes(source)).digest()
        mac = self._mac.copy()
        mac.update(raw)
        with open(self._path(bucket.key), "wb") as f:
            f.write(body + mac.digest())


def jinja_memcached_client(address: str) -> Any:
    """A pymemcache client for Jinja's ``MemcachedBytecodeCache``, with our tier's options."""
    from pymemcache.client.base import PooledClient

    from ..tiers.memcached import parse_server

    # The same options as MemcachedTier's, so the comparison is of the caches, not of
    # the client settings.
    return PooledClient(
        parse_server(address),
        connect_timeout=0.05,
        timeout=0.05,
        no_delay=True,
        default_noreply=False,
        max_pool_size=32,
    )


class PlainRedisBytecodeCache(BytecodeCache):
    """A Redis bytecode cache as the existing packages (jinja2-redis and the like) write
    one: Jinja's own bucket format under ``prefix + bucket.key``, no MAC, no namespace.
    The anchor of the ``redis`` row: what our Redis tier must beat."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def load_bytecode(self, bucket: Bucket) -> None:
        data = self.client.get(self.prefix + bucket.key)
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.client.set(self.prefix + bucket.key, bucket.bytecode_to_string())


def redis_client(address: str) -> Any:
    """A redis-py client for the plain Redis cache, with our tier's options."""
    # The options our RedisTier gives its own client, so that the comparison is of the
    # caches, not of the client settings.
    from ..tiers.redis import RedisTier

    return RedisTier(f"redis://{address}/0").client


def redis_available() -> bool:
    """Whether redis-py is installed (the ``redis`` extra)."""
    import importlib.util

    return importlib.util.find_spec("redis") is not None
