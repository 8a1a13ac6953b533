"""File helpers the host tiers share (the filesystem tier, the SQLite tier): private
directories made exactly 0700, and what a path that should be a regular file is."""

from __future__ import annotations

import os
import stat

__all__ = ["kind_of", "make_private_directories", "not_a_regular_file", "unlink"]


def make_private_directories(path: str) -> None:
    """Create ``path`` and its missing parents, each exactly 0700 whatever the umask
    (os.makedirs gives the parents 0777 less the umask). FileExistsError when ``path``
    exists; a parent that exists is left as it is."""
    parent, name = os.path.split(path)
    if parent and name and not os.path.isdir(parent):
        try:
            make_private_directories(parent)
        except FileExistsError:
            pass  # made by another process meanwhile; mkdir below says if it is no dir
    os.mkdir(path, 0o700)
    # mkdir applied the umask, which may have taken the owner's bits: make it exactly
    # private, through a descriptor so that a swapped-in symlink is not followed.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, for a message (a symbolic link, a FIFO...)."""
    for test, kind in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "an unknown kind of file"


def not_a_regular_file(path: str) -> str | None:
    """What is at ``path`` when it exists and is not a regular file, else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return None if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)


def unlink(path: str) -> None:
    """Remove ``path``; one already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
