"""Carry the logical fire time (`scheduled_for`) from beat into the task.

A beat entry's kwargs are fixed when the schedule is loaded, so they cannot hold the instant being fired.
Instead, in the beat process only (flagged by `beat_init`), `before_task_publish` writes into the outgoing
message's kwargs the latest instant <= now at which cron fires the job: beat sends a run at (or, after
downtime within its starting deadline, shortly after) that instant, so this is the run's logical time.
The task records it, claims it (so two beats or a redelivery cannot run one instant twice) and hands it to
retries, which resend the same kwargs. Triggers sent by an application never pass through here.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import beat_init, before_task_publish

from cronshift.runtime.state import latest_fire

__all__ = ["stamp_scheduled_for"]

_schedules: dict[str, tuple[str | None, str]] = {}  # task name -> (cronsim expression, zone)
_in_beat = False


def _beat_started(sender: Any = None, **_: Any) -> None:
    global _in_beat
    _in_beat = True


def _stamp(sender: str | None = None, body: Any = None, **_: Any) -> None:
    if not _in_beat or sender not in _schedules:
        return
    kwargs = body[1] if isinstance(body, tuple) and len(body) > 1 else (body or {}).get("kwargs")
    if isinstance(kwargs, dict):
        expr, zone = _schedules[sender]
        # Overwritten every time: an entry's own kwargs dict may be the object beat sends again.
        kwargs["scheduled_for"] = latest_fire(expr, zone, time.time())


def stamp_scheduled_for(schedules: dict[str, tuple[str | None, str]]) -> None:
    """Called from the generated app.py with each beat-driven task's cron expression and zone."""
    _schedules.update(schedules)
    beat_init.connect(_beat_started, weak=False, dispatch_uid="cronshift-beat-init")
    before_task_publish.connect(_stamp, weak=False, dispatch_uid="cronshift-stamp-scheduled-for")
