"""What happened to each run, gathered from the audit trail, the manifests and the validation reports.

The audit log is the story (incidents, actions, exits, and the throttled
``progress`` records the watcher writes for this report); the manifests say
how each run stands now and the result files give the last progress point.
``expwatch.report.html`` turns a ``Report`` into one self-contained page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from expwatch.audit.reader import iter_records, parse_ts
from expwatch.files import NotReadyYet, read_json
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest, discover
from expwatch.results.progress import read_progress
from expwatch.runstate import RunReport, observe_all

# Actions whose incident is bookkeeping, not trouble: shown as a mark, not in the incident list.
BOOKKEEPING_ACTIONS = frozenset({"complete"})
EVIDENCE_LIMIT = 12


def epoch(record: dict[str, Any]) -> float | None:
    ts = parse_ts(record.get("ts"))
    return ts.timestamp() if ts else None


@dataclass
class IncidentStory:
    id: str
    run: str
    rule: str | None = None
    opened: float | None = None
    matched: list[dict[str, Any]] = field(default_factory=list)
    classified: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # action finished / failed
    closed: dict[str, Any] | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)  # notify sent / failed, resumed

    @property
    def outcome(self) -> str:
        return str(self.closed.get("outcome")) if self.closed else "unfinished"

    @property
    def bookkeeping(self) -> bool:
        return bool(self.steps) and all(s.get("action") in BOOKKEEPING_ACTIONS for s in self.steps)

    @property
    def at(self) -> float | None:
        return epoch(self.classified) if self.classified else self.opened

    def candidates(self) -> list[tuple[str, int]]:
        names = (self.classified or {}).get("candidates") or [m.get("rule") for m in self.matched]
        return Counter(str(n) for n in names if n).most_common()

    def evidence(self) -> list[str]:
        """The matched log lines (each once) and the state facts that made rules fire."""
        lines: list[str] = []
        for match in self.matched:
            if isinstance(match.get("line"), str):
                text = match["line"]
            elif isinstance(match.get("facts"), dict):
                text = f"{match.get('rule')}: " + ", ".join(f"{k}={v}" for k, v in match["facts"].items())
            else:
                continue
            if text not in lines:
                lines.append(text)
        return lines[:EVIDENCE_LIMIT]

    def bundle(self) -> str | None:
        return next((s.get("bundle") for s in self.steps if s.get("bundle")), None)


@dataclass
class RunStory:
    name: str
    manifest: RunManifest | None = None
    status: RunReport | None = None
    progress: list[tuple[float, int, int]] = field(default_factory=list)  # (time, done, restarts)
    records: list[dict[str, Any]] = field(default_factory=list)
    incidents: dict[str, IncidentStory] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    validation_path: str | None = None

    @property
    def state(self) -> str:
        return self.status.state.value if self.status else "UNKNOWN"

    def troubles(self) -> list[IncidentStory]:
        return [i for i in self.incidents.values() if not i.bookkeeping]

    def span(self) -> tuple[float, float] | None:
        times = [t for t in (epoch(r) for r in self.records) if t is not None] + [p[0] for p in self.progress]
        return (min(times), max(times)) if times else None


@dataclass
class Report:
    root: Path
    generated: datetime
    runs: list[RunStory]
    sessions: list[tuple[float, float | None]]  # watcher (started, stopped) pairs
    skipped_lines: int = 0


def _iso_epoch(text: str | None) -> float | None:
    ts = parse_ts(text)
    return ts.timestamp() if ts else None


def _incident(run: RunStory, record: dict[str, Any]) -> IncidentStory | None:
    inc_id = record.get("incident")
    if not inc_id:
        return None
    story = run.incidents.get(inc_id)
    if story is None:
        story = run.incidents[inc_id] = IncidentStory(str(inc_id), run.name, record.get("rule"), epoch(record))
    return story


def _take(run: RunStory, record: dict[str, Any]) -> None:
    event = record.get("event")
    if event == "progress":
        t = epoch(record)
        if t is not None and isinstance(record.get("done"), int):
            run.progress.append((t, record["done"], int(record.get("restarts") or 0)))
        return
    run.records.append(record)
    story = _incident(run, record)
    if story is None:
        return
    if event == "rule matched":
        story.matched.append(record)
    elif event == "incident classified":
        story.classified, story.rule = record, record.get("rule") or story.rule
    elif event in ("action finished", "action failed"):
        story.steps.append(record)
        if record.get("action") == "complete" and record.get("validation"):
            run.validation_path = str(record["validation"])
    elif event == "incident closed":
        story.closed = record
    elif event in ("notify sent", "notify failed", "incident resumed", "incident abandoned"):
        story.notes.append(record)


def _final_point(run: RunStory) -> None:
    """The result file as it is now: the last progress point, even if the watcher never saw it."""
    m = run.manifest
    if m is None or not m.result:
        return
    try:
        snap = read_progress(Path(m.result), Path(m.checkpoint) if m.checkpoint else None)
        mtime = Path(m.result).stat().st_mtime
    except (NotReadyYet, OSError):
        return
    if snap is not None and (not run.progress or (snap.done, mtime) > (run.progress[-1][1], run.progress[-1][0])):
        run.progress.append((max(mtime, run.progress[-1][0]) if run.progress else mtime, snap.done, m.restarts))


def _start_point(run: RunStory) -> None:
    launched = _iso_epoch(run.manifest.launched_at) if run.manifest else None
    if launched is not None and (not run.progress or launched < run.progress[0][0]):
        run.progress.insert(0, (launched, 0, 0))


def _validation(layout: ExperimentsLayout, run: RunStory) -> None:
    for path in (layout.run_files_dir(run.name) / "validation.json", Path(run.validation_path) if run.validation_path else None):
        if path is None:
            continue
        try:
            data = read_json(path)  # beside the result, in the user's folder: bounded, and a FIFO is refused
        except (OSError, ValueError, NotReadyYet):
            continue
        if isinstance(data, dict):
            run.validation, run.validation_path = data, str(path)
            return


def build_report(root: Path, stale_after_s: float, only: set[str] | None = None) -> Report:
    layout = ExperimentsLayout.at(root)
    runs: dict[str, RunStory] = {}
    chosen = [m for m in discover(layout) if only is None or m.name in only]
    for status in observe_all(layout, stale_after_s, chosen)[0]:
        runs[status.manifest.name] = RunStory(status.manifest.name, status.manifest, status)
    sessions: list[tuple[float, float | None]] = []
    records = iter_records(layout.audit_path)
    for record in records:
        event, t = record.get("event"), epoch(record)
        if event == "watcher started" and t is not None:
            sessions.append((t, None))
        elif event == "watcher stopped" and t is not None and sessions and sessions[-1][1] is None:
            sessions[-1] = (sessions[-1][0], t)
        name = record.get("run")
        if not name or (only is not None and name not in only):
            continue
        run = runs.get(name) or runs.setdefault(name, RunStory(str(name)))
        _take(run, record)
    for run in runs.values():
        _start_point(run)
        _final_point(run)
        _validation(layout, run)
    return Report(layout.root, datetime.now(timezone.utc), sorted(runs.values(), key=lambda r: r.name), sessions, records.skipped)
