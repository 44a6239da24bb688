"""A stand-in process that writes a recorded log into a run's log, paced by the lines' own timestamps.

Each line is its own write, as a script's logging and a traceback printed on
its line-buffered stderr arrive; with --pieces N, the lines of each burst
(those at one moment) arrive in N writes cut anywhere, mid-line included, as
a block-buffered stdout flushes them. It remembers in STATE how many lines it has
written, so when expwatch kills and restarts it, the restarted process goes
on where the killed one stopped, as a real evaluation resumes from its
checkpoint. Gaps longer than --cap seconds are shortened to that (still
longer than any test's settle window). After the last line it stays alive,
quietly, like a run waiting on something; with --exit or --signal the
process that wrote the last line ends that way instead, as the recorded
run did (a restarted one, with nothing left to write, stays alive), but not
before it has lived MIN_LIFETIME_S: `expwatch launch` refuses a run that is
gone by its liveness check, and a two-line case written in a few hundredths
of a second would race that check on a loaded machine.

Usage: python log_replayer.py SOURCE_LOG OUT_LOG STATE [--cap S] [--pieces N] [--exit CODE | --signal N]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rules.replay import line_time  # noqa: E402  (the tester's own clock, so both read time alike)

PIECE_GAP_S = 0.02
MIN_LIFETIME_S = 0.5  # ten times the tests' launch.check_after_s, a tenth of crash.exit_wait_s


def replay_lines(source: str, out: str, state: str, cap_s: float, pieces: int) -> bool:
    """Write the lines not written yet; True if this process wrote the last one."""
    lines = [line.rstrip("\n") for line in open(source, encoding="utf-8") if not line.startswith("#")]
    done = int(open(state).read() or 0) if os.path.exists(state) else 0
    previous = line_time(lines[done - 1], 0.0) if done else None
    with open(out, "a", encoding="utf-8") as log:
        index = done
        while index < len(lines):
            at = line_time(lines[index], previous or 0.0)
            if previous is not None and at > previous:
                time.sleep(min(at - previous, cap_s))
            previous = at
            end = index + 1
            while pieces > 1 and end < len(lines) and line_time(lines[end], at) <= at:
                end += 1
            write_in_pieces(log, "".join(line + "\n" for line in lines[index:end]), pieces)
            index = end
            with open(state + ".tmp", "w") as fh:
                fh.write(str(index))
            os.replace(state + ".tmp", state)
    return done < len(lines)


def write_in_pieces(log, text: str, pieces: int) -> None:
    """``text`` in ``pieces`` writes cut at even offsets, mid-line, as a block-buffered stdout cuts its output."""
    cuts = [len(text) * k // pieces for k in range(pieces + 1)]
    for start, stop in zip(cuts, cuts[1:]):
        if start == stop:
            continue
        if start:
            time.sleep(PIECE_GAP_S)  # long enough for the watcher to read the cut-off line
        log.write(text[start:stop])
        log.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("state")
    parser.add_argument("--cap", type=float, default=1.5, dest="cap_s")
    parser.add_argument("--pieces", type=int, default=1, help="write each burst of lines (those at one moment) in this many writes")
    end = parser.add_mutually_exclusive_group()
    end.add_argument("--exit", type=int, dest="exit_code")
    end.add_argument("--signal", type=int, dest="exit_signal")
    args = parser.parse_args()
    started = time.monotonic()
    if replay_lines(args.source, args.out, args.state, args.cap_s, args.pieces):
        time.sleep(max(0.0, started + MIN_LIFETIME_S - time.monotonic()))
        if args.exit_code is not None:
            sys.exit(args.exit_code)
        if args.exit_signal is not None:
            if args.exit_signal not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
                signal.signal(args.exit_signal, signal.SIG_DFL)  # Python turns SIGINT into an exception, ignores SIGPIPE
            os.kill(os.getpid(), args.exit_signal)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
