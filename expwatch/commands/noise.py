"""expwatch noise records a noise floor; expwatch verdict judges a candidate against it.

  expwatch noise BASELINE.json RERUN.json --out criteria.yaml
  expwatch verdict BASELINE.json CANDIDATE.json --criteria criteria.yaml

Accuracy is macro over task types, in points. The verdict reads the floor
from the criteria file and never re-derives it: |delta| <= floor is noise.
Exit codes: 0 done, 2 an input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from expwatch.files import NotReadyYet
from expwatch.results.noise import NoiseError, derive_criteria, judge_candidate, task_mismatch, write_criteria
from expwatch.results.config import ValidationSettingsError, load_validation_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    noise = subparsers.add_parser(
        "noise",
        help="measure run-to-run variance of two identical baselines and write a noise floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    noise.add_argument("baseline", type=Path, metavar="BASELINE.json")
    noise.add_argument("rerun", type=Path, metavar="RERUN.json", help="the same config, run again")
    noise.add_argument("--out", type=Path, required=True, metavar="criteria.yaml")
    noise.add_argument("--settings", type=Path, metavar="FILE", help="overrides for configs/validation.yaml")
    noise.set_defaults(func=run_noise)

    verdict = subparsers.add_parser(
        "verdict",
        help="noise, gain or regression: a candidate against a baseline and a recorded noise floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verdict.add_argument("baseline", type=Path, metavar="BASELINE.json")
    verdict.add_argument("candidate", type=Path, metavar="CANDIDATE.json")
    verdict.add_argument("--criteria", type=Path, required=True, metavar="criteria.yaml")
    verdict.set_defaults(func=run_verdict)


def run_noise(args: argparse.Namespace) -> int:
    try:
        rule = load_validation_settings(args.settings).noise
        criteria = derive_criteria(args.baseline, args.rerun, rule)
        write_criteria(args.out, criteria)
    except (NoiseError, NotReadyYet, ValidationSettingsError) as exc:
        return _unreadable("noise", str(exc))
    except OSError as exc:
        return _unreadable("noise", f"{exc.filename}: cannot read or write ({exc.strerror or exc})")
    _warn_mismatch(task_mismatch(criteria.baseline, criteria.rerun))
    print(f"baseline  {criteria.baseline.points:6.2f}  {criteria.baseline.path}")
    print(f"rerun     {criteria.rerun.points:6.2f}  {criteria.rerun.path}")
    print(f"observed delta {criteria.observed_delta:+.2f} points")
    print(f"noise floor {criteria.noise_floor:.2f} points: {criteria.derivation}")
    print(f"wrote {args.out}")
    return 0


def run_verdict(args: argparse.Namespace) -> int:
    try:
        verdict = judge_candidate(args.baseline, args.candidate, args.criteria)
    except (NoiseError, NotReadyYet) as exc:
        return _unreadable("verdict", str(exc))
    except OSError as exc:
        return _unreadable("verdict", f"{exc.filename}: cannot read ({exc.strerror or exc})")
    _warn_mismatch(task_mismatch(verdict.baseline, verdict.candidate))
    print(f"baseline  {verdict.baseline.points:6.2f}  {verdict.baseline.path}")
    print(f"candidate {verdict.candidate.points:6.2f}  {verdict.candidate.path}")
    print(f"delta macro accuracy {verdict.delta:+.2f} points, noise floor {verdict.noise_floor:.2f} ({args.criteria})")
    print(f"verdict: {verdict.verdict}")
    return 0


def _warn_mismatch(message: str | None) -> None:
    if message:
        print(f"warning: {message}", file=sys.stderr)


def _unreadable(command: str, reason: str) -> int:
    print(f"expwatch {command}: {reason}", file=sys.stderr)
    return 2
