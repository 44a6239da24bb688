"""Load a rules file: YAML → JSON Schema → semantic checks → typed RuleSet.

Validation lives here and only here. Every error is one line that names the
file, the line and the field, because the person reading it has just saved
an edit in their editor and wants to jump there.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from expwatch.bounded_yaml import YamlRefused, parse_yaml
from expwatch.files import NotReadyYet, read_text
from expwatch.layout import HOME_NAME
from expwatch.trust import check_trusted
from expwatch.rules.model import ActionSpec, Condition, Counter, LogAtom, NullRateAtom, RatioAtom, Rule, RuleSet
from expwatch.settings import shipped_text

ACTION_NAMES = ("kill", "wait", "set_env", "switch_profile", "scale_workers", "restart", "free_gpu", "halt", "alert", "exec", "complete")


class RulesError(Exception):
    """An invalid rules file. ``str()`` is the one-line message."""

    def __init__(self, source: str, line: int | None, message: str):
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(shipped_text("rules.schema.json"))


def shipped_rules_text() -> str:
    return shipped_text("rules.yaml")


def _node_at(node: yaml.Node, path: list[Any]) -> yaml.Node:
    """The YAML node at a JSON path, as deep as it exists (for line numbers)."""
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                match = next((k for k, _ in node.value if k.value == key), None)
                return match or node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node
    return node


def _line(root: yaml.Node | None, path: list[Any]) -> int | None:
    return _node_at(root, path).start_mark.line + 1 if root is not None else None


def _rule_label(data: Any, path: list[Any]) -> str:
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        try:
            return f"rule '{data['rules'][path[1]]['name']}': "
        except (KeyError, IndexError, TypeError):
            return f"rules[{path[1]}]: "
    return ""


def _field(path: list[Any]) -> str:
    tail = [str(p) for p in path[2:]] if path[:1] == ["rules"] else [str(p) for p in path]
    return ".".join(tail) or "top level"


def _schema_message(err: jsonschema.ValidationError, data: Any) -> tuple[list[Any], str]:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        if extra:
            known = list(err.schema.get("properties", {}))
            hint = difflib.get_close_matches(extra[0], known, n=1)
            path = path + [extra[0]]
            suffix = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})"
            label = "unknown action" if set(known) >= {"wait", "restart"} else "unknown field"
            return path, f"{_rule_label(data, path)}{label} '{extra[0]}'{suffix}"
    if err.validator == "oneOf" and isinstance(err.instance, str) and path[-2:-1] == ["actions"] or (
        err.validator == "oneOf" and len(path) >= 3 and path[2] == "actions" and isinstance(err.instance, str)
    ):
        hint = difflib.get_close_matches(err.instance, ACTION_NAMES, n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
        if err.instance in ACTION_NAMES:
            return path, f"{_rule_label(data, path)}action '{err.instance}' needs a value (write '{err.instance}: ...')"
        return path, f"{_rule_label(data, path)}unknown action '{err.instance}'{suffix}"
    best = jsonschema.exceptions.best_match([err])
    return path, f"{_rule_label(data, path)}field '{_field(path)}': {best.message}"


def _compile_regex(pattern: str, where: str, source: str, line: int | None) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RulesError(source, line, f"{where}: invalid regex {pattern!r} ({exc})") from None
    return pattern


class _Builder:
    """Turns one validated rule mapping into typed conditions and actions."""

    def __init__(self, source: str, root: yaml.Node | None, index: int, keys: Counter, known_profiles: set[str] | None):
        self.source, self.root, self.index, self.keys, self.known_profiles = source, root, index, keys, known_profiles

    def line(self, *path: Any) -> int | None:
        return _line(self.root, ["rules", self.index, *path])

    def condition(self, data: dict[str, Any], path: list[Any], name: str) -> Condition:
        parts = [self.atom(key, value, path + [key], name) for key, value in data.items()]
        return parts[0] if len(parts) == 1 else Condition("all", tuple(parts))

    def atom(self, key: str, value: Any, path: list[Any], name: str) -> Condition:
        where = f"rule '{name}': field '{'.'.join(map(str, path))}'"
        line = self.line(*path)
        if key in ("all", "any"):
            return Condition(key, tuple(self.condition(c, path + [i], name) for i, c in enumerate(value)))
        if key == "log":
            patterns = tuple(value.get("any_of") or [value["pattern"]])
            for p in patterns:
                _compile_regex(p, where, self.source, line)
            window = value.get("window_s")
            min_count = int(value.get("min_count", 1))
            if min_count > 1 and window is None:
                raise RulesError(self.source, line, f"{where}: min_count > 1 needs window_s")
            atom = LogAtom(self.keys.next("log"), patterns, min_count, window, int(value.get("capture_lines", 0)))
            return Condition("log", atom=atom)
        if key == "null_rate":
            atom = NullRateAtom(
                self.keys.next("nulls"),
                float(value["above"]),
                int(value.get("min_items", 1)),
                tuple(value.get("exclude_reasons", ())),
                tuple(value.get("only_reasons", ())),
            )
            return Condition("null_rate", atom=atom)
        if key == "ratio":
            for p in [value["numerator"], *value["denominator"]]:
                _compile_regex(p, where, self.source, line)
            atom = RatioAtom(
                self.keys.next("ratio"),
                value["numerator"],
                tuple(value["denominator"]),
                float(value["below"]),
                float(value.get("after_s", 0)),
                int(value.get("min_count", 1)),
            )
            return Condition("ratio", atom=atom)
        if key == "process_dead":
            # A job cancelled outside expwatch (scancel by hand) is a person's decision, not a death to fight.
            return Condition("all", (
                Condition("compare", fact="alive", cmp="eq", value=0),
                Condition("compare", fact="complete", cmp="eq", value=0),
                Condition("compare", fact="job_cancelled", cmp="eq", value=0),
            ))
        if key == "job_state":
            states = tuple(Condition("compare", fact="job_state", cmp="eq", value=str(v)) for v in value)
            return states[0] if len(states) == 1 else Condition("any", states)
        if key in ("alive", "complete", "oom_killed"):
            return Condition("compare", fact=key, cmp="eq", value=int(bool(value)))
        if key == "exit_signal":
            return Condition("compare", fact="exit_signal", cmp="eq", value=int(value))
        if key == "log_silent_s":
            return Condition("all", (Condition("compare", fact="alive", cmp="eq", value=1), Condition("compare", fact="silent_s", cmp="gte", value=float(value))))
        if key == "probe_failing_s":
            return Condition("compare", fact="probe_failing_s", cmp="gte", value=float(value))
        raise RulesError(self.source, line, f"{where}: unknown condition")

    def actions(self, items: list[Any], name: str) -> tuple[ActionSpec, ...]:
        specs = []
        for i, item in enumerate(items):
            line = self.line("actions", i) or 0
            if isinstance(item, str):
                spec = ActionSpec(item, None, line)
            else:
                (action, arg), = item.items()
                spec = ActionSpec(action, arg, line)
            if spec.name == "switch_profile" and self.known_profiles is not None and spec.arg not in self.known_profiles:
                hint = difflib.get_close_matches(str(spec.arg), sorted(self.known_profiles), n=1)
                suffix = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(sorted(self.known_profiles))})"
                raise RulesError(self.source, line, f"rule '{name}': unknown profile '{spec.arg}'{suffix}")
            specs.append(spec)
        return tuple(specs)


def parse_rules(text: str, source: str, known_profiles: set[str] | None = None) -> RuleSet:
    try:
        document = parse_yaml(text, source)
    except YamlRefused as exc:
        raise RulesError(source, exc.line, exc.message) from None
    root, data = document.root, document.data
    if data is None:
        raise RulesError(source, None, "the file is empty")
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)), reverse=True)
    if errors:
        path, message = _schema_message(errors[0], data)
        raise RulesError(source, _line(root, path), message)
    keys = Counter()
    rules, seen = [], {}
    for index, raw in enumerate(data["rules"]):
        name = raw["name"]
        if name in seen:
            raise RulesError(source, _line(root, ["rules", index, "name"]), f"rule '{name}': duplicate name (first at line {seen[name]})")
        seen[name] = _line(root, ["rules", index, "name"])
        builder = _Builder(source, root, index, keys, known_profiles)
        rules.append(
            Rule(
                name=name,
                when=builder.condition(raw["when"], ["when"], name),
                actions=builder.actions(raw["actions"], name),
                severity=raw.get("severity", "warning"),
                priority=int(raw.get("priority", 50)),
                enabled=bool(raw.get("enabled", True)),
                description=str(raw.get("description", "")).strip(),
                same_rule_limit=raw.get("same_rule_limit"),
                guarded=bool(raw.get("guarded", True)),
                line=seen[name] or 0,
            )
        )
    return RuleSet(tuple(rules), source, hashlib.sha256(text.encode()).hexdigest()[:12])


WAIT_ACTION = re.compile(r"(\bwait:\s*)(\d+(?:\.\d+)?)")
SILENCE = re.compile(r"(\blog_silent_s:\s*)(\d+(?:\.\d+)?)")


def shipped_rules_quickened(max_wait_s: float, silent_s: float | None = None) -> str:
    """The shipped rules with every ``wait`` capped (and ``log_silent_s`` replaced), nothing else changed.

    The demo, the tests and the benchmarks run the very rules users get, only
    on a second scale. The result is parsed, so a shipped file this rewrite
    misses fails loudly instead of waiting for minutes.
    """
    text = WAIT_ACTION.sub(lambda m: f"{m.group(1)}{min(float(m.group(2)), max_wait_s):g}", shipped_rules_text())
    if silent_s is not None:
        text = SILENCE.sub(lambda m: f"{m.group(1)}{silent_s:g}", text)
    ruleset = parse_rules(text, "configs/rules.yaml (quickened)")
    slow = [f"{r.name}: wait {a.arg}" for r in ruleset.rules for a in r.actions if a.name == "wait" and float(a.arg) > max_wait_s]
    if slow:
        raise RulesError("configs/rules.yaml", None, f"waits not shortened: {', '.join(slow)}")
    return text


def load_rules(path: Path | None, known_profiles: set[str] | None = None) -> RuleSet:
    """The user's rules file, or the shipped defaults when ``path`` is None or absent."""
    if path is None or not Path(path).exists():
        return parse_rules(shipped_rules_text(), "configs/rules.yaml (shipped)", known_profiles)
    try:
        text = read_text(Path(path), lambda p, info: check_trusted(p, info, Path(path).parent / HOME_NAME))
    except UnicodeDecodeError as exc:
        raise RulesError(str(path), None, f"not UTF-8 text ({exc.reason})") from None
    except NotReadyYet as exc:
        raise RulesError(str(path), None, exc.reason) from None
    return parse_rules(text, str(path), known_profiles)
