"""The body of every generated Celery task: the job's policies (`cronshift.runtime.policy`, shared with the
Streams consumer) around `run_job`, with Celery's retry and send as the transport.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cronshift.runtime import state
from cronshift.runtime.execute import JobFailed
from cronshift.runtime.policy import MAX_CATCH_UP, JobDeadLettered, PolicyRun
from cronshift.runtime.schedules import beat_schedules, fires_between_of
from cronshift.runtime.spec import JobSpec

__all__ = ["MAX_CATCH_UP", "JobDeadLettered", "run_cron_task"]


@dataclass
class _Celery:
    """The policy engine's transport for a Celery task."""

    task: Any
    message_id: str
    attempt: int
    source: str = "celery"
    deliveries: int | None = None  # counted in the state Redis by the engine
    once_per_instant: bool = True  # acks_late redelivery of a started run is skipped, as cron never reruns

    @property
    def name(self) -> str:
        return str(self.task.name)

    def retry(self, exc: JobFailed, delay: float, max_retries: int) -> BaseException:
        return self.task.retry(exc=exc, countdown=delay, max_retries=max_retries)

    def resend(self, scheduled_for: float) -> None:
        self.task.apply_async(kwargs={"payload": None, "scheduled_for": scheduled_for})

    def scheduled_between(self, after: float, until: float, limit: int) -> list[float] | None:
        """Instants the beat entries that send this task fire at in (after, until); None with no entry."""
        entries = _beat_entries(self.task)
        if not entries:
            return None
        a, b = datetime.fromtimestamp(after, UTC), datetime.fromtimestamp(until, UTC)
        return [t.timestamp() for t in fires_between_of(entries, a, b, limit)]


def _beat_entries(task: Any) -> list[Any]:
    """The schedules of the beat entries in the task's app that send it (none for a plain trigger app)."""
    app, name = getattr(task, "app", None), getattr(task, "name", None)
    if app is None or not isinstance(name, str):
        return []
    try:
        return beat_schedules(app, name)
    except (AttributeError, TypeError, ValueError):
        return []


def run_cron_task(
    task: Any,
    spec: JobSpec,
    payload: Any = None,
    scheduled_for: float | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run the job under its policies; a failure raises JobFailed (after retries), so Celery marks it."""
    req = task.request
    task_id = str(getattr(req, "id", "") or "")
    attempt = int(getattr(req, "retries", 0) or 0)
    extra = {"task_id": task_id, "attempt": str(attempt)}
    if isinstance(payload, dict) and "id" in payload:
        extra["payload_id"] = str(payload["id"])
    url = state.state_url(task.app)
    r = state.client(url) if url else None
    try:
        transport = _Celery(task, task_id, attempt)
        return PolicyRun(transport, spec, payload, scheduled_for, extra, r, url, clock).run()
    finally:
        if r is not None:
            r.close()
