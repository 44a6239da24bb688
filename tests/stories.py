"""A run's incidents as the live watcher's audit trail tells them, and as `expwatch rules test --json` prints them.

Both stories have the same shape (winner, candidates, guard decision, cause,
plan), so a test compares them with ``==``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from expwatch.cli import main as cli


def watcher_story(experiments, name: str) -> list[dict]:
    story = []
    for r in experiments.audit(run=name):
        if r["event"] == "incident classified":
            story.append({"rule": r["rule"], "decision": r["decision"], "candidates": r["candidates"], "cause": r.get("cause"), "plan": []})
        elif r["event"] == "action planned":
            story[-1]["plan"].append({"name": r["action"], "arg": r.get("arg")})
    return story


def rules_test_story(rules: Path, log: Path, *exit_args: str) -> list[dict]:
    """`expwatch rules test RULES LOG [--exit N | --signal N] --json`, run in this process (it starts in milliseconds)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["rules", "test", str(rules), str(log), *exit_args, "--json"]) == 0
    return [{"rule": i["rule"], "decision": i["decision"], "candidates": i["candidates"], "cause": i["cause"], "plan": i["plan"]}
            for i in json.loads(out.getvalue())["incidents"]]
