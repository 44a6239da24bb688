"""A reduced chaos suite (bench/chaos.py): random faults, watcher SIGKILLs, every invariant checked.

A failure names its seed; replay it with ``python bench/chaos.py --seed SEED --scenarios 1 --runs 5``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import chaos  # noqa: E402
from invariants import RunPlan  # noqa: E402

SEEDS = [7, 8, 9]


def test_scenario_plans_are_reproducible_from_their_seed_and_cover_every_kind_of_run():
    assert chaos.plan_scenario(7, 5, 3) == chaos.plan_scenario(7, 5, 3)
    plans = [run for seed in range(40) for run in chaos.plan_scenario(seed, 5, 3).runs]
    assert any(p.healthy for p in plans) and any(p.bug == "TRACEBACK" for p in plans) and any(p.bug == "DEAD" for p in plans)
    kinds = {spec.split("@")[0].split(":")[0] for p in plans for spec in p.faults}
    assert kinds == set(chaos.ONCE)
    assert RunPlan("x", 20, ("rate_limit@2", "traceback:always@8")).bug == "TRACEBACK"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_faults_and_watcher_kills_break_no_invariant(tmp_path, seed):
    report = chaos.run_scenario(chaos.plan_scenario(seed, runs=5, max_kills=3), tmp_path, timeout=60)
    assert report.kills >= 1
    assert report.violations == []
    assert set(report.outcomes.values()) <= {"COMPLETE", "HALTED"}
