"""Hypothesis strategies for the fuzz suite: hostile and clumsy versions of every file expwatch reads.

Each kind starts from a document expwatch itself would write, then breaks it
the ways people and crashing programs do: fields of the wrong type, fields
missing or unknown, values from any JSON, text with control characters,
torn writes, binary garbage, NaN and huge numbers.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import strategies as st

# Text as a log or a hand edit holds it: any code point, control characters (C0, C1, bidi) favoured.
hostile_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8", exclude_categories=["Cs"]), st.sampled_from("\x00\x1b\x9b\x9d\x85\u202e\n\r\t'\":{}[]&*!|>")),
    max_size=40,
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), hostile_text,
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4), max_leaves=12,
)


def mutated(base: dict[str, Any], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some of ``keys`` dropped and some set to any JSON value (and the odd unknown key)."""
    return st.builds(
        lambda drop, over, extra: {**{k: v for k, v in base.items() if k not in drop}, **over, **extra},
        st.sets(st.sampled_from(keys), max_size=3),
        st.dictionaries(st.sampled_from(keys), json_values, max_size=4),
        st.dictionaries(hostile_text, json_values, max_size=2),
    )


@st.composite
def broken_bytes(draw: st.DrawFn, document: st.SearchStrategy[Any]) -> bytes:
    """A JSON document as bytes, then maybe torn, spliced with garbage, or replaced by a known-hostile blob."""
    raw = json.dumps(draw(document)).encode()
    how = draw(st.sampled_from(["whole", "torn", "garbage", "binary", "nested"]))
    if how == "torn":
        return raw[: draw(st.integers(0, len(raw)))]
    if how == "garbage":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(max_size=20)) + raw[at:]
    if how == "binary":
        return draw(st.binary(max_size=200))
    if how == "nested":
        depth = draw(st.integers(1, 400))  # within what json and yaml parse; deeper is harden1's bound
        return b"[" * depth + raw + b"]" * depth
    return raw


MANIFEST = {
    "name": "victim", "argv": ["python", "eval.py", "--workers", "4"], "cwd": "/tmp", "log": "/tmp/victim.log",
    "env_overrides": {"SEED": "1"}, "env_unset": [], "result": None, "checkpoint": None, "expected": 10,
    "pid": None, "create_time": None, "pgid": None, "sid": None, "launched_at": "2026-01-01T00:00:00+00:00",
    "restarts": 0, "profile": None, "runner": "local", "job_id": None, "sbatch_args": [], "adopted": False,
    "halted": None, "stopped_at": None, "completed_at": None,
}
manifests = mutated(MANIFEST, list(MANIFEST))

ITEM = {"id": "q1", "response": "A", "answer": "A", "correct": True, "task_type": "EPM", "null_reason": None,
        "max_time": 10.0, "realtime": 10.0}
items = mutated(ITEM, list(ITEM))
results = st.builds(
    lambda per_item, completed, config, as_dict: {
        "per_item": {str(i): it for i, it in enumerate(per_item)} if as_dict else per_item,
        "completed_ids": completed, "config": config,
    },
    st.lists(items, max_size=6), st.one_of(st.lists(json_scalars, max_size=4), json_values), json_values, st.booleans(),
) | mutated({"per_item": [ITEM], "completed_ids": ["q1"]}, ["per_item", "completed_ids", "config"])

RULE = {"name": "FUZZ", "severity": "warning", "priority": 50, "when": {"log": {"pattern": "boom", "min_count": 1}},
        "actions": ["kill", {"wait": 1}, "restart"]}
