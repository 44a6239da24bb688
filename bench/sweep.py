"""Crash at every step: each failure story with the watcher SIGKILLed right after each point it passes.

    python bench/sweep.py [--full] [--story NAME]... [--jobs N] [--markdown]

For each story a first run with ``testing.crash_trace`` lists the crash
points (expwatch/crashpoints.py) the watcher passes, in order. Then, for
each point (``--full``: each pass of it, up to ``--max-pass``), the story
runs again with ``testing.crash_at`` set to it: the watcher kills itself
right after that write or effect, a fresh watcher is started, and once the
run is at rest bench/invariants.py checks what was left: every failure got
exactly one decision, every decided step ran exactly once, a recoverable
run completed with each item once, a halted run has its bundle, the audit
has no torn line and tells the story in order. The table is deterministic
(no random timing). Without ``--full`` each point is tried once, in the
story that passes it first, which is the size CI runs.

Exit status 1 if any cell fails; each failure names its story and point.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import Fleet, quietly, ts_seconds  # noqa: E402
from invariants import RULE_OF_FAULT, Evidence, RunPlan, check_all, parse_audit  # noqa: E402
from sweep_stories import STORIES, at_rest, launch, reached, slurm_cluster, wait_until, while_down  # noqa: E402
from expwatch.quick_scale import FAST_SETTINGS, fast_rules  # noqa: E402

LAUNCH_LOCK = threading.Lock()
SETTINGS = FAST_SETTINGS + "audit: {max_bytes: 1000000000}\n"


@dataclass(frozen=True)
class Cell:
    story: str
    point: str  # "POINT#N", or "" for the uninterrupted trace run


@dataclass
class CellResult:
    cell: Cell
    violations: list[str] = field(default_factory=list)
    killed: bool = False
    seconds: float = 0.0
    trace: list[str] = field(default_factory=list)


def run_cell(cell: Cell, workdir: Path, timeout: float = 60.0) -> CellResult:
    started = time.monotonic()
    story = STORIES[cell.story]
    root = workdir / f"{cell.story}-{cell.point.replace(':', '_').replace('#', '_').replace(' ', '_') or 'trace'}"
    shutil.rmtree(root, ignore_errors=True)
    trace = root / "crash-trace.txt"
    testing = f"testing: {{crash_at: {cell.point!r}}}\n" if cell.point else f"testing: {{crash_trace: {str(trace)!r}}}\n"
    root.mkdir(parents=True)
    fleet = Fleet(root, settings=SETTINGS, rules=fast_rules())
    result = CellResult(cell)
    plan = story.plan("run")

    def recover() -> None:
        """The watcher SIGKILLed itself: the next one runs without the crash point (recovery is what is tested)."""
        result.killed = True
        (root / "expwatch.yaml").write_text(SETTINGS)
        fleet.start_watcher()

    def by_hand(argv: list[str]) -> None:
        with LAUNCH_LOCK:  # launch and the commands swap sys.stdout to stay quiet: one thread at a time
            if argv[0] == "launch":
                launch(story, fleet, plan.name)
            elif quietly([*argv, plan.name, "--dir", str(root)]) != 0:
                result.violations.append(f"expwatch {argv[0]} {plan.name} failed")

    try:
        if story.before:
            fleet.start_watcher()
            by_hand(["launch"])
            if not wait_until(lambda: reached(story, fleet, plan.name), timeout):
                raise RuntimeError(f"the run never reached {story.before!r} before the armed watcher")
            if story.before == "halted":
                time.sleep(1.0)  # let its incident close
            fleet.stop_watcher(signal.SIGTERM)
            if problem := while_down(story, fleet, plan.name, timeout):
                raise RuntimeError(problem)
        (root / "expwatch.yaml").write_text(SETTINGS + testing)
        known = len(fleet.audit.select("run discovered", run=plan.name))
        try:
            fleet.start_watcher()
        except RuntimeError:
            fleet.stop_watcher()
            recover()
        if story.operator:
            # The hand acts on a run the armed watcher watches: acting before its start had found the run
            # (a loaded machine) left nothing of the story but a start that found the process gone.
            wait_until(lambda: len(fleet.audit.select("run discovered", run=plan.name)) > known or fleet.watcher.poll() is not None,
                       timeout)
            by_hand([story.operator])
        elif not story.before:
            by_hand(["launch"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not at_rest(story, fleet, plan.name):
            if fleet.watcher is not None and fleet.watcher.poll() is not None:
                code = fleet.stop_watcher()
                if code != -signal.SIGKILL:
                    result.violations.append(f"the watcher exited with {code}")
                    break
                recover()
            time.sleep(0.05)
        if not at_rest(story, fleet, plan.name):
            result.violations.append(f"the run is not at rest after {timeout:g}s")
        time.sleep(1.0)  # let the last incident close
        if fleet.stop_watcher(signal.SIGTERM) == -signal.SIGKILL:
            recover()  # killed while stopping: a watcher after it must find nothing left undone
            time.sleep(1.0)
            fleet.stop_watcher(signal.SIGTERM)
        if cell.point and not result.killed:
            result.violations.append(f"the watcher never passed {cell.point}")
        records, torn = parse_audit(fleet.layout.audit_path)
        evidence = Evidence(layout=fleet.layout, records=records, torn=torn,
                            manifests={plan.name: fleet.manifest(plan.name)}, items={plan.name: fleet.items(plan.name)},
                            logs={plan.name: (root / f"{plan.name}.log").read_text(errors="replace")})
        result.violations += (check_all([plan], evidence) + check_prompt_decisions(records, plan.name)
                              + check_one_decision(records, plan))
        if trace.exists():
            result.trace = trace.read_text().splitlines()
    except Exception as exc:  # a harness failure is a failed cell, not a crashed sweep
        result.violations.append(f"{type(exc).__name__}: {exc}")
    finally:
        fleet.cleanup()
    if not result.violations:
        shutil.rmtree(root, ignore_errors=True)  # a failed cell's folder is kept for its audit, logs and state
    result.seconds = time.monotonic() - started
    return result


# Quick settings: settle 0.4 s, safety poll 1 s; one second more for a loaded machine.
DECISION_BOUND_S = 0.4 + 1.0 + 1.0


def check_prompt_decisions(records: list[dict], run: str) -> list[str]:
    """A failure whose incident was still collecting evidence when the watcher died is decided
    by the next watcher within the settle window plus one safety poll of its start."""
    out, open_matches, session_start = [], set(), None
    classified: set[str] = set()
    for r in records:
        if r["event"] == "watcher started":
            pending = open_matches - classified
            if pending and session_start is not None:
                later = [x for x in records if x.get("run") == run and x["event"] == "incident classified" and x["ts"] >= r["ts"]]
                if not later:
                    out.append(f"{run}: a failure matched before a watcher kill was never decided after it")
                elif ts_seconds(later[0]["ts"]) - ts_seconds(r["ts"]) > DECISION_BOUND_S:
                    out.append(f"{run}: decided {ts_seconds(later[0]['ts']) - ts_seconds(r['ts']):.1f}s after the restart "
                               f"(bound {DECISION_BOUND_S:g}s)")
            open_matches, session_start = set(), r["ts"]
        elif r.get("run") == run and r["event"] == "rule matched" and not r.get("suppressed"):
            open_matches.add(r["incident"])
        elif r.get("run") == run and r["event"] == "incident classified":
            classified.add(r["incident"])
    return out


def check_one_decision(records: list[dict], plan: RunPlan) -> list[str]:
    """Each once-fault of the run (a failure that heals) is acted on in exactly one incident of its rule.

    A decision recorded just before a watcher kill and never stored is decided anew by the next watcher
    (bench/invariants.py ``superseded``); only the incidents that acted count."""
    acted = {r["incident"] for r in records if r.get("run") == plan.name and r["event"] == "action started"}
    out = []
    for spec in plan.faults:
        kind, _, when = spec.partition("@")[0].partition(":")
        rule = RULE_OF_FAULT[kind]
        if when == "always" or rule is None:
            continue
        # A set: a decision stored just before a kill is announced again on resume, under its own id.
        incidents = {r["incident"] for r in records if r.get("run") == plan.name and r["event"] == "incident classified"
                     and r.get("rule") == rule and r["incident"] in acted}
        if len(incidents) != 1:
            out.append(f"{plan.name}: the {kind} failure was acted on by {len(incidents)} {rule} incidents, expected exactly 1")
    return out


def points_of(trace: list[str], full: bool, max_pass: int) -> list[str]:
    """``POINT#N`` for each point passed (each pass up to max_pass with ``full``, else the first)."""
    seen: dict[str, int] = {}
    cells = []
    for point in trace:
        seen[point] = seen.get(point, 0) + 1
        n = seen[point]
        if n == 1 or (full and n <= max_pass):
            cells.append(f"{point}#{n}")
    return cells


