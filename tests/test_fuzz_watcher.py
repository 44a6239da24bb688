"""Fuzz suite, live: hostile files written under a real watcher while another run is watched.

A victim run's log, result and checkpoint files, and the rules file (hot
reload), are overwritten with fuzzed contents one input at a time; after
each, a calm run's next line must still be matched within a bound, and
nothing may act on the calm run. At the end the watcher must still be alive
with no traceback in its output. Few inputs (each is a real file change
picked up by inotify), so the loader fuzz carries the volume.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import wait_for, write_until_matched
from expwatch.rules.loader import RulesError, load_rules
from fuzz_inputs import broken_bytes, log_bytes, results, rules_docs, yaml_texts
from fuzz_profiles import live_examples

pytestmark = pytest.mark.fuzz
MATCH_BOUND_S = 5.0
RULES = """\
version: 1
rules:
  - name: MARK
    severity: info
    priority: 20
    when: {log: {pattern: 'MARK-[0-9]+'}}
    actions: [{alert: fuzz}]
  - name: EVIL
    severity: info
    priority: 10
    when: {log: {pattern: '(a+)+$'}}
    actions: [{alert: fuzz}]
  - name: NULLS
    severity: info
    priority: 5
    when: {null_rate: {above: 0.5, min_items: 1}}
    actions: [{alert: fuzz}]
"""
hostile_changes = st.one_of(
    st.tuples(st.just("log"), log_bytes.map(b"".join)),
    st.tuples(st.just("result"), broken_bytes(results)),
    st.tuples(st.just("checkpoint"), broken_bytes(results)),
    st.tuples(st.just("rules"), yaml_texts(rules_docs).map(lambda t: t.encode("utf-8", "surrogatepass"))),
)


def invalid_rules(raw: bytes) -> bool:
    """Whether the watcher refuses ``raw`` as the user's rules file: read as it reads one, an override of the
    shipped rules (``version: 1`` with an empty ``rules:`` is a valid override that adds nothing, and drops MARK)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "expwatch.rules.yaml"
        path.write_bytes(raw)
        try:
            load_rules(path, {"default", "trapi"})
        except RulesError:
            return True
    return False


def test_hostile_files_of_one_run_never_crash_the_watcher_delay_or_touch_another(experiments):
    root = experiments.root
    rules = root / "expwatch.rules.yaml"
    rules.write_text(RULES)
    files = {"log": root / "victim.log", "result": root / "victim.json", "checkpoint": root / "victim_checkpoint.json", "rules": rules}
    sleepers = []
    for name, extra in (("victim", ["--result", str(files["result"]), "--checkpoint", str(files["checkpoint"])]), ("calm", [])):
        (root / f"{name}.log").touch()
        sleepers.append(subprocess.Popen(["sleep", "1000"], start_new_session=True))
        assert subprocess.run([sys.executable, "-m", "expwatch", "adopt", "--pid", str(sleepers[-1].pid), "--name", name,
                               "--log", str(root / f"{name}.log"), *extra, "--dir", str(root)], capture_output=True).returncode == 0
    watcher = experiments.start_watcher()
    marks = iter(range(1, 10**6))
    try:
        write_until_matched(experiments, "calm", root / "calm.log", "MARK-0")

        @settings(max_examples=live_examples(), deadline=None)
        @given(change=hostile_changes)
        def one_hostile_change(change: tuple[str, bytes]) -> None:
            kind, raw = change
            if kind == "rules" and not invalid_rules(raw):
                raw = RULES.encode()  # a valid fuzzed rules file may legitimately act on any run
            if kind == "log":
                with files["log"].open("ab") as fh:
                    fh.write(raw)
            else:
                files[kind].write_bytes(raw)
            n = next(marks)
            with (root / "calm.log").open("a") as fh:
                fh.write(f"MARK-{n}\n")
            wait_for(lambda: [r for r in experiments.audit(run="calm", event="rule matched") if r.get("line") == f"MARK-{n}"],
                     timeout=MATCH_BOUND_S, what=f"calm MARK-{n} matched after a hostile {kind}")
            assert watcher.poll() is None
            rules.write_text(RULES)

        one_hostile_change()
        time.sleep(0.5)
        assert watcher.poll() is None
        acted_on_calm = [r for r in experiments.audit(run="calm") if r.get("event") == "action started" and r.get("rule") != "MARK"]
        assert acted_on_calm == [] and experiments.manifest("calm").halted is None
    finally:
        out = experiments.stop_watcher(watcher)
        for proc in sleepers:
            proc.kill()
            proc.wait()
    # The watcher's own traceback would start a line; a fuzzed log line quoting one is evidence, not a crash.
    assert not re.search(r"^Traceback \(most recent call last\):$", out, re.MULTILINE), out[-3000:]
