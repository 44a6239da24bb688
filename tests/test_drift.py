"""`expwatch drift`: layered configs compared on the fields that decide the cache key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expwatch.cli import main
from expwatch.results.drift import ConfigSide, Override, compare_fields


@pytest.fixture
def layers(tmp_path) -> dict[str, Path]:
    files = {
        "defaults.yaml": "model:\n  backend: vllm\npipeline:\n  fps: 1\n  resize_mode: pad\n"
                         "  clip_delta_high: 0.5\n  clip_delta_low: 0.1\nmode:\n  summary_prompt_variant: v1\n",
        "bench.yaml": "pipeline:\n  fps: 2\n",
        "old.yaml": "model:\n  name: qwen\n",
        "new.yaml": "model:\n  name: qwen\npipeline:\n  clip_delta_low: 0.2\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return {name.split(".")[0]: tmp_path / name for name in files}


def test_changed_nested_field_in_layered_configs_is_drift(layers, capsys):
    base = f"{layers['defaults']}+{layers['bench']}+{layers['old']}"
    current = f"{layers['defaults']}+{layers['bench']}+{layers['new']}"
    assert main(["drift", base, current]) == 1
    assert capsys.readouterr().out.splitlines() == ["pipeline.clip_delta_low: 0.1 -> 0.2"]


def test_shared_layers_and_set_overrides(layers, capsys):
    shared = ["--layer", str(layers["defaults"]), "--layer", str(layers["bench"])]
    assert main(["drift", *shared, str(layers["old"]), str(layers["old"])]) == 0
    assert capsys.readouterr().out.strip() == "no drift in 6 fields"

    assert main(["drift", *shared, str(layers["old"]), str(layers["old"]),
                 "--set", "pipeline.fps=4", "--set", "mode.summary_prompt_variant=v2"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "pipeline.fps: 2 -> 4",
        "mode.summary_prompt_variant: v1 -> v2",
    ]

    # An override can also bring the current side back in line with the baseline.
    assert main(["drift", *shared, str(layers["old"]), str(layers["new"]), "--set", "pipeline.clip_delta_low=0.1"]) == 0
    assert main(["drift", *shared, str(layers["old"]), str(layers["new"]),
                 "--baseline-set", "pipeline.clip_delta_low=0.2"]) == 0


def test_missing_field_on_one_side_is_drift(layers, capsys):
    assert main(["drift", str(layers["defaults"]), str(layers["bench"]), "--fields", "pipeline.fps,model.backend"]) == 1
    assert capsys.readouterr().out.splitlines() == ["pipeline.fps: 1 -> 2", "model.backend: vllm -> <missing>"]


def test_result_files_stand_for_their_config(layers, tmp_path, capsys):
    result = tmp_path / "out.json"
    result.write_text(json.dumps({"config": {"model": {"backend": "openai"}}, "per_item": []}))
    assert main(["drift", str(result), str(layers["defaults"]), "--fields", "model.backend"]) == 1
    assert capsys.readouterr().out.strip() == "model.backend: openai -> vllm"


def test_show_merged_prints_both_effective_configs(layers, capsys):
    assert main(["drift", f"{layers['defaults']}+{layers['bench']}", str(layers["defaults"]),
                 "--set", "model.backend=sglang", "--show-merged"]) == 1
    out = capsys.readouterr().out
    assert f"# baseline: {layers['defaults']} + {layers['bench']}" in out
    assert f"# current: {layers['defaults']} + --set model.backend=sglang" in out
    assert "  backend: sglang" in out and "  fps: 2" in out
    assert out.rstrip().endswith("model.backend: vllm -> sglang\npipeline.fps: 2 -> 1")


def test_unreadable_inputs_exit_2_naming_the_file(layers, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline:\n  fps: [1\n")
    assert main(["drift", str(layers["defaults"]), str(bad)]) == 2
    assert f"{bad}:3: not valid YAML" in capsys.readouterr().err
    assert main(["drift", str(layers["defaults"]), str(tmp_path / "absent.yaml")]) == 2
    assert main(["drift", str(layers["defaults"]), str(layers["defaults"]), "--set", "no-equals-sign"]) == 2


def test_flags_are_not_numbers():
    side = ConfigSide(files=(), overrides=(Override.parse("a.on=true"),))
    assert [str(d) for d in compare_fields({"a": {"on": 1}}, side.merged(), ("a.on",))] == ["a.on: 1 -> true"]
