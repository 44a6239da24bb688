"""What must hold after a chaos scenario, checked from what expwatch left behind.

Only the artefacts a user has are used: the audit trail (every line parsed
strictly), the run manifests, the result files, the logs and the diagnosis
bundles. Each check returns human-readable violations, empty when it holds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest

# The rule that an every-run fault of each kind is classified as.
RULE_OF_FAULT = {
    "rate_limit": "RATE_LIMIT", "traceback": "TRACEBACK", "oom": "OOM", "proxy": "PROXY_DOWN",
    "forbidden": "PROXY_DOWN", "hang": "STALE", "die": "DEAD", "sigkill": "DEAD", "null": None,
}
INFORMATIONAL = {"COMPLETE", "HIGH_NULL"}


@dataclass(frozen=True)
class RunPlan:
    name: str
    items: int
    faults: tuple[str, ...]  # --fault specs, e.g. ("rate_limit@3", "traceback:always@9")
    resumed: bool = False  # halted by its bug, which is then fixed, and resumed by hand: it must complete
    stopped: bool = False  # stopped by hand while it ran: it must stay stopped, and nothing else is done to it

    @property
    def healthy(self) -> bool:
        return not self.faults

    @property
    def bug(self) -> str | None:
        """The rule of this run's every-run fault, if it has one (then it must end HALTED)."""
        for spec in self.faults:
            kind, _, rest = spec.partition(":")
            if rest.startswith("always"):
                return RULE_OF_FAULT[kind]
        return None


@dataclass
class Evidence:
    """Everything a scenario left behind, loaded once."""

    layout: ExperimentsLayout
    records: list[dict[str, Any]]
    torn: list[str]
    manifests: dict[str, RunManifest]
    items: dict[str, list[str]]
    logs: dict[str, str]
    by_incident: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in self.records:
            if record.get("incident"):
                grouped[record["incident"]].append(record)
        self.by_incident = dict(grouped)

    def run_records(self, run: str, event: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("run") == run and (event is None or r.get("event") == event)]


