"""Tell a human when a run is halted, completes, or hits a chosen rule, through their own command.

Driven by audit records (``AuditLog.add_listener``), so it reports exactly
what the audit trail says happened:

* ``incident closed`` with outcome ``halted``       → a ``halted`` notification,
* ``action finished`` of the ``complete`` action    → ``completed``,
* ``incident classified`` with a rule in ``rules``  → ``rule``.

At most one notification per incident: an incident of a chosen rule is
told when it is classified (its decision, ``act`` or ``halt``, is the
outcome), and not again when it closes. The command runs on a worker thread
(the listener only enqueues), never through a shell, with the incident in
EXPWATCH_* environment variables; success is audited as ``notify sent``, a
non-zero exit, a missing program or a timeout as ``notify failed``. Nothing
about a notification can stop the watcher.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from expwatch.redact import redact_env
from expwatch.actions.command_env import exec_env, exec_text
from expwatch.settings import Settings

QUEUE_SIZE = 100
DRAIN_LIMIT_S = 10.0  # how long a stopping watcher waits for notifications still queued
_PLACEHOLDER = re.compile(r"\{(run|rule|incident|outcome|reason|message|event|dir)\}")
_STOP = object()


@dataclass(frozen=True)
class NotifyConfig:
    argv: tuple[str, ...]
    on_halt: bool
    on_complete: bool
    rules: frozenset[str]
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "NotifyConfig":
        """The ``notify`` section, already validated by configs/settings.schema.json."""
        n = settings.notify
        return cls(n.argv, n.on_halt, n.on_complete, frozenset(n.rules), float(n.timeout_s))

    @property
    def enabled(self) -> bool:
        return bool(self.argv) and (self.on_halt or self.on_complete or bool(self.rules))


@dataclass(frozen=True)
class Notification:
    event: str  # halted | completed | rule
    run: str
    rule: str
    incident: str
    outcome: str
    reason: str
    message: str
    extra: dict[str, str] = field(default_factory=dict)

    def env(self, root: str) -> dict[str, str]:
        return redact_env({
            "EXPWATCH_EVENT": self.event, "EXPWATCH_RUN": self.run, "EXPWATCH_RULE": self.rule,
            "EXPWATCH_INCIDENT": self.incident, "EXPWATCH_OUTCOME": self.outcome, "EXPWATCH_REASON": self.reason,
            "EXPWATCH_MESSAGE": self.message, "EXPWATCH_DIR": root,
            **{f"EXPWATCH_{k.upper()}": v for k, v in self.extra.items()},
        })

    def argv(self, template: tuple[str, ...], root: str) -> list[str]:
        values = {"run": self.run, "rule": self.rule, "incident": self.incident, "outcome": self.outcome,
                  "reason": self.reason, "message": self.message, "event": self.event, "dir": root}
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in template]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class NotificationPicker:
    """Which audit records deserve a notification (pure bookkeeping, no effects)."""

    def __init__(self, config: NotifyConfig):
        self.config = config
        self._notified: set[str] = set()
        self._halt_details: dict[str, dict[str, str]] = {}  # incident → reason/bundle seen before it closed

    def pick(self, record: dict[str, Any]) -> Notification | None:
        event, incident = record.get("event"), record.get("incident")
        if not incident or incident in self._notified:
            return None
        note = self._pick(event, str(incident), record)
        if note is not None:
            self._notified.add(note.incident)
            self._halt_details.pop(note.incident, None)
        return note

    def _pick(self, event: Any, incident: str, r: dict[str, Any]) -> Notification | None:
        run, rule = _text(r.get("run")), _text(r.get("rule"))
        if event == "incident classified":
            if r.get("decision") == "halt":
                self._halt_details.setdefault(incident, {})["reason"] = _text(r.get("reason"))
            if rule in self.config.rules:
                halting = r.get("decision") == "halt"
                reason = _text(r.get("reason"))
                message = f"expwatch: run {run}: {rule}" + (f", halting: {reason}" if halting else ", acting on it")
                return Notification("rule", run, rule, incident, _text(r.get("decision")), reason, message)
        elif event == "action finished" and r.get("action") == "halt":
            details = self._halt_details.setdefault(incident, {})
            details["reason"] = _text(r.get("reason")) or details.get("reason", "")
            details["bundle"] = _text(r.get("bundle"))
        elif event == "action failed":
            self._halt_details.setdefault(incident, {}).setdefault("reason", f"action {r.get('action')} failed: {r.get('error')}")
        elif event == "action finished" and r.get("action") == "complete" and self.config.on_complete:
            acc, issues = r.get("raw_acc"), r.get("issues")
            extra = {"validation": _text(r.get("validation")),
                     "accuracy": f"{acc:.4f}" if isinstance(acc, (int, float)) else "",
                     "issues": str(len(issues)) if isinstance(issues, list) else ""}
            shown = f", raw accuracy {acc:.3f}" if isinstance(acc, (int, float)) else ""
            count = f", {len(issues)} validation issue(s)" if isinstance(issues, list) else ""
            return Notification("completed", run, rule, incident, "completed", "", f"expwatch: run {run} COMPLETE{shown}{count}", extra)
        elif event == "incident closed" and r.get("outcome") == "halted" and self.config.on_halt:
            details = self._halt_details.get(incident, {})
            reason = details.get("reason") or f"rule {rule}"
            extra = {"bundle": details.get("bundle", "")}
            return Notification("halted", run, rule, incident, "halted", reason, f"expwatch: run {run} HALTED ({rule}): {reason}", extra)
        elif event == "incident closed":
            self._halt_details.pop(incident, None)
        return None


class Notifier:
    """Runs the user's command for each picked record, on a worker thread."""

    def __init__(self, config: NotifyConfig, root: str, record: Callable[..., Any]):
        self.config = config
        self._root = root
        self._record = record  # AuditLog.record (called only from listeners, so after the log exists)
        self._picker = NotificationPicker(config)
        self._pending: queue.Queue = queue.Queue(QUEUE_SIZE)
        self._outstanding = 0
        self._settled = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()

    def on_record(self, record: dict[str, Any]) -> None:
        """The audit listener: decide, enqueue, return. Waits only when the watcher is stopping."""
        if record.get("event") == "watcher stopped":
            self.drain(min(self.config.timeout_s + 1, DRAIN_LIMIT_S))
            return
        note = self._picker.pick(record)
        if note is None:
            return
        with self._settled:
            self._outstanding += 1
        try:
            self._pending.put_nowait(note)
        except queue.Full:
            self._done_with_one()
            self._audit("notify failed", note, error=f"{QUEUE_SIZE} notifications already waiting; this one was dropped")

    def drain(self, timeout: float) -> bool:
        """Wait until every queued notification has been sent (or has failed)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._outstanding == 0, timeout)

    def _done_with_one(self) -> None:
        with self._settled:
            self._outstanding -= 1
            self._settled.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._pending.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            note = self._pending.get()
            if note is _STOP:
                return
            try:
                self._send(note)
            except Exception as exc:  # the notifier must outlive any one notification
                self._audit("notify failed", note, error=f"{type(exc).__name__}: {exc}")
            self._done_with_one()

    def _send(self, note: Notification) -> None:
        argv = [exec_text(a) for a in note.argv(self.config.argv, self._root)]
        started = time.monotonic()
        try:
            proc = subprocess.Popen(argv, env=exec_env({**os.environ, **note.env(self._root)}), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                    start_new_session=True)
        except OSError as exc:
            self._audit("notify failed", note, error=f"cannot run {argv[0]!r}: {exc.strerror or exc}")
            return
        try:
            _, err = proc.communicate(timeout=self.config.timeout_s)
        except subprocess.TimeoutExpired:
            # The whole session: a script's curl child would otherwise keep running.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            self._audit("notify failed", note, error=f"{argv[0]!r} did not finish within {self.config.timeout_s:g}s; killed")
            return
        seconds = round(time.monotonic() - started, 3)
        if proc.returncode != 0:
            self._audit("notify failed", note, error=f"{argv[0]!r} exited {proc.returncode}: {err.strip()[-300:]}", seconds=seconds)
        else:
            self._audit("notify sent", note, seconds=seconds)

    def _audit(self, event: str, note: Notification, **fields: Any) -> None:
        # Only the program's name: the rest of argv may hold a webhook's secret URL.
        try:
            self._record(event, run=note.run, rule=note.rule or None, incident=note.incident, notify=note.event,
                         command=self.config.argv[0], **fields)
        except ValueError:
            pass  # the audit log closed under a late notification (a watcher stopping); nothing to write to


def notifier_for(settings: Settings, root: str, record: Callable[..., Any]) -> Notifier | None:
    """A running Notifier when ``notify`` is configured, else None. Raises SettingsError."""
    config = NotifyConfig.from_settings(settings)
    return Notifier(config, root, record) if config.enabled else None
