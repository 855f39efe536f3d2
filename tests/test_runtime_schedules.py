"""cronshift.runtime.schedules.cronsim_schedule as beat uses it: is_due, the starting deadline, pickling."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from celery import Celery

from cronshift.runtime.schedules import cronsim_schedule


def app(deadline: int | None) -> Celery:
    a = Celery("t", set_as_current=False)
    a.conf.timezone = "Europe/Berlin"
    a.conf.beat_cron_starting_deadline = deadline
    return a


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


def test_spring_gap_fires_at_the_change_like_cron() -> None:
    now = [at("2026-03-29T01:59:00+01:00")]
    s = cronsim_schedule("30 2 * * *", "Europe/Berlin", nowfun=lambda: now[0], app=app(120))
    due, wait = s.is_due(now[0])
    assert not due and wait == 60  # 02:00 CET does not exist: cron runs the job at 03:00 CEST
    now[0] = at("2026-03-29T03:00:00+02:00")
    assert s.is_due(at("2026-03-29T01:59:00+01:00"))[0]


def test_starting_deadline_skips_stale_runs_but_not_fresh_ones() -> None:
    now = [at("2026-06-01T12:00:30+02:00")]
    fresh = cronsim_schedule("0 12 * * *", "Europe/Berlin", nowfun=lambda: now[0], app=app(120))
    assert fresh.is_due(now[0] - timedelta(days=1))[0]  # missed by 30 s: within the deadline
    now[0] = at("2026-06-01T12:10:00+02:00")
    due, wait = fresh.is_due(now[0] - timedelta(days=1))
    assert not due and wait == 86400 - 600  # missed by 10 min: skipped, next is tomorrow's


def test_pickles_for_beats_schedule_file() -> None:
    s = cronsim_schedule("*/5 * * * *", "America/New_York")
    s.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    assert pickle.loads(pickle.dumps(s)) == s
