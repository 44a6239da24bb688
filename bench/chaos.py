"""Chaos suite: random faults in the runs, SIGKILLs of the watcher, then the invariants.

    python bench/chaos.py [--seed S] [--scenarios N] [--runs K] [--soak-waves W]

Each scenario (seed S+i, so ``--seed S+i --scenarios 1`` replays scenario i
with the same faults and kill plan; thread timing still varies) launches K
stand-in evaluations (expwatch.demo.fake_eval) with randomly chosen faults: 429
storms, hangs, deaths, SIGKILLs, CUDA OOM, proxy failures, 403 storms,
tracebacks once or on every run, content-policy nulls. The watcher runs the
shipped rules with second-scale waits, and is SIGKILLed and restarted at
random moments, half of them right as an action starts. When every run has
come to rest the watcher is stopped and bench/invariants.py checks what it
left behind. A soak phase then keeps one watcher (never killed) through W
waves of runs and reports its memory after each.

Exit status 1 if any invariant was violated; each violation names its seed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402

from fleet import Fleet  # noqa: E402
from invariants import Evidence, RunPlan, check_all, parse_audit  # noqa: E402
from expwatch.quick_scale import FAST_SETTINGS, fast_rules  # noqa: E402

ONCE = ["rate_limit", "traceback", "oom", "proxy", "forbidden", "hang", "die", "sigkill", "null"]
ALWAYS = ["traceback", "die"]
ITEMS = 20
DELAY = 0.03
# Audit rotation is tested elsewhere; here one file keeps the story in one place.
SETTINGS = FAST_SETTINGS + "audit: {max_bytes: 1000000000}\n"


@dataclass(frozen=True)
class Kill:
    after_s: float  # since the scenario started (or, if on_action, the earliest moment)
    on_action: bool  # wait for the next 'action started' record, then kill at once
    down_s: float  # how long the watcher stays dead


@dataclass(frozen=True)
class ScenarioPlan:
    seed: int
    runs: tuple[RunPlan, ...]
    kills: tuple[Kill, ...]


@dataclass
class ScenarioReport:
    seed: int
    runs: int
    faults_injected: int
    faults_fired: int
    kills: int
    violations: list[str]
    watcher_rss_mb_max: float
    seconds: float
    outcomes: dict[str, str] = field(default_factory=dict)


def plan_run(rng: random.Random, name: str) -> RunPlan:
    """Healthy, recoverable (1-3 once-faults) or with an every-run fault (maybe after a once-fault)."""
    roll = rng.random()
    slots = rng.sample(range(2, ITEMS - 2, 3), 3)  # distinct items, at least 3 apart
    if roll < 0.15:
        return RunPlan(name, ITEMS, ())
    if roll < 0.35:
        bug = rng.choice(ALWAYS)
        slots.sort()
        at = slots[-1]
        # Only a once-fault that ends its process: one that carries on (a 403 storm, nulls) could
        # fall in the same settle window as the bug's first crash and rightly become one incident.
        before = [k for k in ONCE if k not in (bug, "forbidden", "null") and not (bug == "die" and k == "sigkill")]
        faults = [f"{rng.choice(before)}@{slots[0]}"] if rng.random() < 0.5 else []
        return RunPlan(name, ITEMS, tuple(faults + [f"{bug}:always@{at}"]))
    count = rng.choice([1, 1, 2, 3])
    return RunPlan(name, ITEMS, tuple(f"{rng.choice(ONCE)}@{slots[i]}" for i in range(count)))


def plan_scenario(seed: int, runs: int, max_kills: int) -> ScenarioPlan:
    rng = random.Random(seed)
    plans = tuple(plan_run(rng, f"c{seed}-{i:02d}") for i in range(runs))
    kills = tuple(
        Kill(round(rng.uniform(0.3, 6.0), 2), rng.random() < 0.5, round(rng.uniform(0.0, 1.0), 2))
        for _ in range(rng.randint(1, max_kills))
    )
    return ScenarioPlan(seed, plans, tuple(sorted(kills, key=lambda k: k.after_s)))


def at_rest(fleet: Fleet, plan: RunPlan) -> bool:
    try:
        m = fleet.manifest(plan.name)
    except Exception:
        return False
    return bool(m.completed_at or m.halted)


def faults_fired(fleet: Fleet, plan: RunPlan) -> int:
    """Once-faults that fired (fake_eval records them) plus every firing of an every-run fault."""
    path = fleet.root / f"{plan.name}_faults.json"
    fired = len(json.loads(path.read_text())["fired"]) if path.exists() else 0
    log_path = fleet.root / f"{plan.name}.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    for spec in plan.faults:
        kind, _, rest = spec.partition(":")
        if not rest.startswith("always"):
            continue
        if kind == "traceback":
            fired += log.count("KeyError: 'choices'")
        else:  # silent: a start that reached the fault's item and never finished
            at = int(rest.split("@")[1])
            marks = (f"[{at}/{plan.items}]", f"Resuming from checkpoint: {at}/{plan.items}")
            fired += sum(1 for part in log.split("Starting evaluation")[1:]
                         if any(m in part for m in marks) and "Evaluation complete" not in part)
    return fired


def run_scenario(plan: ScenarioPlan, workdir: Path, timeout: float = 120.0) -> ScenarioReport:
    root = workdir / f"scenario-{plan.seed}"
    shutil.rmtree(root, ignore_errors=True)
    fleet = Fleet(root, settings=SETTINGS, rules=fast_rules())
    started = time.monotonic()
    kills_done = 0
    rss_max = 0
    violations: list[str] = []
    try:
        fleet.start_watcher()
        for run in plan.runs:
            fleet.launch(run.name, [arg for f in run.faults for arg in ("--fault", f)] + ["--seed", str(plan.seed)], ITEMS, DELAY)
        pending = list(plan.kills)
        seen_actions = len(fleet.audit.select("action started"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic() - started
            actions = len(fleet.audit.select("action started"))
            resting = all(at_rest(fleet, run) for run in plan.runs)
            # An action-timed kill waits at most a second for an action; once all is at rest, kills come at once.
            due = pending and (resting or (now >= pending[0].after_s and (
                not pending[0].on_action or actions > seen_actions or now >= pending[0].after_s + 1.0)))
            if due:
                kill = pending.pop(0)
                fleet.stop_watcher(signal.SIGKILL)
                kills_done += 1
                time.sleep(kill.down_s)
                fleet.start_watcher()
            seen_actions = actions
            if fleet.watcher is not None:
                try:
                    rss_max = max(rss_max, psutil.Process(fleet.watcher.pid).memory_info().rss)
                except psutil.Error:
                    pass
            if not pending and resting and not due:
                break
            time.sleep(0.05)
        else:
            violations.append(f"runs still not at rest after {timeout:g}s: "
                              f"{[r.name for r in plan.runs if not at_rest(fleet, r)]}")
        time.sleep(1.0)  # let the last incidents close
        fleet.stop_watcher(signal.SIGTERM)
        records, torn = parse_audit(fleet.layout.audit_path)
        evidence = Evidence(
            layout=fleet.layout, records=records, torn=torn,
            manifests={r.name: fleet.manifest(r.name) for r in plan.runs},
            items={r.name: fleet.items(r.name) for r in plan.runs},
            logs={r.name: (root / f"{r.name}.log").read_text(errors="replace") for r in plan.runs},
        )
        violations += check_all(list(plan.runs), evidence)
        outcomes = {}
        for r in plan.runs:
            m = evidence.manifests[r.name]
            outcomes[r.name] = "HALTED" if m.halted else "COMPLETE" if m.completed_at else "?"
        fired = sum(faults_fired(fleet, r) for r in plan.runs)
    finally:
        fleet.cleanup()
    return ScenarioReport(
        seed=plan.seed, runs=len(plan.runs), faults_injected=sum(len(r.faults) for r in plan.runs), faults_fired=fired,
        kills=kills_done, violations=[f"seed {plan.seed}: {v}" for v in violations], watcher_rss_mb_max=rss_max / 2**20,
        seconds=time.monotonic() - started, outcomes=outcomes,
    )


def soak(workdir: Path, seed: int, waves: int, runs: int) -> list[float]:
    """One watcher, never killed, through ``waves`` waves of faulty runs: its RSS (MB) after each wave."""
    fleet = Fleet(workdir / "soak", settings=SETTINGS, rules=fast_rules())
    rng = random.Random(seed)
    rss = []
    try:
        fleet.start_watcher()
        proc = psutil.Process(fleet.watcher.pid)
        for wave in range(waves):
            plans = [plan_run(rng, f"s{wave:02d}-{i:02d}") for i in range(runs)]
            for run in plans:
                fleet.launch(run.name, [arg for f in run.faults for arg in ("--fault", f)], ITEMS, DELAY)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(at_rest(fleet, run) for run in plans):
                time.sleep(0.2)
            time.sleep(1.0)
            rss.append(proc.memory_info().rss / 2**20)
    finally:
        fleet.cleanup()
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", type=int, default=12)
    parser.add_argument("--runs", type=int, default=8, help="stand-in runs per scenario")
    parser.add_argument("--max-kills", type=int, default=4, help="watcher SIGKILLs per scenario (1..N)")
    parser.add_argument("--soak-waves", type=int, default=6, help="waves of runs for the memory soak (0: none)")
    parser.add_argument("--workdir", type=Path, help="keep every scenario's folder here")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="expwatch-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    reports = []
    try:
        for i in range(args.scenarios):
            plan = plan_scenario(args.seed + i, args.runs, args.max_kills)
            report = run_scenario(plan, workdir)
            reports.append(report)
            status = "ok" if not report.violations else f"{len(report.violations)} VIOLATIONS"
            print(f"scenario seed {report.seed}: {report.runs} runs, {report.faults_injected} faults, "
                  f"{report.kills} watcher kills, {report.seconds:.0f} s: {status}", file=sys.stderr, flush=True)
            for v in report.violations:
                print(f"  {v}", file=sys.stderr, flush=True)
        rss = soak(workdir, args.seed, args.soak_waves, args.runs) if args.soak_waves else []
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    violations = [v for r in reports for v in r.violations]
    outcomes = [o for r in reports for o in r.outcomes.values()]
    print("\n## expwatch chaos suite\n")
    print("| scenarios | runs | faults injected | faults fired | watcher kills survived | halted / complete | violations |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(reports)} (seeds {args.seed}..{args.seed + len(reports) - 1}) | {sum(r.runs for r in reports)} "
          f"| {sum(r.faults_injected for r in reports)} | {sum(r.faults_fired for r in reports)} "
          f"| {sum(r.kills for r in reports)} | {outcomes.count('HALTED')} / {outcomes.count('COMPLETE')} | {len(violations)} |")
    print(f"\nwatcher RSS per scenario: max {max((r.watcher_rss_mb_max for r in reports), default=0):.0f} MB")
    if rss:
        print(f"soak, one watcher through {len(rss)} waves of {args.runs} runs: RSS after each wave "
              + ", ".join(f"{x:.0f}" for x in rss) + " MB")
    for v in violations:
        print(f"VIOLATION {v}")
    if args.json:
        args.json.write_text(json.dumps({"scenarios": [r.__dict__ for r in reports], "soak_rss_mb": rss}, indent=1))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
