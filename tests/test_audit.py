"""The audit trail: complete lines even under SIGKILL, no secrets, readable back in order."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from expwatch.audit.log import AuditLog
from expwatch.layout import ExperimentsLayout
from expwatch.audit.reader import audit_files, iter_records, parse_since
from expwatch.audit.timeline import render_line, render_timeline
from expwatch.commands import audit as audit_command
from expwatch.redact import is_secret_name, redact_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return ExperimentsLayout.at(tmp_path).audit_path


def all_lines(audit_path: Path) -> list[str]:
    """Every stored line, oldest file first."""
    return [line for f in audit_files(audit_path) for line in f.read_text(encoding="utf-8").splitlines()]


def test_records_carry_ts_event_and_link_fields_in_order(log_path: Path):
    log = AuditLog(log_path)
    written = log.record("rule_matched", incident="inc-1", rule="OOM", run="llama-mmlu", pid=42, path=Path("/x"))
    log.record("watcher_started", run=None)
    log.close()

    stored = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert stored[0] == written
    assert list(written)[:5] == ["ts", "event", "run", "rule", "incident"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", written["ts"])
    assert written["path"] == "/x"  # not JSON-serialisable → str
    assert stored[1]["event"] == "watcher_started" and "run" not in stored[1]


def test_secrets_are_redacted_from_env_fields_names_and_text(log_path: Path):
    log = AuditLog(log_path)
    env = {"HF_TOKEN": "hf_abcdefghijklmnopqrstuv", "CUDA_VISIBLE_DEVICES": "0", "per_run": {"OPENAI_API_KEY": "x"}}
    written = log.record(
        "action_planned",
        run="r1",
        env=env,
        plan={"env_overrides": {"DB_PASSWORD": "hunter2", "SEED": "1"}},
        wandb_api_key="abc",
        evidence={"lines": ["Authorization: Bearer eyJhbGciOi.payload", "key sk-proj-ABCDEFGH12345678 rejected"]},
        detail="export HF_TOKEN=hf_secretsecretsecretsecret; retry",
    )
    log.close()

    on_disk = log_path.read_text()
    for secret in ("hf_abcdefghijklmnopqrstuv", "hunter2", "eyJhbGciOi", "sk-proj-ABCDEFGH", "hf_secretsecret", '"abc"'):
        assert secret not in on_disk
    assert written["env"] == {"HF_TOKEN": "***", "CUDA_VISIBLE_DEVICES": "0", "per_run": {"OPENAI_API_KEY": "***"}}
    assert written["plan"]["env_overrides"] == {"DB_PASSWORD": "***", "SEED": "1"}
    assert written["wandb_api_key"] == "***"
    assert written["evidence"]["lines"] == ["Authorization: Bearer ***", "key *** rejected"]
    assert written["detail"] == "export HF_TOKEN=***; retry"
    assert env["HF_TOKEN"].startswith("hf_")  # caller's dict untouched


def test_secret_names_and_redact_env():
    for name in ("HF_TOKEN", "api_key", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "passwd", "GOOGLE_CREDENTIALS", "auth_header"):
        assert is_secret_name(name), name
    for name in ("PATH", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"):
        assert not is_secret_name(name), name
    assert redact_env({"PATH": "/bin", "GH_TOKEN": "t"}) == {"PATH": "/bin", "GH_TOKEN": "***"}


def test_rotation_keeps_backups_and_reader_returns_records_in_order(log_path: Path):
    log = AuditLog(log_path, max_bytes=2000, backups=3)
    for seq in range(200):
        log.record("tick", run="r", seq=seq, pad="x" * 40)
    log.close()

    names = sorted(p.name for p in log_path.parent.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all(p.stat().st_size <= 2000 for p in log_path.parent.iterdir())
    seqs = [r["seq"] for r in iter_records(log_path)]
    assert seqs == list(range(seqs[0], 200))  # contiguous, oldest dropped, newest kept
    assert seqs[0] > 0


def test_reader_spans_all_backups_when_nothing_was_dropped(log_path: Path):
    log = AuditLog(log_path, max_bytes=1500, backups=50)
    for seq in range(100):
        log.record("tick", seq=seq)
    log.close()
    assert len(list(log_path.parent.glob("audit.jsonl.*"))) > 2
    assert [r["seq"] for r in iter_records(log_path)] == list(range(100))


def test_a_writer_follows_rotation_done_by_another(log_path: Path):
    """``expwatch resume`` and the watcher share the file; either may rotate it."""
    watcher = AuditLog(log_path, max_bytes=300, backups=2)
    resume = AuditLog(log_path)
    resume.record("run_resumed", run="r", by="cli")
    for seq in range(5):
        watcher.record("tick", seq=seq, pad="p" * 50)  # rotates under resume's descriptor
    resume.record("run_resumed", run="r", by="cli-again")
    watcher.close()
    resume.close()
    assert json.loads(log_path.read_text().splitlines()[-1])["by"] == "cli-again"


def test_filters_by_run_rule_and_since(log_path: Path):
    log = AuditLog(log_path)
    log.record("rule_matched", run="a", rule="OOM")
    log.record("rule_matched", run="b", rule="OOM")
    log.record("rule_matched", run="a", rule="NaN")
    log.close()
    old = {"ts": "2020-01-01T00:00:00.000Z", "event": "ancient", "run": "a"}
    with log_path.open("a") as fh:  # an old record appended out of order still filters by ts
        fh.write(json.dumps(old) + "\n")

    assert [(r["event"], r.get("rule")) for r in iter_records(log_path, run="a")] == [
        ("rule_matched", "OOM"), ("rule_matched", "NaN"), ("ancient", None)
    ]
    assert [r["run"] for r in iter_records(log_path, rule="OOM")] == ["a", "b"]
    assert [r["event"] for r in iter_records(log_path, run="a", since=parse_since("1h"))] == ["rule_matched"] * 2
    assert [r["event"] for r in iter_records(log_path, since=parse_since("2019-12-31T00:00:00+00:00"))][-1] == "ancient"


def test_parse_since_durations_and_errors():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("1d", now) == now - timedelta(days=1)
    assert parse_since("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert parse_since("2024-05-01T10:00").tzinfo is not None
    with pytest.raises(ValueError) as info:
        parse_since("yesterday")
    assert "\n" not in str(info.value) and "yesterday" in str(info.value)


def test_torn_final_line_is_skipped_and_counted(log_path: Path):
    log = AuditLog(log_path)
    log.record("one")
    log.record("two")
    log.close()
    with log_path.open("ab") as fh:
        fh.write(b'{"ts": "2024-05-01T00:00:00.000Z", "event": "thr')
    records = iter_records(log_path)
    assert [r["event"] for r in records] == ["one", "two"]
    assert records.skipped == 1
    # The next writer, another process or this one, starts on a fresh line: the torn record swallows nothing.
    subprocess.run([sys.executable, "-c", f"from pathlib import Path; from expwatch.audit.log import AuditLog; "
                    f"AuditLog(Path({str(log_path)!r})).record('three')"], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    records = iter_records(log_path)
    assert [r["event"] for r in records] == ["one", "two", "three"] and records.skipped == 1


CHILD_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from expwatch.audit.log import AuditLog

    log = AuditLog(Path(sys.argv[1]), max_bytes=256 * 1024, backups=2)
    seq = 0
    while True:
        # Mostly log-sized lines, now and then a huge one (several pages).
        size = 20000 if seq % 50 == 0 else seq * 7919 % 400
        log.record("tick", run=sys.argv[2], seq=seq, line="y" * size, env={"API_KEY": "k"})
        print(seq, flush=True)  # acknowledged: record() has returned
        seq += 1
    """
)


