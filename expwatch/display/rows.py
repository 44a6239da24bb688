"""One line per run, as ``expwatch status`` and the demo print it."""

from __future__ import annotations

from expwatch.display.table import age
from expwatch.layout import ExperimentsLayout
from expwatch.rules.loader import RulesError, load_rules
from expwatch.runstate import RunReport
from expwatch.settings import load_settings


def stale_after_s(layout: ExperimentsLayout) -> float:
    """The rules in force decide when a silent run is STALE (``RuleSet.stale_after_s``), the watcher's own test."""
    settings = load_settings(layout)
    fallback = settings.watch.stale_fallback_s
    try:
        return load_rules(layout.rules_path, set(settings.profiles)).stale_after_s(fallback)
    except RulesError:
        return fallback


def format_row(report: RunReport) -> str:
    d = report.to_json()
    done = f"{d['done']}/{d['expected'] if d['expected'] is not None else '?'}"
    acc = f"{d['accuracy']:.3f}" if d["accuracy"] is not None else "-"
    reasons = ",".join(f"{k}:{v}" for k, v in sorted(d["null_reasons"].items()))
    nulls = f"{d['null_count']}" + (f" ({reasons})" if reasons else "")
    alive = d["slurm_state"] or {True: "alive", False: "gone", None: "?"}[d["alive"]]
    where = f"j{d['job_id']}" if d["job_id"] else str(d["pid"] or "-")
    return f"{d['name']:<20} {d['state']:<9} {done:>9} {acc:>6} {nulls:<22} {age(d['log_age_s']):>6} {where:>7} {alive:<5} {d['restarts']:>3}" + (f" {d['node']}" if d["node"] else "")


HEADER = f"{'NAME':<20} {'STATE':<9} {'DONE':>9} {'ACC':>6} {'NULLS':<22} {'LOG':>6} {'PID':>7} {'PROC':<5} {'RST':>3}"
