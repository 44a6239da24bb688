"""halt and complete: the two ways expwatch stops acting on a run.

A halt leaves the process as it is (a hung process is worth a py-spy dump
before anyone kills it) and writes everything a human needs to decide into
one diagnosis bundle beside the run's manifest.
"""

from __future__ import annotations

import json
import os
import shlex
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from expwatch.actions.context import ActionContext, ActionResult
from expwatch.files import NOT_REGULAR, NotReadyYet, Unreadable, atomic_write_text, atomic_write_json, open_regular, read_json
from expwatch.manifest import HaltMark, RunManifest
from expwatch.redact import redact_argv, redact_env, redact_record, redact_text
from expwatch.processes import run_tree, verified_process
from expwatch.results.validation import validate_result
from expwatch.kernel_log import kernel_oom_lines


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def last_lines(path: str, n: int = 50, tail_bytes: int = 256 * 1024) -> list[str]:
    """The log's last ``n`` complete lines, from its last ``tail_bytes``, for the diagnosis bundle.

    Opened non-blocking and refused unless a regular file: a FIFO in the
    log's place would otherwise hold the halt forever. A log that cannot be
    read is named in the bundle instead of failing the halt.
    """
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return []
    except Unreadable as exc:
        return ["(the log is not a regular file)" if exc.reason == NOT_REGULAR else f"(the log cannot be read: {exc.reason})"]
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - tail_bytes)
        data = os.pread(fd, size - start, start)
    except OSError as exc:
        return [f"(the log cannot be read: {exc.strerror or exc})"]
    finally:
        os.close(fd)
    return [line.decode("utf-8", "replace").rstrip("\r") for line in deque(data.split(b"\n"), maxlen=n + 1)][-n - 1 : -1]


def process_tree(manifest: RunManifest) -> list[str]:
    if manifest.job_id:
        return [f"SLURM job {manifest.job_id} (its processes live on the job's node; see `scontrol show job {manifest.job_id}`)"]
    leader = verified_process(manifest.pid, manifest.create_time)
    if not leader:
        return ["(no live process)"]
    rows = []
    for proc in run_tree(leader, manifest.pgid):
        try:
            rows.append(f"{proc.pid:>7} {proc.status():<9} {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            continue
    return rows


def restart_by_hand(manifest: RunManifest) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in redact_env(manifest.env_overrides).items())
    unset = " ".join(f"-u {shlex.quote(k)}" for k in manifest.env_unset)
    prefix = f"env {unset} {env} ".replace("  ", " ") if env or unset else ""
    return f"cd {shlex.quote(manifest.cwd)} && {prefix}{shlex.join(redact_argv(manifest.argv))} >> {shlex.quote(manifest.log)} 2>&1"


def exit_status(ctx: ActionContext) -> str:
    try:
        record = read_json(ctx.layout.exit_path(ctx.run))
    except (FileNotFoundError, NotReadyYet):
        return "unknown (no exit record)"
    if record.get("signal"):
        return f"killed by signal {record['signal']}"
    return f"exit code {record.get('returncode')}"


def diagnosis(ctx: ActionContext, manifest: RunManifest, reason: str) -> str:
    evidence = ctx.evidence or {}
    captured = evidence.get("captured") or []
    oom = kernel_oom_lines()
    parts = [
        *([evidence["fix"], ""] if evidence.get("fix") else []),  # what to fix comes first
        f"# expwatch diagnosis: run {manifest.name}, incident {ctx.incident}",
        f"halted at {_now()} by rule {ctx.rule}: {reason}",
        "",
        "## Restart by hand",
        f"    expwatch resume {manifest.name} --dir {shlex.quote(str(ctx.layout.root))}",
        "or exactly as expwatch would:",
        f"    {restart_by_hand(manifest)}",
        "",
        "## Exit",
        exit_status(ctx),
        "",
        *(["## Cause", f"    {evidence['cause']}", ""] if evidence.get("cause") else []),
        "## Matched evidence",
        *[f"    {line}" for line in ([evidence.get("line")] if evidence.get("line") else [])],
        *[f"    {k} = {v}" for k, v in (evidence.get("facts") or {}).items()],
        "",
        "## Captured lines (traceback)",
        *([f"    {line}" for line in captured] or ["    (none)"]),
        "",
        "## Last 50 log lines",
        *[f"    {line}" for line in last_lines(manifest.log)],
        "",
        "## Process tree",
        *[f"    {row}" for row in process_tree(manifest)],
        "",
        "## Kernel OOM lines",
        *([f"    {line}" for line in oom] if oom else ["    (none)" if oom == [] else "    (kernel log not readable here)"]),
        "",
        "## Manifest",
        json.dumps(redact_record(manifest.to_json()), indent=2),
    ]
    # The whole bundle passes the redaction once more: log lines and the process tree are free text.
    return redact_text("\n".join(parts) + "\n")


def halt(ctx: ActionContext, arg: Any) -> ActionResult:
    reason = str(arg or (ctx.evidence or {}).get("reason") or f"rule {ctx.rule} asked to halt")
    manifest = ctx.manifest()
    bundle = ctx.layout.run_files_dir(manifest.name) / f"diagnosis-{ctx.incident}.md"
    atomic_write_text(bundle, diagnosis(ctx, manifest, reason))
    ctx.update(lambda m: m.with_changes(halted=HaltMark(reason=reason, incident=ctx.incident, at=_now())))
    ctx.console(f"HALTED {manifest.name}: {reason}\n  diagnosis: {bundle}\n  resume with: expwatch resume {manifest.name} --dir {ctx.layout.root}")
    return ActionResult("halted", {"reason": reason, "bundle": str(bundle)})


def complete(ctx: ActionContext, arg: Any) -> ActionResult:
    manifest = ctx.manifest()
    details: dict[str, Any] = {}
    if manifest.result and Path(manifest.result).exists():
        try:
            report = validate_result(Path(manifest.result), log_path=Path(manifest.log), expected=manifest.expected)
        except (OSError, NotReadyYet, ValueError) as exc:
            # A result or log that cannot be read now does not undo the completion; `expwatch validate` can retry.
            ctx.console(f"COMPLETE {manifest.name}: not validated ({exc})")
            details = {"validation_error": str(exc)}
        else:
            data = report.to_json()
            result = Path(manifest.result)
            path = result.with_name(f"{result.stem}.validation.json")
            atomic_write_json(path, data)
            details = {"validation": str(path), "issues": data.get("issues", []), "raw_acc": data.get("raw_acc"), "null_rate": data.get("null_rate")}
            raw = data.get("raw_acc")
            shown = f"{raw:.3f}" if isinstance(raw, (int, float)) else "-"
            ctx.console(f"COMPLETE {manifest.name}: raw accuracy {shown}, {len(data.get('issues', []))} validation issue(s), report {path}")
    ctx.update(lambda m: m.with_changes(completed_at=_now()))
    return ActionResult("completed", details)
