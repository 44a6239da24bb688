"""LogTailer against real files changed by a separate writer process.

The writer is a child Python process that holds the log open in append mode,
like an evaluation script, and also performs the file operations a log
rotator would (rename, copy, truncate, unlink). Each command is acknowledged
before the test reads, so the tests are exact without sleeping.
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from expwatch.watcher.tail import LogTailer, TailPosition

WRITER = r"""
import base64, json, os, shutil, sys
fh = None
for line in sys.stdin:
    cmd, *args = json.loads(line)
    if cmd == "open":
        fh = open(args[0], "ab", buffering=0)
    elif cmd == "write":
        fh.write(base64.b64decode(args[0]))
    elif cmd == "close":
        fh.close()
    elif cmd == "rename":
        os.rename(args[0], args[1])
    elif cmd == "copy":
        shutil.copyfile(args[0], args[1])
    elif cmd == "truncate":
        os.truncate(args[0], int(args[1]))
    elif cmd == "unlink":
        os.unlink(args[0])
    print("ok", flush=True)
"""


class Writer:
    """A separate process that writes the log and plays log rotator on command."""

    def __init__(self, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.open()

    def _do(self, *cmd: str) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n", f"writer failed on {cmd}"

    def open(self) -> None:
        self._do("open", str(self.log))

    def write(self, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._do("write", base64.b64encode(raw).decode())

    def close(self) -> None:
        self._do("close")

    def rename(self, dst: Path) -> None:
        self._do("rename", str(self.log), str(dst))

    def copy(self, dst: Path) -> None:
        self._do("copy", str(self.log), str(dst))

    def truncate(self, size: int = 0) -> None:
        self._do("truncate", str(self.log), str(size))

    def unlink(self) -> None:
        self._do("unlink", str(self.log))

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=5)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "run.log"


@pytest.fixture
def writer(log: Path):
    w = Writer(log)
    yield w
    w.stop()


@pytest.fixture
def tailers():
    opened: list[LogTailer] = []

    def make(*args, **kwargs) -> LogTailer:
        opened.append(LogTailer(*args, **kwargs))
        return opened[-1]

    yield make
    for t in opened:
        t.close()


def texts(tailer: LogTailer) -> list[str]:
    return [line.text for line in tailer.read_new()]


def test_line_written_in_pieces_is_returned_once_whole(log, writer, tailers):
    tailer = tailers(log)
    writer.write("abc")
    assert tailer.read_new() == []
    assert tailer.position.offset == 0
    writer.write("def")
    assert tailer.read_new() == []
    writer.write("\nsecond\r\nthi")
    lines = tailer.read_new()
    assert [(l.offset, l.text) for l in lines] == [(0, "abcdef"), (7, "second")]
    assert tailer.position.offset == 15
    writer.write("rd\n")
    assert texts(tailer) == ["third"]
    assert tailer.read_new() == []
    assert tailer.drain_notes() == []


def test_first_line_completed_later_is_not_mistaken_for_a_replaced_file(log, writer, tailers):
    tailer = tailers(log)
    writer.write("head")
    assert tailer.read_new() == []
    assert tailer.position.head == ""
    writer.write("er\n")
    assert texts(tailer) == ["header"]
    head = tailer.position.head
    assert head
    writer.write("more\n")
    assert texts(tailer) == ["more"]
    assert tailer.position.head == head
    assert tailer.drain_notes() == []


def test_rename_rotation_keeps_lines_written_just_before_and_after(log, writer, tailers, tmp_path):
    tailer = tailers(log)
    writer.write("old 1\n")
    assert texts(tailer) == ["old 1"]
    writer.write("old 2\nold 3\n")
    writer.rename(tmp_path / "run.log.1")
    writer.write("old 4, after the rename, before reopening\n")
    writer.close()
    writer.open()
    writer.write("new 1\nnew 2\n")
    assert texts(tailer) == ["old 2", "old 3", "old 4, after the rename, before reopening", "new 1", "new 2"]
    assert [n.split(" (")[0] for n in tailer.drain_notes()] == ["rotated"]
    writer.write("new 3\n")
    lines = tailer.read_new()
    assert [(l.offset, l.text) for l in lines] == [(12, "new 3")]


def test_unterminated_last_line_of_a_rotated_file_is_still_returned(log, writer, tailers, tmp_path):
    tailer = tailers(log)
    writer.write("old 1\nKilled")
    assert texts(tailer) == ["old 1"]
    writer.rename(tmp_path / "run.log.1")
    writer.close()
    writer.open()
    writer.write("new 1\n")
    assert texts(tailer) == ["Killed", "new 1"]


def test_copy_truncate_starts_over_on_the_same_file(log, writer, tailers, tmp_path):
    tailer = tailers(log)
    writer.write("line 1\nline 2\n")
    assert texts(tailer) == ["line 1", "line 2"]
    writer.copy(tmp_path / "run.log.1")
    writer.truncate()
    writer.write("line 3\n")
    assert texts(tailer) == ["line 3"]
    assert tailer.drain_notes() == ["truncated (size 7 < offset 14)"]


def test_truncated_and_rewritten_past_the_old_offset_is_caught_by_the_head(log, writer, tailers):
    tailer = tailers(log)
    writer.write("first run\n")
    assert texts(tailer) == ["first run"]
    writer.truncate()
    writer.write("second run starts\nand writes more than before\n")
    assert texts(tailer) == ["second run starts", "and writes more than before"]
    assert tailer.drain_notes() == ["replaced (head changed)"]


def test_deleted_log_is_followed_until_recreated_then_read_from_start(log, writer, tailers):
    tailer = tailers(log)
    writer.write("a\n")
    assert texts(tailer) == ["a"]
    writer.write("b, just before the delete\n")
    writer.unlink()
    writer.write("c, into the deleted file\n")
    assert texts(tailer) == ["b, just before the delete", "c, into the deleted file"]
    assert tailer.read_new() == []
    assert tailer.drain_notes() == ["deleted"]
    writer.close()
    writer.open()
    writer.write("fresh 1\n")
    lines = tailer.read_new()
    assert [(l.offset, l.text) for l in lines] == [(0, "fresh 1")]
    assert [n.split(" (")[0] for n in tailer.drain_notes()] == ["recreated"]


def test_missing_file_yields_nothing_until_it_appears(log, tailers):
    tailer = tailers(log)
    assert tailer.read_new() == []
    assert tailer.position == TailPosition(0, 0, "")
    w = Writer(log)
    try:
        w.write("hello\n")
        assert texts(tailer) == ["hello"]
    finally:
        w.stop()


def test_invalid_utf8_becomes_replacement_characters(log, writer, tailers):
    tailer = tailers(log)
    writer.write(b"ok \xc3\xa9\n" + b"bad \xff\xfe end\n" + "ünïcode ✓\n".encode())
    assert texts(tailer) == ["ok é", "bad \ufffd\ufffd end", "ünïcode ✓"]


def test_overlong_line_is_cut_and_the_next_line_arrives_intact(log, writer, tailers):
    mib = 1 << 20
    tailer = tailers(log)
    writer.write("before\n")
    assert texts(tailer) == ["before"]
    lines, growth = [], []
    tracemalloc.start()
    try:
        for piece in [b"x" * mib] * 5 + [b"\nafter\n"]:  # a 5 MiB line whose newline arrives calls later
            writer.write(piece)
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            lines += tailer.read_new()
            growth.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    assert [(l.offset, len(l.text), l.cut) for l in lines] == [(7, mib, True), (7 + 5 * mib + 1, 5, False)]
    assert lines[1].text == "after"
    assert max(growth) < 3 * mib, f"read_new grew memory by {max(growth)} bytes: the line was buffered whole"


def test_restart_resumes_without_repeating_or_losing_lines(log, writer, tailers):
    tailer = tailers(log)
    writer.write("1\n2\n3")
    assert texts(tailer) == ["1", "2"]
    saved = tailer.position
    tailer.close()
    writer.write("\n4\n")  # written while expwatch is down
    restarted = tailers(log, position=saved)
    assert texts(restarted) == ["3", "4"]
    assert restarted.drain_notes() == []


def test_restart_inside_a_cut_line_does_not_return_its_rest_as_a_line(log, writer, tailers):
    tailer = tailers(log, max_line_bytes=10)
    writer.write("short\n" + "y" * 50)
    assert [(l.text, l.cut) for l in tailer.read_new()] == [("short", False), ("y" * 10, True)]
    saved = tailer.position
    tailer.close()
    writer.write("y" * 50 + "\nnext\n")
    restarted = tailers(log, position=saved, max_line_bytes=10)
    assert texts(restarted) == ["next"]


def test_restart_after_rotation_drains_the_renamed_file_then_the_new_one(log, writer, tailers, tmp_path):
    tailer = tailers(log)
    writer.write("old 1\n")
    assert texts(tailer) == ["old 1"]
    saved = tailer.position
    tailer.close()
    writer.write("old 2, unseen before the rotation\n")
    writer.rename(tmp_path / "run.log.1")
    writer.close()
    writer.open()
    writer.write("new 1\n")
    restarted = tailers(log, position=saved)
    assert texts(restarted) == ["old 2, unseen before the rotation", "new 1"]
    notes = restarted.drain_notes()
    assert notes[0].startswith("rotated while down")
    assert notes[1] == "draining rotated file run.log.1 from offset 6"


def test_restart_after_the_log_was_replaced_reads_the_new_file_from_start(log, writer, tailers):
    tailer = tailers(log)
    writer.write("old 1\nold 2\n")
    assert texts(tailer) == ["old 1", "old 2"]
    saved = tailer.position
    tailer.close()
    writer.unlink()
    writer.close()
    writer.open()
    writer.write("new 1\nnew 2\nnew 3\n")
    restarted = tailers(log, position=saved)
    assert texts(restarted) == ["new 1", "new 2", "new 3"]
    # The filesystem may hand the freed inode to the new file; the head tells them apart.
    assert restarted.drain_notes()[0].split(" (")[0] in ("rotated while down", "replaced while down")


def test_backlog_is_read_in_bounded_batches_and_quickly(log, tailers):
    body = b"".join(b"step %07d loss=0.1234 acc=0.5678 some padding text\n" % i for i in range(400_000))
    log.write_bytes(body)  # ~20 MiB of history
    tailer = tailers(log, max_batch_bytes=1 << 20)
    started = time.monotonic()
    batches, count, last = 0, 0, None
    while True:
        lines = tailer.read_new()
        batches += 1
        count += len(lines)
        last = lines[-1] if lines else last
        if not tailer.more_pending:
            break
    elapsed = time.monotonic() - started
    assert count == 400_000
    assert last.text.startswith("step 0399999 ")
    assert batches >= 20
    assert tailer.position.offset == len(body)
    assert elapsed < 10, f"catching up on 20 MiB took {elapsed:.1f}s"


FREE_WRITER = r"""
import os, sys, time
log = sys.argv[1]
fh = open(log, "a", buffering=1)
for i in range(30):
    if i == 15:
        fh.close()
        os.rename(log, log + ".1")
        fh = open(log, "a", buffering=1)
    fh.write(f"line {i:02d} ")
    fh.flush()
    time.sleep(0.005)
    fh.write("done\n")
    time.sleep(0.01)
"""


def test_lines_arrive_through_real_watchdog_events(log, tailers):
    events: queue.Queue[str] = queue.Queue()

    class Enqueue(FileSystemEventHandler):
        def on_any_event(self, event):
            events.put(event.src_path)

    observer = Observer()
    observer.schedule(Enqueue(), str(log.parent))
    observer.start()
    tailer = tailers(log)
    child = subprocess.Popen([sys.executable, "-c", FREE_WRITER, str(log)])
    received: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while len(received) < 30 and time.monotonic() < deadline:
            try:
                events.get(timeout=0.5)  # read only when inotify says something changed
            except queue.Empty:
                continue
            received += texts(tailer)
    finally:
        child.wait(timeout=10)
        observer.stop()
        observer.join()
    assert received == [f"line {i:02d} done" for i in range(30)]
