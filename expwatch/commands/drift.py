"""expwatch drift: compare the cache-key fields of two (layered) configs.

Each side is a config (YAML/JSON) or a result file (its "config" is used);
join several with "+" to layer them, lowest first:

  expwatch drift defaults.yaml+bench.yaml+old.yaml defaults.yaml+bench.yaml+new.yaml
  expwatch drift --layer defaults.yaml --layer bench.yaml old.yaml new.yaml --set pipeline.fps=2
  expwatch drift results/base.json results/cand.json

Order on each side: --layer files, the side's own files, then its overrides
(--set for CURRENT, --baseline-set for BASELINE). Values are parsed as YAML.

Exit codes: 0 no drift, 1 drift, 2 an input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from expwatch.results.drift import ConfigError, ConfigSide, Override, compare_fields, split_layers
from expwatch.results.config import ValidationSettingsError, load_validation_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "drift",
        help="compare the cache-key fields of two configs (layered, with overrides)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("baseline", metavar="BASELINE", help="FILE[+FILE...]")
    parser.add_argument("current", metavar="CURRENT", help="FILE[+FILE...]")
    parser.add_argument("--layer", type=Path, action="append", default=[], metavar="FILE",
                        help="a layer under both sides (repeatable, lowest first)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=V",
                        help="override on CURRENT, applied last (repeatable)")
    parser.add_argument("--baseline-set", dest="baseline_overrides", action="append", default=[], metavar="A.B=V",
                        help="override on BASELINE, applied last (repeatable)")
    parser.add_argument("--fields", metavar="A.B,C.D", help="fields to compare (default: drift.fields in configs)")
    parser.add_argument("--show-merged", action="store_true", help="print both merged configs first")
    parser.add_argument("--settings", type=Path, metavar="FILE", help="overrides for configs/validation.yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fields = _fields(args)
        baseline = _side(args.layer, args.baseline, args.baseline_overrides)
        current = _side(args.layer, args.current, args.overrides)
        merged_baseline, merged_current = baseline.merged(), current.merged()
    except (ConfigError, ValidationSettingsError) as exc:
        print(f"expwatch drift: {exc}", file=sys.stderr)
        return 2
    if args.show_merged:
        for name, side, merged in (("baseline", baseline, merged_baseline), ("current", current, merged_current)):
            print(f"# {name}: {side.label}")
            print(yaml.safe_dump(merged, sort_keys=True, default_flow_style=False).rstrip())
        print("# drift")
    drifts = compare_fields(merged_baseline, merged_current, fields)
    for drift in drifts:
        print(drift)
    if not drifts:
        print(f"no drift in {len(fields)} fields")
    return 1 if drifts else 0


def _fields(args: argparse.Namespace) -> tuple[str, ...]:
    if args.fields is None:
        return load_validation_settings(args.settings).drift_fields
    fields = tuple(field.strip() for field in args.fields.split(",") if field.strip())
    if not fields:
        raise ConfigError(f"--fields {args.fields!r}: no field names")
    return fields


def _side(layers: list[Path], spec: str, overrides: list[str]) -> ConfigSide:
    return ConfigSide(
        files=tuple(layers) + split_layers(spec),
        overrides=tuple(Override.parse(text) for text in overrides),
    )
