"""`expwatch demo`: the bundled scenario heals two runs and halts the buggy one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from expwatch.audit.reader import iter_records
from expwatch.cli import main
from expwatch.commands.demo import demo_rules_text, load_scenario
from expwatch.layout import ExperimentsLayout
from expwatch.rules.loader import parse_rules, shipped_rules_text


def final_states(stdout: str) -> dict[str, str]:
    table = stdout.split("NAME ", 1)[1]
    return dict(re.findall(r"^(\S+)\s+(COMPLETE|HALTED|RUNNING|DEAD|STALE|STOPPED|UNKNOWN)\s", table, re.M))


def test_demo_heals_the_rate_limited_and_dead_runs_and_halts_the_bug(tmp_path):
    root = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "expwatch", "demo", "--dir", str(root), "--fast", "--timeout", "90"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert final_states(done.stdout) == {"rate-limited": "COMPLETE", "dies-once": "COMPLETE", "code-bug": "HALTED"}
    layout = ExperimentsLayout.at(root)
    assert f"expwatch audit {layout.root}" in done.stdout and str(layout.audit_path) in done.stdout

    records = list(iter_records(layout.audit_path))

    def of(run: str, event: str, **fields: object) -> list[dict]:
        return [r for r in records if r.get("run") == run and r["event"] == event and all(r.get(k) == v for k, v in fields.items())]

    # The 429 storm ends in a traceback, yet it is handled as a rate limit: back off, fewer workers, restart.
    rate = of("rate-limited", "incident classified", rule="RATE_LIMIT", decision="act")[0]
    assert "TRACEBACK" in rate["candidates"]
    assert of("rate-limited", "action finished", incident=rate["incident"], action="restart", outcome="restarted")
    argv = json.loads(layout.manifest_path("rate-limited").read_text())["argv"]
    assert argv[argv.index("--workers") + 1] == "4"

    assert of("dies-once", "action finished", rule="DEAD", action="restart", outcome="restarted")

    # The bug is retried once, then halted with its traceback in the diagnosis bundle.
    first, second = of("code-bug", "incident classified", rule="TRACEBACK")
    assert (first["decision"], second["decision"]) == ("act", "halt")
    halt, = of("code-bug", "action finished", action="halt", outcome="halted")
    bundle = Path(halt["bundle"])
    assert bundle.parent == layout.run_files_dir("code-bug")
    assert "KeyError: 'choices'" in bundle.read_text()
    assert str(bundle) in done.stdout
    validation, = of("rate-limited", "action finished", action="complete", outcome="completed")
    assert validation["validation"] in done.stdout


def test_demo_rules_are_the_shipped_rules_with_only_the_waits_shortened():
    shipped = parse_rules(shipped_rules_text(), "shipped")
    demo = parse_rules(demo_rules_text(7), "demo")
    assert [(r.name, r.when, r.priority) for r in demo.rules] == [(r.name, r.when, r.priority) for r in shipped.rules]
    for ours, theirs in zip(demo.rules, shipped.rules):
        assert [a.name for a in ours.actions] == [a.name for a in theirs.actions]
        for a, b in zip(ours.actions, theirs.actions):
            assert a.arg == (min(b.arg, 7) if a.name == "wait" else b.arg)
    assert any(a.name == "wait" and a.arg == 7 for r in demo.rules for a in r.actions)


def test_the_real_demo_takes_about_a_minute():
    # --fast exists for tests only on the condition that the real demo stays short.
    normal = load_scenario("normal")
    assert 30 <= normal.items * normal.delay_s + normal.max_wait_s <= 75


def test_demo_refuses_a_directory_with_files_in_it(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    assert main(["demo", "--dir", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
