"""An experiments folder with runs in it and a real watcher process on it.

Benchmarks and the chaos suite drive expwatch the way a user does: runs are
adopted or launched through the CLI, the watcher is ``python -m expwatch
watch DIR`` in its own process, and every result is read back from the
audit trail it writes. Nothing here reaches into the watcher's internals.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from expwatch.cli import main as cli
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest, discover, load_named


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def ts_seconds(ts: str) -> float:
    """An audit record's ``ts`` (UTC, milliseconds) as epoch seconds."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def quietly(argv: list[str], chatter: io.StringIO | None = None) -> int:
    """Run an expwatch command in this process, its chatter discarded (or kept in ``chatter``)."""
    chatter = chatter or io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        return cli(argv)


class AuditFile:
    """Reads the audit trail incrementally, every line checked to be one whole JSON record."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.torn: list[str] = []
        self._offset = 0
        self._inode = None

    def refresh(self) -> list[dict[str, Any]]:
        """New records since the last call (the audit file is never rotated in our runs)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        new = []
        for raw in data[:end].split(b"\n")[:-1]:
            try:
                new.append(json.loads(raw))
            except ValueError:
                self.torn.append(raw.decode("utf-8", "replace"))
        self._offset += end
        self.records.extend(new)
        return new

    def select(self, event: str | None = None, run: str | None = None) -> list[dict[str, Any]]:
        self.refresh()
        return [r for r in self.records if (event is None or r.get("event") == event) and (run is None or r.get("run") == run)]


class Fleet:
    """One experiments directory: its runs, its watcher process, its audit trail."""

    def __init__(self, root: Path, settings: str | None = None, rules: str | None = None):
        self.root = root
        self.layout = ExperimentsLayout.at(root)
        root.mkdir(parents=True, exist_ok=True)
        if settings is not None:
            (root / "expwatch.yaml").write_text(settings)
        if rules is not None:
            (root / "expwatch.rules.yaml").write_text(rules)
        self.audit = AuditFile(self.layout.audit_path)
        self.watcher: subprocess.Popen | None = None
        self._sleepers: list[subprocess.Popen] = []
        self._watcher_out = None

    # ----- runs --------------------------------------------------------------------

    def adopt_sleepers(self, names: list[str], log_for: Callable[[str], Path] | None = None) -> None:
        """Cheap stand-in runs: ``sleep`` processes adopted with a log that someone else writes."""
        for name in names:
            log = log_for(name) if log_for else self.root / f"{name}.log"
            log.touch()
            proc = subprocess.Popen(["sleep", "100000"], start_new_session=True)
            self._sleepers.append(proc)
            # Popen returns once exec has begun (the close-on-exec pipe closes), a moment before the
            # kernel sets up the new command line; adopt reads it, so wait for it under load.
            wait_for(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes(), 5, f"sleep {proc.pid} to exec", 0.001)
            chatter = io.StringIO()
            code = quietly(["adopt", "--pid", str(proc.pid), "--name", name, "--log", str(log), "--dir", str(self.root)], chatter)
            if code != 0:
                died = f"; the sleep process exited with {proc.poll()}" if proc.poll() is not None else ""
                raise RuntimeError(f"expwatch adopt of {name} failed ({code}): {chatter.getvalue().strip()}{died}")

    def eval_argv(self, name: str, eval_args: list[str], items: int, delay: float) -> list[str]:
        """The stand-in evaluation's command line (expwatch.demo.fake_eval) for the run ``name``."""
        return [sys.executable, "-m", "expwatch.demo.fake_eval", "--items", str(items), "--output", str(self.root / f"{name}.json"),
                "--delay", str(delay), *eval_args]

    def write_script(self, script: Path, items: int, delay: float, name: str, eval_args: list[str]) -> None:
        """The run's script, as a user's ``run.sh`` would be: rewriting it changes what the next restart runs."""
        script.write_text("exec " + " ".join(shlex.quote(a) for a in self.eval_argv(name, eval_args, items, delay)) + "\n")

    def launch(self, name: str, eval_args: list[str], items: int, delay: float, runner: str = "local",
               script: Path | None = None) -> None:
        """A stand-in evaluation launched through ``expwatch launch`` (through ``sh SCRIPT`` if a script is given)."""
        if script is None:
            command = self.eval_argv(name, eval_args, items, delay)
        else:
            self.write_script(script, items, delay, name, eval_args)
            command = ["sh", str(script)]
        argv = ["launch", "--yes", "--runner", runner, "--name", name, "--log", str(self.root / f"{name}.log"),
                "--result", str(self.root / f"{name}.json"), "--expected", str(items), "--dir", str(self.root), "--", *command]
        code = quietly(argv)
        # Exit 1 with a manifest written: the run started and died before launch's own check looked
        # (a fault at item 3 of 30 ms items, on a loaded machine). That death is the story's to handle.
        if code != 0 and not (code == 1 and self.layout.manifest_path(name).exists()):
            raise RuntimeError(f"expwatch launch of {name} failed ({code})")

    def manifest(self, name: str) -> RunManifest:
        return load_named(self.layout, name)

    def items(self, name: str) -> list[str]:
        try:
            data = json.loads((self.root / f"{name}.json").read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [item["id"] for item in data["per_item"]]

    # ----- the watcher -------------------------------------------------------------

    def start_watcher(self, *args: str, timeout: float = 30.0) -> subprocess.Popen:
        before = len(self.audit.select("watcher started"))
        self._watcher_out = open(self.root / "watcher.out", "ab")
        self.watcher = subprocess.Popen(
            # --no-restart: benchmarks measure (and SIGKILL) the watcher process itself, not a supervising parent.
            [sys.executable, "-m", "expwatch", "watch", "--no-restart", str(self.root), *args],
            stdout=self._watcher_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for(lambda: len(self.audit.select("watcher started")) > before or self.watcher.poll() is not None,
                 timeout, "the watcher to start")
        if self.watcher.poll() is not None:
            raise RuntimeError(f"watcher exited with {self.watcher.returncode}; see {self.root / 'watcher.out'}")
        return self.watcher

    def stop_watcher(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        proc, self.watcher = self.watcher, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if self._watcher_out:
            self._watcher_out.close()
            self._watcher_out = None
        return code

    def cleanup(self) -> None:
        self.stop_watcher(signal.SIGKILL)
        for proc in self._sleepers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for manifest in discover(self.layout):
            if manifest.pgid and manifest.pgid != os.getpgid(0):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(manifest.pgid, signal.SIGKILL)