rule_conditions = st.one_of(
    st.fixed_dictionaries({"log": st.fixed_dictionaries({"pattern": hostile_text},
                                                         optional={"min_count": json_values, "window_s": json_values, "capture_lines": json_values})}),
    st.fixed_dictionaries({"ratio": st.fixed_dictionaries({"numerator": hostile_text, "denominator": st.lists(hostile_text, max_size=3), "below": json_values})}),
    st.fixed_dictionaries({"null_rate": st.fixed_dictionaries({"above": json_values}, optional={"min_items": json_values})}),
    st.dictionaries(st.sampled_from(["process_dead", "alive", "complete", "log_silent_s", "oom_killed", "exit_signal", "probe_failing_s", "all", "any"]),
                    json_values, min_size=1, max_size=2),
)
rule_actions = st.lists(st.one_of(
    st.sampled_from(["kill", "restart", "halt", "alert", "complete", "free_gpu", "restrat"]),
    st.dictionaries(st.sampled_from(["wait", "set_env", "switch_profile", "scale_workers", "halt", "alert", "exec", "kill"]), json_values, min_size=1, max_size=1),
), max_size=4)
rules_docs = st.builds(
    lambda rules, version: {"version": version, "rules": rules},
    st.lists(st.one_of(mutated(RULE, list(RULE)),
                       st.builds(lambda base, when, actions: {**base, "when": when, "actions": actions}, mutated(RULE, ["severity", "priority", "name"]), rule_conditions, rule_actions)),
             max_size=3),
    st.one_of(st.just(1), json_values),
)


@st.composite
def yaml_texts(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> str:
    """A document as YAML a person might have saved: dumped, then maybe cut short or with a stray edit."""
    text = yaml.safe_dump(draw(documents), allow_unicode=draw(st.booleans()), sort_keys=False)
    how = draw(st.sampled_from(["whole", "whole", "torn", "edit"]))
    if how == "torn":
        return text[: draw(st.integers(0, len(text)))]
    if how == "edit":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(hostile_text) + text[at:]
    return text


SETTINGS_KEYS = {
    "watch": ["settle_s", "safety_poll_s", "poll_step_s", "observer", "polling_interval_s", "stale_fallback_s", "position_save_s", "status_cache_after_s"],
    "tail": ["max_line_bytes"], "guard": ["same_rule_limit", "restart_budget", "restart_window_s"], "kill": ["grace_s"],
    "launch": ["check_after_s", "volatile_path_markers"], "audit": ["max_bytes", "backups", "progress_every_s"],
    "workers": ["flag", "backends"], "profiles": ["default", "trapi"], "notify": ["argv", "on_halt", "rules", "timeout_s"],
    "profile": [], "adopt": ["ignore_env"],
}
settings_docs = st.dictionaries(
    st.sampled_from(sorted(SETTINGS_KEYS)),
    st.one_of(json_values, st.deferred(lambda: st.dictionaries(st.sampled_from(sorted({k for ks in SETTINGS_KEYS.values() for k in ks})), json_values, max_size=3))),
    max_size=3,
)

AUDIT_RECORD = {"ts": "2026-01-01T00:00:00+00:00", "event": "rule matched", "run": "victim", "rule": "RATE_LIMIT",
                "incident": "i-1", "action": "restart", "outcome": "restarted", "line": "HTTP/1.1 429", "offset": 10}
audit_records = mutated(AUDIT_RECORD, list(AUDIT_RECORD)) | st.builds(
    lambda event, rec: {**rec, "event": event}, st.sampled_from([
        "watcher started", "watcher stopped", "rule matched", "incident classified", "action started", "action finished",
        "action failed", "incident closed", "process exited", "run discovered", "notify sent", "progress", "rules reloaded"]),
    mutated(AUDIT_RECORD, list(AUDIT_RECORD)),
)
audit_lines = st.lists(st.one_of(st.builds(lambda r: json.dumps(r).encode(), audit_records), broken_bytes(audit_records)), max_size=6)

log_bytes = st.lists(st.one_of(
    st.binary(max_size=80),
    st.builds(lambda t: t.encode("utf-8", "surrogatepass"), hostile_text),
    st.sampled_from([b"Traceback (most recent call last):\n", b"HTTP/1.1 429 Too Many Requests\n", b"CUDA out of memory\n",
                     b"\r\n", b"\n" * 3, b"a" * 34 + b"b\n", b"\xff\xfe\x00", b"x" * 5000]),
), max_size=10)
