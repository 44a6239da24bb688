"""A pipeline's progress on disk: DIR/.expwatch/pipelines/NAME.json, rewritten atomically.

The file is the pipeline's memory across a killed pipeline process and a
killed watcher. A phase is marked ``launching`` (with the time) *before*
``expwatch launch`` runs and ``running`` after, so a resumed pipeline can
tell "launched" from "about to launch" by the run's manifest and never
launches a phase twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from expwatch.files import NotReadyYet, atomic_write_json, read_json
from expwatch.layout import ExperimentsLayout

PENDING, LAUNCHING, RUNNING, PASSED, STOPPED = "pending", "launching", "running", "passed", "stopped"
DONE = "done"  # the pipeline as a whole: every phase passed


@dataclass(frozen=True)
class PhaseState:
    name: str
    status: str = PENDING
    run: str | None = None
    launch_started_at: str | None = None
    launch_pid: int | None = None  # the `expwatch launch` process, with its create time: it may outlive us
    launch_created: float | None = None
    launched_at: str | None = None
    verdict: str | None = None
    delta: float | None = None
    reason: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> PhaseState:
        known = {key: data.get(key) for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


@dataclass(frozen=True)
class PipelineState:
    name: str
    plan: str
    status: str
    phases: tuple[PhaseState, ...] = field(default=())

    def phase(self, name: str) -> PhaseState:
        return next(p for p in self.phases if p.name == name)

    def with_phase(self, updated: PhaseState, status: str | None = None) -> PipelineState:
        phases = tuple(updated if p.name == updated.name else p for p in self.phases)
        return replace(self, phases=phases, status=status or self.status)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "plan": self.plan, "status": self.status, "phases": [asdict(p) for p in self.phases]}


def pipelines_dir(layout: ExperimentsLayout) -> Path:
    return layout.home / "pipelines"


def state_path(layout: ExperimentsLayout, name: str) -> Path:
    return pipelines_dir(layout) / f"{name}.json"


def load_state(layout: ExperimentsLayout, name: str) -> PipelineState | None:
    """None when the pipeline never ran; NotReadyYet when the file is not a pipeline state."""
    path = state_path(layout, name)
    try:
        return _parse(read_json(path))
    except FileNotFoundError:
        return None
    except (KeyError, TypeError, AttributeError) as exc:
        raise NotReadyYet(path, f"not a pipeline state ({type(exc).__name__}: {exc})") from exc


def save_state(layout: ExperimentsLayout, state: PipelineState) -> None:
    atomic_write_json(state_path(layout, state.name), state.to_json())


def all_states(layout: ExperimentsLayout) -> list[PipelineState]:
    """Every pipeline recorded under DIR, for ``expwatch status``; unreadable files are skipped."""
    folder = pipelines_dir(layout)
    states = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            states.append(_parse(read_json(path)))
        except (NotReadyYet, KeyError, TypeError, AttributeError):
            continue
    return states


def render_states(states: list[PipelineState]) -> list[str]:
    lines = []
    for state in states:
        lines.append(f"pipeline {state.name}: {state.status.upper()} ({state.plan})")
        for p in state.phases:
            verdict = f" {p.verdict} {p.delta:+.2f} points" if p.verdict and p.delta is not None else ""
            reason = f" - {p.reason}" if p.reason and p.status == STOPPED else ""
            lines.append(f"  {p.name:<20} {p.status:<9}{verdict}{reason}")
    return lines


def _parse(data: Any) -> PipelineState:
    return PipelineState(
        name=data["name"], plan=data["plan"], status=data["status"],
        phases=tuple(PhaseState.from_json(p) for p in data["phases"]),
    )