def test_sigkilled_writer_loses_no_acknowledged_record_and_a_torn_one_cannot_swallow_the_next(log_path: Path):
    # A SIGKILL during the write of a 20 kB record can cut it (Linux returns what it copied when a fatal
    # signal is pending; a clean clone's CI caught one). The cut record was never acknowledged; it must
    # stay a line of its own, and every record after it must parse.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(1234)
    torn = 0
    for attempt in range(8):
        run = f"attempt-{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_WRITER, str(log_path), run], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            acked, target = -1, rng.randint(1, 300)
            while acked < target:
                line = child.stdout.readline()
                assert line, "child died on its own"
                acked = int(line)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        ends_torn = not log_path.read_bytes().endswith(b"\n")
        torn += ends_torn
        unparsed = [line for line in all_lines(log_path) if not line.endswith("}")]
        assert len(unparsed) == torn, "a record other than the killed writer's last is torn"
        assert all(line.startswith('{"ts": ') for line in unparsed)
        seqs = [r["seq"] for r in iter_records(log_path, run=run)]
        assert seqs == list(range(len(seqs))) and seqs[-1] >= acked
    AuditLog(log_path).record("after", run="next")  # the next writer closes a torn line off before its record
    records = iter_records(log_path)
    assert list(records)[-1]["event"] == "after" and records.skipped == torn


def test_each_record_is_one_write_of_one_complete_line(log_path: Path, monkeypatch):
    """The SIGKILL test can only catch buffering; this pins the single-write invariant itself."""
    import expwatch.audit.log as audit_log

    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(audit_log.os, "write", spy)
    log = AuditLog(log_path, max_bytes=4096, backups=1)
    for seq in range(20):
        log.record("tick", seq=seq, line="q" * (seq * 300))
    log.close()
    assert len(writes) == 20
    assert all(w.endswith(b"\n") and w.count(b"\n") == 1 and json.loads(w)["seq"] == i for i, w in enumerate(writes))


