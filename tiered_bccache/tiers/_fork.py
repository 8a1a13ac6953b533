"""Tiers that hold connections, reset in a child process forked from theirs (gunicorn
``--preload``, multiprocessing with fork): a child must never read replies meant for
its parent on a shared socket."""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["reset_in_forked_children"]


class _Forkable(Protocol):
    def _forked(self) -> None: ...


#: The fleet tiers alive in this process, held weakly (this never keeps one alive): a
#: child forked from it calls their ``_forked``.
_LIVE: weakref.WeakSet[_Forkable] = weakref.WeakSet()
_hooked = False


def reset_in_forked_children(tier: _Forkable) -> None:
    """Have ``tier._forked()`` run in every child this process forks while ``tier``
    lives (``os.register_at_fork``, registered when the first tier is built)."""
    global _hooked
    if not _hooked:
        # Two threads building the first tiers at once may both register: a child then
        # runs the hook twice, which finds nothing left to drop the second time.
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _hooked = True
    _LIVE.add(tier)


def _after_fork_in_child() -> None:
    for tier in list(_LIVE):
        tier._forked()
