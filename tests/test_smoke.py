"""The smoke run: the real command on a few items, blocking a launch that would waste hours."""

from __future__ import annotations

import sys

from expwatch.results.progress import read_result
from expwatch.results.smoke import run_smoke, smoke_options_for, with_flag
from expwatch.results.config import load_validation_settings


def fake_eval(*extra: str) -> list[str]:
    return [sys.executable, "-m", "expwatch.demo.fake_eval", "--items", "10", "--output", "results/real.json",
            "--delay", "0.01", *extra]


def test_smoke_of_a_healthy_eval_passes_on_n_items(tmp_path):
    report = run_smoke(fake_eval(), cwd=tmp_path, n=2, workdir=tmp_path / "smoke")
    assert report.ok, report.reasons
    assert report.reasons == []
    assert report.result_path == tmp_path / "smoke" / "real.json"
    assert [item.id for item in read_result(report.result_path).items] == ["item-0000", "item-0001"]
    assert "Limit reached" in report.log_text
    assert not (tmp_path / "results" / "real.json").exists()  # the real output is untouched


def test_smoke_with_null_responses_blocks_and_names_them(tmp_path):
    report = run_smoke(fake_eval("--null-rate", "1.0", "--limit", "7"), cwd=tmp_path, n=2, workdir=tmp_path)
    assert not report.ok
    assert report.reasons == ["2 of 2 items have a null response (content_policy 2): item-0000, item-0001"]
    assert report.argv.count("--limit") == 1 and report.argv[report.argv.index("--limit") + 1] == "2"


def test_smoke_blocks_on_leaked_backward_items_and_failed_exits(tmp_path):
    leaky = run_smoke(fake_eval("--task-types", "EPM", "--leak-rate", "1.0"), cwd=tmp_path, n=2, workdir=tmp_path)
    assert not leaky.ok
    assert leaky.reasons == ["2 backward items lack a max_time matching realtime: item-0000, item-0001"]
    dead = run_smoke(fake_eval("--fault", "die:always@0"), cwd=tmp_path, n=2, workdir=tmp_path / "dead")
    assert (dead.ok, dead.reasons[0].split(" (")[0]) == (False, "exit status 3")


def test_smoke_that_hangs_is_stopped_at_the_timeout(tmp_path):
    report = run_smoke(fake_eval("--fault", "hang@0"), cwd=tmp_path, n=2, timeout_s=1, workdir=tmp_path)
    assert (report.ok, report.reasons) == (False, ["did not finish within 1s on 2 items"])


def test_flags_are_replaced_in_either_spelling_or_appended():
    replaced = with_flag(["eval.py", "--output", "a.json", "--x"], "--output", "b.json")
    assert replaced == ["eval.py", "--output", "b.json", "--x"]
    assert with_flag(["eval.py", "--output=a.json"], "--output", "b.json") == ["eval.py", "--output=b.json"]
    assert with_flag(["eval.py"], "--limit", "2") == ["eval.py", "--limit", "2"]


def test_per_script_flags_come_from_settings(tmp_path):
    override = tmp_path / "validation.yaml"
    override.write_text("smoke:\n  scripts:\n    eval_backward.py:\n      limit_flag: --max-items\n")
    settings = load_validation_settings(override)
    options = smoke_options_for(["python", "scripts/eval_backward.py", "--output", "o.json"], settings)
    assert (options.limit_flag, options.output_flag, options.n) == ("--max-items", "--output", 2)
    assert smoke_options_for(["python", "-m", "expwatch.demo.fake_eval"], settings).limit_flag == "--limit"