def sweep(stories: list[str], workdir: Path, full: bool, max_pass: int, jobs: int,
          also: tuple[Cell, ...] = ()) -> list[CellResult]:
    """The cells of these stories (and ``also``, cells chosen by hand, when their story's trace passes the point);
    the SLURM ones get a private cluster, or are left out (saying why) where none starts."""
    if not any(STORIES[s].runner == "slurm" for s in stories):
        return sweep_cells(stories, workdir, full, max_pass, jobs, also)
    with slurm_cluster() as conf:
        return sweep_cells([s for s in stories if conf or STORIES[s].runner != "slurm"], workdir, full, max_pass, jobs, also)


def sweep_cells(stories: list[str], workdir: Path, full: bool, max_pass: int, jobs: int,
                also: tuple[Cell, ...]) -> list[CellResult]:
    with ThreadPoolExecutor(jobs) as pool:
        traces = list(pool.map(lambda s: run_cell(Cell(s, ""), workdir), stories))
    cells, covered = [], set()
    for result in traces:
        passed = points_of(result.trace, full, max_pass)
        for point in passed:
            name = point.split("#")[0]
            if full or name not in covered:
                cells.append(Cell(result.cell.story, point))
                covered.add(name)
        cells += [c for c in also if c.story == result.cell.story and c.point in passed and c not in cells]
    with ThreadPoolExecutor(jobs) as pool:
        return traces + list(pool.map(lambda c: run_cell(c, workdir), cells))


