"""A stand-in process that writes a recorded log into a run's log, paced by the lines' own timestamps.

It remembers in STATE how many lines it has written, so when expwatch kills
and restarts it, the restarted process goes on where the killed one stopped,
as a real evaluation resumes from its checkpoint. Gaps longer than CAP_S are
shortened to CAP_S (still longer than any test's settle window). After the
last line it stays alive, quietly, like a run waiting on something.

Usage: python log_replayer.py SOURCE_LOG OUT_LOG STATE [CAP_S]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rules.replay import line_time  # noqa: E402  (the tester's own clock, so both read time alike)


def main(source: str, out: str, state: str, cap_s: float = 1.5) -> None:
    lines = [line.rstrip("\n") for line in open(source, encoding="utf-8") if not line.startswith("#")]
    done = int(open(state).read() or 0) if os.path.exists(state) else 0
    previous = line_time(lines[done - 1], 0.0) if done else None
    with open(out, "a", encoding="utf-8") as log:
        for index in range(done, len(lines)):
            at = line_time(lines[index], previous or 0.0)
            if previous is not None and at > previous:
                time.sleep(min(at - previous, cap_s))
            previous = at
            log.write(lines[index] + "\n")
            log.flush()
            with open(state + ".tmp", "w") as fh:
                fh.write(str(index + 1))
            os.replace(state + ".tmp", state)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(*sys.argv[1:4], *(float(a) for a in sys.argv[4:5]))
