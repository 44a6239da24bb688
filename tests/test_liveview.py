"""The live view in a real terminal (tmux), and the plain lines a pipe or nohup gets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from conftest import fast_rules, wait_for
from expwatch.display.table import ProgressRates, render_frame, visible
from expwatch.engine.snapshot import RunView

TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux)")


class Pane:
    """One tmux session on a private server socket, so a developer's own tmux is never touched."""

    def __init__(self, command: list[str], width: int, height: int):
        self.socket = f"expwatch-test-{os.getpid()}-{time.monotonic_ns()}"
        # remain-on-exit: the pane (and what the watcher printed last) outlives the watcher.
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), *command,
                   ";", "set-option", "-t", "t", "remain-on-exit", "on")

    def _tmux(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> list[str]:
        return self._tmux("capture-pane", "-p", "-t", "t").splitlines()

    def size(self) -> tuple[int, int]:
        w, h = self._tmux("display-message", "-p", "-t", "t", "#{pane_width} #{pane_height}").split()
        return int(w), int(h)

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", "t", "-x", str(width), "-y", str(height))

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True)


def table_rows(screen: list[str], names: list[str]) -> dict[str, list[str]]:
    return {name: [line for line in screen if line.startswith(name + " ")] for name in names}


@needs_tmux
def test_the_live_table_shows_each_run_fits_80_columns_and_redraws_cleanly_after_a_resize(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    experiments.launch("code-bug", "--fault", "traceback:always@5")
    experiments.launch("long-healthy-run", items=400, delay=0.05)
    pane = Pane([sys.executable, "-m", "expwatch", str(experiments.root)], 80, 24)
    try:
        def halted_and_running():
            screen = pane.screen()
            rows = table_rows(screen, ["code-bug", "long-healthy-run"])
            ok = any("HALTED" in r for r in rows["code-bug"]) and any("RUNNING" in r for r in rows["long-healthy-run"])
            return screen if ok else None

        screen = wait_for(halted_and_running, timeout=25, what="both runs in the table")
        assert screen[0].startswith("expwatch  ") and "2 runs" in screen[0]
        assert sum(line.startswith("NAME ") for line in screen) == 1
        assert all(len(line) <= 80 for line in screen)
        rows = table_rows(screen, ["code-bug", "long-healthy-run"])
        assert len(rows["code-bug"]) == len(rows["long-healthy-run"]) == 1
        assert re.search(r"\d+/400", rows["long-healthy-run"][0]) and re.search(r"5/12", rows["code-bug"][0])
        # Too narrow for the last incident beside the row: it gets its own line, under its run.
        assert any(line.strip().startswith("↳ TRACEBACK: halted · KeyError") for line in screen)  # with the crash's cause
        assert "latest incidents and actions" in "\n".join(screen) and "HALTED:" in "\n".join(screen)

        watcher = psutil.Process(int((experiments.layout.lock_path).read_text().split()[0]))
        cpu_before, wall_before = sum(watcher.cpu_times()[:2]), time.monotonic()
        time.sleep(2.0)
        cpu = sum(watcher.cpu_times()[:2]) - cpu_before
        assert cpu / (time.monotonic() - wall_before) < 0.25, f"the watcher used {cpu:.2f}s of CPU in 2s"

        pane.resize(110, 30)
        assert pane.size() == (110, 30)

        def redrawn_wide():
            screen = pane.screen()
            return screen if any("LAST INCIDENT" in line for line in screen) else None

        screen = wait_for(redrawn_wide, timeout=5, what="a redraw at 110 columns")
        # Exactly the new frame above the feed: title, header, one line per run; nothing left from the old one.
        table = screen[:next(i for i, line in enumerate(screen) if "latest incidents and actions" in line)]
        assert [line[:9] for line in table if line.strip()] == ["expwatch ", "NAME     ", "code-bug ", "long-heal"]
        assert "TRACEBACK: halted · " in table[3] and len(table[3].rstrip()) > 80  # the cause follows, cut to the width
        assert all(len(line) <= 110 for line in screen)
        pane.keys("C-c")
        screen = wait_for(lambda: (s := pane.screen()) and any("stopped; audit log:" in line for line in s) and s,
                          timeout=10, what="a clean stop")
        text = "".join(screen)
        assert str(experiments.layout.audit_path) in text.replace(" ", "")
        assert "NAME " not in text  # the alternate screen is gone, the shell's screen is back
    finally:
        pane.close()


def test_piped_output_is_one_greppable_line_per_audit_record(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()  # stdout is a pipe
    experiments.launch("limited", "--fault", "rate_limit@4")
    wait_for(lambda: experiments.manifest("limited").completed_at, timeout=30, what="completion")
    experiments.wait_settled("limited")
    out = experiments.stop_watcher(watcher)
    lines = out.splitlines()
    assert "\033" not in out
    assert all(re.match(r"^\d\d:\d\d:\d\d ", line) for line in lines)
    assert lines[0].endswith("Ctrl-C to stop") and " stopped; audit log: " in lines[-1]
    records = experiments.audit()
    events = [line for line in lines if " event=" in line]
    assert len(events) == len(records)
    matched = [line for line in events if 'event="rule matched" rule=RATE_LIMIT' in line]
    assert matched and all(re.search(r"^\S+ run=limited event=\"rule matched\" rule=RATE_LIMIT incident=i-\w+ .*line=\".*\"$", m)
                           for m in matched)
    assert any("run=limited" in line and "action=restart" in line and "outcome=restarted" in line for line in events)
    assert any('event="incident closed"' in line and "outcome=restarted" in line for line in events)


def view(name: str, state: str, done: int, last: str | None = None) -> RunView:
    return RunView(name, state, done, 1000, done // 2, 3, 4.0, 1, 123, state == "RUNNING", last)


def test_every_frame_line_fits_the_terminal_whatever_the_runs_and_their_logs_contain():
    views = [view("a-rather-long-run-name-that-goes-on-and-on", "RUNNING", 640, "RATE_LIMIT: restarted"),
             view("x", "HALTED", 5, "TRACEBACK: halted"), view("日本語-run", "STALE", 999)]
    rates = ProgressRates()
    rates.observe("x", 0, 0.0)
    rates.observe("a-rather-long-run-name-that-goes-on-and-on", 600, 0.0)
    records = [{"ts": "2026-01-01T00:00:00Z", "event": "rule matched", "run": "x", "rule": "R", "incident": "i-1",
                "line": "evil \033[2J\033[31m escape\ttab 全角文字 " + "y" * 300}]
    for width in (30, 50, 79, 80, 81, 100, 133, 200):
        for height in (5, 12, 24, 60):
            frame = render_frame("/tmp/exp", views, rates, records, width, height, now=10.0, colour=True)
            assert len(frame) <= height
            for line in frame:
                plain = re.sub(r"\033\[[0-9;]*m", "", line)
                assert "\033" not in plain and "\t" not in plain
                assert visible(plain) <= width, (width, line)
    wide = render_frame("/tmp/exp", views, rates, records, 120, 24, now=10.0, colour=False)
    assert "LAST INCIDENT" in wide[2] and wide[3].rstrip().endswith("RATE_LIMIT: restarted") and "/s" in wide[3]
