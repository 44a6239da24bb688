"""``expwatch demo``: the whole job on a bundled scenario, in about a minute.

Three stand-in evaluations (``expwatch.demo.fake_eval``) are launched the way a
person would launch them (``expwatch launch``, a subprocess), into a fresh
experiments directory that holds the shipped rules with only their waits
shortened. A real ``EngineLoop`` watches them on a background thread while
this thread reports what it can observe from outside (``runstate.observe``),
exactly as ``expwatch status`` would. The scenario itself is data
(``configs/demo.yaml``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from expwatch.audit.reader import iter_records
from expwatch.display.rows import HEADER, format_row, stale_after_s
from expwatch.layout import ExperimentsLayout
from expwatch.files import NotReadyYet
from expwatch.manifest import ManifestError, RunManifest, load_named
from expwatch.rules.loader import RulesError, shipped_rules_quickened
from expwatch.runners.local import LocalRunner
from expwatch.runstate import RunReport, RunState, observe
from expwatch.settings import SettingsError, shipped_yaml
from expwatch.engine.loop import EngineLoop
from expwatch.watcher.events import Shutdown

SCENARIO_FILE = "demo.yaml"
POLL_S = 0.25


class DemoError(Exception):
    """The demo cannot start; the message says why and where."""


@dataclass(frozen=True)
class DemoRun:
    name: str
    fault: str  # KIND[:WHEN] of fake_eval's --fault
    at: float  # where the fault strikes, as a fraction of the items
    expect: RunState
    story: str

    def fault_spec(self, items: int) -> str:
        return f"{self.fault}@{int(items * self.at)}"


@dataclass(frozen=True)
class Scenario:
    pace: str
    items: int
    delay_s: float
    max_wait_s: float
    timeout_s: float
    eval_args: tuple[str, ...]
    settings: dict[str, Any]
    runs: tuple[DemoRun, ...]


def load_scenario(pace: str) -> Scenario:
    data = shipped_yaml(SCENARIO_FILE)
    where = f"configs/{SCENARIO_FILE}"
    try:
        chosen = data["paces"][pace]
        runs = tuple(
            DemoRun(str(r["name"]), str(r["fault"]), float(r["at"]), RunState(r["expect"]), str(r.get("story", "")))
            for r in data["runs"]
        )
        return Scenario(
            pace=pace,
            items=int(chosen["items"]),
            delay_s=float(chosen["delay_s"]),
            max_wait_s=float(chosen["max_wait_s"]),
            timeout_s=float(data["timeout_s"]),
            eval_args=tuple(str(a) for a in data.get("eval_args") or ()),
            settings=dict(data.get("settings") or {}),
            runs=runs,
        )
    except KeyError as exc:
        raise DemoError(f"{where}: field {exc} is missing") from None
    except (TypeError, ValueError) as exc:
        raise DemoError(f"{where}: {exc}") from None


def demo_rules_text(max_wait_s: float) -> str:
    """The shipped rules with every wait capped at ``max_wait_s``, nothing else changed."""
    try:
        return shipped_rules_quickened(max_wait_s)
    except RulesError as exc:
        raise DemoError(f"shortening the shipped rules' waits failed: {exc}") from None


def prepare(layout: ExperimentsLayout, scenario: Scenario) -> None:
    root = layout.root
    if root.exists() and any(root.iterdir()):
        # A stand-in resumes from any checkpoint it finds, which would spoil the story.
        raise DemoError(f"{root} is not empty; give a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    header = "# Written by `expwatch demo`: the shipped settings with these overrides.\n"
    layout.settings_path.write_text(header + yaml.safe_dump(scenario.settings, sort_keys=False), encoding="utf-8")
    layout.rules_path.write_text(demo_rules_text(scenario.max_wait_s), encoding="utf-8")


def stand_in_argv(run: DemoRun, scenario: Scenario, root: Path) -> list[str]:
    return [
        sys.executable, "-m", "expwatch.demo.fake_eval",
        "--items", str(scenario.items), "--delay", f"{scenario.delay_s:g}",
        "--output", str(root / f"{run.name}.json"), "--fault", run.fault_spec(scenario.items),
        *scenario.eval_args,
    ]


def launch_all(layout: ExperimentsLayout, scenario: Scenario) -> None:
    """``expwatch launch`` each run, as a person would; in parallel, since each waits to check its run."""
    root = layout.root
    procs = {}
    for run in scenario.runs:
        argv = [
            sys.executable, "-m", "expwatch", "launch", "--name", run.name, "--dir", str(root),
            "--log", str(root / f"{run.name}.log"), "--result", str(root / f"{run.name}.json"),
            "--expected", str(scenario.items), "--", *stand_in_argv(run, scenario, root),
        ]
        procs[run.name] = subprocess.Popen(argv, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failed = []
    for name, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"{name}: expwatch launch exited {proc.returncode}: {(err or out).strip()}")
    if failed:
        raise DemoError("could not launch the stand-ins:\n  " + "\n  ".join(failed))


class DemoConsole:
    """Lines stamped with seconds since the demo began; called from several threads."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)


