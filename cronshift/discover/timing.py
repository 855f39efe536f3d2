"""When a job fires, in words and instants, for whichever kind of schedule its source uses."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from cronshift.discover.crontab_file import anacron_period_days
from cronshift.discover.schedule import Dialect, ScheduleError, describe, next_fires, parse
from cronshift.model import CronJob, Format


def is_anacron_schedule(schedule: str) -> bool:
    parts = schedule.split()
    return len(parts) == 2 and parts[1].isdigit()


@lru_cache(maxsize=4096)
def describe_schedule(schedule: str, dialect: str = "debian") -> str:
    if not schedule:
        return "never (nothing runs it)"
    if is_anacron_schedule(schedule):
        days = anacron_period_days(schedule)
        delay = int(schedule.split()[1])
        every = "every day" if days == 1 else f"every {days} days"
        return f"anacron: {every}, {delay} min after anacron starts (catches up after downtime)"
    try:
        return describe(parse(schedule, Dialect(dialect)))
    except ScheduleError as e:
        return f"invalid: {e}"


def upcoming(
    job: CronJob, now: datetime, tz: str | None, n: int = 3, dialect: str = "debian"
) -> list[datetime]:
    """The next `n` fire times; [] for @reboot, anacron periods and jobs cron never runs."""
    if (
        not job.runs
        or not job.schedule
        or is_anacron_schedule(job.schedule)
        or job.format is Format.ANACRONTAB
    ):
        return []
    try:
        expr = parse(job.schedule, Dialect(dialect))
    except ScheduleError:
        return []
    try:
        return next_fires(expr, job.timezone or tz, now, n)
    except ScheduleError:  # an unknown CRON_TZ: no upcoming runs to show (generate reports it)
        return []
