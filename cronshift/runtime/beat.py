"""Carry the logical fire time (`scheduled_for`) from beat into the task.

A beat entry's kwargs are fixed when the schedule is loaded, so they cannot hold the instant being fired.
Instead, in the beat process only (flagged by `beat_init`), the scheduler's `apply_async` is wrapped to
note which instant the schedule found due: cron's first fire after the entry's `last_run_at` (the very
test `is_due` passed), and `before_task_publish` writes it into the outgoing message's kwargs. The send
time never decides the label: a send that runs late (a takeover, a slow tick) is still labelled with the
instant that was due, so the next real instant is not mistaken for a duplicate of it.
The task records it, claims it (so two beats or a redelivery cannot run one instant twice) and hands it to
retries, which resend the same kwargs. Triggers sent by an application never pass through here.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from celery.signals import beat_init, before_task_publish

from cronshift.runtime.state import latest_fire, next_fire

__all__ = ["due_instant", "stamp_scheduled_for"]

_schedules: dict[str, tuple[str | None, str]] = {}  # task name -> (cronsim expression, zone)
_in_beat = False
_sending = threading.local()  # .instant: the instant of the entry being sent by this thread


def due_instant(expr: str | None, zone: str, last_run_at: datetime | None, now: float) -> float:
    """The instant beat is sending: cron's first fire after `last_run_at` (what made the entry due).

    Without a last run (an entry never sent) or an expression, the latest fire at or before `now`."""
    if expr and last_run_at is not None:
        if last_run_at.tzinfo is None:
            last_run_at = last_run_at.replace(tzinfo=UTC)  # celery keeps naive times in UTC
        t = next_fire(expr, zone, last_run_at.timestamp())
        if t is not None and t <= now:
            return t
    return latest_fire(expr, zone, now, tolerance=0.0)


def _beat_started(sender: Any = None, **_: Any) -> None:
    global _in_beat
    _in_beat = True
    scheduler = getattr(sender, "scheduler", None)
    if scheduler is None or getattr(scheduler, "_cronshift_wrapped", False):
        return
    send = scheduler.apply_async

    def apply_async(entry: Any, *args: Any, **kwargs: Any) -> Any:
        task = getattr(entry, "task", None)
        if task in _schedules:
            expr, zone = _schedules[task]
            _sending.instant = due_instant(expr, zone, getattr(entry, "last_run_at", None), time.time())
        try:
            return send(entry, *args, **kwargs)
        finally:
            _sending.instant = None

    scheduler.apply_async = apply_async
    scheduler._cronshift_wrapped = True


def _stamp(sender: str | None = None, body: Any = None, **_: Any) -> None:
    if not _in_beat or sender not in _schedules:
        return
    kwargs = body[1] if isinstance(body, tuple) and len(body) > 1 else (body or {}).get("kwargs")
    if isinstance(kwargs, dict):
        expr, zone = _schedules[sender]
        instant = getattr(_sending, "instant", None)
        # Overwritten every time: an entry's own kwargs dict may be the object beat sends again.
        kwargs["scheduled_for"] = (
            instant if instant is not None else latest_fire(expr, zone, time.time(), tolerance=0.0)
        )


def stamp_scheduled_for(schedules: dict[str, tuple[str | None, str]]) -> None:
    """Called from the generated app.py with each beat-driven task's cron expression and zone."""
    _schedules.update(schedules)
    beat_init.connect(_beat_started, weak=False, dispatch_uid="cronshift-beat-init")
    before_task_publish.connect(_stamp, weak=False, dispatch_uid="cronshift-stamp-scheduled-for")
