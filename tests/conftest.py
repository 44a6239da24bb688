"""Shared fixtures: experiments folders, launched stand-in runs, a real watcher process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

import fuzz_profiles  # noqa: F401  (registers the Hypothesis profiles before --hypothesis-profile is read)
from conftest_slurm import slurm_cluster  # noqa: F401  (session fixture; starts a cluster only when asked for)
from expwatch.audit.reader import iter_records
from expwatch.cli import main as cli
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest, load_named

# The benchmarks and the tests run the same quick scale; the test files take it from here.
from expwatch.quick_scale import FAST_SETTINGS, fast_rules  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fleet import wait_for as poll_until  # noqa: E402


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """The benchmarks' poll loop with test defaults; a timeout fails the test as an assertion."""
    try:
        return poll_until(predicate, timeout, what, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def write_until_matched(experiments: "Experiments", run: str, log: Path, text: str, tries: int = 40) -> list[dict]:
    """Append ``text`` to ``log`` until the watcher matches it; its `rule matched` records.

    A line written while the watcher is still reading a just-discovered run's
    history is history (it triggers nothing), so one write can be lost to that
    race on a loaded machine; the repeats are the warm-up, not the measurement.
    """
    for _ in range(tries):
        with log.open("a") as fh:
            fh.write(text + "\n")
        try:
            return wait_for(lambda: [r for r in experiments.audit(run=run, event="rule matched") if r.get("line") == text],
                            timeout=0.5, what=f"{text!r} matched")
        except AssertionError:
            continue
    raise AssertionError(f"{text!r} never matched in {run}'s log")


class Experiments:
    def __init__(self, root: Path):
        self.root = root
        self.layout = ExperimentsLayout.at(root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "expwatch.yaml").write_text(FAST_SETTINGS)
        self.watchers: list[subprocess.Popen] = []

    def launch(self, name: str, *eval_args: str, items: int = 12, delay: float = 0.03, extra: tuple[str, ...] = ()) -> RunManifest:
        result = self.root / f"{name}.json"
        argv = [
            "launch", "--yes", "--name", name, "--log", str(self.root / f"{name}.log"), "--result", str(result),
            "--expected", str(items), "--dir", str(self.root), *extra, "--",
            sys.executable, "-m", "expwatch.demo.fake_eval", "--items", str(items), "--output", str(result),
            "--delay", str(delay), *eval_args,
        ]
        assert cli(argv) == 0
        return self.manifest(name)

    def manifest(self, name: str) -> RunManifest:
        return load_named(self.layout, name)

    def items(self, name: str) -> list[str]:
        data = json.loads((self.root / f"{name}.json").read_text())
        return [item["id"] for item in data["per_item"]]

    def audit(self, run: str | None = None, event: str | None = None) -> list[dict]:
        if not self.layout.audit_path.exists():
            return []
        return [r for r in iter_records(self.layout.audit_path, run=run) if event is None or r.get("event") == event]

    def incidents_closed(self, run: str) -> bool:
        """Every incident decided for the run has closed (its last action finished)."""
        records = self.audit(run=run)
        decided = {r["incident"] for r in records if r["event"] == "incident classified"}
        closed = {r["incident"] for r in records if r["event"] == "incident closed"}
        return decided <= closed

    def wait_settled(self, *runs: str, timeout: float = 20.0) -> None:
        for run in runs:
            wait_for(lambda: self.incidents_closed(run), timeout=timeout, what=f"{run}'s incidents to close")

    def start_watcher(self, *args: str, supervised: bool = False) -> subprocess.Popen:
        """The watcher in one process (its timing and signals are the tests'); ``supervised``: under its restarting parent."""
        before = len(self.audit(event="watcher started"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "expwatch", "watch", *([] if supervised else ["--no-restart"]), str(self.root), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.watchers.append(proc)
        wait_for(lambda: len(self.audit(event="watcher started")) > before or proc.poll() is not None, what="watcher start")
        assert proc.poll() is None, proc.communicate()[0]
        return proc

    def stop_watcher(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=20)
        return out

    def state(self, name: str) -> str:
        from expwatch.runstate import observe

        return observe(self.manifest(name), 1e9).state.value

    def cleanup(self) -> None:
        for proc in self.watchers:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for path in self.layout.runs_dir.glob("*.json") if self.layout.runs_dir.exists() else ():
            if path.name.endswith(".exit.json"):
                continue
            try:
                manifest = load_named(self.layout, path.stem)
            except Exception:
                continue
            if manifest.pgid:
                try:
                    os.killpg(manifest.pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def experiments(tmp_path: Path):
    exp = Experiments(tmp_path / "experiments")
    yield exp
    exp.cleanup()
