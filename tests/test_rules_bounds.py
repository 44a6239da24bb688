"""Rules files the engine cannot run are refused by `rules check`, with file:line, in bounded time."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import wait_for
from expwatch.cli import main as cli

EXEC_WITHOUT_ARGV = """\
version: 1
rules:
  - name: RUN_MY_SCRIPT
    when: {log: {pattern: 'boom'}}
    actions:
      - exec: {message: 'no command given'}
"""


def check(path, capsys) -> tuple[int, str]:
    code = cli(["rules", "check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_exec_without_argv_is_refused_by_rules_check_with_its_line(tmp_path, capsys):
    path = tmp_path / "expwatch.rules.yaml"
    path.write_text(EXEC_WITHOUT_ARGV)
    code, out = check(path, capsys)
    assert code == 2
    assert f"{path}:6:" in out and "argv" in out


def alias_bomb(rule: bool = True) -> str:
    """The classic "billion laughs": nine levels of nine aliases, ~400 bytes, 9**9 strings once expanded.

    Placed in a field the schema walks (a rule's description), as an attacker would.
    """
    levels = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"&{name} [{','.join(['*' + prev] * 9)}]")
    bomb = "[" + ", ".join(levels) + "]"
    if not rule:
        return f"watch: {{settle_s: {bomb}}}\n"
    return f"version: 1\nrules:\n  - name: B\n    description: {bomb}\n    when: {{log: {{pattern: x}}}}\n    actions: [kill]\n"


def test_a_yaml_alias_bomb_is_refused_by_rules_check_within_a_second_naming_its_line(tmp_path, capsys):
    path = tmp_path / "expwatch.rules.yaml"
    path.write_text(alias_bomb())
    started = time.monotonic()
    code, out = check(path, capsys)
    assert time.monotonic() - started < 1.0
    assert code == 2 and f"{path}:" in out and "aliases" in out


def test_a_yaml_alias_bomb_in_the_settings_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "expwatch.yaml").write_text(alias_bomb(rule=False))
    started = time.monotonic()
    code = cli(["status", str(tmp_path)])
    err = capsys.readouterr().err
    assert time.monotonic() - started < 2.0
    assert code == 2 and "expwatch.yaml:" in err and "aliases" in err and "Traceback" not in err


def test_deeply_nested_yaml_is_refused_without_a_recursion_error(tmp_path, capsys):
    path = tmp_path / "expwatch.rules.yaml"
    path.write_text("version: 1\nrules: " + "[" * 50000 + "]" * 50000 + "\n")
    code, out = check(path, capsys)
    assert code == 2 and f"{path}:2:" in out and "nested deeper" in out


def test_an_alias_bomb_saved_under_a_running_watcher_is_refused_and_other_runs_are_still_served(experiments):
    watcher = experiments.start_watcher()
    rules = experiments.root / "expwatch.rules.yaml"
    rules.write_text(alias_bomb())
    wait_for(lambda: experiments.audit(event="rules reload refused"), timeout=10, what="reload refused")
    experiments.launch("after", items=6)
    wait_for(lambda: experiments.manifest("after").completed_at, what="a run launched after the bomb to complete")
    started = time.monotonic()
    experiments.stop_watcher(watcher)
    assert time.monotonic() - started < 10 and watcher.returncode == 0


def test_one_invalid_save_of_the_rules_file_is_refused_once(experiments):
    watcher = experiments.start_watcher()
    (experiments.root / "expwatch.rules.yaml").write_text("version: 1\nrules:\n  - name: X\n    when: {nope: 1}\n    actions: [kill]\n")
    wait_for(lambda: experiments.audit(event="rules reload refused"), what="reload refused")
    time.sleep(2.5)  # past two safety polls and every event of the save
    assert len(experiments.audit(event="rules reload refused")) == 1
    experiments.stop_watcher(watcher)


def test_a_second_watcher_refuses_without_claiming_to_watch(experiments):
    first = experiments.start_watcher()
    second = subprocess.run([sys.executable, "-m", "expwatch", "watch", str(experiments.root)], capture_output=True, text=True, timeout=30)
    assert second.returncode == 3
    assert "already watching" in second.stderr and "watching" not in second.stdout
    experiments.stop_watcher(first)


@pytest.mark.parametrize("escape", ["\\U100010000", "\\U80001000"])
def test_an_escape_past_the_last_unicode_character_is_a_one_line_error_naming_its_line(tmp_path, capsys, escape):
    # Found by the fuzz tests: PyYAML's scanner calls chr() on the escape's number unchecked, which raises
    # ValueError past U+10FFFF and OverflowError past a C int (the second, by the rules fuzz test on a clean clone).
    (tmp_path / "expwatch.yaml").write_text(f'adopt:\n  "x":\n    "y": "{escape}"\n')
    code = cli(["status", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "expwatch.yaml:3:" in err and "not valid YAML" in err and "Traceback" not in err


def test_the_same_escape_in_a_noise_criteria_file_is_refused_naming_the_file(tmp_path):
    from expwatch.results.noise import NoiseError, read_noise_floor

    path = tmp_path / "criteria.yaml"
    path.write_text('noise_floor: "\\U100010000"\n')
    try:
        read_noise_floor(path)
    except NoiseError as exc:
        assert str(exc).startswith(f"{path}: not valid YAML")
    else:
        raise AssertionError("an escape past U+10FFFF was read")