class WatcherThread:
    """An EngineLoop on a background thread, started and stopped from this one."""

    def __init__(self, root: Path, console: DemoConsole):
        self.loop = EngineLoop(root, console=console)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:  # reported by the main thread, which owns the exit code
            self.error = exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout_s: float) -> None:
        """Return once the watcher is watching, so the runs' first lines are seen live, not as history."""
        self._thread.start()
        audit = self.loop.layout.audit_path
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error or not self.alive:
                raise DemoError(f"the watcher stopped at start: {self.error}")
            if audit.exists() and any(r.get("event") == "watcher started" for r in iter_records(audit)):
                return
            time.sleep(0.05)
        raise DemoError(f"the watcher did not start within {timeout_s:g}s")

    def stop(self) -> None:
        if self.alive:
            self.loop.events.put(Shutdown("demo"))
            self._thread.join(timeout=self.loop.settings.kill.grace_s + 15)


def settled(manifest: RunManifest) -> bool:
    """The watcher has stopped acting on the run (the same test as the engine loop's)."""
    return bool(manifest.halted or manifest.stopped_at or manifest.completed_at)


def describe(report: RunReport) -> str:
    d = report.to_json()
    text = f"{d['name']}: {d['state']} at {d['done']}/{d['expected']}"
    if d["restarts"] and d["state"] == RunState.RUNNING.value:
        text += f" (restart {d['restarts']}, pid {d['pid']})"
    return text


def watch_until_settled(layout: ExperimentsLayout, scenario: Scenario, watcher: WatcherThread, console: DemoConsole, timeout_s: float) -> dict[str, RunReport]:
    """Report state changes until every run is settled; returns the last reports (maybe unsettled)."""
    stale = stale_after_s(layout)
    seen: dict[str, tuple[str, int]] = {}
    reports: dict[str, RunReport] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for run in scenario.runs:
            try:
                report = observe(load_named(layout, run.name), stale)
            except (NotReadyYet, ManifestError):
                continue  # read again on the next tick
            reports[run.name] = report
            key = (report.state.value, report.manifest.restarts)
            if seen.get(run.name) != key:
                seen[run.name] = key
                console(describe(report))
        if len(reports) == len(scenario.runs) and all(settled(r.manifest) for r in reports.values()):
            return reports
        if time.monotonic() >= deadline or not watcher.alive:
            return reports
        time.sleep(POLL_S)


def stop_unsettled(layout: ExperimentsLayout, names: list[str], grace_s: float) -> list[str]:
    """Kill what a timed-out or interrupted demo would otherwise leave running."""
    runner = LocalRunner()
    stopped = []
    for name in names:
        manifest = load_named(layout, name)
        if runner.alive(manifest):
            runner.kill(manifest, grace_s)
            stopped.append(name)
    return stopped


def _error(text: str) -> None:
    sys.stdout.flush()  # keep the story in order when both streams go to one place
    print(f"expwatch demo: {text}", file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="watch three stand-in evaluations fail and heal (or halt), in about a minute",
        description="Launch three stand-in evaluations into a fresh experiments directory and watch them with the "
        "shipped rules (waits shortened): one hit by a 429 storm recovers, one that dies resumes from its "
        "checkpoint, one with a code bug is halted after one retry. The scenario is configs/demo.yaml. "
        "Exits 0 when the runs end COMPLETE, COMPLETE, HALTED.",
        epilog="example:\n  expwatch demo\n  expwatch demo --dir /tmp/demo && expwatch audit /tmp/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", help="experiments directory to use, new or empty (default: a new temporary one, kept afterwards)")
    p.add_argument("--keep", action="store_true", help="on timeout or Ctrl-C, leave unfinished runs running (default: stop them)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (default: timeout_s in configs/demo.yaml)")
    p.add_argument("--fast", action="store_true", help="the same story in seconds (the 'fast' pace of configs/demo.yaml; for tests)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario("fast" if args.fast else "normal")
        root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="expwatch-demo-"))
        layout = ExperimentsLayout.at(root)
        prepare(layout, scenario)
        console = DemoConsole()
        watcher = WatcherThread(layout.root, console)
    except (DemoError, SettingsError, OSError) as exc:
        _error(str(exc))
        return 2
    timeout_s = args.timeout if args.timeout is not None else scenario.timeout_s
    introduce(layout, scenario)
    outcome = play(layout, scenario, watcher, console, timeout_s)
    names = [r.name for r in scenario.runs if layout.manifest_path(r.name).exists()]
    if outcome != "settled":
        wind_down(layout, names, outcome, timeout_s, watcher, keep=args.keep)
    ok = conclude(layout, scenario, names) and outcome == "settled"
    if outcome == "interrupted":
        return 130
    return 0 if ok else 1


