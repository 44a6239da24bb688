"""Rules files the engine cannot run are refused by `rules check`, with file:line, in bounded time."""

from __future__ import annotations

import time

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
