"""The rules file: validation with file:line errors, the shared matcher, hot reload, persisted offsets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import fast_rules, wait_for
from expwatch.cli import main as cli
from expwatch.rules.compile import ruleset_definition
from expwatch.rules.loader import RulesError, load_rules, parse_rules, shipped_rules_text
from expwatch.rules.decide import DecisionPolicy
from expwatch.rules.replay import replay
from expwatch.settings import load_settings, shipped_text

LOGS = Path(__file__).parent / "data" / "logs"
PROFILES = {"default", "trapi", "proxy"}


def expectations(path: Path) -> tuple[list[str], dict[int, set[str]]]:
    """Log lines (comments removed) and, per line number, the rules a `#> RULE` comment expects."""
    lines, expected, pending = [], {}, None
    for raw in path.read_text().splitlines():
        if raw.startswith("#> "):
            pending = {r.strip() for r in raw[3:].split(",")}
        elif raw.startswith("#"):
            continue
        else:
            lines.append(raw)
            if pending:
                expected[len(lines)] = pending
            pending = None
    return lines, expected


@pytest.mark.parametrize("log", sorted(LOGS.glob("*.log")), ids=lambda p: p.name)
def test_sample_logs_fire_exactly_the_rules_their_comments_expect(log):
    lines, expected = expectations(log)
    fired: dict[int, set[str]] = {}
    for match in replay(load_rules(None, PROFILES), lines, DecisionPolicy.from_settings(load_settings())).matches:
        fired.setdefault(match.line_no, set()).add(match.rule)
    assert fired == expected


def test_shipped_rules_are_valid_against_the_published_schema_and_compile_to_the_golden_form():
    data = yaml.safe_load(shipped_rules_text())
    jsonschema.validate(data, json.loads(shipped_text("rules.schema.json")))
    golden = json.loads((Path(__file__).parent / "data" / "compiled_rules.json").read_text())
    assert ruleset_definition(load_rules(None, PROFILES)) == golden


@pytest.mark.parametrize(
    "edit, message",
    [
        (("[kill, restart]", "[kill, restrat]"), "rule 'STALE': unknown action 'restrat' (did you mean 'restart'?)"),
        (("log_silent_s: 1200", "log_silentt: 1200"), "rule 'STALE': unknown field 'log_silentt' (did you mean 'log_silent_s'?)"),
        (("switch_profile: trapi", "switch_profile: trap"), "rule 'PROXY_DOWN': unknown profile 'trap' (did you mean 'trapi'?)"),
        (("pattern: '^Traceback", "pattern: '(^Traceback"), "rule 'TRACEBACK': field 'when.any.0.log': invalid regex"),
        (("min_count: 3\n", ""), "min_count"),
    ],
)
def test_invalid_rules_give_one_line_naming_file_line_and_field(edit, message):
    text = shipped_rules_text().replace(*edit)
    if edit[1] == "":
        text = shipped_rules_text().replace("                window_s: 60\n", "", 1)
        text = text.replace("min_count: 3", "min_count: 3", 1)
    with pytest.raises(RulesError) as info:
        parse_rules(text, "expwatch.rules.yaml", PROFILES)
    text_of = str(info.value)
    assert text_of.startswith("expwatch.rules.yaml:") and "\n" not in text_of
    line = int(text_of.split(":")[1])
    assert line > 1
    assert message in text_of


def test_rules_check_and_init_commands(tmp_path, capsys):
    assert cli(["rules", "init", "--full", str(tmp_path)]) == 0
    rules = tmp_path / "expwatch.rules.yaml"
    assert rules.read_text().endswith(shipped_rules_text()) and "\nreplace: true" in rules.read_text()
    assert rules.read_text().startswith("# yaml-language-server: $schema=./expwatch.rules.schema.json")
    assert json.loads((tmp_path / "expwatch.rules.schema.json").read_text())["title"] == "expwatch rules file"
    assert cli(["rules", "init", str(tmp_path)]) == 2
    assert cli(["rules", "check", str(rules)]) == 0
    rules.write_text(shipped_rules_text().replace("severity: error", "severity: fatal", 1))
    capsys.readouterr()
    assert cli(["rules", "check", str(rules)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{rules}:") and "severity" in err


def test_rules_test_prints_what_would_fire_and_why_on_a_recorded_log(capsys):
    log = LOGS / "crash_rate_limit.log"
    assert cli(["rules", "test", "-", str(log)]) == 0
    out = capsys.readouterr().out
    assert f"{log}:10: RATE_LIMIT (priority 70) matched" in out and "(>= 3 within 60s)" in out
    assert f"{log}:12: TRACEBACK (priority 40)" in out
    assert "(lines 10-18): candidates RATE_LIMIT, TRACEBACK, RATE_LIMIT, RATE_LIMIT -> winner RATE_LIMIT (priority 70); guard: act (streak 1); " \
           "plan: kill, wait 120, scale_workers 0.5, restart" in out
    # The crash itself is a match too, by its parsed cause, not only the storm's third line.
    assert f"{log}:18: crash: openai.RateLimitError 429 rate_limit_exceeded at eval.py:61 call_model" in out
    assert out.strip().splitlines()[-2:] == ["18 lines, 4 matches: RATE_LIMIT x3, TRACEBACK x1", "1 incident(s): RATE_LIMIT"]


def test_an_invalid_hot_reload_is_refused_and_the_old_rules_keep_working(experiments):
    rules = experiments.root / "expwatch.rules.yaml"
    rules.write_text(fast_rules())
    watcher = experiments.start_watcher()
    rules.write_text(fast_rules().replace("[kill, restart]", "[kill, restrat]"))
    # write_text truncates first: the watcher may see the empty file before the bad edit.
    refused = wait_for(lambda: [r for r in experiments.audit(event="rules reload refused") if "restrat" in r["error"]], what="refusal")
    assert str(rules) in refused[0]["error"]
    experiments.launch("after-bad-edit", "--fault", "die@3")
    wait_for(lambda: experiments.manifest("after-bad-edit").completed_at, timeout=30, what="recovery under old rules")
    rules.write_text(fast_rules().replace("name: DEAD", "name: GONE"))
    reloaded = wait_for(lambda: experiments.audit(event="rules reloaded"), what="reload")
    assert "GONE" in reloaded[-1]["rules"]
    out = experiments.stop_watcher(watcher)
    assert "rules reload refused" in out
    assert [r["rule"] for r in experiments.audit(run="after-bad-edit", event="incident classified")] == ["DEAD", "COMPLETE"]


def test_watcher_restart_resumes_at_persisted_offsets_without_refiring_or_missing_lines(experiments, tmp_path):
    (experiments.root / "expwatch.rules.yaml").write_text(
        "replace: true\nrules:\n  - {name: BOOM, when: {log: {pattern: 'BOOM'}}, actions: [{alert: boom}]}\n"
    )
    log = experiments.root / "manual.log"
    log.write_text("old BOOM before the watcher ever ran\n")
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        assert cli(["adopt", "--pid", str(sleeper.pid), "--name", "manual", "--log", str(log), "--dir", str(experiments.root)]) == 0
        watcher = experiments.start_watcher()
        wait_for(lambda: experiments.audit(run="manual", event="history read"), what="the old line read as history")
        with log.open("a") as fh:
            fh.write("live BOOM 1\n")
        wait_for(lambda: len(experiments.audit(run="manual", event="rule matched")) == 1, what="first match")
        experiments.stop_watcher(watcher)
        with log.open("a") as fh:
            fh.write("while down BOOM 2\nquiet line\n")
        watcher = experiments.start_watcher()
        wait_for(lambda: len(experiments.audit(run="manual", event="rule matched")) == 2, what="second match")
        time.sleep(1.2)
        experiments.stop_watcher(watcher)
        lines = [r["line"] for r in experiments.audit(run="manual", event="rule matched")]
        assert lines == ["live BOOM 1", "while down BOOM 2"]
        assert experiments.audit(run="manual", event="history read")[0]["lines"] == 1
    finally:
        sleeper.kill()


def test_a_line_written_in_two_pieces_is_one_event_and_garbage_bytes_are_survived(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(
        "replace: true\nrules:\n  - {name: BOOM, when: {log: {pattern: 'BOOM here'}}, actions: [{alert: boom}]}\n"
    )
    log = experiments.root / "pieces.log"
    log.write_text("")
    go = experiments.root / "second-piece"
    # The second piece is written once the watcher follows the run (a fixed pause lost that race under load).
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import os,sys,time\nf=open(sys.argv[1],'ab',buffering=0)\nf.write(b'\\xff\\xfe garbage\\n')\nf.write(b'BOOM')\n"
         "while not os.path.exists(sys.argv[2]): time.sleep(0.05)\nf.write(b' here\\n')\ntime.sleep(60)\n", str(log), str(go)],
        start_new_session=True,
    )
    try:
        watcher = experiments.start_watcher()
        assert cli(["adopt", "--pid", str(writer.pid), "--name", "pieces", "--log", str(log), "--dir", str(experiments.root)]) == 0
        wait_for(lambda: experiments.audit(run="pieces", event="run discovered"), what="the run followed")
        go.write_text("")
        matched = wait_for(lambda: experiments.audit(run="pieces", event="rule matched"), what="match")
        experiments.stop_watcher(watcher)
        assert [r["line"] for r in matched] == ["BOOM here"]
    finally:
        writer.kill()


def test_cache_drift_ratio_fires_once_hits_fall_below_the_floor_after_its_delay(experiments):
    rules = ("rules:\n  - name: CACHE_DRIFT\n    enabled: true\n    when: {ratio: {numerator: 'cache hit', "
             "denominator: ['cache hit', 'cache miss'], below: 0.8, after_s: 1}}\n")
    (experiments.root / "expwatch.rules.yaml").write_text(rules)
    log = experiments.root / "cache.log"
    log.write_text("")
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        assert cli(["adopt", "--pid", str(sleeper.pid), "--name", "cache", "--log", str(log), "--dir", str(experiments.root)]) == 0
        watcher = experiments.start_watcher()
        with log.open("a") as fh:
            fh.write("cache hit item-1\ncache hit item-2\ncache miss item-3\n")
        time.sleep(1.5)
        with log.open("a") as fh:
            fh.write("cache hit item-4\n")  # 3/4 = 0.75 < 0.8 once past after_s
        matched = wait_for(lambda: experiments.audit(run="cache", event="incident classified"), what="CACHE_DRIFT")
        experiments.stop_watcher(watcher)
        assert matched[0]["rule"] == "CACHE_DRIFT"
    finally:
        sleeper.kill()


def test_the_polling_observer_sees_what_inotify_would(experiments):
    (experiments.root / "expwatch.yaml").write_text(
        (experiments.root / "expwatch.yaml").read_text() + "watch: {settle_s: 0.4, safety_poll_s: 30, observer: polling, polling_interval_s: 0.2}\n")
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()
    experiments.launch("polled", "--fault", "die@3")
    wait_for(lambda: experiments.manifest("polled").completed_at, timeout=30, what="recovery via polling")
    experiments.stop_watcher(watcher)
    assert experiments.audit(event="watcher started")[0]["observer"] == "polling"


ROTATING_WRITER = r"""
import os, shutil, sys, time
log = sys.argv[1]
while not os.path.exists(log + ".go"):   # start once the run is adopted
    time.sleep(0.02)
