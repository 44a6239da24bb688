"""Malformed audit lines and non-finite numbers are reported, never a traceback (issue 15, item 9)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from expwatch.layout import ExperimentsLayout
from expwatch.rules.loader import shipped_rules_text

GOOD = {"ts": "2026-01-01T00:00:00+00:00", "event": "watcher started", "pid": 1}
MALFORMED = [
    b'{"ts":5,"event":["x"]}',                      # wrong types in the fields every reader uses
    b'{"ts":"2026-01-01T00:00:01+00:00","event":"rule matched","run":{"a":1},"rule":7,"incident":[1]}',
    b'{"ts":"2026-01-01T00:00:02+00:00","event":"action fini',  # torn
    b"\x00\xff\xfe binary \x9b\x1b[2J",
    b"[" * 100000 + b"]" * 100000,                   # deeper than json can recurse
    b'{"ts":"2026-01-01T00:00:03+00:00","event":"x","n":' + b"9" * 5000 + b"}",  # more digits than int() takes
    b'"just a string"',
]


def expwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "expwatch", *args], capture_output=True, text=True, timeout=60)


def test_malformed_audit_lines_are_skipped_with_a_counted_note_by_audit_and_report(tmp_path: Path):
    layout = ExperimentsLayout.at(tmp_path)
    layout.audit_path.parent.mkdir(parents=True)
    layout.audit_path.write_bytes(b"\n".join([json.dumps(GOOD).encode(), *MALFORMED, json.dumps(GOOD).encode()]) + b"\n")
    for args in (["audit", str(tmp_path)], ["audit", str(tmp_path), "--json"], ["audit", str(tmp_path), "--since", "100000d"],
                 ["audit", str(tmp_path), "--run", "r1"], ["report", str(tmp_path)]):
        proc = expwatch(*args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
        if args[0] == "audit" and len(args) == 2:
            assert proc.stdout.count("watcher started") == 2
            assert f"skipped {len(MALFORMED)} unreadable line(s)" in proc.stderr
    assert f"{len(MALFORMED)} unreadable audit line(s) skipped" in (layout.home / "report.html").read_text()


def test_validate_treats_a_nan_max_time_as_a_leak_and_writes_standard_json(tmp_path: Path):
    items = [
        {"id": "q1", "response": "A", "answer": "A", "correct": True, "task_type": "EPM", "realtime": 100.0, "max_time": float("nan")},
        {"id": "q2", "response": "A", "answer": "A", "correct": True, "task_type": "EPM", "realtime": 100.0, "max_time": float("inf")},
        {"id": "q3", "response": float("inf"), "answer": float("-inf"), "correct": False, "task_type": "forward"},
    ]
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"per_item": items}))  # Python writes NaN / Infinity, as many eval scripts do
    proc = expwatch("validate", str(result), "--json")
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-standard {c}")))
    assert sorted(report["leaked_ids"]) == ["q1", "q2"]
    assert proc.returncode == 1
    assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in report.values())


def test_a_settings_value_of_the_wrong_kind_is_one_error_naming_file_line_and_field(tmp_path: Path):
    settings = tmp_path / "expwatch.yaml"
    rules = tmp_path / "expwatch.rules.yaml"
    rules.write_text(shipped_rules_text())
    for text, line, field in (("watch: {settle_s: 1}\nworkers: true\n", 2, "workers"), ("profile: {}\n", 1, "profile"),
                              ("audit:\n  max_bytes: -5\n", 2, "audit.max_bytes"), ("profiles: {mine: {env: {}}}\n", 1, "profiles.mine"),
                              ("crash:\n  item_pattern: 'item (?=\\d)'\n", 2, "crash.item_pattern"),  # a lookahead: not RE2
                              ("crash:\n  item_pattern: 'item \\d+'\n", 2, "crash.item_pattern")):  # no group to name the item
        settings.write_text(text)
        for command in (["status", str(tmp_path)], ["watch", str(tmp_path)], ["rules", "check", str(rules)]):
            proc = expwatch(*command)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, (text, command, proc.stderr)
            assert f"{settings}:{line}: field '{field}" in proc.stderr, (text, proc.stderr)


def test_a_misspelt_setting_is_refused_with_a_did_you_mean_not_silently_ignored(tmp_path: Path):
    settings = tmp_path / "expwatch.yaml"
    settings.write_text("watch:\n  setle_s: 0.4\n")
    proc = expwatch("status", str(tmp_path))
    assert proc.returncode == 2
    assert f"{settings}:2: unknown field 'watch.setle_s' (did you mean 'settle_s'?)" in proc.stderr, proc.stderr