def parse_audit(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every line of the audit file as a record; lines that are not one whole JSON object are 'torn'."""
    records, torn = [], []
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        torn.append(f"file ends inside a line: {data[-120:]!r}")
    for raw in data.split(b"\n"):
        if not raw:
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            torn.append(raw.decode("utf-8", "replace")[:200])
            continue
        if not isinstance(record, dict) or "ts" not in record or "event" not in record:
            torn.append(raw.decode("utf-8", "replace")[:200])
            continue
        records.append(record)
    return records, torn


def check_audit_file(ev: Evidence) -> list[str]:
    out = [f"torn audit line: {line}" for line in ev.torn]
    previous = ""
    for i, record in enumerate(ev.records):
        if record["ts"] < previous:
            out.append(f"audit record {i} ({record['event']}) is older than the one before it ({record['ts']} < {previous})")
        previous = max(previous, record["ts"])
    return out


def check_run_outcome(plan: RunPlan, ev: Evidence) -> list[str]:
    m = ev.manifests.get(plan.name)
    if m is None:
        return [f"{plan.name}: manifest missing"]
    out = []
    classified = ev.run_records(plan.name, "incident classified")
    if plan.stopped:
        return check_stopped(plan, ev, m)
    if plan.bug:
        if m.halted is None and not plan.resumed:
            out.append(f"{plan.name}: every-run {plan.bug} fault but the run is not HALTED (completed_at={m.completed_at})")
        # One decision per incident: a watcher killed between storing a decision and announcing it
        # announces it again on resume (marked resumed), under the same incident id.
        mine: dict[str, dict[str, Any]] = {}
        for r in classified:
            if r["rule"] == plan.bug:
                mine.setdefault(r["incident"], r)
        decisions = [r.get("decision") for r in mine.values()]
        if decisions != ["act", "halt"]:
            out.append(f"{plan.name}: {plan.bug} incidents decided {decisions}, expected exactly ['act', 'halt']")
        halt = next((r["incident"] for r in mine.values() if r.get("decision") == "halt"), None)
        if halt:
            bundle = ev.layout.run_files_dir(plan.name) / f"diagnosis-{halt}.md"
            if not bundle.exists():
                out.append(f"{plan.name}: halted by {halt} but {bundle.name} is missing")
            elif plan.bug == "TRACEBACK" and "KeyError: 'choices'" not in bundle.read_text():
                out.append(f"{plan.name}: diagnosis bundle lacks the traceback")
        occurrences = ev.logs.get(plan.name, "").count("KeyError: 'choices'") if plan.bug == "TRACEBACK" else None
        if occurrences is not None and occurrences != 2:
            out.append(f"{plan.name}: the code bug ran {occurrences} times, expected exactly 2")
        if not plan.resumed:
            return out
        resumes = [r.get("decision") for r in classified if r["rule"] == "MANUAL_RESUME"]
        if resumes != ["act"]:
            out.append(f"{plan.name}: resumed by hand once, MANUAL_RESUME decided {resumes}")
    if m.halted is not None or not m.completed_at:
        out.append(f"{plan.name}: recoverable faults {list(plan.faults)} but the run ended "
                   f"{'HALTED (' + m.halted.reason + ')' if m.halted else 'unfinished'}")
    expected = [f"item-{i:04d}" for i in range(plan.items)]
    got = ev.items.get(plan.name, [])
    if sorted(got) != expected:
        dupes = sorted({i for i in got if got.count(i) > 1})
        missing = sorted(set(expected) - set(got))
        out.append(f"{plan.name}: items not present exactly once (duplicates {dupes}, missing {missing})")
    if plan.healthy:
        acted = [r["action"] for r in ev.run_records(plan.name, "action started") if r.get("action") != "complete"]
        if acted:
            out.append(f"{plan.name}: healthy run was acted on: {acted}; classified {[r['rule'] for r in classified]}")
    return out


def check_stopped(plan: RunPlan, ev: Evidence, m: RunManifest) -> list[str]:
    """Stopped by hand: it stays stopped, its only incident is the stop, and no item was done twice."""
    out = []
    if not m.stopped_at or m.halted is not None or m.completed_at:
        out.append(f"{plan.name}: stopped by hand but stopped_at={m.stopped_at}, halted={m.halted}, completed_at={m.completed_at}")
    decided = [(r["rule"], r.get("decision")) for r in ev.run_records(plan.name, "incident classified")]
    if decided != [("MANUAL_STOP", "act")]:
        out.append(f"{plan.name}: stopped by hand once, but decided {decided} (expected only MANUAL_STOP act)")
    got = ev.items.get(plan.name, [])
    if len(got) != len(set(got)):
        out.append(f"{plan.name}: items done twice: {sorted({i for i in got if got.count(i) > 1})}")
    return out


def check_incidents(ev: Evidence) -> list[str]:
    """Every planned step of every incident ran to its end exactly once; re-runs are resumptions."""
    out = []
    sessions = [i for i, r in enumerate(ev.records) if r["event"] == "watcher started"]
    index = {id(r): i for i, r in enumerate(ev.records)}

    def session_of(record: dict[str, Any]) -> int:
        pos = index[id(record)]
        return sum(1 for s in sessions if s <= pos)

    for inc, records in ev.by_incident.items():
        events = [r["event"] for r in records]
        if "incident classified" not in events:
            continue  # matched while the watcher was killed in its settle window; its lines are matched again
        run = records[0].get("run")
        planned = {r["step"]: r["action"] for r in records if r["event"] == "action planned"}
        started: dict[int, list[dict[str, Any]]] = defaultdict(list)
        finished: dict[int, list[dict[str, Any]]] = defaultdict(list)
        failed = [r for r in records if r["event"] == "action failed"]
        for r in records:
            if r["event"] == "action started" and "step" in r:
                started[r["step"]].append(r)
            elif r["event"] == "action finished" and "step" in r:
                finished[r["step"]].append(r)
        closed = [r for r in records if r["event"] == "incident closed"]
        label = f"{run}: incident {inc} ({records[0].get('rule')})"
        if not closed and not started and superseded(ev, records[-1], index, sessions):
            continue  # killed before it was stored: the next watcher matched its lines again and handled them
        if not closed:
            out.append(f"{label}: never closed (its actions were lost); last record {records[-1]['event']}")
        # A watcher killed between recording the close and storing it records it again on resume.
        if len([r for r in closed if not r.get("resumed")]) > 1 or (len(closed) > 1 and not all(
                session_of(later) > session_of(earlier) for earlier, later in zip(closed, closed[1:]))):
            out.append(f"{label}: closed {len(closed)} times")
        last_step = min([r["step"] for r in failed if "step" in r], default=None)
        for step, action in sorted(planned.items()):
            if last_step is not None and step > last_step:
                continue
            if len(finished[step]) > max(1, len(started[step])):
                out.append(f"{label}: step {step} ({action}) finished {len(finished[step])} times, started {len(started[step])}")
            if not finished[step] and step != last_step and closed:
                out.append(f"{label}: step {step} ({action}) never finished but the incident closed")
            starts = started[step]
            for earlier, later in zip(starts, starts[1:]):
                if not later.get("resumed"):
                    out.append(f"{label}: step {step} ({action}) started again without being a resumption")
                elif session_of(later) == session_of(earlier):
                    out.append(f"{label}: step {step} ({action}) resumed within one watcher session")
        order = [r["event"] for r in records if r["event"] != "rule matched"]
        if order and order[0] not in ("incident classified",):
            out.append(f"{label}: story starts with {order[0]!r}, not 'incident classified'")
        for step in planned:
            if finished[step] and started[step] and index[id(finished[step][0])] < index[id(started[step][0])]:
                out.append(f"{label}: step {step} finished before it started")
            if step + 1 in planned and started[step + 1] and finished[step]:
                if index[id(started[step + 1][0])] < index[id(finished[step][-1])]:
                    out.append(f"{label}: step {step + 1} started before step {step} finished")
        if closed and any(index[id(r)] > index[id(closed[0])] for r in records if r["event"].startswith("action")):
            out.append(f"{label}: action records after 'incident closed'")
    return out


def superseded(ev: Evidence, last: dict[str, Any], index: dict[int, int], sessions: list[int]) -> bool:
    """A decided incident that never acted counts as handled if a watcher restarted right after and decided anew."""
    pos = index[id(last)]
    later_sessions = [s for s in sessions if s > pos]
    if not later_sessions:
        return False
    return any(
        r["event"] == "incident classified" and r.get("run") == last.get("run")
        for r in ev.records[later_sessions[0]:]
    )


DOUBLE_LAUNCH = "double launch"


def check_restarts(plan: RunPlan, ev: Evidence) -> list[str]:
    """Each restart the audit records started the eval once, and the manifest counts exactly those."""
    m = ev.manifests.get(plan.name)
    if m is None:
        return []
    # One restart per incident step: a step re-run after a watcher kill that finds its relaunch
    # already recorded says "recovered", and its first "action finished" may have died with the watcher.
    by_step = {
        (r.get("incident"), r.get("step")): r for r in ev.run_records(plan.name, "action finished")
        if r.get("action") == "restart" and r.get("outcome") == "restarted"
    }
    finished = list(by_step.values())
    out = []
    if len(finished) != m.restarts:
        out.append(f"{plan.name}: manifest says {m.restarts} restarts, the audit records {len(finished)} (a manifest update was lost)")
    starts = ev.logs.get(plan.name, "").count("INFO eval: Starting evaluation")
    if starts != 1 + len(finished):
        rerun = [r["incident"] for r in finished if r.get("step") is not None and any(
            s.get("resumed") for s in ev.by_incident[r["incident"]]
            if s["event"] == "action started" and s.get("step") == r["step"])]
        why = (f"{DOUBLE_LAUNCH}: the restart of {', '.join(rerun)} was re-run after a watcher kill and launched again"
               if starts > 1 + len(finished) and rerun else "a restart was lost or ran twice")
        out.append(f"{plan.name}: the eval started {starts} times for {len(finished)} recorded restarts ({why})")
    return out


def check_all(plans: list[RunPlan], ev: Evidence) -> list[str]:
    out = check_audit_file(ev) + check_incidents(ev)
    for plan in plans:
        out += check_run_outcome(plan, ev) + check_restarts(plan, ev)
    return out
