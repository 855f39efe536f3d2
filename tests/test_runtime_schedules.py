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


def test_latest_fire_reads_the_entries_own_schedule() -> None:
    """The instant a run is for comes from the beat entries themselves (the only copy of the schedule)."""
    from celery.schedules import crontab

    from cronshift.runtime.schedules import beat_schedules, fires_between_of, latest_fire_of

    a = app(120)
    a.conf.beat_schedule = {
        # cron's '0 0 1 * 1' (1st of the month OR Monday) as generate splits it
        "j-1": {"task": "pkg.j", "schedule": crontab("0", "0", day_of_month="1", day_of_week="*")},
        "j-2": {"task": "pkg.j", "schedule": crontab("0", "0", day_of_month="2-31", day_of_week="1")},
        "gap": {"task": "pkg.gap", "schedule": cronsim_schedule("30 2 * * *", "Europe/Berlin")},
    }
    j = beat_schedules(a, "pkg.j")
    assert len(j) == 2 and beat_schedules(a, "pkg.other") == []
    # Monday 2027-03-08 00:00:05 Berlin: beat is sending the Monday run
    assert latest_fire_of(j, at("2027-03-08T00:00:05+01:00")) == at("2027-03-08T00:00:00+01:00")
    # Monday 2027-03-01 is also the 1st: one instant, not two
    got = fires_between_of(j, at("2027-02-27T00:00:00+01:00"), at("2027-03-16T00:00:00+01:00"), 10)
    assert got == [at(f"2027-03-{d:02d}T00:00:00+01:00") for d in (1, 8, 15)]
    gap = beat_schedules(a, "pkg.gap")
    assert latest_fire_of(gap, at("2027-03-28T03:00:01+02:00")) == at("2027-03-28T03:00:00+02:00")
