"""Crash-safe watcher state in SQLite (WAL) inside the experiments directory.

Read offsets, guard counters, latches and incidents in progress must survive
the watcher being SIGKILLed: the next watcher resumes at the same log bytes
and finishes an interrupted incident without repeating a finished step (a
restart done twice would run two copies of an evaluation against one
checkpoint).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expwatch import crashpoints
from expwatch.redact import redact_record
from expwatch.trust import PRIVATE_DIR, file_mode

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    rule TEXT NOT NULL,
    status TEXT NOT NULL,          -- acting | done | failed
    plan TEXT NOT NULL,            -- JSON list of {"name", "arg"}
    next_step INTEGER NOT NULL,    -- first step not yet finished
    step_started INTEGER NOT NULL, -- 1 while next_step has started and not finished
    step_info TEXT NOT NULL,       -- JSON written when the step started (e.g. restarts before, wait end)
    context TEXT NOT NULL,         -- JSON: evidence and reason, for the actions
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class IncidentRow:
    id: str
    run: str
    rule: str
    status: str
    plan: list[dict[str, Any]]
    next_step: int
    step_started: bool
    step_info: dict[str, Any]
    context: dict[str, Any]


PUT_RUN = "INSERT OR REPLACE INTO runs(name, data) VALUES (?, ?)"


class StateStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        # Before WAL is on: SQLite gives its -wal and -shm files the database file's mode.
        os.chmod(path, file_mode(path.parent))
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # name -> the JSON last written for it: a save that changes nothing (a safety poll that read no
        # line, a progress record) costs a dict lookup instead of an SQLite write.
        self._written: dict[str, str] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def run_data(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT data FROM runs WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else {}

    def save_run(self, name: str, data: dict[str, Any]) -> None:
        self.save_runs({name: data})

    def save_runs(self, runs: dict[str, dict[str, Any]]) -> None:
        """Several runs' state in one transaction (one fsync-free WAL append instead of one per run)."""
        texts = [(name, json.dumps(data)) for name, data in runs.items()]
        with self._lock:
            changed = [(name, text) for name, text in texts if self._written.get(name) != text]
            if not changed:
                return
            self._db.execute("BEGIN")
            with self._db:  # COMMIT, or ROLLBACK on any error
                self._db.executemany(PUT_RUN, changed)
            self._written.update(changed)
        crashpoints.passed("store:save_run")

    def save_released(self, runs: dict[str, dict[str, Any]]) -> None:
        """The last state of runs being released, in one transaction; no memory of them is kept."""
        self.save_runs(runs)
        with self._lock:
            for name in runs:
                self._written.pop(name, None)

    def open_incident(self, inc_id: str, run: str, rule: str, plan: list[dict[str, Any]], context: dict[str, Any],
                      run_data: dict[str, Any] | None = None) -> None:
        """The decision and the run state it changed (guard streak, read position) in one transaction.

        Apart, a watcher killed between the two writes resumed the incident
        with the guard's streak of before it, and a bug ran once more than
        the guard allows (found by the crash sweep).
        """
        text = json.dumps(run_data) if run_data is not None else None
        with self._lock:
            self._db.execute("BEGIN")
            with self._db:  # COMMIT, or ROLLBACK on any error
                self._db.execute(
                    "INSERT INTO incidents VALUES (?, ?, ?, 'acting', ?, 0, 0, '{}', ?, ?)",
                    (inc_id, run, rule, json.dumps(plan), json.dumps(redact_record(context), default=str), time.time()),
                )
                if text is not None:
                    self._db.execute(PUT_RUN, (run, text))
            if text is not None:
                self._written[run] = text  # once committed: a save of the same state then costs nothing
        crashpoints.passed("store:open_incident")

    def step_started(self, inc_id: str, step: int, info: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE incidents SET next_step=?, step_started=1, step_info=? WHERE id=?", (step, json.dumps(info), inc_id)
            )
        crashpoints.passed("store:step_started")

    def step_finished(self, inc_id: str, step: int) -> None:
        with self._lock:
            self._db.execute("UPDATE incidents SET next_step=?, step_started=0, step_info='{}' WHERE id=?", (step + 1, inc_id))
        crashpoints.passed("store:step_finished")

    def close_incident(self, inc_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE incidents SET status=? WHERE id=?", (status, inc_id))
        crashpoints.passed("store:close_incident")

    def unfinished_incidents(self) -> list[IncidentRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, run, rule, status, plan, next_step, step_started, step_info, context FROM incidents WHERE status='acting' ORDER BY created"
            ).fetchall()
        return [
            IncidentRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], bool(r[6]), json.loads(r[7]), json.loads(r[8]))
            for r in rows
        ]
