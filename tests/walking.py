"""What the tests of the stack, its layers and the lookup share: a byte tier in a dict,
a template and its key, a compile as the cache writes it through, and filters that
differ only in their calling convention."""

from __future__ import annotations

import marshal
import types

from jinja2 import Environment, pass_context, pass_environment

from tiered_bccache import ByteTier
from tiered_bccache.compiling import Dependencies, compile_isolated
from tiered_bccache.keys import Key, name_key

SOURCE = "{% for x in items %}<li>{{ x|upper }}</li>{% endfor %}"
KEY = str(Key("0" * 32, "", "", name_key("list.html", None)))
#: A template that uses the filter ``brand``.
BRANDED = "{{ 'b'|brand }}"


class DictTier(ByteTier):
    """A byte tier in a dict, counting its calls; ``fail_get`` / ``fail_set`` make those
    calls raise, as a vanished disk or a refused connection would."""

    def __init__(
        self,
        name: str = "dict",
        *,
        remote: bool = False,
        compress: bool = False,
        max_entry_size: int | None = None,
        fail_get: Exception | None = None,
        fail_set: Exception | None = None,
    ) -> None:
        self.name = name
        self.remote = remote
        self.compress = compress
        self.max_entry_size = max_entry_size
        self.fail_get = fail_get
        self.fail_set = fail_set
        self.data: dict[str, bytes] = {}
        self.gets = 0
        self.sets = 0

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        if self.fail_get is not None:
            raise self.fail_get
        return self.data.get(key)

    def set(self, key: str, value: bytes) -> None:
        self.sets += 1
        if self.fail_set is not None:
            raise self.fail_set
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def clear(self) -> None:
        self.data.clear()


def compiled(
    env: Environment | None = None, source: str = SOURCE
) -> tuple[types.CodeType, Dependencies, bytes]:
    """What the cache writes through after a compile: the code, its dependencies and
    the two marshalled together."""
    code, dependencies = compile_isolated(
        env or Environment(), Environment, source, "list.html", None, False
    )
    return code, dependencies, marshal.dumps((dependencies, code))


def brand(value: str) -> str:
    return value + "!"


@pass_context
def brand_in_context(context: object, value: str) -> str:
    return value + "?"


@pass_environment
def brand_in_environment(environment: object, value: str) -> str:
    return value + "."


def env_with_brand(func: object) -> Environment:
    env = Environment()
    env.filters["brand"] = func
    return env
