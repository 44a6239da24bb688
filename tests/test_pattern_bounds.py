"""No pattern can stall the engine (issue 15, item 5, its pattern half).

Patterns run on RE2, in time linear in the line; what RE2 cannot bound is
refused by ``rules check`` with its file and line. Under a real watcher, a
catastrophic-backtracking pattern meeting its worst line delays no other
run's lines, and a watcher killed and restarted on that line does not hang.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for, write_until_matched
from expwatch.audit.reader import parse_ts
from expwatch.rules.classify import LineClassifier
from expwatch.rules.loader import RulesError, load_rules, parse_rules

# The latency goal is p99 50 ms on a quiet machine (bench/run.py GOAL_P99_MS); one sample on a shared
# test machine gets 20x that. Python's re takes hours on this line, so the old engine never matched at all.
LATENCY_BOUND_S = 1.0
EVIL_LINE = "a" * 34 + "b"

RULES = """\
version: 1
rules:
  - name: EVIL
    severity: info
    priority: 10
    when: {log: {pattern: '(a+)+$'}}
    actions: [{exec: {argv: ["true"]}}]
  - name: MARK
    severity: info
    priority: 20
    when: {log: {pattern: 'MARK-[0-9]+'}}
    actions: [{exec: {argv: ["true"]}}]
"""


@pytest.mark.parametrize("pattern, what", [
    (r"(\w+) \1", "backreference"),
    (r"error(?=: fatal)", "lookahead"),
    (r"(?<!no )error", "lookbehind"),
    (r"(?>a+)b", "atomic group"),
    (r"a++b", "possessive quantifier"),
])
def test_rules_check_rejects_patterns_that_need_backtracking_with_file_and_line(tmp_path: Path, pattern: str, what: str):
    rules = tmp_path / "expwatch.rules.yaml"
    rules.write_text(RULES.replace("'MARK-[0-9]+'", f"'{pattern}'"))
    with pytest.raises(RulesError) as caught:
        load_rules(rules)
    assert str(caught.value).startswith(f"{rules}:11: rule 'MARK': field 'when.log") and what in str(caught.value)
    proc = subprocess.run([sys.executable, "-m", "expwatch", "rules", "check", str(rules)], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and f"{rules}:11:" in proc.stderr and "Traceback" not in proc.stderr


def sleepers(experiments, names: list[str]) -> list[subprocess.Popen]:
    procs = []
    for name in names:
        log = experiments.root / f"{name}.log"
        log.touch()
        proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        procs.append(proc)
        assert subprocess.run([sys.executable, "-m", "expwatch", "adopt", "--pid", str(proc.pid), "--name", name,
                               "--log", str(log), "--dir", str(experiments.root)], capture_output=True).returncode == 0
    return procs


def mark_latency(experiments, n: int) -> float:
    """Append MARK-n to the calm run's log; seconds until its match is in the audit log."""
    written = time.time()
    with (experiments.root / "calm.log").open("a") as fh:
        fh.write(f"MARK-{n}\n")
    [match] = wait_for(lambda: [r for r in experiments.audit(run="calm", event="rule matched") if f"MARK-{n}" in r.get("line", "")],
                       timeout=30, what=f"MARK-{n} matched")
    return parse_ts(match["ts"]).timestamp() - written


def test_a_backtracking_pattern_on_its_worst_line_delays_no_other_run_and_survives_a_restart(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(RULES)
    procs = sleepers(experiments, ["evil", "calm"])
    try:
        watcher = experiments.start_watcher()
        write_until_matched(experiments, "calm", experiments.root / "calm.log", "MARK-0")
        write_until_matched(experiments, "evil", experiments.root / "evil.log", "aa")
        with (experiments.root / "evil.log").open("a") as fh:
            fh.write(EVIL_LINE + "\n")
        assert mark_latency(experiments, 1) < LATENCY_BOUND_S
        # The evil run's own next line is matched too: nothing is stuck behind the worst line.
        with (experiments.root / "evil.log").open("a") as fh:
            fh.write("aaaa\n")
        wait_for(lambda: [r for r in experiments.audit(run="evil", event="rule matched") if r.get("line") == "aaaa"],
                 timeout=LATENCY_BOUND_S * 5, what="the evil run's next line matched")
        # Killed before it could save its read position past the evil line, if it ever got stuck there.
        experiments.stop_watcher(watcher, signal.SIGKILL)
        with (experiments.root / "evil.log").open("a") as fh:
            fh.write(EVIL_LINE + "\n")
        sessions = len(experiments.audit(run="calm", event="run discovered"))
        watcher = experiments.start_watcher()
        wait_for(lambda: len(experiments.audit(run="calm", event="run discovered")) > sessions, what="calm watched again")
        assert mark_latency(experiments, 2) < LATENCY_BOUND_S
        experiments.stop_watcher(watcher)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("pattern, line", [("code [[:digit:]]failed", "code 4failed"), (r"\Q1+1\E=2", "1+1=2")])
def test_re2_only_syntax_is_matched_by_re2_and_never_hidden_by_the_prefilter(pattern: str, line: str):
    ruleset = parse_rules(f"version: 1\nrules:\n  - name: P\n    when: {{log: {{pattern: '{pattern}'}}}}\n    actions: [halt]\n", "t")
    classifier = LineClassifier(ruleset)
    assert classifier.classify(line) and classifier.classify(line + " and more")
    assert not classifier.classify("nothing here")
