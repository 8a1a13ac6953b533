"""Run by ``tiered_bccache.pth`` at interpreter start-up when ``$TIERED_BCCACHE_AUTO`` is
set (``tiered-bccache run`` sets it): waits for ``jinja2`` to be imported, then gives
every Environment the process builds a shared :class:`~tiered_bccache.TieredBytecodeCache`
(see :mod:`tiered_bccache.auto`).

A top-level module of the standard library's imports only, so that the start-up of a
process that never uses Jinja costs a finder on ``sys.meta_path`` and nothing more:
importing ``tiered_bccache`` (and so Jinja) is left to the moment Jinja is imported.
"""

from __future__ import annotations

import sys

# Not typing.TYPE_CHECKING: importing typing alone costs a process that never uses Jinja
# milliseconds (type checkers read any constant of this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

__all__ = ["install"]


def install() -> None:
    """Activate now if Jinja is imported already, else when it is."""
    if "jinja2" in sys.modules:
        _activate()
    elif not any(isinstance(f, _JinjaWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _JinjaWatcher())


class _JinjaWatcher:
    """A meta path finder that finds nothing itself: it hands ``jinja2``'s own spec back
    with a loader that activates the cache once the package has run."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "jinja2":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ActivatingLoader(spec.loader)  # type: ignore[assignment]
        return spec


class _ActivatingLoader:
    """Jinja's own loader, and the activation after it ran."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _activate()

    def __getattr__(self, name: str) -> Any:  # get_data, get_resource_reader...
        return getattr(self._loader, name)


def _activate() -> None:
    try:
        from tiered_bccache.auto import activate

        activate()
    except Exception as exc:  # never the reason a tool does not start
        import logging

        logging.getLogger("tiered_bccache").warning(
            "tiered_bccache: automatic activation failed: %r", exc
        )
