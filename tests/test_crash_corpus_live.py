"""The recorded-failure corpus decided by one live watcher, as its headers say and as `rules test` says.

Every file in tests/data/crashes/ becomes a launched run: a real child
process (tests/log_replayer.py) writes the file's lines into the run's log,
paced by the lines' own timestamps, each burst in a few writes cut mid-line
as a block-buffered stdout cuts them, then ends as the header's ``# exit:``
says (a code, or a signal it sends itself). One watcher watches them all,
with the fast test settings and the shipped rules quickened. From its audit
trail, each run's first incident must name the header's rule and plan, and
its story (winner, guard decision, cause, plan, candidates) must equal what
`expwatch rules test --json` prints for the log the run wrote, ended the
same way, but for the time a quota halt names (``on_one_clock``). A real
process takes a moment to exit after its traceback (most of a second under
load, longer than a settle window); the watcher waits for that exit
(``crash.exit_wait_s``), so the exit is evidence on both sides. Run it alone with
``.venv/bin/python -m pytest -q tests/test_crash_corpus_live.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from conftest import Experiments, fast_rules, wait_for
from crash_cases import CASES, read_case
from expwatch.cli import main as cli
from stories import rules_test_story, watcher_story

REPLAYER = Path(__file__).resolve().parent / "log_replayer.py"
PIECES = 3  # writes per burst of lines, cut mid-line: the watcher reads cut-off lines and half-written tracebacks
# A quota halt names when to come back: retry hint + now, and now is each side's own clock (wall, or the lines').
COME_BACK_AT = re.compile(r" \(at \d{4}-\d{2}-\d{2}T[\d:]+[+-]\d{2}:\d{2}\)")


def run_name(path: Path) -> str:
    return path.stem.replace("_", "-")


def on_one_clock(story: list[dict]) -> list[dict]:
    """The story without the time a quota halt names, which each side reads off its own clock."""
    return [{**i, "plan": [{**s, "arg": COME_BACK_AT.sub("", s["arg"]) if isinstance(s["arg"], str) else s["arg"]} for s in i["plan"]]}
            for i in story]


@pytest.fixture(scope="module")
def corpus_watched(tmp_path_factory):
    """One watcher over one run per corpus file, stopped once every run has its first incident decided."""
    experiments = Experiments(tmp_path_factory.mktemp("corpus") / "experiments")
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules(silent_s=600))
    try:
        watcher = experiments.start_watcher()
        for path in CASES:
            name, case = run_name(path), read_case(path)
            log, state = experiments.root / f"{name}.log", experiments.root / f"{name}.state"
            assert cli(["launch", "--name", name, "--log", str(log), "--dir", str(experiments.root), "--",
                        sys.executable, str(REPLAYER), str(path), str(log), str(state), "--pieces", str(PIECES), *case.exit_args]) == 0
        # A decision's planned actions are written with it, on the engine's thread, before it reads a signal.
        runs = {run_name(p) for p in CASES}
        wait_for(lambda: runs <= {r["run"] for r in experiments.audit(event="incident classified")}, timeout=60,
                 what="every run's first incident decided")
        experiments.stop_watcher(watcher)
        yield experiments
    finally:
        experiments.cleanup()


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_a_live_watcher_decides_each_recorded_failure_as_its_header_and_rules_test_say(corpus_watched, path):
    case, name = read_case(path), run_name(path)
    log = corpus_watched.root / f"{name}.log"
    assert log.read_text().splitlines() == list(case.lines)
    story = watcher_story(corpus_watched, name)
    first = story[0]
    assert first["rule"] == case.expect["rule"], first["candidates"]
    assert [step["name"] for step in first["plan"]] == case.expect["plan"]
    if "cause" in case.expect:
        assert first["cause"].startswith(case.expect["cause"]), first["cause"]
    if "halt_starts" in case.expect:
        assert first["plan"][0]["arg"].startswith(case.expect["halt_starts"]), first["plan"][0]["arg"]
    replayed = rules_test_story(corpus_watched.root / "expwatch.rules.yaml", log, *case.exit_args)
    assert on_one_clock(story) == on_one_clock(replayed)
