"""Notifications: the user's own command, on halt, completion or a chosen rule, never in the watcher's way."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import fast_rules, wait_for
from expwatch.actions.notifier import Notification, Notifier, NotifyConfig
from expwatch.cli import main as cli
from expwatch.settings import SettingsError, load_settings


def env_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A notify command that appends its EXPWATCH_* environment and its argv to a file, one JSON line each."""
    out = tmp_path / "notified.jsonl"
    script = tmp_path / "record-env.py"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"entry = {{k: v for k, v in os.environ.items() if k.startswith('EXPWATCH_')}}\n"
        f"entry['argv'] = sys.argv[1:]\n"
        f"with open({str(out)!r}, 'a') as fh:\n    fh.write(json.dumps(entry) + '\\n')\n"
    )
    script.chmod(0o755)
    return script, out


def notified(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def configure(experiments, argv: list[str], rules: list[str] = (), timeout_s: float = 10) -> None:
    settings = experiments.root / "expwatch.yaml"
    settings.write_text(settings.read_text() + "notify: " + json.dumps(
        {"argv": argv, "on_halt": True, "on_complete": True, "rules": list(rules), "timeout_s": timeout_s}) + "\n")


def test_halt_completion_and_a_chosen_rule_each_notify_once_with_the_incident_in_the_environment(experiments, tmp_path):
    script, out = env_recorder(tmp_path)
    configure(experiments, [str(script), "{event}", "{run}", "{message}"], rules=["RATE_LIMIT"])
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()
    experiments.launch("bug", "--fault", "traceback:always@5")
    experiments.launch("limited", "--fault", "rate_limit@4")
    experiments.launch("healthy")
    wait_for(lambda: experiments.manifest("bug").halted, timeout=30, what="bug halted")
    for name in ("limited", "healthy"):
        wait_for(lambda: experiments.manifest(name).completed_at, timeout=30, what=f"{name} completed")
    wait_for(lambda: len(notified(out)) >= 4, timeout=15, what="four notifications")
    experiments.wait_settled("bug", "limited", "healthy")
    experiments.stop_watcher(watcher)

    by_run = {}
    for entry in notified(out):
        by_run.setdefault(entry["EXPWATCH_RUN"], []).append(entry)
    # The code bug: two TRACEBACK incidents (restart, then halt); only the halt is worth a message.
    [halt] = by_run["bug"]
    assert halt["EXPWATCH_EVENT"] == "halted" and halt["EXPWATCH_OUTCOME"] == "halted"
    assert halt["EXPWATCH_RULE"] == "TRACEBACK" and "TRACEBACK fired 2 times" in halt["EXPWATCH_REASON"]
    assert Path(halt["EXPWATCH_BUNDLE"]).is_file() and halt["EXPWATCH_DIR"] == str(experiments.layout.root)
    assert halt["argv"] == ["halted", "bug", halt["EXPWATCH_MESSAGE"]] and "HALTED" in halt["EXPWATCH_MESSAGE"]
    # The chosen rule, then the completion: two incidents, one message each.
    assert [e["EXPWATCH_EVENT"] for e in by_run["limited"]] == ["rule", "completed"]
    assert by_run["limited"][0]["EXPWATCH_RULE"] == "RATE_LIMIT" and by_run["limited"][0]["EXPWATCH_OUTCOME"] == "act"
    [done] = by_run["healthy"]
    assert done["EXPWATCH_EVENT"] == "completed" and done["EXPWATCH_OUTCOME"] == "completed"
    assert float(done["EXPWATCH_ACCURACY"]) > 0 and done["EXPWATCH_ISSUES"] == "0"
    # At most once per incident, and every one audited as sent.
    incidents = [e["EXPWATCH_INCIDENT"] for e in notified(out)]
    assert len(incidents) == len(set(incidents)) == 4
    sent = experiments.audit(event="notify sent")
    assert sorted(r["incident"] for r in sent) == sorted(incidents)
    assert all(r["command"] == str(script) for r in sent)


def test_a_failing_notify_command_is_audited_and_the_watcher_carries_on(experiments, tmp_path):
    failing = tmp_path / "webhook.sh"
    failing.write_text("#!/bin/sh\necho 'webhook said 500' >&2\nexit 3\n")
    failing.chmod(0o755)
    configure(experiments, [str(failing)])
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()
    experiments.launch("first")
    wait_for(lambda: experiments.audit(event="notify failed"), timeout=30, what="notify failed")
    experiments.launch("second")  # still watched, still acted on
    wait_for(lambda: experiments.manifest("second").completed_at, timeout=30, what="second completed")
    wait_for(lambda: len(experiments.audit(event="notify failed")) == 2, timeout=10, what="second notify failed")
    experiments.stop_watcher(watcher)
    assert watcher.returncode == 0
    failed = experiments.audit(event="notify failed")
    assert [r["run"] for r in failed] == ["first", "second"]
    assert "exited 3" in failed[0]["error"] and "webhook said 500" in failed[0]["error"]


class Recorded(list):
    def __call__(self, event: str, **fields) -> None:
        self.append({"event": event, **fields})


def halted_record(incident: str) -> dict:
    return {"event": "incident closed", "run": "r", "rule": "OOM", "incident": incident, "outcome": "halted"}


def test_a_missing_program_or_a_hung_command_fails_audited_and_never_blocks_the_caller(tmp_path):
    audit = Recorded()
    missing = Notifier(NotifyConfig((str(tmp_path / "no-such-program"),), True, True, frozenset(), 5), str(tmp_path), audit)
    missing.on_record(halted_record("i-1"))
    assert missing.drain(5)
    missing.close()
    assert audit[-1]["event"] == "notify failed" and "cannot run" in audit[-1]["error"]

    slow = Notifier(NotifyConfig(("sleep", "30"), True, True, frozenset(), 0.5), str(tmp_path), audit)
    started = time.monotonic()
    slow.on_record(halted_record("i-2"))
    slow.on_record(halted_record("i-2"))  # the same incident again: no second notification
    assert time.monotonic() - started < 0.2
    assert slow.drain(5)
    slow.close()
    timed_out = [r for r in audit if r["incident"] == "i-2"]
    assert len(timed_out) == 1 and "did not finish within 0.5s" in timed_out[0]["error"]


def test_placeholders_are_whole_arguments_never_a_shell():
    note = Notification("halted", "run-1", "OOM", "i-9", "halted", "a; rm -rf ~ $(reboot)", "msg")
    argv = note.argv(("notify-send", "expwatch {run}", "{reason}", '{"text": "{message}"}', "{unknown}"), "/d")
    assert argv == ["notify-send", "expwatch run-1", "a; rm -rf ~ $(reboot)", '{"text": "msg"}', "{unknown}"]


def test_a_malformed_notify_section_names_the_field(experiments):
    (experiments.root / "expwatch.yaml").write_text("notify: {argv: 'notify-send hi'}\n")
    with pytest.raises(SettingsError, match="notify.argv"):
        NotifyConfig.from_settings(load_settings(experiments.layout))
    assert cli(["watch", str(experiments.root)]) == 2
