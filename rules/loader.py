"""Load a rules file: YAML → JSON Schema → semantic checks → typed RuleSet.

Validation lives here and only here. Every error is one line that names the
file, the line and the field, because the person reading it has just saved
an edit in their editor and wants to jump there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from expwatch.catalog import ACTION_NAMES
from expwatch.rules.document import RulesDocument, RulesError, line_at, read_document, read_file
from expwatch.rules.model import CRASH_FIELDS, ActionSpec, Condition, Counter, CrashAtom, FieldOrigin, LogAtom, NullRateAtom, RatioAtom, Rule, RuleSet
from expwatch.rules.patterns import PatternError, compile_pattern
from expwatch.rules.overrides import RuleEntry, entries_of, merge
from expwatch.schema_errors import did_you_mean, unknown_key
from expwatch.settings import shipped_text

SHIPPED = "configs/rules.yaml"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(shipped_text("rules.schema.json"))


@lru_cache(maxsize=None)
def _validator(definition: str) -> jsonschema.Draft202012Validator:
    """A validator for one shape of the published schema: ``full_file`` or ``override_file``."""
    return jsonschema.Draft202012Validator({"$defs": schema()["$defs"], "$ref": f"#/$defs/{definition}"})


def shipped_rules_text() -> str:
    return shipped_text("rules.yaml")


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
    if refused := unknown_key(err):
        noun = "action" if set(refused.known) >= {"wait", "restart"} else "field"
        return refused.path, f"{_rule_label(data, refused.path)}{refused.message(noun)}"
    path = list(err.absolute_path)
    if err.validator == "oneOf" and isinstance(err.instance, str) and path[-2:-1] == ["actions"] or (
        err.validator == "oneOf" and len(path) >= 3 and path[2] == "actions" and isinstance(err.instance, str)
    ):
        if err.instance in ACTION_NAMES:
            return path, f"{_rule_label(data, path)}action '{err.instance}' needs a value (write '{err.instance}: ...')"
        return path, f"{_rule_label(data, path)}unknown action '{err.instance}'{did_you_mean(err.instance, ACTION_NAMES)}"
    if err.validator == "required" and path[:1] == ["rules"] and len(path) == 2:
        missing = next(k for k in err.validator_value if k not in err.instance)
        whole = "" if missing == "name" else " (a file with 'replace: true' defines every rule whole)"
        return path, f"{_rule_label(data, path)}missing field '{missing}'{whole}"
    best = jsonschema.exceptions.best_match([err])
    return path, f"{_rule_label(data, path)}field '{_field(path)}': {best.message}"


def _compile_regex(pattern: str, where: str, source: str, line: int | None) -> str:
    """The one check of a user pattern: the engine's own compiler (rules/patterns.py) must accept it."""
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        raise RulesError(source, line, f"{where}: invalid regex {pattern!r} ({exc})") from None
    return pattern


class _Builder:
    """Turns one validated rule mapping into typed conditions and actions."""

    def __init__(self, source: str, root: yaml.Node | None, index: int, keys: Counter, known_profiles: set[str] | None):
        self.source, self.root, self.index, self.keys, self.known_profiles = source, root, index, keys, known_profiles

    def line(self, *path: Any) -> int | None:
        return line_at(self.root, ["rules", self.index, *path])

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
        if key in CRASH_FIELDS:
            return Condition("crash", atom=self.crash_atom(key, value, where, line))
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
        if key in ("alive", "complete", "oom_killed", "oom_likely"):
            return Condition("compare", fact=key, cmp="eq", value=int(bool(value)))
        if key == "exit_signal":
            return Condition("compare", fact="exit_signal", cmp="eq", value=int(value))
        if key == "log_silent_s":
            return Condition("all", (Condition("compare", fact="alive", cmp="eq", value=1), Condition("compare", fact="silent_s", cmp="gte", value=float(value))))
        if key == "probe_failing_s":
            return Condition("compare", fact="probe_failing_s", cmp="gte", value=float(value))
        raise RulesError(self.source, line, f"{where}: unknown condition")

    def crash_atom(self, key: str, value: Any, where: str, line: int | None) -> CrashAtom:
        if key == "message":
            _compile_regex(value, where, self.source, line)
            return CrashAtom(self.keys.next("crash"), key, (value,))
        if key == "status":
            return CrashAtom(self.keys.next("crash"), key, tuple(int(v) for v in value))
        return CrashAtom(self.keys.next("crash"), key, tuple(str(v) for v in value))

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
                raise RulesError(self.source, line, f"rule '{name}': unknown profile '{spec.arg}'{did_you_mean(spec.arg, sorted(self.known_profiles))}")
            specs.append(spec)
        return tuple(specs)


