"""Fuzz suite, loaders: thousands of hostile files of each kind against the real loaders.

The invariant for every kind: the loader returns its typed value, or raises
its one error type whose message names the file (and, where it has one, the
line and field); never another exception (a traceback for the user), and
never longer than the profile's deadline (``tests/fuzz_profiles.py``). What
the loader returns is then used the way ``status``, ``validate``, ``audit``,
``report`` and the watcher use it, under the same invariant.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expwatch.audit.reader import iter_records
from expwatch.audit.timeline import render_timeline
from expwatch.commands.status import format_row
from expwatch.commands.validate import render_report
from expwatch.display.records import feed_records, plain_line, summary, tone
from expwatch.files import NotReadyYet
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, load_manifest
from expwatch.report.gather import build_report
from expwatch.report.html import render_html
from expwatch.results.config import load_validation_settings
from expwatch.results.progress import read_progress
from expwatch.results.validation import validate_result
from expwatch.rules.classify import LineClassifier
from expwatch.rules.compile import ruleset_definition
from expwatch.rules.loader import RulesError, load_rules
from expwatch.runstate import observe
from expwatch.settings import SettingsError, load_settings
from expwatch.standard_json import standard_json
from expwatch.terminal import terminal_text
from expwatch.watcher.tail import LogTailer
from fuzz_profiles import examples
from fuzz_inputs import audit_lines, broken_bytes, log_bytes, manifests, results, rules_docs, settings_docs, yaml_texts

pytestmark = pytest.mark.fuzz
SHIPPED_CLASSIFIER = LineClassifier(load_rules(None))
VALIDATION = load_validation_settings(None)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="expwatch-fuzz-") as tmp:
        yield Path(tmp)


def names_file(exc: Exception, path: Path) -> bool:
    return str(path) in str(exc)


@given(raw=broken_bytes(manifests))
def test_any_manifest_loads_or_is_refused_naming_its_file(scratch: Path, raw: bytes):
    path = scratch / "runs" / "victim.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(raw)
    try:
        manifest = load_manifest(path)
    except (ManifestError, NotReadyYet) as exc:
        assert names_file(exc, path)
        return
    report = observe(manifest, 60.0)
    json.dumps(report.to_json(), default=str)
    terminal_text(format_row(report))


@settings(max_examples=examples(0.4))
@given(result=broken_bytes(results), checkpoint=st.one_of(st.none(), broken_bytes(results)))
def test_any_result_and_checkpoint_read_or_are_not_ready_naming_the_file(scratch: Path, result: bytes, checkpoint: bytes | None):
    result_path, checkpoint_path = scratch / "r.json", scratch / "r_checkpoint.json"
    result_path.write_bytes(result)
    checkpoint_path.unlink(missing_ok=True)
    if checkpoint is not None:
        checkpoint_path.write_bytes(checkpoint)
    try:
        snapshot = read_progress(result_path, checkpoint_path)
    except NotReadyYet as exc:
        assert names_file(exc, result_path) or names_file(exc, checkpoint_path)
        return
    assert snapshot is not None
    snapshot.done, snapshot.correct, snapshot.null_reasons  # what status and the watcher read
    report = validate_result(result_path, settings=VALIDATION)
    json.dumps(standard_json(report.to_json()), allow_nan=False, default=str)
    text = terminal_text(render_report(report), keep_newlines=True)
    assert all(c == "\n" or c.isprintable() for c in text)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # the 200 kB bomb's own repr
@given(bomb=st.sampled_from([b'{"per_item": [{"id": ' + b"7" * 5000 + b"}]}", b"[" * 100_000 + b"]" * 100_000]))
def test_a_result_bomb_is_not_ready_naming_the_file(scratch: Path, bomb: bytes):
    path = scratch / "bomb.json"
    path.write_bytes(bomb)
    try:
        read_progress(path, None)
    except NotReadyYet as exc:
        assert names_file(exc, path)


@settings(max_examples=examples(0.4))
@given(text=yaml_texts(rules_docs))
def test_any_rules_file_loads_or_is_refused_with_its_file_and_line(scratch: Path, text: str):
    path = scratch / "expwatch.rules.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        ruleset = load_rules(path, {"default", "trapi"})
    except RulesError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    # Accepted means the engine can run it: patterns compile for the matcher, the neutral form builds.
    LineClassifier(ruleset).classify("boom HTTP/1.1 429 " + "a" * 34 + "b")
    json.dumps(ruleset_definition(ruleset))


@given(text=yaml_texts(settings_docs))
def test_any_settings_file_loads_or_is_refused_naming_the_file(scratch: Path, text: str):
    layout = ExperimentsLayout.at(scratch)
    layout.settings_path.write_text(text, encoding="utf-8")
    try:
        settings = load_settings(layout)
        # Accepted means every value has its kind: the numbers the watcher reads first are numbers, and not negative.
        for value in (settings.watch.settle_s, settings.watch.safety_poll_s, settings.guard.restart_window_s,
                      settings.kill.grace_s, settings.audit.max_bytes):
            assert isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        settings.profile(None)
    except SettingsError as exc:
        assert names_file(exc, layout.settings_path)


@settings(max_examples=examples(0.4))
@given(lines=audit_lines)
def test_any_audit_lines_are_read_shown_and_reported_or_skipped(scratch: Path, lines: list[bytes]):
    root = scratch / "audit-root"
    layout = ExperimentsLayout.at(root)
    layout.audit_path.parent.mkdir(parents=True, exist_ok=True)
    layout.audit_path.write_bytes(b"\n".join(lines) + b"\n")
    records = iter_records(layout.audit_path)
    kept = list(records)
    assert len(kept) + records.skipped <= sum(1 for raw in b"\n".join(lines).split(b"\n") if raw.strip())
    for line in render_timeline(kept):
        terminal_text(line)
    for record in feed_records(kept):
        terminal_text(plain_line(record)), summary(record), tone(record)
    render_html(build_report(root, 60.0))


@given(chunks=log_bytes)
def test_any_log_bytes_are_tailed_and_classified(scratch: Path, chunks: list[bytes]):
    path = scratch / "fuzz.log"
    path.write_bytes(b"")
    tailer = LogTailer(path, max_line_bytes=4096, read_chunk=512)
    try:
        for chunk in chunks:
            with path.open("ab") as fh:
                fh.write(chunk)
            for line in tailer.read_new(SHIPPED_CLASSIFIER.prefilter):
                SHIPPED_CLASSIFIER.classify(line.text)
                shown = terminal_text(line.text)
                assert shown.isprintable()
    finally:
        tailer.close()