def say(text):
    with open(log, "a") as fh:
        fh.write(text + "\n")
    time.sleep(0.15)
say("BOOM 1")
say("BOOM 2")
os.rename(log, log + ".1")            # rename rotation
say("BOOM 3")
shutil.copy(log, log + ".2")          # copy-truncate
with open(log, "r+") as fh:
    fh.truncate(0)
time.sleep(0.3)
say("BOOM 4")
os.unlink(log)                         # deletion, then re-creation
time.sleep(0.3)
say("BOOM 5")
time.sleep(60)
"""


def test_rotation_truncation_and_recreation_of_a_watched_log_lose_and_repeat_nothing(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(
        "replace: true\nrules:\n  - {name: BOOM, when: {log: {pattern: 'BOOM'}}, actions: [{alert: boom}]}\n"
    )
    log = experiments.root / "rotating.log"
    log.write_text("")
    watcher = experiments.start_watcher()
    writer = subprocess.Popen([sys.executable, "-c", ROTATING_WRITER, str(log)], start_new_session=True)
    try:
        assert cli(["adopt", "--pid", str(writer.pid), "--name", "rotating", "--log", str(log), "--dir", str(experiments.root)]) == 0
        wait_for(lambda: experiments.audit(run="rotating", event="run discovered"), what="discovery")
        Path(f"{log}.go").touch()
        wait_for(lambda: len(experiments.audit(run="rotating", event="rule matched")) >= 5, what="five matches")
        time.sleep(1.0)
        experiments.stop_watcher(watcher)
        lines = [r["line"] for r in experiments.audit(run="rotating", event="rule matched")]
        assert lines == [f"BOOM {i}" for i in range(1, 6)]
        notes = " ".join(r["note"] for r in experiments.audit(run="rotating", event="log file changed"))
        assert "rotated" in notes and ("truncated" in notes or "replaced" in notes)
    finally:
        writer.kill()