def _validate(document: RulesDocument, definition: str) -> None:
    errors = sorted(_validator(definition).iter_errors(document.data), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)), reverse=True)
    if errors:
        path, message = _schema_message(errors[0], document.data)
        raise RulesError(document.source, line_at(document.root, path), message)


def _build(entries: list[RuleEntry], known_profiles: set[str] | None) -> tuple[tuple[Rule, ...], tuple[FieldOrigin, ...]]:
    """Typed rules from merged entries; each field is checked against the file it came from."""
    keys = Counter()
    rules, origins = [], []
    for entry in entries:
        raw, name = entry.fields, entry.name

        def builder(field: str) -> _Builder:
            src = entry.sources[field]
            return _Builder(src.document.source, src.document.root, src.index, keys, known_profiles)

        rules.append(
            Rule(
                name=name,
                when=builder("when").condition(raw["when"], ["when"], name),
                actions=builder("actions").actions(raw["actions"], name),
                severity=raw.get("severity", "warning"),
                priority=int(raw.get("priority", 50)),
                enabled=bool(raw.get("enabled", True)),
                description=str(raw.get("description", "")).strip(),
                same_rule_limit=raw.get("same_rule_limit"),
                guarded=bool(raw.get("guarded", True)),
                line=entry.sources["name"].line("name"),
            )
        )
        origins.extend(entry.origins())
    return tuple(rules), tuple(origins)


def _digest(*texts: str) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:12]


def parse_rules(text: str, source: str, known_profiles: set[str] | None = None) -> RuleSet:
    """A complete rules file: the shipped one, or a user's with ``replace: true``."""
    document = read_document(text, source)
    _validate(document, "full_file")
    rules, origins = _build(entries_of(document), known_profiles)
    return RuleSet(rules, source, _digest(text), origins)


def parse_override(user: RulesDocument, release_text: str, known_profiles: set[str] | None = None) -> RuleSet:
    """The shipped rules (``release_text``, a release's configs/rules.yaml) patched and extended by a user's override."""
    _validate(user, "override_file")
    shipped = read_document(release_text, SHIPPED)
    _validate(shipped, "full_file")
    rules, origins = _build(merge(shipped, user), known_profiles)
    return RuleSet(rules, f"{user.source} over {SHIPPED}", _digest(shipped.text, user.text), origins)


WAIT_ACTION = re.compile(r"(\bwait:\s*)(\d+(?:\.\d+)?)")
SILENCE = re.compile(r"(\blog_silent_s:\s*)(\d+(?:\.\d+)?)")


def full_copy(text: str) -> str:
    """A complete rules text marked ``replace: true``, so a user's copy of it is the whole rule set."""
    return "replace: true  # the whole rule set: the shipped rules (and their fixes) are not read\n" + text


def shipped_rules_quickened(max_wait_s: float, silent_s: float | None = None) -> str:
    """A full copy of the shipped rules with every ``wait`` capped (and ``log_silent_s`` replaced), nothing else changed.

    The demo, the tests and the benchmarks run the very rules users get, only
    on a second scale; tests edit this text, so it is a whole copy
    (``replace: true``), not an override. The result is parsed, so a shipped
    file this rewrite misses fails loudly instead of waiting for minutes.
    """
    text = WAIT_ACTION.sub(lambda m: f"{m.group(1)}{min(float(m.group(2)), max_wait_s):g}", full_copy(shipped_rules_text()))
    if silent_s is not None:
        text = SILENCE.sub(lambda m: f"{m.group(1)}{silent_s:g}", text)
    ruleset = parse_rules(text, "configs/rules.yaml (quickened)")
    slow = [f"{r.name}: wait {a.arg}" for r in ruleset.rules for a in r.actions if a.name == "wait" and float(a.arg) > max_wait_s]
    if slow:
        raise RulesError("configs/rules.yaml", None, f"waits not shortened: {', '.join(slow)}")
    return text


def load_rules(path: Path | None, known_profiles: set[str] | None = None) -> RuleSet:
    """The rules in force: the shipped ones, patched by the user's file at ``path`` when it exists.

    A user's file that says ``replace: true`` is the whole rule set instead.
    """
    if path is None or not Path(path).exists():
        return dataclasses.replace(parse_rules(shipped_rules_text(), SHIPPED, known_profiles), source=f"{SHIPPED} (shipped)")
    user = read_file(Path(path))
    if isinstance(user.data, dict) and user.data.get("replace") is True:
        return parse_rules(user.text, user.source, known_profiles)
    return parse_override(user, shipped_rules_text(), known_profiles)
