"""launch checks before it spends: the plan, the question on a terminal, and each preflight check with its flag."""

from __future__ import annotations

import http.server
import os
import pty
import socket
import subprocess
import sys
import threading

import pytest

from expwatch.cli import main as cli

SLEEPER = (sys.executable, "-c", "import time; time.sleep(30)")


def _launch(experiments, name: str, *options: str, command: tuple[str, ...] = SLEEPER) -> int:
    return cli(["launch", *options, "--name", name, "--log", str(experiments.root / f"{name}.log"),
                "--dir", str(experiments.root), "--", *command])


def _launched(experiments, name: str) -> bool:
    return experiments.layout.manifest_path(name).exists()


class _Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.end_headers()
        self.wfile.write(b'{"data": []}')

    def log_message(self, *args):
        pass


@pytest.fixture
def models_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_launch_without_a_terminal_prints_the_plan_and_proceeds(experiments, capsys):
    result = experiments.root / "planned.json"
    assert cli(["launch", "--name", "planned", "--log", str(experiments.root / "planned.log"), "--result", str(result),
                "--expected", "40", "--profile", "trapi", "--dir", str(experiments.root), "--",
                *SLEEPER, "--workers", "6"]) == 0
    out = capsys.readouterr().out
    for line in ("plan for run 'planned':", "items    40", f"result   {result}", f"log      {experiments.root / 'planned.log'}",
                 "backend  profile 'trapi' (gpt4o, at most 1 run(s) at once), fallback none", "workers  6", "runner   local"):
        assert line in out, line
    assert "script   " + " ".join(SLEEPER) in out
    assert _launched(experiments, "planned")


@pytest.mark.parametrize("answer, launched", [("n\n", False), ("\n", False), ("y\n", True)])
def test_on_a_terminal_launch_asks_before_it_starts_anything(experiments, answer, launched):
    leader, follower = pty.openpty()
    os.write(leader, answer.encode())
    proc = subprocess.run([sys.executable, "-m", "expwatch", "launch", "--name", "asked", "--log",
                           str(experiments.root / "asked.log"), "--dir", str(experiments.root), "--", *SLEEPER],
                          stdin=follower, capture_output=True, text=True, timeout=60)
    os.close(follower)
    os.close(leader)
    assert "Proceed? [y/N]" in proc.stdout
    assert (proc.returncode == 0) is launched and _launched(experiments, "asked") is launched
    if not launched:
        assert "not confirmed; nothing launched" in proc.stderr


def test_yes_skips_the_question_on_a_terminal(experiments):
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "expwatch", "launch", "--yes", "--name", "sure", "--log",
                           str(experiments.root / "sure.log"), "--dir", str(experiments.root), "--", *SLEEPER],
                          stdin=follower, capture_output=True, text=True, timeout=60)
    os.close(follower)
    os.close(leader)
    assert proc.returncode == 0 and "Proceed?" not in proc.stdout and _launched(experiments, "sure")


def test_a_profile_whose_endpoint_answers_its_probe_launches(experiments, models_server, monkeypatch):
    monkeypatch.setenv("ML_PROXY_BASE", models_server)
    assert _launch(experiments, "up", "--profile", "proxy") == 0 and _launched(experiments, "up")


def test_a_dead_endpoint_refuses_the_launch_and_names_the_fallback_and_the_flag(experiments, monkeypatch, capsys):
    monkeypatch.setenv("ML_PROXY_BASE", _closed_port_url())
    assert _launch(experiments, "down", "--profile", "proxy", "--smoke", "2") == 1
    err = capsys.readouterr().err
    assert "preflight failed; nothing launched" in err and "/v1/models did not answer within 5s" in err
    assert "fallback is profile 'trapi': launch with --profile trapi" in err and "--skip-probe" in err
    assert not _launched(experiments, "down") and "smoke run" not in err
    assert _launch(experiments, "down", "--profile", "proxy", "--skip-probe") == 0 and _launched(experiments, "down")


def test_an_unset_probe_variable_is_a_failed_probe(experiments, monkeypatch, capsys):
    monkeypatch.delenv("ML_PROXY_BASE", raising=False)
    assert _launch(experiments, "unset", "--profile", "proxy") == 1
    assert "names an unset variable" in capsys.readouterr().err and not _launched(experiments, "unset")


@pytest.mark.parametrize("profile, workers, ok", [("default", "20", True), ("default", "21", False), ("o3", "5", True),
                                                  ("o3", "6", False), ("qwen", "1", True), ("qwen", "2", False)])
def test_the_worker_flag_must_be_within_the_backends_table(experiments, capsys, profile, workers, ok):
    code = _launch(experiments, "w", "--profile", profile, command=(*SLEEPER, f"--workers={workers}"))
    assert (code == 0) is ok and _launched(experiments, "w") is ok
    if not ok:
        err = capsys.readouterr().err
        assert f"--workers {workers} is more than backend" in err and "--skip-worker-check" in err
        assert _launch(experiments, "w", "--profile", profile, "--skip-worker-check",
                       command=(*SLEEPER, f"--workers={workers}")) == 0


def test_a_baseline_whose_cache_key_drifts_refuses_the_launch_unless_accepted(experiments, capsys):
    base, same, drifted = (experiments.root / n for n in ("base.yaml", "same.yaml", "drifted.yaml"))
    base.write_text("pipeline: {fps: 1, resize_mode: pad}\nmodel: {backend: gpt4o}\n")
    same.write_text("pipeline: {fps: 1, resize_mode: pad}\nmodel: {backend: gpt4o}\nnotes: unrelated\n")
    drifted.write_text("pipeline: {fps: 2, resize_mode: pad}\nmodel: {backend: gpt4o}\n")
    assert _launch(experiments, "same", "--baseline", str(base), command=(*SLEEPER, "--config", str(same))) == 0
    assert _launch(experiments, "drift", "--baseline", str(base), command=(*SLEEPER, "--config", str(drifted))) == 1
    err = capsys.readouterr().err
    assert "pipeline.fps: 1 -> 2" in err and "--accept-drift" in err and not _launched(experiments, "drift")
    assert _launch(experiments, "drift", "--baseline", str(base), "--accept-drift",
                   command=(*SLEEPER, "--config", str(drifted))) == 0


def test_a_baseline_needs_the_commands_config(experiments, capsys):
    assert _launch(experiments, "noconf", "--baseline", str(experiments.root / "base.yaml")) == 1
    assert "the command names no config" in capsys.readouterr().err


def test_a_log_inside_a_worktree_is_refused_unless_allowed(experiments, capsys):
    log = experiments.root / ".claude" / "worktrees" / "x" / "run.log"
    assert cli(["launch", "--name", "vol", "--log", str(log), "--dir", str(experiments.root), "--", *SLEEPER]) == 1
    err = capsys.readouterr().err
    assert "lies inside '.claude/worktrees/'" in err and "--allow-volatile-log" in err and not _launched(experiments, "vol")
