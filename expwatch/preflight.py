"""What ``launch`` shows and checks before it spends: the plan, then preflight.

A run that starts against a dead proxy, with more workers than its backend
takes, on a config that no longer matches its baseline, or with its log in
a folder that vanishes with a worktree, burns hours before anyone looks.
Each check here fails with one clear message that names the flag skipping
it, and ``launch`` starts nothing when one fails.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from expwatch.results.config import ValidationSettingsError, load_validation_settings
from expwatch.results.drift import ConfigError, ConfigSide, compare_fields, split_layers
from expwatch.settings import Profile, Settings
from expwatch.watcher.probe import probe_once


@dataclass(frozen=True)
class LaunchPlan:
    """The resolved launch, as the user confirms it."""

    name: str
    command: tuple[str, ...]
    expected: int | None
    result: str | None
    log: str
    profile: Profile
    workers: int | None
    worker_flag: str
    runner: str

    def lines(self) -> list[str]:
        fallback = self.profile.fallback or "none"
        cap = f", at most {self.profile.max_runs} run(s) at once" if self.profile.max_runs else ""
        return [
            f"plan for run {self.name!r}:",
            f"  items    {self.expected if self.expected is not None else 'unknown (exit 0 counts as complete)'}",
            f"  script   {' '.join(self.command)}",
            f"  result   {self.result or '-'}",
            f"  log      {self.log}",
            f"  backend  profile {self.profile.name!r} ({self.profile.backend}{cap}), fallback {fallback}",
            f"  workers  {self.workers if self.workers is not None else f'- (no {self.worker_flag} in the command)'}",
            f"  runner   {self.runner}",
        ]


@dataclass(frozen=True)
class PreflightFailure:
    check: str
    message: str
    skip_flag: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message} (skip this check with {self.skip_flag})"


def flag_int(argv: tuple[str, ...], flag: str) -> int | None:
    """The integer of ``FLAG N`` or ``FLAG=N`` in argv, else None."""
    text = flag_text(argv, [flag])
    return int(text) if text is not None and text.isdigit() else None


def flag_text(argv: tuple[str, ...], flags: list[str]) -> str | None:
    """The value of the first of ``flags`` in argv, as ``FLAG V`` or ``FLAG=V``."""
    for index, token in enumerate(argv):
        for flag in flags:
            if token == flag and index + 1 < len(argv):
                return argv[index + 1]
            if token.startswith(flag + "="):
                return token[len(flag) + 1:]
    return None


def check_probe(profile: Profile, env: dict[str, str]) -> PreflightFailure | None:
    """The profile's health probe answers; on failure, name the fallback profile to use instead."""
    if not profile.probe_url:
        return None
    url = string.Template(profile.probe_url).safe_substitute(env)
    advice = f"; its fallback is profile {profile.fallback!r}: launch with --profile {profile.fallback}" if profile.fallback else ""
    if "$" in url:
        return PreflightFailure("probe", f"profile {profile.name!r}: probe URL {profile.probe_url} names an unset variable{advice}",
                                "--skip-probe")
    ok, detail = probe_once(url, profile.probe_timeout_s)
    if ok:
        return None
    return PreflightFailure("probe", f"profile {profile.name!r}: {url} did not answer within {profile.probe_timeout_s:g}s "
                            f"({detail}){advice}", "--skip-probe")


def check_workers(plan: LaunchPlan, settings: Settings) -> PreflightFailure | None:
    most = settings.launch_workers_max.get(plan.profile.backend)
    if most is None or plan.workers is None or plan.workers <= most:
        return None
    return PreflightFailure("workers", f"{plan.worker_flag} {plan.workers} is more than backend {plan.profile.backend!r} takes "
                            f"(at most {most}, workers.launch_max in profiles.yaml)", "--skip-worker-check")


def check_drift(baseline: str, command: tuple[str, ...], settings: Settings) -> PreflightFailure | None:
    """The run's config (named by a config flag in its argv) against ``baseline``, on the cache-key fields."""
    flags = list(settings.launch.config_flags)
    current = flag_text(command, flags)
    if current is None:
        return PreflightFailure("drift", f"--baseline {baseline}: the command names no config ({' / '.join(flags)}) to compare",
                                "--accept-drift")
    try:
        fields = load_validation_settings().drift_fields
        drifts = compare_fields(ConfigSide(split_layers(baseline)).merged(), ConfigSide(split_layers(current)).merged(), fields)
    except (ConfigError, ValidationSettingsError) as exc:
        return PreflightFailure("drift", str(exc), "--accept-drift")
    if not drifts:
        return None
    listed = "; ".join(str(d) for d in drifts)
    return PreflightFailure("drift", f"{current} differs from baseline {baseline} in cache-key fields: {listed}", "--accept-drift")


def check_volatile_log(log: str, markers: list[str]) -> PreflightFailure | None:
    for marker in markers:
        if marker in log + "/":
            return PreflightFailure("log", f"{log} lies inside {marker!r}, a folder deleted with its worktree while the run "
                                    "still writes there; put the log in the main checkout", "--allow-volatile-log")
    return None


def preflight(plan: LaunchPlan, settings: Settings, env: dict[str, str], *, skip_probe: bool, skip_workers: bool,
              baseline: str | None, accept_drift: bool, allow_volatile_log: bool) -> list[PreflightFailure]:
    """Every failing check, cheapest first (the probe waits on the network last)."""
    found = [
        None if allow_volatile_log else check_volatile_log(plan.log, list(settings.launch.volatile_path_markers)),
        None if skip_workers else check_workers(plan, settings),
        None if baseline is None or accept_drift else check_drift(baseline, plan.command, settings),
        None if skip_probe else check_probe(plan.profile, env),
    ]
    return [failure for failure in found if failure is not None]
