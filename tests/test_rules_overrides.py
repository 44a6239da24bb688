"""The user's rules file as an override of the shipped rules: patch by name, add, replace, show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import fast_rules, wait_for
from expwatch.cli import main as cli
from expwatch.layout import ExperimentsLayout
from expwatch.rules.document import read_file
from expwatch.rules.loader import RulesError, full_copy, load_rules, parse_override, parse_rules, shipped_rules_quickened, shipped_rules_text
from expwatch.settings import SettingsError, load_settings, shipped_text

LOGS = Path(__file__).parent / "data" / "logs"
PROFILES = {"default", "trapi", "proxy"}

OVERRIDE = """\
rules:
  - name: TRACEBACK
    actions: [halt]
  - name: CACHE_DRIFT
    enabled: true
  - name: STALE
    severity: error
    when: {log_silent_s: 300}
  - name: NAN_LOSS
    priority: 60
    when: {log: {pattern: 'loss=nan'}}
    actions: [kill, {halt: "the loss became NaN"}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "expwatch.rules.yaml"
    path.write_text(text)
    return path


def test_an_override_patches_shipped_rules_by_name_adds_new_ones_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, OVERRIDE)
    shipped = load_rules(None, PROFILES)
    ruleset = load_rules(path, PROFILES)
    assert [r.name for r in ruleset.rules] == [r.name for r in shipped.rules] + ["NAN_LOSS"]
    traceback = ruleset.by_name("TRACEBACK")
    assert [a.name for a in traceback.actions] == ["halt"]
    assert traceback.when == shipped.by_name("TRACEBACK").when and traceback.description == shipped.by_name("TRACEBACK").description
    assert ruleset.by_name("CACHE_DRIFT").enabled and not shipped.by_name("CACHE_DRIFT").enabled
    stale = ruleset.by_name("STALE")
    assert stale.severity == "error" and ruleset.silence_thresholds() == [300.0]
    assert stale.actions == shipped.by_name("STALE").actions
    for name in ("OOM", "RATE_LIMIT", "DEAD", "COMPLETE"):
        assert ruleset.by_name(name) == shipped.by_name(name)
    assert ruleset.by_name("NAN_LOSS").priority == 60
    assert ruleset.source == f"{path} over configs/rules.yaml"


def test_every_field_records_the_file_and_line_it_came_from(tmp_path):
    path = write(tmp_path, OVERRIDE)
    ruleset = load_rules(path, PROFILES)
    where = {(o.rule, o.field): o.where for o in ruleset.origins}
    assert where[("TRACEBACK", "actions")] == f"{path}:3"
    assert where[("STALE", "when")] == f"{path}:8"
    assert where[("NAN_LOSS", "name")] == f"{path}:9"
    shipped_lines = shipped_rules_text().splitlines()
    traceback_when = where[("TRACEBACK", "when")]
    assert traceback_when.startswith("configs/rules.yaml:")
    assert shipped_lines[int(traceback_when.rsplit(":", 1)[1]) - 1].strip() == "when:"
    assert where[("TRACEBACK", "guarded")] == "default"
    assert {o.field for o in ruleset.origins_of("OOM")} == {
        "name", "description", "severity", "priority", "enabled", "same_rule_limit", "guarded", "when", "actions"}


