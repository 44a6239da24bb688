"""Catch-up throughput: the watcher's first read of a long existing log.

One log of N realistic eval lines (bench/history.py), read three ways, one
after another over the same file in the page cache:

* ``grep -cE`` with the default rules' patterns (the yardstick),
* expwatch itself: a real watcher process adopting a run with that log; the
  time from its ``run discovered`` to its ``history read`` record is its
  LogTailer + LineClassifier + RunFacts pass over the history,
* a plain Python loop, ``re.search`` of every pattern on every line.

The same objects are also timed in this process with the pure-``re``
prefilter engine, for machines where Hyperscan is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fleet import Fleet, ts_seconds, wait_for
from history import write_history

from expwatch.rules.classify import LineClassifier
from expwatch.rules.facts import RunFacts
from expwatch.rules.loader import load_rules
from expwatch.rules.model import LogAtom, RatioAtom, RuleSet
from expwatch.watcher.tail import LogTailer


@dataclass(frozen=True)
class CatchUpResult:
    lines: int
    mbytes: float
    matching_lines: int
    grep_s: float
    expwatch_s: float
    engine: str
    expwatch_re_s: float | None
    python_loop_s: float | None

    def rate(self, seconds: float | None) -> float | None:
        return self.lines / seconds if seconds else None


def rule_patterns(ruleset: RuleSet) -> list[str]:
    patterns: list[str] = []
    for atom in ruleset.all_atoms():
        if isinstance(atom, LogAtom):
            patterns.extend(atom.patterns)
        elif isinstance(atom, RatioAtom):
            patterns.extend([atom.numerator, *atom.denominator])
    return patterns


def time_grep(log: Path, patterns: list[str]) -> tuple[float, int]:
    argv = ["grep", "-cE"] + [arg for p in patterns for arg in ("-e", p)] + [str(log)]
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise RuntimeError(f"grep failed: {out.stderr}")
    return elapsed, int(out.stdout.strip() or 0)


def time_python_loop(log: Path, patterns: list[str]) -> tuple[float, int]:
    compiled = [re.compile(p) for p in patterns]
    started = time.perf_counter()
    matching = 0
    with open(log, encoding="utf-8", errors="replace", newline="\n") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if any(rx.search(line) for rx in compiled):
                matching += 1
    return time.perf_counter() - started, matching


def time_in_process(log: Path, ruleset: RuleSet, use_hyperscan: bool) -> tuple[float, int, int]:
    """The watcher's replay loop (EngineLoop._read_log with replay=True), in this process."""
    classifier = LineClassifier(ruleset, use_hyperscan=use_hyperscan)
    started = time.perf_counter()
    tailer = LogTailer(log)
    facts = RunFacts(ruleset, started_at=time.time())
    lines = matching = 0
    while True:
        for line in tailer.read_new(classifier.prefilter):
            hits = classifier.classify(line.text)
            matching += bool(hits)
            facts.on_line(hits, time.time(), replay=True)
        lines += tailer.lines_read
        if not tailer.more_pending:
            break
    tailer.close()
    return time.perf_counter() - started, lines, matching


def time_watcher(workdir: Path, log: Path, rounds: int) -> tuple[float, int]:
    """Best of ``rounds`` first reads by a real watcher (each with fresh state)."""
    best, lines = float("inf"), 0
    for i in range(rounds):
        root = workdir / f"catchup-{i}"
        shutil.rmtree(root, ignore_errors=True)
        fleet = Fleet(root)
        try:
            fleet.adopt_sleepers(["history"], log_for=lambda _name: log)
            fleet.start_watcher()
            done = wait_for(lambda: fleet.audit.select("history read"), 120, "the history to be read")[0]
            found = fleet.audit.select("run discovered")[0]
            best = min(best, ts_seconds(done["ts"]) - ts_seconds(found["ts"]))
            lines = done["lines"]
        finally:
            fleet.cleanup()
    return best, lines


def measure(workdir: Path, lines: int, rounds: int, python_loop: bool, seed: int) -> CatchUpResult:
    log = workdir / "history" / "history.log"
    write_history(log, lines, seed)
    ruleset = load_rules(None)
    patterns = rule_patterns(ruleset)
    grep_s, grep_matching = min((time_grep(log, patterns) for _ in range(rounds)), key=lambda r: r[0])
    watcher_s, watcher_lines = time_watcher(workdir, log, rounds)
    if watcher_lines != lines:
        raise RuntimeError(f"watcher read {watcher_lines} lines of {lines}")
    engine = LineClassifier(ruleset).prefilter.engine
    _, counted, matching = time_in_process(log, ruleset, use_hyperscan=engine == "hyperscan")
    if (counted, matching) != (lines, grep_matching):
        raise RuntimeError(f"expwatch saw {matching} matching of {counted} lines; grep counted {grep_matching}")
    re_s = min(time_in_process(log, ruleset, use_hyperscan=False)[0] for _ in range(rounds)) if engine != "re" else None
    loop_s = None
    if python_loop:
        loop_s, loop_matching = time_python_loop(log, patterns)
        if loop_matching != grep_matching:
            raise RuntimeError(f"python loop counted {loop_matching}, grep {grep_matching}")
    return CatchUpResult(lines, log.stat().st_size / 1e6, grep_matching, grep_s, watcher_s, engine, re_s, loop_s)
