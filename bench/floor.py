"""The CPython floor: the least a Python log tailer can do per write, run as a peer.

    python bench/floor.py RULES.yaml LOG [LOG ...]

A watcher written in Python pays, for every write to a watched log, one
wake-up from ``epoll``, one ``read`` of inotify's descriptor, the decoding
of its events, one ``pread`` of the new bytes and one prefilter scan of them.
This program does exactly that and nothing more: no rules, no state, no
audit trail, no timers. Lines the prefilter points at are printed as they
are (bench/peers.py's ``measure_floor`` stamps them on arrival, as it does
``grep``'s output). Its prefilter is expwatch's own live one
(``LineClassifier.live_prefilter``, Hyperscan where installed), built from
the same rules the benchmarked watcher runs, so it skips the same lines.

What it costs on bench/logwriter.py's workload is the floor under any
CPython watcher of that design on this machine: a figure to hold a CPU goal
against (BENCHMARKS.md, issue 16), not a tool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys
from pathlib import Path

from expwatch.rules.classify import LineClassifier
from expwatch.rules.loader import load_rules
from expwatch.watcher.inotify import HEADER, IN_CLOEXEC, IN_MODIFY, IN_NONBLOCK


def main(argv: list[str]) -> int:
    rules, logs = Path(argv[0]), [Path(p) for p in argv[1:]]
    prefilter = LineClassifier(load_rules(rules)).live_prefilter
    if prefilter is None:
        print("floor: the rules have a pattern with no literal; no prefilter to measure", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    inotify = libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
    if inotify < 0:
        print(f"floor: inotify_init1: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 2
    # One watch per log (by file, as tail -F does): the event's wd names the log, no path to build.
    open_logs: dict[int, list[int]] = {}  # wd -> [fd, offset]
    for log in logs:
        wd = libc.inotify_add_watch(inotify, os.fsencode(log), IN_MODIFY)
        if wd < 0:
            print(f"floor: inotify_add_watch {log}: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 2
        fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
        open_logs[wd] = [fd, os.fstat(fd).st_size]
    poll = select.epoll()
    poll.register(inotify, select.EPOLLIN)
    out = sys.stdout.buffer
    size, unpack = HEADER.size, HEADER.unpack_from
    print("ready", flush=True)
    while True:
        poll.poll(-1)
        try:
            buf = os.read(inotify, 1 << 16)
        except BlockingIOError:
            continue
        offset = 0
        while offset < len(buf):
            wd, _mask, _cookie, length = unpack(buf, offset)
            offset += size + length
            log = open_logs.get(wd)
            if log is None:
                continue
            chunk = os.pread(log[0], 1 << 16, log[1])
            end = chunk.rfind(b"\n") + 1
            if not end:
                continue
            log[1] += end
            hits = prefilter.positions(chunk[:end])
            if not hits:
                continue
            printed = 0  # end of the last line printed: a line with two literals is printed once
            for at in hits:
                if at >= printed:
                    printed = chunk.index(b"\n", at) + 1
                    out.write(chunk[chunk.rfind(b"\n", 0, at) + 1:printed])
            out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
