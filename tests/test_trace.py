"""Tests for the access-trace format: writing, reading back, and rejecting bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tiered_bccache.errors import TieredCacheError
from tiered_bccache.trace import TraceFormatError, TraceRecord, TraceWriter, read_trace


def test_records_read_back_in_order(tmp_path: Path) -> None:
    """What TraceWriter records, read_trace yields back unchanged and in order."""
    records = [TraceRecord("3f2a", 2048), TraceRecord("b-7", 0), TraceRecord("3f2a", 2050)]
    path = tmp_path / "trace.txt"
    with TraceWriter(path) as writer:
        for key, size in records:
            writer.record(key, size)
    assert list(read_trace(path)) == records


def test_file_is_the_header_then_one_line_per_record(tmp_path: Path) -> None:
    """The file holds exactly the v1 header line and one `<key> <size>` line per record."""
    path = tmp_path / "trace.txt"
    with TraceWriter(str(path)) as writer:
        writer.record("ab12", 7)
    assert path.read_bytes() == b"# tiered_bccache trace v1\nab12 7\n"


def test_writer_truncates_an_existing_file(tmp_path: Path) -> None:
    """Opening a writer on an existing trace starts it afresh."""
    path = tmp_path / "trace.txt"
    path.write_bytes(b"old content that is not a trace\n" * 10)
    with TraceWriter(path) as writer:
        writer.record("k", 1)
    assert list(read_trace(path)) == [TraceRecord("k", 1)]


def test_close_is_idempotent_and_reported_by_closed(tmp_path: Path) -> None:
    """`closed` turns true on close or on leaving the context, and closing twice is harmless."""
    writer = TraceWriter(tmp_path / "a.txt")
    assert not writer.closed
    writer.close()
    writer.close()
    assert writer.closed
    with TraceWriter(tmp_path / "b.txt") as other:
        assert not other.closed
    assert other.closed


def test_record_after_close_raises(tmp_path: Path) -> None:
    """Recording into a closed writer raises ValueError instead of losing the line."""
    writer = TraceWriter(tmp_path / "trace.txt")
    writer.close()
    with pytest.raises(ValueError):
        writer.record("k", 1)


def test_lines_from_concurrent_threads_never_interleave(tmp_path: Path) -> None:
    """Threads recording at once through one writer each leave whole, parseable lines."""
    path = tmp_path / "trace.txt"
    threads_count, per_thread = 8, 2000
    with TraceWriter(path) as writer:

        def work(n: int) -> None:
            for i in range(per_thread):
                writer.record(f"thread{n}-{i:x}", n * 100_000 + i)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    records = list(read_trace(path))
    assert len(records) == threads_count * per_thread
    for key, size in records:
        n, i = divmod(size, 100_000)
        assert key == f"thread{n}-{i:x}"


def test_empty_trace_has_only_the_header(tmp_path: Path) -> None:
    """A trace with no records reads as an empty sequence."""
    path = tmp_path / "trace.txt"
    TraceWriter(path).close()
    assert list(read_trace(path)) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"# tiered_bccache trace v2\n", b"# tiered_bccache trace v1", b"a 1\n"],
    ids=["empty", "other-version", "no-newline", "no-header"],
)
def test_wrong_header_is_rejected_at_line_1(tmp_path: Path, content: bytes) -> None:
    """A file that does not start with the exact header line fails at line 1, naming it."""
    path = tmp_path / "trace.txt"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError) as info:
        list(read_trace(path))
    assert info.value.path == str(path)
    assert info.value.lineno == 1
    assert str(info.value).startswith(f"{path}:1: expected the header")


@pytest.mark.parametrize(
    "line",
    [
        b"abc\n",
        b"abc -1\n",
        b"abc 1.5\n",
        b"abc 1 2\n",
        b" abc 1\n",
        b"abc  1\n",
        b"abc\t1\n",
        b"abc 1\r\n",
        b"\n",
        b"# comment\n",
        b"ab\x7fc 1\n",
        "caf\u00e9 1\n".encode(),
        b"abc \xd9\xa1\n",
    ],
)
def test_malformed_line_is_rejected_with_its_number(tmp_path: Path, line: bytes) -> None:
    """A line that is not `<key> <size>` raises TraceFormatError naming the file and line."""
    path = tmp_path / "trace.txt"
    path.write_bytes(b"# tiered_bccache trace v1\ngood 1\n" + line + b"after 2\n")
    reader = read_trace(path)
    assert next(reader) == TraceRecord("good", 1)
    with pytest.raises(TraceFormatError) as info:
        next(reader)
    assert (info.value.path, info.value.lineno) == (str(path), 3)
    assert str(info.value).startswith(f"{path}:3: expected '<key> <size>'")


def test_missing_final_newline_reports_a_truncated_trace(tmp_path: Path) -> None:
    """A last line without its newline (a writer killed mid-flush) is an error, not a record."""
    path = tmp_path / "trace.txt"
    path.write_bytes(b"# tiered_bccache trace v1\na 1\nb 2")
    with pytest.raises(TraceFormatError, match=r":3: no newline .* truncated"):
        list(read_trace(path))


def test_format_error_is_a_value_error_and_a_package_error() -> None:
    """TraceFormatError can be caught as ValueError or as the package's base exception."""
    error = TraceFormatError("t.txt", 4, "bad")
    assert isinstance(error, ValueError)
    assert isinstance(error, TieredCacheError)
    assert str(error) == "t.txt:4: bad"
