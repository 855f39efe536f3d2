"""The body of every generated task: policies around `run_job`, and a run record for each execution."""

from __future__ import annotations

import os
import time
from typing import Any

from cronshift.runtime.execute import DEFAULT_TIME_LIMIT, JobFailed, run_job
from cronshift.runtime.records import record_from_result, write_run

__all__ = ["run_cron_task"]


def _lock_url(task: Any) -> str:
    url = os.environ.get("CRONSHIFT_LOCK_REDIS") or str(task.app.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise RuntimeError("overlap policy 'forbid' needs Redis: set CRONSHIFT_LOCK_REDIS to a redis:// URL")
    return url


def run_cron_task(
    task: Any, spec: dict[str, Any], payload: Any = None, scheduled_for: float | None = None
) -> dict[str, Any]:
    """Run the job under its overlap policy; a non-zero exit raises JobFailed (Celery marks it failed)."""
    task_id = str(getattr(task.request, "id", "") or "")
    extra = {"task_id": task_id}
    if isinstance(payload, dict) and "id" in payload:
        extra["payload_id"] = str(payload["id"])
    if spec.get("overlap") == "forbid":
        from cronshift.runtime.lock import hold

        ttl = float(spec.get("time_limit") or DEFAULT_TIME_LIMIT) + 60
        with hold(_lock_url(task), spec["id"], ttl) as got:
            if not got:
                return {
                    "job_id": spec["id"],
                    "skipped": True,
                    "reason": "overlap policy forbid: already running",
                }
            return _run(spec, payload, scheduled_for, extra)
    return _run(spec, payload, scheduled_for, extra)


def _run(
    spec: dict[str, Any], payload: Any, scheduled_for: float | None, extra: dict[str, str]
) -> dict[str, Any]:
    start = time.time()
    try:
        res = run_job(spec, payload=payload, scheduled_for=scheduled_for)
    except JobFailed as e:
        failed = {
            "start": start,
            "duration": e.duration,
            "exit_status": e.exit_status,
            "signal": e.signal,
            "output_tail": e.tail,
            "scheduled_for": scheduled_for,
        }
        write_run(record_from_result(spec, failed, extra))
        raise
    write_run(record_from_result(spec, res, extra))
    return res