def markdown(results: list[CellResult]) -> str:
    stories = sorted({r.cell.story for r in results}, key=list(STORIES).index)
    points = sorted({r.cell.point.split("#")[0] for r in results if r.cell.point})
    by = {(r.cell.story, r.cell.point.split("#")[0]): r for r in results if r.cell.point}
    rows = ["| point | " + " | ".join(stories) + " |", "|---|" + "---|" * len(stories)]
    for point in points:
        cells = []
        for story in stories:
            r = by.get((story, point))
            cells.append("" if r is None else "ok" if not r.violations else "**FAIL**")
        rows.append(f"| `{point}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="every story x every point it passes (and each pass up to --max-pass)")
    ap.add_argument("--max-pass", type=int, default=3)
    ap.add_argument("--story", action="append", choices=list(STORIES), help="only these stories (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="cells run at once")
    ap.add_argument("--markdown", action="store_true", help="print the table for BENCHMARKS.md")
    args = ap.parse_args(argv)
    stories = args.story or list(STORIES)
    workdir = Path(tempfile.mkdtemp(prefix="expwatch-sweep-"))
    started = time.monotonic()
    results = sweep(stories, workdir, args.full, args.max_pass, args.jobs)
    failed = [r for r in results if r.violations]
    for r in failed:
        for v in r.violations:
            print(f"FAIL {r.cell.story} @ {r.cell.point or '(no crash)'}: {v}")
    cells = [r for r in results if r.cell.point]
    print(f"{len(cells)} cells ({len(stories)} stories, {len({c.cell.point.split('#')[0] for c in cells})} points), "
          f"{sum(r.killed for r in cells)} watcher kills, {len(failed)} failed, {time.monotonic() - started:.0f}s")
    if args.markdown:
        print(markdown(results))
    if failed:
        print(f"the failed cells' folders are kept in {workdir}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