def introduce(layout: ExperimentsLayout, scenario: Scenario) -> None:
    print(f"expwatch demo: {len(scenario.runs)} stand-in evaluations of {scenario.items} items in {layout.root}")
    for demo_run in scenario.runs:
        print(f"  {demo_run.name:<14} --fault {demo_run.fault_spec(scenario.items):<20} expect {demo_run.expect.value:<9} {demo_run.story}")
    print(f"rules: the shipped ones, waits capped at {scenario.max_wait_s:g}s ({layout.rules_path})", flush=True)


def play(layout: ExperimentsLayout, scenario: Scenario, watcher: WatcherThread, console: DemoConsole, timeout_s: float) -> str:
    """Start the watcher, launch the runs, follow them; returns settled, stuck, failed or interrupted."""
    outcome = "interrupted"
    try:
        watcher.start(timeout_s=30)
        console(f"watching {layout.root}")
        launch_all(layout, scenario)
        console("launched " + ", ".join(r.name for r in scenario.runs))
        reports = watch_until_settled(layout, scenario, watcher, console, timeout_s)
        outcome = "settled" if len(reports) == len(scenario.runs) and all(settled(r.manifest) for r in reports.values()) else "stuck"
    except DemoError as exc:
        _error(str(exc))
        outcome = "failed"
    except KeyboardInterrupt:
        console("interrupted")
    finally:
        watcher.stop()
    if watcher.error:
        _error(f"the watcher failed: {type(watcher.error).__name__}: {watcher.error}")
        outcome = "failed" if outcome == "stuck" else outcome
    return outcome


def wind_down(layout: ExperimentsLayout, names: list[str], outcome: str, timeout_s: float, watcher: WatcherThread, keep: bool) -> None:
    """After a timeout, failure or Ctrl-C: say what is unfinished, and stop it unless --keep."""
    unsettled = [n for n in names if not settled(load_named(layout, n))]
    if outcome == "stuck":
        _error(f"timed out after {timeout_s:g}s; not finished: {', '.join(unsettled) or 'none'}")
    if keep:
        print(f"left running (--keep): {', '.join(unsettled) or 'nothing'}; watch them with: expwatch {layout.root}")
        return
    # The watcher is stopped first, so nothing restarts what is killed here.
    stopped = stop_unsettled(layout, unsettled, watcher.loop.settings.kill.grace_s)
    if stopped:
        print(f"stopped the unfinished runs: {', '.join(stopped)}")


def report_paths(layout: ExperimentsLayout) -> dict[str, str]:
    """Each run's latest diagnosis bundle or validation report, as its action recorded it in the audit log."""
    found = {}
    for record in iter_records(layout.audit_path):
        if record.get("event") == "action finished" and record.get("run"):
            path = record.get("bundle") or record.get("validation")
            if path:
                found[record["run"]] = path
    return found


def conclude(layout: ExperimentsLayout, scenario: Scenario, names: list[str]) -> bool:
    """The final table (as `expwatch status` prints it) and where to read the story; True if as expected."""
    stale = stale_after_s(layout)
    final = {n: observe(load_named(layout, n), stale) for n in names}
    if final:
        print()
        print(HEADER)
        for report in final.values():
            print(format_row(report))
    expected = {r.name: r.expect for r in scenario.runs}
    ok = all(n in final and final[n].state == state for n, state in expected.items())
    wanted = ", ".join(s.value for s in expected.values())
    print()
    if ok:
        print(f"all {len(expected)} runs ended as expected ({wanted})")
    else:
        got = ", ".join(final[n].state.value if n in final else "not launched" for n in expected)
        print(f"the runs did not end as expected: wanted {wanted}, got {got}")
    reports = report_paths(layout)
    if reports:
        print("reports:")
        for name in (n for n in names if n in reports):
            print(f"  {name:<14} {reports[name]}")
    print(f"audit log: {layout.audit_path}")
    print("read it with:")
    print(f"  expwatch audit {layout.root}")
    print(f"  expwatch status {layout.root}")
    return ok
