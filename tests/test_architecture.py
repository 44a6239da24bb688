"""The layout keeps its promises: data flows sources → rules → actions, and each name has one list."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from expwatch.actions.registry import ACTIONS
from expwatch.catalog import ACTION_KINDS, ACTION_NAMES, AUDIT_EVENTS
from expwatch.settings import shipped_text

ROOT = Path(__file__).resolve().parents[1]
# Stage folder → packages it must never import: no stage reaches into a later one, and the
# stages talk through core types only (the watcher may be read by rules for its event types).
FORBIDDEN = {
    "watcher": ("expwatch.rules", "expwatch.actions", "expwatch.engine", "expwatch.commands", "expwatch.runners"),
    "rules": ("expwatch.actions", "expwatch.engine", "expwatch.commands", "expwatch.runners"),
    "actions": ("expwatch.engine", "expwatch.commands", "expwatch.watcher", "expwatch.rules"),
}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_no_stage_imports_a_later_one(stage):
    wrong = {
        f"{path.name}: {name}"
        for path in (ROOT / stage).glob("*.py")
        for name in imports_of(path)
        if name.startswith(FORBIDDEN[stage])
    }
    assert not wrong


def test_commands_do_not_import_other_commands():
    wrong = {f"{p.name}: {n}" for p in (ROOT / "expwatch" / "commands").glob("*.py") for n in imports_of(p) if n.startswith("expwatch.commands")}
    assert not wrong


def test_no_module_is_over_about_four_hundred_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for folder in ("expwatch", "watcher", "rules", "actions") for p in (ROOT / folder).rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 420} == {}


def test_the_schema_the_catalogue_and_the_registry_name_the_same_actions():
    action = json.loads(shipped_text("rules.schema.json"))["$defs"]["action"]["oneOf"]
    bare, with_arg = set(action[0]["enum"]), set(action[1]["properties"])
    assert bare | with_arg == set(ACTION_NAMES) == set(ACTIONS)
    assert bare == {k.name for k in ACTION_KINDS if k.arg != "required"}


def test_every_audit_event_the_code_writes_is_in_the_catalogue():
    written = set()
    for folder in ("expwatch", "watcher", "rules", "actions"):
        for path in (ROOT / folder).rglob("*.py"):
            written.update(re.findall(r'(?:record|_audit|_record)\(\s*"([a-z][a-z :]*)"', path.read_text()))
    assert written and written <= set(AUDIT_EVENTS), written - set(AUDIT_EVENTS)


def test_no_bench_module_shares_a_name_with_a_test_module():
    """Both folders go on sys.path (tests import bench/): a shared name imports whichever came first."""
    root = Path(__file__).resolve().parent.parent
    bench = {p.stem for p in (root / "bench").glob("*.py")}
    tests = {p.stem for p in (root / "tests").glob("*.py")}
    assert bench & tests == set()
