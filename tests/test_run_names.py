"""Run names are file names under .expwatch/runs/: none may pass for another file there."""

from __future__ import annotations

import sys

import pytest

from expwatch.cli import main as cli
from expwatch.manifest import discover


def launch(experiments, name: str, capsys) -> tuple[int, str]:
    code = cli(["launch", "--name", name, "--log", str(experiments.root / "x.log"), "--dir", str(experiments.root), "--",
                sys.executable, "-c", "import time; time.sleep(30)"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", ["foo.exit", "foo.EXIT", "foo.json", ".hidden", "a/b", "..", "x" * 101, "foo.exit.json"])
def test_a_name_that_could_pass_for_another_file_of_the_runs_folder_is_refused_with_a_one_line_error(experiments, capsys, name):
    code, err = launch(experiments, name, capsys)
    assert code == 2
    assert err.startswith("expwatch launch: run name") and err.count("\n") == 1
    assert not experiments.layout.runs_dir.exists() or not list(experiments.layout.runs_dir.iterdir())


def test_launching_over_a_live_run_of_the_same_name_refuses_and_keeps_its_manifest(experiments, capsys):
    assert launch(experiments, "foo", capsys)[0] == 0
    first = experiments.manifest("foo")
    code, err = launch(experiments, "foo", capsys)
    assert code == 2 and "already running" in err
    assert experiments.manifest("foo") == first
    assert [m.name for m in discover(experiments.layout)] == ["foo"]


def test_launching_over_an_unreadable_manifest_refuses_instead_of_overwriting_it(experiments, capsys):
    experiments.layout.runs_dir.mkdir(parents=True)
    path = experiments.layout.manifest_path("foo")
    path.write_text('{"name": "foo", "argv": "not a list"}')
    code, err = launch(experiments, "foo", capsys)
    assert code == 2 and "cannot be read" in err and str(path) in err
    assert path.read_text() == '{"name": "foo", "argv": "not a list"}'
