"""A smoke run before launch: the real command, on a few items, into a throwaway result.

Hours into a run is a bad time to learn that every response is null (wrong
API key, content filter) or that backward items lack ``max_time``. So the
exact argv is run first with its limit flag set to N and its output flag
pointed at a fresh temporary directory; a fresh directory also keeps the
script from resuming from the real run's checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from expwatch.files import NotReadyYet
from expwatch.results.fields import FieldMapError
from expwatch.results.progress import ResultSnapshot, field_map_for, read_result
from expwatch.results.validation import id_list, item_label, leaked_ids
from expwatch.results.config import SmokeOptions, ValidationSettings, load_validation_settings

DEFAULT_RESULT_NAME = "smoke_result.json"


@dataclass(frozen=True)
class SmokeReport:
    ok: bool
    reasons: list[str]
    result_path: Path
    log_text: str
    argv: tuple[str, ...] = field(default=())  # the command actually run


def smoke_options_for(argv: list[str], settings: ValidationSettings | None = None) -> SmokeOptions:
    """The configured smoke options for the script in ``argv`` (by file or ``-m`` module name)."""
    settings = settings or load_validation_settings()
    for index, arg in enumerate(argv):
        name = arg if index and argv[index - 1] == "-m" else Path(arg).name
        if name in settings.smoke_scripts:
            return settings.smoke_scripts[name]
    return settings.smoke_default


def run_smoke(
    argv: list[str],
    cwd: Path,
    n: int,
    limit_flag: str | None = None,
    output_flag: str | None = None,
    timeout_s: float | None = None,
    workdir: Path | None = None,
    settings: ValidationSettings | None = None,
    env: dict[str, str] | None = None,
) -> SmokeReport:
    """Run ``argv`` on ``n`` items and check its result; flags/timeout default to configs/validation.yaml.

    The temporary result is left in ``workdir`` (a new temp dir by default)
    as evidence for the caller; ``argv`` is never passed to a shell.
    """
    settings = settings or load_validation_settings()
    options = smoke_options_for(argv, settings)
    limit_flag = limit_flag or options.limit_flag
    output_flag = output_flag or options.output_flag
    timeout = options.timeout_s if timeout_s is None else timeout_s
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="expwatch-smoke-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Same file name (and extension) as the real output, so the script writes what it normally writes.
    original = _flag_value(argv, output_flag)
    result_path = workdir / (original.name if original and original.name else DEFAULT_RESULT_NAME)
    command = with_flag(with_flag(argv, limit_flag, str(n)), output_flag, str(result_path))

    def report(reasons: list[str], log_text: str) -> SmokeReport:
        return SmokeReport(ok=not reasons, reasons=reasons, result_path=result_path, log_text=log_text,
                           argv=tuple(command))

    try:
        proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", start_new_session=True, env=env)
    except OSError as exc:
        return report([f"cannot start {command[0]!r}: {exc.strerror or exc}"], "")
    try:
        log_text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The eval may have spawned workers; they share its new session's group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log_text, _ = proc.communicate()
        return report([f"did not finish within {timeout:g}s on {n} items"], log_text)
    if proc.returncode != 0:
        return report([_exit_reason(proc.returncode, log_text)], log_text)
    try:
        # The run's own field map (STEM.fields.yaml beside the real output) applies to its smoke result too.
        real_output = Path(cwd) / original if original else result_path
        snapshot = read_result(result_path, field_map_for(real_output, settings=settings), settings)
    except FileNotFoundError:
        return report([f"no result written at {result_path} (does the script take {output_flag}?)"], log_text)
    except (NotReadyYet, FieldMapError) as exc:
        return report([f"result unreadable: {exc}"], log_text)
    return report(check_smoke_result(snapshot, settings), log_text)


def check_smoke_result(snapshot: ResultSnapshot, settings: ValidationSettings) -> list[str]:
    """Reasons to block the launch; empty when every item looks usable.

    Backward items use ``validate``'s own leak rule, so a smoke run never
    passes what the final validation would flag.
    """
    items = snapshot.items
    if not items:
        return ["the result has no per-item records"]
    reasons = []
    nulls = [item_label(item, i) for i, item in enumerate(items) if item.response is None]
    if nulls:
        why = ", ".join(f"{reason} {count}" for reason, count in sorted(snapshot.null_reasons.items()))
        reasons.append(f"{len(nulls)} of {len(items)} items have a null response ({why}): {id_list(nulls)}")
    leaked = leaked_ids(items, settings.backward_task_types, settings.leak_tolerance)
    if leaked:
        reasons.append(f"{len(leaked)} backward items lack a max_time matching realtime: {id_list(leaked)}")
    return reasons


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag VALUE`` / ``flag=VALUE`` replaced by ``value``, or appended if absent."""
    out: list[str] = []
    replaced = False
    args = iter(argv)
    for arg in args:
        if arg == flag:
            next(args, None)
            out += [flag, value]
            replaced = True
        elif arg.startswith(flag + "="):
            out.append(f"{flag}={value}")
            replaced = True
        else:
            out.append(arg)
    return out if replaced else out + [flag, value]


def _flag_value(argv: list[str], flag: str) -> Path | None:
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return Path(argv[index + 1])
        if arg.startswith(flag + "="):
            return Path(arg.split("=", 1)[1])
    return None


def _exit_reason(returncode: int, log_text: str) -> str:
    status = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    last = next((line.strip() for line in reversed(log_text.splitlines()) if line.strip()), "")
    return status + (f" (last output: {last[:200]})" if last else "")