def test_the_digest_covers_the_override_and_the_shipped_text(tmp_path):
    shipped = load_rules(None, PROFILES)
    one = load_rules(write(tmp_path, OVERRIDE), PROFILES)
    two = load_rules(write(tmp_path, OVERRIDE.replace("priority: 60", "priority: 61")), PROFILES)
    assert len({shipped.digest, one.digest, two.digest}) == 3
    whole = write(tmp_path, "replace: true\n" + shipped_rules_text())
    assert load_rules(whole, PROFILES).digest == parse_rules(whole.read_text(), "x").digest


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("rules:\n  - name: TRACEBAK\n    actions: [halt]\n", 2,
         "rule 'TRACEBAK': a new rule needs 'when' (no shipped rule has this name; did you mean 'TRACEBACK'?)"),
        ("rules:\n  - name: MINE\n", 2, "rule 'MINE': a new rule needs 'when' and 'actions'"),
        ("rules:\n  - name: STALE\n    priorty: 3\n", 3, "rule 'STALE': unknown field 'priorty' (did you mean 'priority'?)"),
        ("rules:\n  - name: STALE\n    actions: [kill, restrat]\n", 3, "rule 'STALE': unknown action 'restrat' (did you mean 'restart'?)"),
        ("rules:\n  - name: TRACEBACK\n    when:\n      log: {pattern: '(oops'}\n", 4, "rule 'TRACEBACK': field 'when.log': invalid regex"),
        ("rules:\n  - name: PROXY_DOWN\n    actions: [{switch_profile: trap}]\n", 3, "rule 'PROXY_DOWN': unknown profile 'trap' (did you mean 'trapi'?)"),
        ("rules:\n  - {name: DEAD, enabled: false}\n  - {name: DEAD, enabled: true}\n", 3, "rule 'DEAD': duplicate name (first at line 2)"),
        ("replace: true\nrules:\n  - name: TRACEBACK\n    actions: [halt]\n", 3, "rule 'TRACEBACK': missing field 'when'"),
        ("replace: yes please\nrules: []\n", 1, "field 'replace'"),
    ],
)
def test_errors_in_an_override_are_one_line_naming_the_users_file_line_and_rule(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        load_rules(path, PROFILES)
    assert str(info.value).startswith(f"{path}:{line}: ") and "\n" not in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "settings_text, rules_text, expected",
    [
        ("wach: {}\n", "rulez: []\n", [("1", "", "wach", "watch"), ("1", "", "rulez", "rules")]),
        ("watch:\n  setle_s: 0.4\n", "rules:\n  - name: STALE\n    priorty: 3\n",
         [("2", "", "watch.setle_s", "settle_s"), ("3", "rule 'STALE': ", "priorty", "priority")]),
    ],
)
def test_a_misspelt_key_reads_the_same_in_settings_and_in_rules(tmp_path, settings_text, rules_text, expected):
    """One wording (expwatch/schema_errors.py), so whoever has fixed one kind of file recognises the other's error."""
    layout = ExperimentsLayout.at(tmp_path)
    layout.settings_path.write_text(settings_text)
    with pytest.raises(SettingsError) as settings:
        load_settings(layout)
    with pytest.raises(RulesError) as rules:
        load_rules(write(tmp_path, rules_text), PROFILES)
    shape = re.compile(r"(?P<file>[^:]+):(?P<line>\d+): (?P<rule>rule '\w+': )?unknown field '(?P<key>[\w.]+)' \(did you mean '(?P<hint>\w+)'\?\)")
    found = [shape.fullmatch(str(error.value)) for error in (settings, rules)]
    assert all(found), [str(error.value) for error in (settings, rules)]
    assert [m["file"] for m in found] == [str(layout.settings_path), str(tmp_path / "expwatch.rules.yaml")]
    assert [(m["line"], m["rule"] or "", m["key"], m["hint"]) for m in found] == expected


def test_rules_init_writes_a_short_override_whose_commented_examples_all_load(tmp_path, capsys):
    assert cli(["rules", "init", str(tmp_path)]) == 0
    path = tmp_path / "expwatch.rules.yaml"
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=./expwatch.rules.schema.json\n")
    assert len(text.splitlines()) < 60 and "replace: true" not in text.replace("`replace: true`", "")
    assert load_rules(path, PROFILES).rules == load_rules(None, PROFILES).rules
    path.write_text(re.sub(r"^  # (  |- )", r"  \1", text, flags=re.M))
    ruleset = load_rules(path, PROFILES)
    assert [a.name for a in ruleset.by_name("TRACEBACK").actions] == ["halt"]
    assert not ruleset.by_name("DEAD").enabled and ruleset.by_name("CACHE_DRIFT").enabled
    assert ruleset.by_name("NAN_LOSS").severity == "error"
    capsys.readouterr()
    assert cli(["rules", "check", str(path)]) == 0
    shipped = load_rules(None, PROFILES).rules
    # One shipped rule disabled (DEAD), one enabled (CACHE_DRIFT), one added (NAN_LOSS).
    enabled, total = sum(r.enabled for r in shipped) + 1, len(shipped) + 1
    assert capsys.readouterr().out.strip() == (
        f"{path}: valid ({enabled} enabled of {total} rules; over configs/rules.yaml: "
        "patches RATE_LIMIT, TRACEBACK, DEAD, STALE, CACHE_DRIFT; adds NAN_LOSS)")


def test_rules_init_full_writes_a_whole_copy_that_no_longer_reads_the_shipped_rules(tmp_path):
    assert cli(["rules", "init", "--full", str(tmp_path)]) == 0
    path = tmp_path / "expwatch.rules.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["replace"] is True
    data["rules"] = [r for r in data["rules"] if r["name"] != "STALE"]
    path.write_text(yaml.safe_dump(data))
    ruleset = load_rules(path, PROFILES)
    assert "STALE" not in [r.name for r in ruleset.rules] and len(ruleset.rules) == len(load_rules(None, PROFILES).rules) - 1
    assert {o.source for o in ruleset.origins} == {str(path), ""}


