"""A process's log followed as a file: the last lines, then what is appended, across a rotation
(the file moved aside and a new one started at its path, or copied aside and truncated while its
writer goes on), until closed."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

from octctl.log_files import copy_truncate
from octctl.runtime.process.logs import FileLines


def test_following_goes_on_across_a_rotation_and_stops_when_closed(tmp_path: Path) -> None:
    log = tmp_path / "demo-web.log"
    log.write_text("old 1\nold 2\nold 3\n")
    stream = FileLines(log, tail=2, follow=True)
    seen: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [seen.put(line) for line in stream])
    reader.start()

    def next_lines(count: int) -> list[str]:
        return [seen.get(timeout=5) for _ in range(count)]

    assert next_lines(2) == ["old 2", "old 3"]
    with log.open("a") as out:
        out.write("new 1\nnew")  # a line still being written is not shown half
        out.flush()
        assert next_lines(1) == ["new 1"]
        out.write(" 2\n")
    assert next_lines(1) == ["new 2"]
    os.replace(log, log.with_suffix(".log.1"))  # what a restart of a large log does
    log.write_text("after rotation\n")
    assert next_lines(1) == ["after rotation"]
    stream.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert seen.empty()


def test_a_log_copied_aside_and_truncated_is_read_again_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "demo-web.log"
    log.write_text("x" * 50 + "\n")
    assert copy_truncate(log, max_bytes=100) is False, "not full yet"
    stream = FileLines(log, tail=1, follow=True)
    seen: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [seen.put(line) for line in stream])
    reader.start()
    assert seen.get(timeout=5) == "x" * 50  # (the tail: from here on it follows)
    with log.open("a") as out:  # as the child writes: O_APPEND, through the truncation
        out.write("y" * 60 + "\n")
        out.flush()
        assert seen.get(timeout=5) == "y" * 60
        assert copy_truncate(log, max_bytes=100) is True
        assert log.stat().st_size == 0 and log.with_suffix(".log.1").read_text().endswith("y" * 60 + "\n")
        out.write("after\n")
        out.flush()
        assert seen.get(timeout=5) == "after"
    stream.close()
    reader.join(timeout=5)
    assert copy_truncate(tmp_path / "missing.log", max_bytes=1) is False


def test_without_follow_it_is_the_last_lines_and_a_missing_file_is_none(tmp_path: Path) -> None:
    log = tmp_path / "demo-web.log"
    assert list(FileLines(log, tail=5, follow=False)) == []
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    assert list(FileLines(log, tail=3, follow=False)) == ["line 97", "line 98", "line 99"]
