"""SLURM's job state words, in one place: which mean alive, which final, which are special.

The runner (squeue answers), the completion-file parser (jobcomp records),
the engine loop and the rules' facts all speak of the same states; a new
state SLURM adds is added here once.
"""

from __future__ import annotations

PENDING = "PENDING"  # waiting for a node: never stale, its log has not started
CANCELLED = "CANCELLED"  # cancelled by a person (scancel): reported, not fought
OUT_OF_MEMORY = "OUT_OF_MEMORY"
COMPLETING = "COMPLETING"  # the command has ended; SLURM is still cleaning up after it on the node
UNKNOWN = "UNKNOWN"  # neither squeue nor the jobcomp file knows the job

# States in which the run's command may still be running or may run.
ALIVE_STATES = frozenset(
    {
        PENDING, "CONFIGURING", "RUNNING", "SUSPENDED", "STOPPED", "REQUEUED", "REQUEUE_HOLD",
        "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
    }
)

# States after which the job never runs again. REQUEUED (and its variants) is
# written when a job goes back to the queue: another record follows later.
FINAL_STATES = frozenset(
    {
        "COMPLETED", "FAILED", CANCELLED, "TIMEOUT", OUT_OF_MEMORY, "NODE_FAIL",
        "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
    }
)
