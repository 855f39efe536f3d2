"""Cron schedule -> Celery beat entries, and the proof that they fire at cron's instants.

The proof drives Celery's own schedule code (`remaining_estimate`, then `is_due` at the instant it names)
with a controllable clock, exactly as beat does: after each send beat sets `last_run_at` to now. Every
instant counts, duplicates included, and is compared with cronsim (the reference for cron) over one
calendar year, which holds both DST changes of any zone that has them.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule, crontab

from cronshift.discover.schedule import CronExpr, compress, fires_between
from cronshift.runtime.schedules import cronsim_schedule

__all__ = ["BeatEntry", "Proof", "Translation", "celery_fires", "prove", "translate"]

_ALL = {
    "minute": frozenset(range(60)),
    "hour": frozenset(range(24)),
    "day_of_month": frozenset(range(1, 32)),
    "month_of_year": frozenset(range(1, 13)),
    "day_of_week": frozenset(range(7)),
}
_LOW = {"minute": 0, "hour": 0, "day_of_month": 1, "month_of_year": 1, "day_of_week": 0}
_MAX_DIFFERENCES = 50  # the report names the first ones and counts the rest


@dataclass(frozen=True, slots=True)
class BeatEntry:
    """One beat entry: a stock crontab (kind 'crontab', `fields`) or the cronsim class (kind 'cronsim')."""

    kind: str
    fields: tuple[tuple[str, str], ...] = ()  # crontab kwargs in order, values as Celery spec strings
    expr: str = ""  # cronsim expression (kind 'cronsim')
    zone: str = "UTC"
    why: str = ""

    def schedule(self, app: Celery) -> BaseSchedule:
        if self.kind == "cronsim":
            return cronsim_schedule(self.expr, self.zone, app=app)
        return crontab(**dict(self.fields), app=app)

    def source(self) -> str:
        """The Python expression the generated app.py uses for this entry."""
        if self.kind == "cronsim":
            return f"cronsim_schedule({self.expr!r}, {self.zone!r})"
        return "crontab(" + ", ".join(f"{k}={v!r}" for k, v in self.fields) + ")"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "schedule": self.source()}
        if self.kind == "crontab":
            d["fields"] = dict(self.fields)
        else:
            d["expr"], d["zone"] = self.expr, self.zone
        d["why"] = self.why
        return d


@dataclass(frozen=True, slots=True)
class Proof:
    identical: bool
    window: tuple[str, str]
    zone: str
    differences: tuple[dict[str, Any], ...] = ()
    more_differences: int = 0  # differences beyond the ones listed
    fires: int = 0  # cron's fire count in the window

    def to_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "window": list(self.window),
            "zone": self.zone,
            "fires": self.fires,
            "differences": list(self.differences),
            "more_differences": self.more_differences,
        }


@dataclass(frozen=True, slots=True)
class Translation:
    """What generate puts in beat for one schedule, with its proof; `message` says why there is no entry."""

    entries: tuple[BeatEntry, ...]
    proof: Proof | None
    message: str = ""
    notes: tuple[str, ...] = field(default=())


def _spec(name: str, values: frozenset[int]) -> str:
    if values == _ALL[name]:
        return "*"
    vals = sorted(values)
    low, high = _LOW[name], max(_ALL[name])
    if len(vals) > 1 and vals[0] == low:
        step = vals[1] - vals[0]
        if vals == list(range(low, high + 1, step)):
            return f"*/{step}"
    return compress(values)


def _crontab_entry(
    minute: frozenset[int],
    hour: frozenset[int],
    dom: frozenset[int],
    month: frozenset[int],
    dow: frozenset[int],
) -> BeatEntry:
    fields = (
        ("minute", _spec("minute", minute)),
        ("hour", _spec("hour", hour)),
        ("day_of_month", _spec("day_of_month", dom)),
        ("month_of_year", _spec("month_of_year", month)),
        ("day_of_week", _spec("day_of_week", dow)),
    )
    return BeatEntry("crontab", fields)


def crontab_entries(expr: CronExpr) -> tuple[BeatEntry, ...]:
    """Stock crontab entries equal to cron's table (wall-clock minutes; DST is the proof's business).

    Celery ANDs day-of-month with day-of-week; cron ORs them when neither field starts with '*'. The OR
    becomes two entries that never select the same day: (dom set, any weekday) and (weekday set, every
    other dom), so beat never sends twice on a day that matches both."""
    m, h, mo = expr.minute, expr.hour, expr.month
    dom, dow = expr.dom, expr.dow
    if expr.dom_star or expr.dow_star:
        pairs = [(dom, dow)]
    else:
        pairs = []
        if dom:
            pairs.append((dom, _ALL["day_of_week"]))
        if dow:
            pairs.append((_ALL["day_of_month"] - dom, dow))
    out: list[BeatEntry] = []
    for d, w in pairs:
        if not (d and w and m and h and mo):
            continue
        if not any(day <= _DAYS_IN_MONTH[mon] for mon in mo for day in d):
            continue  # Celery refuses a dom/month pair that never occurs; it adds no fire either
        out.append(_crontab_entry(m, h, d, mo, w))
    return tuple(out)


_DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


@functools.lru_cache(maxsize=64)
def proof_app(zone: str) -> Celery:
    """A Celery app configured like the generated one (timezone pinned, UTC enabled), never current."""
    app = Celery("cronshift-proof", set_as_current=False)
    app.conf.timezone = zone
    app.conf.enable_utc = True
    app.conf.beat_cron_starting_deadline = 120
    return app


def _tz(zone: str) -> tzinfo:
    from zoneinfo import ZoneInfo

    return UTC if zone in ("UTC", "Etc/UTC") else ZoneInfo(zone)


def celery_fires(entry: BeatEntry, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """The instants beat sends `entry` in [start, end), computed by Celery's own schedule code.

    Beat creates the entry with last_run_at = now (start), asks `remaining_estimate`, sleeps that long,
    checks `is_due`, sends, and sets last_run_at to now. The clock here jumps to each instant Celery names."""
    app = proof_app(zone)
    # Beat started one second before the window, so an instant at the window's start counts.
    # The clock runs in UTC: arithmetic on aware datetimes of one ZoneInfo zone is wall-clock arithmetic.
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    clock = [start - timedelta(seconds=1)]
    sched = entry.schedule(app)
    sched.nowfun = lambda: clock[0]
    last = clock[0]
    out: list[datetime] = []
    while True:
        # is_due() is due exactly when this estimate is <= 0 (crontab.is_due; its starting-deadline branch
        # only concerns entries that are already overdue, which a beat woken on time never has), so the
        # instant named here is the instant beat sends at.
        when = clock[0] + sched.remaining_estimate(last)
        if when <= last:
            # Celery names a time not after the last send: beat sends at once and again as soon as its
            # real clock moves; model the clock moving by one second.
            when = last + timedelta(seconds=1)
        if when >= end:
            return out
        clock[0] = when
        if when >= start:
            out.append(when)
        last = when


@functools.lru_cache(maxsize=4096)
def _cron_instants(expr: CronExpr, zone: str, start: datetime, end: datetime) -> tuple[datetime, ...]:
    return tuple(fires_between(expr, zone, start, end))


@functools.lru_cache(maxsize=4096)
def _entries_instants(
    entries: tuple[BeatEntry, ...], zone: str, start: datetime, end: datetime
) -> tuple[datetime, ...]:
    got: list[datetime] = []
    for e in entries:
        got.extend(celery_fires(e, zone, start, end))
    return tuple(got)


def window_for(year: int, zone: str) -> tuple[datetime, datetime]:
    tz = _tz(zone)
    return datetime(year, 1, 1, tzinfo=tz), datetime(year + 1, 1, 1, tzinfo=tz)


@functools.lru_cache(maxsize=4096)
def prove(expr: CronExpr, entries: tuple[BeatEntry, ...], zone: str, year: int) -> Proof:
    """Compare beat's instants for `entries` with cron's for `expr` over calendar `year` in `zone`."""
    start, end = window_for(year, zone)
    want = Counter(t.astimezone(UTC) for t in _cron_instants(expr, zone, start, end))
    got = Counter(t.astimezone(UTC) for t in _entries_instants(entries, zone, start, end))
    diffs: list[dict[str, Any]] = []
    tz = _tz(zone)
    for t in sorted(set(want) | set(got)):
        if want[t] != got[t]:
            diffs.append({"instant": t.astimezone(tz).isoformat(), "cron": want[t], "celery": got[t]})
    window = (start.isoformat(), end.isoformat())
    shown = tuple(diffs[:_MAX_DIFFERENCES])
    return Proof(not diffs, window, zone, shown, len(diffs) - len(shown), sum(want.values()))


def translate(expr: CronExpr, zone: str, year: int) -> Translation:
    """Stock crontab where the proof says it is exact, else the cronsim class (proved too)."""
    if expr.reboot:
        return Translation((), None, "@reboot runs when cron starts, not on the clock: no beat entry")
    reason = expr.never_fires_reason()
    if reason is not None or expr.cronsim_expr() is None:
        return Translation((), None, f"this schedule never fires ({reason}): no beat entry")
    stock = crontab_entries(expr)
    proof = prove(expr, stock, zone, year)
    if proof.identical:
        why = "stock crontab: proved to fire at cron's instants"
        if len(stock) == 2:
            why = (
                "cron ORs day-of-month with day-of-week when both are restricted; Celery ANDs them, so the "
                "OR is split into two entries that never select the same day"
            )
        return Translation(tuple(_with_why(e, why) for e in stock), proof)
    cexpr = expr.cronsim_expr()
    assert cexpr is not None
    n = len(proof.differences) + proof.more_differences
    why = (
        f"a stock crontab differs from cron at {n} instant(s) in {year} ({zone} DST changes: cron runs "
        "jobs caught in the spring gap at the change and wildcard-hour jobs in both passes of the repeated "
        "hour); this cronsim-driven schedule fires exactly where cron does"
    )
    entry = BeatEntry("cronsim", expr=cexpr, zone=zone, why=why)
    proof2 = prove(expr, (entry,), zone, year)
    return Translation((entry,), proof2, notes=(why,))


def _with_why(e: BeatEntry, why: str) -> BeatEntry:
    return BeatEntry(e.kind, e.fields, e.expr, e.zone, why)
