"""expwatch validate: is a finished result safe to report?

Exit codes: 0 nothing wrong, 1 issues found, 2 an input cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from expwatch.files import NotReadyYet
from expwatch.results.fields import FieldMapError, parse_field_options
from expwatch.results.validation import ValidationReport, id_list, validate_result
from expwatch.results.config import ValidationSettingsError, load_validation_settings
from expwatch.standard_json import standard_json
from expwatch.terminal import terminal_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a result: nulls, answer bias, backward-task leaks, duplicates, completeness",
        description=__doc__,
        epilog="example:\n  expwatch validate experiments/gpt4o.json --log experiments/gpt4o.log --expected 1000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("result", type=Path, metavar="RESULT.json")
    parser.add_argument("--log", type=Path, metavar="LOG", help="the run's log, for warning/error counts")
    parser.add_argument("--expected", type=int, metavar="N", help="number of items the run should have")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.add_argument("--settings", type=Path, metavar="FILE", help="overrides for configs/validation.yaml")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=FIELD",
                        help="read NAME (id, response, gold, correct, task_type, null_reason, max_time, realtime)"
                        " from FIELD of each item, e.g. response=pred; NAME= means absent (repeatable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_validation_settings(args.settings)
        report = validate_result(args.result, log_path=args.log, expected=args.expected, settings=settings,
                                 field_overrides=parse_field_options(args.field))
    except (ValidationSettingsError, FieldMapError, NotReadyYet) as exc:
        return _unreadable(str(exc))
    except OSError as exc:
        return _unreadable(f"{exc.filename or args.result}: cannot read ({exc.strerror or exc})")
    if args.json:
        print(json.dumps(standard_json(report.to_json()), indent=2, default=str, allow_nan=False))
    else:
        print(terminal_text(render_report(report), keep_newlines=True))
    return 0 if report.ok else 1


def render_report(report: ValidationReport) -> str:
    verdict = "OK" if report.ok else f"{len(report.issues)} issue{'s' * (len(report.issues) != 1)}"
    lines = [f"{report.result_path}: {report.items} items, {verdict}"]
    fmap = report.field_map
    lines.append(f"  fields      response={fmap.response} gold={fmap.gold} correct={fmap.correct} task={fmap.task_type}")
    valid_n = report.items - report.null_count
    accuracy = f"raw {report.raw_acc:.1%} ({report.correct}/{report.items})"
    if report.valid_acc is not None:
        accuracy += f", valid {report.valid_acc:.1%} (of {valid_n}), gap {report.acc_gap_points:+.1f} points"
    lines.append(f"  accuracy    {accuracy}")
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(report.null_reasons.items()))
    lines.append(f"  nulls       {report.null_count} ({report.null_rate:.1%})" + (f": {reasons}" if reasons else ""))
    if report.answer_bias:
        bias = report.answer_bias
        lines.append(f"  top answer  {bias.answer!r} is {bias.share:.1%} of {bias.valid} valid responses")
    for label, ids in (("leaks", report.leaked_ids), ("duplicates", report.duplicate_ids)):
        lines.append(f"  {label:<11} {len(ids)}" + (f": {id_list(ids)}" if ids else ""))
    if report.expected is not None:
        lines.append(f"  complete    {report.done} of {report.expected} expected")
    if report.per_task:
        width = max(len(task) for task in report.per_task)
        lines.append(f"  per task    {'':<{width}}  valid items        all items")
        for task, t in report.per_task.items():
            lines.append(f"    {task:<{width}}  {t.correct:>5}/{t.n_valid:<5} {t.acc_valid:6.1%}"
                         f"   {t.correct:>5}/{t.n:<5} {t.acc_raw:6.1%}")
    if report.log_path:
        counts = ", ".join(f"{name} {n}" for name, n in report.log_counts.items())
        lines.append(f"  log         {counts}")
    lines.extend(f"  ! {issue}" for issue in report.issues)
    return "\n".join(lines)


def _unreadable(reason: str) -> int:
    print(terminal_text(f"expwatch validate: {reason}"), file=sys.stderr)
    return 2
