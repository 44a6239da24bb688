"""``expwatch pipeline PLAN.yaml``: run a serial ablation phase by phase, with verdict gates.

Exit codes: 0 every phase passed, 1 the pipeline stopped (drift, smoke run,
halt, validation issues or a regression), 2 the plan or settings cannot be
used, 3 another pipeline process drives the same pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from expwatch.files import NotReadyYet
from expwatch.layout import ExperimentsLayout
from expwatch.pipeline.plan import PlanError, load_plan
from expwatch.pipeline.runner import PipelineBusy, PipelineRunner
from expwatch.results.config import ValidationSettingsError, load_validation_settings
from expwatch.settings import SettingsError

EXAMPLE = """example:
  expwatch noise results/e0.json results/e0-rerun.json --out results/criteria.yaml
  expwatch pipeline ablation.yaml --dir experiments --dry-run
  expwatch pipeline ablation.yaml --dir experiments     # rerun the same line to resume
  expwatch pipeline ablation.yaml --dir experiments --retry   # after fixing what stopped it
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="run a serial ablation: phases launched one by one, gated by drift, validation and verdict",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("plan", type=Path, metavar="PLAN.yaml")
    p.add_argument("--dir", default=".", help="experiments directory the phases are launched into (default: .)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    p.add_argument("--retry", action="store_true",
                   help="take a stopped pipeline up again at the phase that stopped it (a launched phase is not relaunched)")
    p.add_argument("--settings", type=Path, metavar="FILE", help="overrides for configs/validation.yaml")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.plan)
        settings = load_validation_settings(args.settings)
    except (PlanError, ValidationSettingsError) as exc:
        print(f"expwatch pipeline: {exc}", file=sys.stderr)
        return 2
    runner = PipelineRunner(plan, ExperimentsLayout.at(args.dir), settings, say=lambda text: print(text, flush=True))
    if args.dry_run:
        print("\n".join(runner.dry_run()))
        return 0
    try:
        return runner.run(retry=args.retry)
    except PipelineBusy as exc:
        print(f"expwatch pipeline: {exc}", file=sys.stderr)
        return 3
    except (NotReadyYet, SettingsError) as exc:  # e.g. a state file that no longer parses: shown, never overwritten
        print(f"expwatch pipeline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"expwatch pipeline: interrupted; rerun the same command to resume {plan.name}", file=sys.stderr)
        return 130
