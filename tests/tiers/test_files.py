"""The host tiers' file helpers: private directories, what a path is."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tiered_bccache.tiers._files import (
    kind_of,
    make_private_directories,
    not_a_regular_file,
    unlink,
)


def test_private_directories_are_exactly_0700_parents_included(tmp_path: Path) -> None:
    old = os.umask(0o077 ^ 0o777)  # a umask that would take the owner's own bits
    try:
        make_private_directories(str(tmp_path / "a" / "b" / "c"))
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_an_existing_directory_is_reported_and_left_as_it_is(tmp_path: Path) -> None:
    target = tmp_path / "there"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    with pytest.raises(FileExistsError):
        make_private_directories(str(target))
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_what_a_path_is(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(regular)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert not_a_regular_file(str(sock_path)) == "a socket"
    assert not_a_regular_file(str(regular)) is None
    assert not_a_regular_file(str(tmp_path / "missing")) is None
    assert not_a_regular_file(str(link)) == "a symbolic link"
    assert not_a_regular_file(str(fifo)) == "a FIFO"
    assert not_a_regular_file(str(tmp_path)) == "a directory"
    assert kind_of(os.lstat("/dev/null").st_mode) == "a character device"


def test_unlink_of_a_missing_file_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    unlink(str(path))
    unlink(str(path))
    assert not path.exists()
