"""Policies for one generated job, each with the reason written next to it in the generated code.

Issue 6 chooses them from the job's run history; for now they come from the job's own wrappers.
"""

from __future__ import annotations

from dataclasses import dataclass

from cronshift.model import CronJob
from cronshift.runtime.execute import DEFAULT_TIME_LIMIT

CELERY_LIMIT_MARGIN = 60  # Celery's hard limit sits above ours: the runtime kills the job's group first


@dataclass(frozen=True, slots=True)
class Plan:
    overlap: str  # "allow" | "forbid"
    overlap_why: str
    time_limit: int  # seconds, enforced by the runtime on the job's process group
    limit_why: str

    @property
    def celery_limit(self) -> int:
        return self.time_limit + CELERY_LIMIT_MARGIN


def plan_for(job: CronJob) -> Plan:
    kinds = {w.kind: w for w in job.wrappers}
    if "flock" in kinds or "run-one" in kinds:
        w = kinds.get("flock") or kinds["run-one"]
        overlap, why = (
            "forbid",
            f"the cron line is wrapped in `{w.text}` ({w.meaning}); a Redis lock keeps that across hosts",
        )
    else:
        overlap, why = (
            "allow",
            "cron starts a new run even while the previous one runs; nothing here says otherwise",
        )
    limit, lwhy = DEFAULT_TIME_LIMIT, "cron sets no limit; this default only frees a stuck worker slot"
    if "timeout" in kinds:
        secs = dict(kinds["timeout"].args).get("seconds")
        if secs:
            limit = max(1, int(float(secs)))
            lwhy = f"the cron line is wrapped in `{kinds['timeout'].text}`"
    return Plan(overlap, why, limit, lwhy)
