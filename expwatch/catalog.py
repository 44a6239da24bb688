"""The one list of each shared name: actions a rule can name, and audit record events.

The rules schema (``configs/rules.schema.json``), the loader, the rule
model and the report read action names from here, and ``actions/registry.py``
maps exactly these names to what does them (a test holds all three to this
list). Audit events are named here so a reader of ``audit.jsonl`` has one
page of every event it can contain.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionKind:
    name: str
    informational: bool  # reports or records, leaves the run's processes alone
    arg: str  # "none" | "optional" | "required"
    summary: str


ACTION_KINDS: tuple[ActionKind, ...] = (
    ActionKind("kill", False, "none", "end the run's whole process tree (SIGTERM, then SIGKILL after kill.grace_s)"),
    ActionKind("wait", False, "required", "sleep N seconds before the next step (survives a watcher restart)"),
    ActionKind("set_env", False, "required", "set environment overrides for the next restart"),
    ActionKind("switch_profile", False, "required", "move the run to another backend profile"),
    ActionKind("scale_workers", False, "required", "multiply the worker flag in argv, within the backend's bounds"),
    ActionKind("restart", False, "none", "start the run again from its checkpoint"),
    ActionKind("free_gpu", False, "none", "end stray processes holding the run's GPUs"),
    ActionKind("halt", False, "optional", "stop acting on the run and write a diagnosis bundle"),
    ActionKind("alert", True, "optional", "notify a human"),
    ActionKind("exec", False, "required", "run a command (argv, never a shell)"),
    ActionKind("complete", True, "none", "mark the run complete and validate its result"),
)

ACTION_NAMES: tuple[str, ...] = tuple(kind.name for kind in ACTION_KINDS)

# A rule made only of these is not a failure: it never joins a crash's incident
# (where a higher-priority cause would silence it) and the guard ignores it.
INFORMATIONAL_ACTIONS = frozenset(kind.name for kind in ACTION_KINDS if kind.informational)


def informational(action: str) -> bool:
    return action in INFORMATIONAL_ACTIONS


# Every ``event`` an audit record can carry, with what it means.
AUDIT_EVENTS: dict[str, str] = {
    "watcher started": "a watcher took the directory's lock and began watching",
    "watcher stopped": "the watcher ended cleanly (Ctrl-C or SIGTERM)",
    "run discovered": "a manifest appeared, or was found at start (`asleep`: found long finished, not watched until its files change)",
    "run lost": "a run's manifest disappeared",
    "run resumed": "the watcher saw a halted run's mark cleared",
    "history read": "old log lines were counted on first sight (they trigger nothing)",
    "log file changed": "the log was rotated, truncated, deleted or replaced",
    "process exited": "the run's process or SLURM job ended",
    "progress": "throttled progress sample, for the report",
    "rule matched": "a rule's condition held; the match joined (or was suppressed by) an incident",
    "incident classified": "an incident's settle window closed: winner, guard verdict, decision",
    "action planned": "one step of a decided plan",
    "action started": "a step began",
    "action finished": "a step ended, with its outcome",
    "action failed": "a step could not do its job",
    "action interrupted": "a step was cut short by the watcher stopping (resumed by the next)",
    "incident closed": "every step of an incident is done",
    "incident resumed": "a watcher resumed an incident a previous one left half done",
    "incident abandoned": "a half-done incident's run no longer exists",
    "exception survived": "a traceback was followed by more output and its process outlived crash.exit_wait_s or exited 0: a caught exception; the incident it opened ends undecided",
    "incident left to its owner": "a starting watcher found an incident a live `expwatch resume`/`stop` carries out",
    "rules reloaded": "the rules file changed and the new rules are in force",
    "rules reload refused": "an edit of the rules file is invalid; the previous rules keep running",
    "probe failed": "a backend's health probe started failing",
    "probe recovered": "a backend's health probe answers again",
    "probe skipped": "a profile's probe URL names an unset variable",
    "slurm unavailable": "a SLURM command failed or did not answer",
    "slurm completion file unknown": "the cluster writes no jobcomp/filetxt file; job ends are polled",
    "run resumed by hand": "`expwatch resume` cleared a halt or stop mark",
    "run stopped by hand": "`expwatch stop` ended a run for good",
    "waiting for profile slot": "switch_profile waits: the target profile already has max_runs runs",
    "pipeline started": "`expwatch pipeline` began a plan",
    "pipeline resumed": "a pipeline picked up its saved state after a restart",
    "pipeline retried": "`--retry` picked a stopped phase up again",
    "pipeline decision": "a pipeline gate (plan validity, drift, smoke, validation, verdict) with its numbers",
    "pipeline phase launching": "a phase's launch is about to run",
    "pipeline phase launched": "a phase's run is launched (or found launched after a restart)",
    "pipeline awaits earlier launch": "a launch a killed pipeline started is still running: waited for, not repeated",
    "pipeline started watcher": "no watcher held the directory: the pipeline started one",
    "pipeline watcher failed": "the pipeline could not start a watcher",
    "pipeline stopped": "a gate failed or a phase's run halted: the pipeline stops",
    "pipeline finished": "every phase passed",
    "run adopted": "discovery wrote a manifest for a run started by hand (every inferred field and its source)",
    "run not adopted": "discovery found a run but could not adopt it (the reason)",
    "run suggested": "discovery found a run; `discover: suggest` printed the adopt line",
    "discovery failed": "a discovery sweep raised; the next one tries again",
    "discovery truncated": "a /proc scan hit its time budget; the next poll goes on from there",
    "discovery: slurm unavailable": "squeue did not answer for discovery; asked again after discovery.squeue_retry_s",
    "rule engine error": "durable-rules refused a run's facts: that run's problem, the others are served",
    "run file unreadable": "a run's result or checkpoint cannot be read as it is (not a regular file, over a bound)",
    "manifest unreadable": "a manifest that does not parse or has fields of the wrong type: never acted on",
    "manifest refused": "a manifest not owned by this user (or root), or writable by others: never acted on",
    "watcher died": "the watcher process ended abnormally (the restarting parent saw it)",
    "watcher restarted": "the restarting parent started a new watcher",
    "watcher refused to start": "the watcher could not start (bad settings or rules, untrusted file)",
    "run released": "a long-finished run let go of its files and memory; a change to its files brings it back",
    "runs asleep": "at start: how many long-finished runs went straight to sleep, and how many were unchanged since a watcher released them (not read at all)",
    "notify sent": "a notification command ran",
    "notify failed": "a notification command failed or timed out",
}