def test_rules_show_prints_the_rules_in_force_and_where_each_field_came_from(tmp_path, capsys):
    path = write(tmp_path, OVERRIDE)
    capsys.readouterr()
    assert cli(["rules", "show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"rules in force for {tmp_path}: {path} over configs/rules.yaml (digest ")
    block = out.split("\nTRACEBACK (")[1].split("\n\n")[0].splitlines()
    assert block[0] == "enabled, priority 40, patched)"
    fields = {line.split()[0]: line.split(None, 2)[1:] for line in block[1:]}
    assert fields["actions"] == [f"{path}:3", "[halt]"]
    assert fields["when"][0].startswith("configs/rules.yaml:") and "Traceback" in fields["when"][1]
    assert fields["guarded"] == ["default", "true"]
    assert "\nNAN_LOSS (enabled, priority 60, added)\n" in out
    assert "\nOOM (enabled, priority 90)\n" in out
    path.write_text("rules:\n  - name: OOPS\n")
    assert cli(["rules", "show", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:2: rule 'OOPS': a new rule needs")


def test_the_quickened_copy_the_tests_use_is_a_whole_copy_of_the_shipped_rules():
    quick = shipped_rules_quickened(0.3, 2.0)
    assert yaml.safe_load(quick)["replace"] is True
    assert [r.name for r in parse_rules(quick, "quick").rules] == [r.name for r in load_rules(None).rules]


def test_the_watcher_hot_reloads_an_override_and_runs_the_shipped_rules_under_it(experiments):
    rules = experiments.root / "expwatch.rules.yaml"
    rules.write_text(fast_rules())
    watcher = experiments.start_watcher()
    rules.write_text("rules:\n  - {name: BOOM, severity: info, when: {log: {pattern: 'BOOM'}}, actions: [{alert: boom}]}\n")
    reloaded = wait_for(lambda: experiments.audit(event="rules reloaded"), what="reload")
    assert reloaded[-1]["file"] == f"{rules} over configs/rules.yaml"
    assert {"BOOM", "DEAD", "TRACEBACK", "COMPLETE"} <= set(reloaded[-1]["rules"])
    experiments.launch("dies", "--fault", "die@3")
    wait_for(lambda: experiments.manifest("dies").completed_at, timeout=30, what="recovery by the shipped DEAD rule")
    experiments.stop_watcher(watcher)
    assert [r["rule"] for r in experiments.audit(run="dies", event="incident classified")] == ["DEAD", "COMPLETE"]


def test_the_published_schema_tells_an_editor_what_an_override_and_a_whole_copy_may_say():
    schema = json.loads(shipped_text("rules.schema.json"))
    jsonschema.validate(yaml.safe_load(OVERRIDE), schema)
    jsonschema.validate(yaml.safe_load(full_copy(shipped_rules_text())), schema)
    for bad in ("rules:\n  - {name: STALE, priorty: 3}\n", "replace: true\nrules:\n  - {name: TRACEBACK, actions: [halt]}\n"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(yaml.safe_load(bad), schema)


def test_rules_test_replays_a_log_through_the_shipped_rules_under_an_override(tmp_path, capsys):
    path = write(tmp_path, "rules:\n  - {name: RATE_LIMIT, enabled: false}\n")
    capsys.readouterr()
    assert cli(["rules", "test", str(path), str(LOGS / "crash_rate_limit.log")]) == 0
    assert "18 lines, 1 matches: TRACEBACK x1" in capsys.readouterr().out.splitlines()


def test_a_fix_in_a_new_release_of_the_shipped_rules_reaches_a_user_who_only_overrides(tmp_path):
    user = read_file(write(tmp_path, OVERRIDE))
    release = shipped_rules_text().replace("capture_lines: 60", "capture_lines: 80").replace(
        "rules:\n", "rules:\n  - {name: NEW_IN_RELEASE, when: {log: {pattern: 'x'}}, actions: [kill]}\n", 1)
    before = parse_override(user, shipped_rules_text(), PROFILES)
    after = parse_override(user, release, PROFILES)
    assert before.by_name("TRACEBACK").log_atoms[0].capture_lines == 60
    assert after.by_name("TRACEBACK").log_atoms[0].capture_lines == 80  # the shipped `when` the user did not override
    assert [a.name for a in after.by_name("TRACEBACK").actions] == ["halt"]  # the user's patch still holds
    assert after.rules[0].name == "NEW_IN_RELEASE" and after.digest != before.digest
