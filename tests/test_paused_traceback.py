"""A traceback whose writer pauses in the middle is decided on all of it, not on the part before the pause.

On a loaded machine a crashing script can be descheduled while Python prints
its traceback. The watcher must not take a quiet settle window in the middle
of a section's frames, or right after "The above exception was the direct
cause ...", for the traceback's end: that part names only the inner causes
(here httpcore2's and httpx2's), and the outermost, the client's own
``openai.APIConnectionError``, is what the operator acts on. The text is the
real openai 3.x chain (tests/data/crashes/openai3_connection_refused.log),
written by a separate process that pauses for three settle windows.
"""

from __future__ import annotations

import sys

import pytest

from conftest import fast_rules, wait_for
from crash_cases import CORPUS, read_case
from expwatch.cli import main as cli
from expwatch.settings import load_settings

CASE = read_case(CORPUS / "openai3_connection_refused.log")
LAST_CHAIN = max(i for i, line in enumerate(CASE.lines) if line.startswith("The above exception"))
LAST_HEADER = max(i for i, line in enumerate(CASE.lines) if line.startswith("Traceback"))

WRITER = """
import sys, time
lines = open(sys.argv[1]).read().splitlines()
cut, pause = int(sys.argv[2]), float(sys.argv[3])
for number, line in enumerate(lines):
    if number == cut:
        time.sleep(pause)
    print(line, file=sys.stderr, flush=True)
sys.exit(1)
"""


@pytest.mark.parametrize("cut, where", [(LAST_CHAIN + 1, "after the chain line"), (LAST_HEADER + 3, "among the last section's frames")])
def test_a_pause_inside_a_traceback_does_not_cut_it(experiments, tmp_path, cut, where):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules(silent_s=60))
    pause = 3 * load_settings(experiments.layout).watch.settle_s
    text = tmp_path / "crash.txt"
    text.write_text("\n".join(CASE.lines) + "\n")
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    watcher = experiments.start_watcher()
    assert cli(["launch", "--name", "paused", "--log", str(experiments.root / "paused.log"), "--dir", str(experiments.root),
                "--", sys.executable, str(writer), str(text), str(cut), str(pause)]) == 0
    first = wait_for(lambda: experiments.audit(run="paused", event="incident classified"), what="classified")[0]
    experiments.stop_watcher(watcher)
    assert first["rule"] == "PROXY_DOWN", where
    assert first["cause"].startswith("openai.APIConnectionError"), (where, first["cause"])
