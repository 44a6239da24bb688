"""The shell around the commands: --version, --help with an example everywhere, completion, exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from expwatch import __version__
from expwatch.cli import COMMANDS, build_parser, main as cli
from expwatch.commands.completion import command_tree

EXPWATCH = [sys.executable, "-m", "expwatch"]
ZSH = shutil.which("zsh")


def command_paths() -> list[tuple[str, ...]]:
    return [cmd.path for cmd in command_tree(build_parser()).walk() if cmd.path]


def test_version_names_the_program_and_its_version():
    done = subprocess.run([*EXPWATCH, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"expwatch {__version__}"


def test_the_command_table_names_exactly_what_each_module_registers():
    # A command runs with only its own module imported (cli.COMMANDS); the table must not drift from the tree.
    whole = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert set(COMMANDS) == whole
    for name in COMMANDS:
        alone = build_parser(name)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert name in alone, name


def test_a_command_imports_only_its_own_module():
    probe = ("import sys; from expwatch.cli import main; main(['status', sys.argv[1]]); "
             "print(sorted(m for m in sys.modules if m.startswith('expwatch.commands.')))")
    done = subprocess.run([sys.executable, "-c", probe, str(Path(__file__).parent)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['expwatch.commands.status']"


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help_with_an_example(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli([*path, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: expwatch {' '.join(path)}")
    examples = [line.strip() for line in text.splitlines() if line.startswith("  expwatch ")]
    assert any(e.startswith(f"expwatch {path[0]}") for e in examples), f"no example in:\n{text}"


def completion(shell: str) -> str:
    done = subprocess.run([*EXPWATCH, "completion", shell], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash_completion_registers_and_completes_commands_subcommands_options_and_choices(tmp_path):
    script = tmp_path / "expwatch.bash"
    script.write_text(completion("bash"))
    probe = f"""
source {script}
complete -p expwatch
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=(); _expwatch; echo "${{COMPREPLY[*]}}"; }}
t expwatch re
t expwatch rules ''
t expwatch report --o
t expwatch completion ''
t expwatch launch --name x --expected 5 --d
"""
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("-F _expwatch expwatch")
    assert lines[1:] == ["resume report", "init show check test schema", "--output", "bash zsh", "--dir"]
    # The documented one-liner works as is.
    done = subprocess.run(["bash", "-c", f"source <({' '.join(EXPWATCH)} completion bash); complete -p expwatch"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "_expwatch expwatch" in done.stdout


def test_completion_scripts_know_every_command():
    bash, zsh = completion("bash"), completion("zsh")
    for path in command_paths():
        assert f'"{" ".join(path[:-1])}|{path[-1]}")' in bash
        assert f"{path[-1]}) _expwatch_{'_'.join(path)}" in zsh or f"_expwatch_{'_'.join(path)}()" in zsh


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed (apt-get install -y zsh)")
def test_zsh_completion_is_valid_zsh_and_registers_with_compinit(tmp_path):
    script = tmp_path / "_expwatch"
    script.write_text(completion("zsh"))
    done = subprocess.run([ZSH, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([ZSH, "-f", "-c", f"autoload -U compinit && compinit -u -d {tmp_path}/zcompdump && source {script} && print $_comps[expwatch]"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "_expwatch", done.stderr


def test_documented_exit_codes(tmp_path, capsys):
    assert cli(["watch", str(tmp_path / "missing")]) == 2
    assert cli(["report", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as usage:
        cli(["completion", "fish"])
    assert usage.value.code == 2
    assert cli(["completion", "bash"]) == 0


def test_a_reader_that_leaves_the_pipe_early_ends_the_command_quietly(tmp_path):
    # `expwatch status --json | head -1` on a folder of many runs: head exits after one line.
    from expwatch.layout import ExperimentsLayout
    from expwatch.manifest import RunManifest, save_manifest

    layout = ExperimentsLayout.at(tmp_path)
    for i in range(600):  # 600 rows, about 180 KB: more than a pipe holds
        save_manifest(layout, RunManifest(name=f"run{i:04d}", argv=("python", "eval.py"), cwd=str(tmp_path), log=str(tmp_path / f"run{i:04d}.log")))
    shell = f"{' '.join(EXPWATCH)} status --json {tmp_path} | head -1; echo \"status=${{PIPESTATUS[0]}}\""
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["[", "status=141"] and done.stderr == ""
