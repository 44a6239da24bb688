"""The live path's shortcuts change nothing a user sees (issue 16).

Lines no rule can match are skipped on the live path too; inotify events are
read in batches by the engine loop itself and merged per file, each saying
whether it was only a write; a file already waiting in the engine's queue is
not queued twice. Each test drives real files,
a real writer process or a real watcher.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import FAST_SETTINGS, fast_rules, wait_for
from fleet import Fleet

from expwatch.watcher.coalesce import EventQueue
from expwatch.watcher.events import FileChanged, Shutdown
from expwatch.watcher.inotify import InotifyWatch

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "eval.py", line 3, in <module>\n'
    "    main()\n"
    "ValueError: boom\n"
)


BURST_WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
for i in range(int(sys.argv[2])):
    os.write(fd, b"line %d\n" % i)
os.makedirs(sys.argv[3])
with open(os.path.join(sys.argv[3], "inner.log"), "w") as fh:
    fh.write("x\n")
"""


def test_a_burst_of_writes_is_a_few_events_and_new_subdirectories_are_followed(tmp_path):
    watch = InotifyWatch()
    watch.schedule(tmp_path, recursive=True)
    log, sub = tmp_path / "run.log", tmp_path / "sub"
    reads: list[dict[Path, bool]] = []
    try:
        subprocess.run([sys.executable, "-c", BURST_WRITER, str(log), "2000", str(sub)], check=True, timeout=30)
        deadline = time.monotonic() + 10
        while not any(str(sub / "inner.log") in r for r in reads) and time.monotonic() < deadline:
            if select.select([watch.fileno()], [], [], 0.5)[0]:
                reads.append(watch.take())
    finally:
        watch.close()
    assert any(str(sub / "inner.log") in r for r in reads)  # created before its directory's watch existed, reported all the same
    assert 1 <= sum(str(log) in r for r in reads) < 200  # 2,000 writes, merged by the kernel and per read
    # The log's creation is in the first read that names it: that one is not "only written to".
    assert next(r[str(log)] for r in reads if str(log) in r) is False


def test_only_writes_say_appended_and_a_rename_or_recreation_does_not(tmp_path):
    watch = InotifyWatch()
    watch.schedule(tmp_path, recursive=False)
    log, rotated = tmp_path / "run.log", tmp_path / "run.log.1"
    log.write_text("first\n")

    def next_read() -> dict[str, bool]:
        assert select.select([watch.fileno()], [], [], 5)[0], "no inotify event"
        time.sleep(0.05)  # the writer's whole step in one read
        return watch.take()

    try:
        assert next_read() == {str(log): False}  # created
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"second\n")
        os.write(fd, b"third\n")
        assert next_read() == {str(log): True}  # two writes to the open file
        os.rename(log, rotated)
        os.write(fd, b"to the rotated file\n")
        assert next_read() == {str(log): False, str(rotated): False}  # renamed (the write merges into the move's entry)
        os.close(fd)
        log.write_text("new file\n")
        assert next_read()[str(log)] is False  # created again
        os.truncate(log, 0)
        assert next_read() == {str(log): True}  # truncated in place is a write: the reader finds it by reading nothing
    finally:
        watch.close()


def test_a_file_waiting_in_the_queue_is_not_queued_twice_and_is_free_once_taken():
    events = EventQueue()
    a, b = Path("/x/a.log"), Path("/x/b.log")

    def send() -> None:
        for _ in range(250):
            events.put(FileChanged(a))
            events.put(FileChanged(b))
            events.put(FileChanged(a))

    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    events.put(Shutdown())
    # The engine loop waits on wake_fd, not in get(): every put signals it, and woken() resets it.
    assert select.select([events.wake_fd], [], [], 0)[0]
    events.woken()
    assert not select.select([events.wake_fd], [], [], 0)[0]
    taken = [events.get_nowait() for _ in range(events.qsize())]
    assert sorted(taken[:2], key=str) == [FileChanged(a), FileChanged(b)] and taken[2:] == [Shutdown()]
    assert events.merged == 4 * 250 * 3 - 2
    events.put(FileChanged(a))  # taken out above, so a new change is a new event
    assert events.get_nowait() == FileChanged(a)


def test_evidence_after_a_first_match_is_captured_although_quiet_lines_are_skipped(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=FAST_SETTINGS, rules=fast_rules())
    try:
        fleet.adopt_sleepers(["r1"])
        fleet.start_watcher()
        wait_for(lambda: fleet.audit.select("run discovered"), what="discovery")
        fd = os.open(fleet.root / "r1.log", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"INFO eval: [1/9] item-1 correct=True\n" * 50)
            time.sleep(0.3)
            # One write: the first match and the lines of its evidence arrive in the same read.
            os.write(fd, b"INFO eval: [2/9] item-2 correct=True\n" + TRACEBACK.encode() + b"INFO after the crash\n")
        finally:
            os.close(fd)
        # The process ends with its crash; one that lived on writing would have caught it (Decider.carried_on).
        os.kill(fleet.manifest("r1").pid, signal.SIGKILL)
        classified = wait_for(lambda: fleet.audit.select("incident classified", run="r1"), what="the incident decided")
        assert classified[0]["rule"] == "TRACEBACK"
        assert classified[0]["captured_lines"] == 5  # the whole traceback and the line after it
    finally:
        fleet.cleanup()