def test_concurrent_threads_write_only_complete_lines(log_path: Path):
    log = AuditLog(log_path, max_bytes=200_000, backups=10)

    def writer(name: str) -> None:
        for seq in range(500):
            log.record("tick", run=name, seq=seq, line=name * (seq % 200))

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()

    records = iter_records(log_path)
    by_thread: dict[str, list[int]] = {}
    for r in records:
        by_thread.setdefault(r["run"], []).append(r["seq"])
    assert records.skipped == 0
    assert by_thread == {f"t{i}": list(range(500)) for i in range(4)}


def test_two_processes_append_to_one_file(log_path: Path):
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from expwatch.audit.log import AuditLog

        log = AuditLog(Path(sys.argv[1]))
        for seq in range(1000):
            log.record("tick", run=sys.argv[2], seq=seq, line="z" * 500)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", script, str(log_path), name], env=env) for name in ("a", "b")]
    assert [c.wait(timeout=30) for c in children] == [0, 0]
    records = list(iter_records(log_path))
    assert len(records) == 2000
    assert [r["seq"] for r in records if r["run"] == "a"] == list(range(1000))


def test_records_of_two_processes_are_in_time_order_in_the_file(log_path: Path):
    # `expwatch resume` writes while the watcher does; the crash sweep's resume story found a record
    # stamped a millisecond before the watcher's landing after it.
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from expwatch.audit.log import AuditLog

        log = AuditLog(Path(sys.argv[1]))
        for seq in range(3000):
            log.record("tick", run=sys.argv[2], seq=seq)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", script, str(log_path), name], env=env) for name in ("a", "b", "c")]
    assert [c.wait(timeout=60) for c in children] == [0, 0, 0]
    stamps = [r["ts"] for r in iter_records(log_path)]
    assert len(stamps) == 9000
    assert [(a, b) for a, b in zip(stamps, stamps[1:]) if b < a] == []


def test_timeline_shows_time_link_fields_and_the_telling_detail(log_path: Path):
    log = AuditLog(log_path)
    log.record("rule_matched", run="llama", rule="OOM", incident="3f2a9c1d-77e0-4b1e-9d8e-0c5b6a7f8e91",
               evidence={"lines": ["step 10", "RuntimeError: CUDA out of memory. " + "x" * 300]})
    log.record("action_finished", run="llama", rule="OOM", incident="inc-7", action="restart", outcome="ok")
    log.record("action_failed", run="llama", action="notify", error="webhook returned 500")
    log.close()

    lines = list(render_timeline(iter_records(log_path)))
    assert re.fullmatch(r"--- \d{4}-\d\d-\d\d ---", lines[0])
    matched, finished, failed = lines[1:]
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} llama +rule_matched +OOM +6a7f8e91 ", matched)
    assert "CUDA out of memory" in matched and len(matched) < 200 and "..." in matched
    assert "action=restart outcome=ok" in finished and " inc-7 " in finished
    assert 'error="webhook returned 500"' in failed
    assert "\033[" not in "".join(lines)
    assert "\033[31m" in render_line({"ts": "2024-05-01T00:00:00Z", "event": "action_failed"}, colour=True)


def run_audit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    audit_command.register(parser.add_subparsers())
    args = parser.parse_args(["audit", *argv])
    return args.func(args)


def test_audit_command_prints_timeline_or_stored_json(tmp_path: Path, capsys):
    log = AuditLog(ExperimentsLayout.at(tmp_path).audit_path, max_bytes=300, backups=5)
    for run in ("a", "b", "a", "b"):
        log.record("action_started", run=run, action="restart", env={"HF_TOKEN": "t"})
    log.close()

    assert run_audit([str(tmp_path), "--run", "a"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all("action=restart" in line for line in out[1:])

    assert run_audit([str(tmp_path), "--json", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert len(list(tmp_path.glob(".expwatch/audit.jsonl.*"))) >= 1
    assert out.splitlines() == all_lines(ExperimentsLayout.at(tmp_path).audit_path)


def test_audit_command_without_log_exits_2_with_one_line(tmp_path: Path, capsys):
    assert audit_command.run(argparse.Namespace(dir=str(tmp_path), run=None, rule=None, since=None, json=False)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no audit log" in err

    AuditLog(ExperimentsLayout.at(tmp_path).audit_path).close()
    assert audit_command.run(argparse.Namespace(dir=str(tmp_path), run=None, rule=None, since="soon", json=False)) == 2
    assert capsys.readouterr().err.count("\n") == 1
