"""Cron schedule -> Celery beat entries, and the proof that they fire at cron's instants.

The reference is cron itself, not the code under test: `CronModel` ports the minute loop of Debian cron's
cron.c (shared by cronie) over the field sets `discover.schedule` parsed the way cron parses them. Each
minute cron compares local wall-clock time with its "virtual time": one minute on runs every job of that
minute; a jump forward of 6-180 minutes (spring) runs the wildcard jobs (minute or hour starting with '*')
of the new minute and every fixed-time job of each skipped minute; a jump back (autumn) runs only
wildcard jobs until the clock catches up; smaller or larger jumps follow cron's other two branches.

The proof covers a full leap cycle (2027-2030, and the generation year): wherever the zone's offset does
not change, cron fires exactly at the local wall-clock minutes its table selects, and so must the beat
entry. So the proof is structural there (the entry's field sets, as Celery or cronsim parsed them, are
compared with cron's, including the day-of-month/day-of-week rule), and simulated only where structure
cannot speak: around every offset change of the zone in the range (cron's loop is run minute by minute,
and beat's schedule code is driven from the fire before the change to the second fire after it) and
across every month boundary (beat's date roll-over, leap days included). Memory stays bounded per job:
no full list of instants is ever built.

A schedule that does not follow the local wall clock can leave the local zone: see `utc_minutes`. Its stock
crontab is then written in UTC for an app whose zone is UTC, and proved the same way (the structure is
compared at each offset the zone takes; beat's roll-over at UTC month boundaries is simulated as well).
So can any schedule in a zone that keeps one UTC offset over the whole range (Kolkata), where its table
shifted by that offset is a cron set (`utc_tables`); its structure is compared UTC day by UTC day.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import BaseSchedule, crontab
from cronsim import CronSim

from cronshift.discover.schedule import CronExpr, compress
from cronshift.runtime.schedules import cronsim_schedule

__all__ = [
    "PROOF_YEARS",
    "UTC_ZONES",
    "BeatEntry",
    "CronModel",
    "Proof",
    "Translation",
    "celery_fires",
    "class_translation",
    "is_utc",
    "proof_range",
    "prove",
    "stock_translation",
    "translate",
    "utc_minutes",
    "utc_tables",
]

UTC_ZONES = ("UTC", "Etc/UTC", "")
PROOF_YEARS = (2027, 2031)  # [2027-01-01, 2031-01-01): a full leap cycle (2028 is a leap year)
_ALL = {
    "minute": frozenset(range(60)),
    "hour": frozenset(range(24)),
    "day_of_month": frozenset(range(1, 32)),
    "month_of_year": frozenset(range(1, 13)),
    "day_of_week": frozenset(range(7)),
}
_LOW = {"minute": 0, "hour": 0, "day_of_month": 1, "month_of_year": 1, "day_of_week": 0}
_MAX_DIFFERENCES = 50  # the report names the first ones and counts the rest
_EPOCH = datetime(1970, 1, 1)
_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)
_MINUTES = tuple(timedelta(minutes=m) for m in range(60))
_ORD_1970 = date(1970, 1, 1).toordinal()
_CATCH_UP = timedelta(seconds=10)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BeatEntry:
    """One beat entry: a stock crontab (kind 'crontab', `fields`) or cronshift's class (kind 'cronsim')."""

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
        """The Python expression the generated app.py uses for this entry (quoted as ruff format quotes)."""
        if self.kind == "cronsim":
            return f"cronsim_schedule({_lit(self.expr)}, {_lit(self.zone)})"
        return "crontab(" + ", ".join(f"{k}={_lit(v)}" for k, v in self.fields) + ")"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "schedule": self.source()}
        if self.kind == "crontab":
            d["fields"] = dict(self.fields)
            d["zone"] = self.zone  # the app's zone: beat reads the fields on its wall clock
        else:
            d["expr"], d["zone"] = self.expr, self.zone
        d["why"] = self.why
        return d


def _lit(v: str) -> str:
    r = repr(v)
    return '"' + r[1:-1] + '"' if r.startswith("'") and '"' not in v else r


@dataclass(frozen=True, slots=True)
class Proof:
    identical: bool
    window: tuple[str, str]
    zone: str
    differences: tuple[dict[str, Any], ...] = ()
    more_differences: int = 0  # differences beyond the ones listed
    fires: int = 0  # cron's fire count in the window
    transitions: int = 0  # offset changes of the zone in the window, each simulated
    checks: int = 0  # simulated stretches (offset changes and month boundaries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "window": list(self.window),
            "zone": self.zone,
            "fires": self.fires,
            "offset_changes": self.transitions,
            "simulated_stretches": self.checks,
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


# -- stock crontab entries ------------------------------------------------------------------------------


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
    zone: str = "UTC",
) -> BeatEntry:
    fields = (
        ("minute", _spec("minute", minute)),
        ("hour", _spec("hour", hour)),
        ("day_of_month", _spec("day_of_month", dom)),
        ("month_of_year", _spec("month_of_year", month)),
        ("day_of_week", _spec("day_of_week", dow)),
    )
    return BeatEntry("crontab", fields, zone=zone)


def is_utc(zone: str) -> bool:
    return zone in UTC_ZONES


def _offsets(zone: str, start: datetime, end: datetime) -> frozenset[int]:
    """Every UTC offset (minutes) `zone` takes in [start, end)."""
    trans = transitions(zone, start.astimezone(UTC), end.astimezone(UTC))
    if not trans:
        return frozenset({_off(_tz(zone), start)})
    return frozenset({trans[0].before, *(t.after for t in trans)})


def utc_minutes(expr: CronExpr, zone: str, year: int) -> frozenset[int] | None:
    """The UTC minutes of a schedule that fires at the same instants whatever `zone`'s offset, or None.

    Such a schedule is a stock crontab in UTC: crontab(minute=<these>) in an app whose zone is UTC. When:
    - every hour, day and month is selected and the hour field starts with '*' (cron's wildcard rule);
    - shifting the minute set by each offset the zone takes over the proof range gives one and the same
      set (`0 * * * *` in Kolkata, +5:30 all year: minute 30 UTC; in Lord Howe, +10:30 and +11:00, no
      single set: None; `*/15` is the same at both);
    - every offset change is a jump of 6 to 180 minutes: cron's loop then runs a wildcard job at exactly
      the instants whose local time matches (the new minute after a jump forward, each pass of a repeated
      span after a jump back), which are the UTC instants with these minutes. Smaller or larger changes
      take other branches of cron's loop.
    Why it holds between changes: at a steady offset o, cron fires at U when local U + o matches; with every
    hour and day selected that is (minute(U) + o) mod 60 in the minute set. The proof checks it anyway."""
    if not (expr.hour_star and expr.hour == _ALL["hour"]) or expr.month != _ALL["month_of_year"]:
        return None
    if expr.dom != _ALL["day_of_month"] or expr.dow != _ALL["day_of_week"] or not expr.minute:
        return None
    start, end = proof_range(zone, year)
    trans = transitions(zone, start.astimezone(UTC), end.astimezone(UTC))
    if any(not 5 < abs(t.after - t.before) <= 180 for t in trans):
        return None
    shifted = {frozenset((m - o) % 60 for m in expr.minute) for o in _offsets(zone, start, end)}
    return next(iter(shifted)) if len(shifted) == 1 else None


Table = tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int], frozenset[int]]


@dataclass(frozen=True, slots=True)
class UtcTables:
    """A schedule's stock crontab tables in UTC, one per entry (minute, hour, day of month, month, day of
    week), and why; no tables: no stock crontab in UTC says the schedule, and `why` says what stops it."""

    tables: tuple[Table, ...]
    why: str


@functools.lru_cache(maxsize=4096)
def utc_tables(expr: CronExpr, zone: str, year: int) -> UtcTables:
    """The stock crontabs in UTC (the app's zone) for cron's `expr` in `zone`, where a cron set says it.

    Two cases, each still proved by `prove` before generate writes it:
    - a schedule that fires at the same instants whatever the zone's offset (`utc_minutes`);
    - a zone with one UTC offset over the whole proof range (Kolkata, +5:30): cron's instants are its
      table shifted by that offset (`_shifted_tables`)."""
    minutes = utc_minutes(expr, zone, year)
    if minutes is not None:
        shift = "" if minutes == expr.minute else f" (minute {_spec('minute', minutes)} in UTC)"
        why = (
            f"stock crontab in UTC, the app's zone: the schedule selects every hour and day, so it fires at "
            f"the same instants whatever {zone}'s offset{shift}; proved across each offset change"
        )
        return UtcTables(((minutes, expr.hour, expr.dom, expr.month, expr.dow),), why)
    start, end = proof_range(zone, year)
    offsets = _offsets(zone, start, end)
    if len(offsets) != 1:
        return UtcTables(
            (),
            f"this schedule follows {zone}'s wall clock, whose UTC offset changes over the proof range: no "
            "crontab in UTC fires at its instants",
        )
    return _shifted_tables(expr, zone, next(iter(offsets)))


def _hhmm(offset: int) -> str:
    h, m = divmod(abs(offset), 60)
    return f"{'-' if offset < 0 else '+'}{h:02}:{m:02}"


def _shifted_tables(expr: CronExpr, zone: str, offset: int) -> UtcTables:
    """Cron's table in a zone that keeps one UTC offset, shifted into UTC, when cron sets say the result.

    Local time t (minutes into the day) on local day L is UTC minute t - offset, on L's day before, on L
    or on L's day after (k = -1, 0, 1). The local times are grouped by k, and each group's UTC hours by
    their minute set: one entry per minute set (a whole-hour offset keeps one; a half hour splits an hour's
    minutes into those before and after :30, so at most three), with disjoint UTC times, so no two entries
    select one minute. Group k = 0 keeps cron's day fields (same date). Another k moves every
    selected day by k: exact only when every month is selected and the day rule depends on the weekday
    alone (dom '*', or both '*'): the weekdays rotate by k. A day-of-month or a month would land on the
    day before or after (1 May 02:30 in Kolkata is 30 April 21:00 UTC), which no crontab says. When every
    day of every month is selected the day move is invisible, and the groups are one table."""
    zone_off = f"{zone} keeps one UTC offset ({_hhmm(offset)}) over the proof range"
    no = f"{zone_off}, but cron's table shifted by it into UTC is no set of crontabs: "
    groups: dict[int, list[int]] = {}
    for t in sorted(h * 60 + m for h in expr.hour for m in expr.minute):
        k, u = divmod(t - offset, 1440)
        groups.setdefault(k, []).append(u)
    days = _cron_days(expr)
    every_month = expr.month == _ALL["month_of_year"]
    if every_month and len(days) == 31 * 7:
        groups = {0: sorted(u for us in groups.values() for u in us)}
    weekdays = frozenset(w for _d, w in days)
    weekday_only = days == {(d, w) for d in range(1, 32) for w in weekdays}
    tables: list[Table] = []
    moves = []
    for k, us in sorted(groups.items()):
        by_hour: dict[int, set[int]] = {}
        for u in us:
            by_hour.setdefault(u // 60, set()).add(u % 60)
        parts: dict[frozenset[int], set[int]] = {}  # minute set -> the UTC hours that have it
        for h, ms in sorted(by_hour.items()):
            parts.setdefault(frozenset(ms), set()).add(h)
        if k == 0:
            tables.extend(
                (mins, frozenset(hours), d, mo, w)
                for mins, hours in parts.items()
                for d, mo, w in _day_fields(expr)
            )
            continue
        side = "before" if k < 0 else "after"
        if not every_month:
            return UtcTables((), no + f"its jobs land on the day {side} in UTC, and the month is restricted")
        if not weekday_only:
            return UtcTables(
                (),
                no + f"its jobs land on the day {side} in UTC, and day-of-month is restricted (the "
                "UTC day would be the one before or after each selected day of the month)",
            )
        dow = frozenset((w + k) % 7 for w in weekdays)
        tables.extend(
            (mins, frozenset(hours), _ALL["day_of_month"], expr.month, dow) for mins, hours in parts.items()
        )
        moves.append(f"on the day {side}, weekdays moved by {k:+d}")
    if len(tables) > 1:
        moves.append(f"{len(tables)} entries that never select the same minute")
    why = (
        f"stock crontab in UTC, the app's zone: {zone_off}, so cron's instants are its table shifted by it"
        + (f" ({'; '.join(moves)})" if moves else "")
        + "; proved"
    )
    return UtcTables(tuple(tables), why)


def crontab_entries(expr: CronExpr, zone: str = "UTC") -> tuple[BeatEntry, ...]:
    """Stock crontab entries equal to cron's table (wall-clock minutes; DST is the proof's business)."""
    if not (expr.minute and expr.hour):
        return ()
    return tuple(_crontab_entry(expr.minute, expr.hour, d, mo, w, zone) for d, mo, w in _day_fields(expr))


def _day_fields(expr: CronExpr) -> list[tuple[frozenset[int], frozenset[int], frozenset[int]]]:
    """(day of month, month, day of week) of each crontab cron's day rule and month field need.

    Celery ANDs day-of-month with day-of-week; cron ORs them when neither field starts with '*'. The OR
    becomes two entries that never select the same day: (dom set, any weekday) and (weekday set, every
    other dom), so beat never sends twice on a day that matches both."""
    mo, dom, dow = expr.month, expr.dom, expr.dow
    if expr.dom_star or expr.dow_star:
        pairs = [(dom, dow)]
    else:
        pairs = []
        if dom:
            pairs.append((dom, _ALL["day_of_week"]))
        if dow:
            pairs.append((_ALL["day_of_month"] - dom, dow))
    out = []
    for d, w in pairs:
        if not (d and w and mo):
            continue
        if not any(day <= _DAYS_IN_MONTH[mon] for mon in mo for day in d):
            continue  # Celery refuses a dom/month pair that never occurs; it adds no fire either
        out.append((d, mo, w))
    return out


_DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


@functools.lru_cache(maxsize=64)
def proof_app(zone: str) -> Celery:
    """A Celery app configured like the generated one (timezone pinned, UTC enabled), never current."""
    app = Celery("cronshift-proof", set_as_current=False)
    app.conf.timezone = zone
    app.conf.enable_utc = True
    app.conf.beat_cron_starting_deadline = 120
    return app


@functools.lru_cache(maxsize=256)
def _tz(zone: str) -> tzinfo:
    return UTC if zone in ("UTC", "Etc/UTC", "") else ZoneInfo(zone)


# -- the reference: cron's own loop ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime  # UTC instant the new offset starts
    before: int  # offset in minutes
    after: int


def _off(tz: tzinfo, t: datetime) -> int:
    o = t.astimezone(tz).utcoffset()
    assert o is not None
    return int(o.total_seconds() // 60)


@functools.lru_cache(maxsize=256)
def transitions(zone: str, start: datetime, end: datetime) -> tuple[Transition, ...]:
    """Every offset change of `zone` in [start, end) (UTC), found from the tz data to the second.

    zoneinfo has no public list of transitions, so offsets are sampled every 6 hours (no zone changes
    twice within 6 hours) and each change is located by bisection."""
    tz = _tz(zone)
    if tz is UTC:
        return ()
    out: list[Transition] = []
    step = timedelta(hours=6)
    t = start
    o = _off(tz, t)
    while t < end:
        n = min(t + step, end)
        on = _off(tz, n)
        if on != o:
            lo, hi = t, n  # offset(lo) == o, offset(hi) != o
            while hi - lo > _SECOND:
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0)
                if mid <= lo:
                    mid = lo + _SECOND
                if _off(tz, mid) == o:
                    lo = mid
                else:
                    hi = mid
            out.append(Transition(hi, o, _off(tz, hi)))
        t, o = n, on
    return tuple(out)


def proof_range(zone: str, year: int) -> tuple[datetime, datetime]:
    """Local midnight on 1 January of the first year .. of the year after the last: 2027-2030 and `year`."""
    tz = _tz(zone)
    first, last = min(year, PROOF_YEARS[0]), max(year + 1, PROOF_YEARS[1])
    return datetime(first, 1, 1, tzinfo=tz), datetime(last, 1, 1, tzinfo=tz)


def _day_key(expr: CronExpr) -> tuple[frozenset[int], frozenset[int], frozenset[int], bool]:
    return (expr.dom, expr.dow, expr.month, expr.dom_star or expr.dow_star)


@functools.lru_cache(maxsize=1024)
def _fire_days(
    key: tuple[frozenset[int], frozenset[int], frozenset[int], bool], d0: date, d1: date
) -> list[date]:
    """The local dates in [d0, d1] cron's day rule and month field select (shared by equal day fields)."""
    dom, dow, month, and_rule = key
    out = []
    for k in range((d1 - d0).days + 1):
        d = d0 + timedelta(days=k)
        if d.month not in month:
            continue
        a, b = d.day in dom, (d.weekday() + 1) % 7 in dow
        if (a and b) if and_rule else (a or b):
            out.append(d)
    return out


class CronModel:
    """Cron's fire instants for one expression in one zone over the proof range (UTC, to the minute).

    Outside the stretches around offset changes every local minute exists once, so cron's minute loop
    reduces to the table (`grid`); inside them the loop itself is run (`_loop`). Both read only the
    parsed field sets and flags, never cronsim or Celery."""

    def __init__(self, expr: CronExpr, zone: str, start: datetime, end: datetime) -> None:
        self.expr, self.zone, self.tz = expr, zone, _tz(zone)
        self.start, self.end = start.astimezone(UTC), end.astimezone(UTC)
        self.wild = expr.minute_star or expr.hour_star
        self.hours, self.minutes = sorted(expr.hour), sorted(expr.minute)
        self.minute_set, self.hour_set = expr.minute, expr.hour
        self.trans = transitions(zone, self.start, self.end)
        self.windows: list[tuple[datetime, datetime]] = []
        for tr in self.trans:
            span = timedelta(minutes=abs(tr.after - tr.before) + 5)
            a = max(self.start, (tr.at - span).replace(second=0))
            b = min(self.end, (tr.at + span).replace(second=0) + _MINUTE)
            if self.windows and a <= self.windows[-1][1]:
                self.windows[-1] = (self.windows[-1][0], b)
            else:
                self.windows.append((a, b))
        self._window_starts = [a for a, _ in self.windows]
        self._loops: dict[int, list[datetime]] = {}
        d0 = self._local(self.start).date()
        d1 = self._local(self.end - _SECOND).date()
        self.days = _fire_days(_day_key(expr), d0, d1)
        self._day_set = frozenset(self.days)
        self._d0, self._d1 = d0, d1

    def day_ok(self, d: date) -> bool:
        if self._d0 <= d <= self._d1:
            return d in self._day_set
        e = self.expr
        return d.month in e.month and e._day_matches(d)

    def _local(self, t: datetime) -> datetime:
        return t.astimezone(self.tz).replace(tzinfo=None)

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def _in_window(self, t: datetime) -> int | None:
        k = bisect.bisect_right(self._window_starts, t) - 1
        if k >= 0 and t < self.windows[k][1]:
            return k
        return None

    def _matches(self, local_minute: int) -> bool:
        days, hm = divmod(local_minute, 1440)
        h, m = divmod(hm, 60)
        return m in self.minute_set and h in self.hour_set and self.day_ok(date.fromordinal(_ORD_1970 + days))

    def _loop(self, k: int) -> list[datetime]:
        """cron.c's main loop, minute by minute, over window k (UTC instants, one per run)."""
        if k in self._loops:
            return self._loops[k]
        a, b = self.windows[k]
        ua = int((a - _EPOCH_UTC).total_seconds() // 60)
        ub = int((b - _EPOCH_UTC).total_seconds() // 60)
        # The offset at each minute, from the transitions found in the tz data (a step function).
        edges = [int((t.at - _EPOCH_UTC).total_seconds() // 60) for t in self.trans]
        offs = [self.trans[0].before, *(t.after for t in self.trans)] if self.trans else [0]

        def local(u: int) -> int:
            return u + offs[bisect.bisect_right(edges, u)]

        epoch = _EPOCH_UTC
        out: list[datetime] = []
        vt = local(ua - 1)
        for u in range(ua, ub):
            lt = local(u)
            at = epoch + timedelta(minutes=u)
            diff = lt - vt
            runs = 0
            if 0 < diff <= 5:  # on time, or woke up a little late: every job of every minute missed
                runs = sum(self._matches(v) for v in range(vt + 1, lt + 1))
                vt = lt
            elif 5 < diff <= 180:  # clock jumped forward: wildcard jobs now, fixed jobs of each minute
                if self.wild:
                    runs = int(self._matches(lt))
                else:
                    runs = sum(self._matches(v) for v in range(vt + 1, lt + 1))
                vt = lt
            elif -180 < diff <= 0:  # clock went back: wildcard jobs only, until virtual time catches up
                runs = int(self.wild and self._matches(lt))
            else:  # a jump of more than 3 hours: start over at the new time
                vt = lt
                runs = int(self._matches(lt))
            # cron sleeps 10 s after each catch-up minute that started a job: runs follow 10 s apart.
            out.extend(at + _CATCH_UP * j for j in range(runs))
        self._loops[k] = out
        return out

    def _grid(self, lo: datetime, hi: datetime, reverse: bool = False) -> Iterator[datetime]:
        """Table matches as UTC instants in [lo, hi), outside the windows, in order (or reversed).

        Outside the windows local time runs with UTC, so the local bounds select the candidates; a bound
        inside a window widens them by the zone's largest offset change (the UTC test is exact)."""
        slack = timedelta(0)
        if self._in_window(lo) is not None or self._in_window(hi) is not None:
            slack = timedelta(minutes=max((abs(t.after - t.before) for t in self.trans), default=0))
        llo, lhi = self._local(lo) - slack, self._local(hi) + slack
        i0 = bisect.bisect_left(self.days, llo.date())
        i1 = bisect.bisect_right(self.days, lhi.date())
        days = self.days[i0:i1]
        hours, minutes = self.hours, self.minutes
        if reverse:
            days = days[::-1]
        for d in days:
            base = datetime(d.year, d.month, d.day)
            first = d == llo.date()
            last = d == lhi.date()
            hs = hours
            if first or last:
                h0 = llo.hour if first else 0
                h1 = lhi.hour if last else 23
                hs = [h for h in hours if h0 <= h <= h1]
            for h in reversed(hs) if reverse else hs:
                hb = base.replace(hour=h)
                ms = minutes
                if (first and h == llo.hour) or (last and h == lhi.hour):
                    m0 = llo.minute if first and h == llo.hour else 0
                    m1 = lhi.minute if last and h == lhi.hour else 59
                    ms = minutes[bisect.bisect_left(minutes, m0) : bisect.bisect_right(minutes, m1)]
                hu = self._utc(hb)
                steady = self._utc(hb.replace(minute=59)) - hu == timedelta(minutes=59)
                for m in reversed(ms) if reverse else ms:
                    t = hu + _MINUTES[m] if steady else self._utc(hb.replace(minute=m))
                    if lo <= t < hi and self._in_window(t) is None:
                        yield t

    def fires(self, lo: datetime, hi: datetime) -> list[datetime]:
        """Cron's runs in [lo, hi), sorted, one entry per run."""
        out = list(self._grid(lo, hi))
        for k, (a, b) in enumerate(self.windows):
            if b > lo and a < hi:
                out.extend(t for t in self._loop(k) if lo <= t < hi)
        out.sort()
        return out

    def prev(self, t: datetime) -> datetime | None:
        """The last run before `t` in the range, or None."""
        g = next(self._grid(self.start, t, reverse=True), None)
        best = g
        for k, (a, _b) in enumerate(self.windows):
            if a < t and (g is None or self.windows[k][1] > g):
                runs = [x for x in self._loop(k) if x < t]
                if runs and (best is None or runs[-1] > best):
                    best = runs[-1]
        return best

    def nth_after(self, t: datetime, n: int) -> datetime:
        """The n-th run at or after `t` (or the range's end if there are fewer)."""
        runs = list(itertools.islice(self._grid(t, self.end), n))
        limit = runs[-1] if len(runs) == n else self.end
        for k, (a, b) in enumerate(self.windows):
            if a <= limit and b > t:
                runs.extend(x for x in self._loop(k) if x >= t)
        runs.sort()
        return runs[n - 1] if len(runs) >= n else self.end

    def count(self) -> int:
        """Cron's runs over the whole range, without listing them."""
        per_day = len(self.hours) * len(self.minutes)
        total = len(self.days) * per_day
        for k, (a, b) in enumerate(self.windows):
            la, lb = self._local(a), self._local(b)
            m = int((la - _EPOCH).total_seconds() // 60)
            mb = int((lb - _EPOCH).total_seconds() // 60)
            total -= sum(self._matches(v) for v in range(m, mb))  # the table's count there ...
            total += len(self._loop(k))  # ... replaced by the loop's
        return total


@functools.lru_cache(maxsize=8)
def _model(expr: CronExpr, zone: str, start: datetime, end: datetime) -> CronModel:
    """One model per schedule: the stock proof and the class's proof share its loops."""
    return CronModel(expr, zone, start, end)


# -- beat's side ----------------------------------------------------------------------------------------


def _drive(sched: BaseSchedule, since: datetime, until: datetime) -> list[datetime]:
    """The instants beat sends after `since` (its last send) and up to `until` inclusive.

    Beat asks `remaining_estimate`, sleeps that long, checks `is_due` (due exactly when the estimate is
    <= 0), sends, and sets last_run_at to now; the clock here jumps to each instant Celery names."""
    clock = [since]
    sched.nowfun = lambda: clock[0]
    last = since
    out: list[datetime] = []
    while True:
        when = clock[0] + sched.remaining_estimate(last)
        if when <= last:
            # Celery names a time not after the last send: beat sends again as soon as its clock moves.
            when = last + _SECOND
        if when > until:
            return out
        clock[0] = last = when
        out.append(when)


def celery_fires(entry: BeatEntry, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """The instants beat sends `entry` in [start, end), computed by Celery's own schedule code."""
    sched = entry.schedule(proof_app(zone))
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return [t for t in _drive(sched, start - _SECOND, end - timedelta(microseconds=1)) if t >= start]


def window_for(year: int, zone: str) -> tuple[datetime, datetime]:
    tz = _tz(zone)
    return datetime(year, 1, 1, tzinfo=tz), datetime(year + 1, 1, 1, tzinfo=tz)


# -- structure ------------------------------------------------------------------------------------------


def _cron_days(expr: CronExpr) -> set[tuple[int, int]]:
    """(day of month, weekday) pairs cron's day rule selects."""
    if expr.dom_star or expr.dow_star:
        return {(d, w) for d in expr.dom for w in expr.dow}
    return {(d, w) for d in range(1, 32) for w in range(7) if d in expr.dom or w in expr.dow}


def _entry_table(e: BeatEntry, app: Celery) -> tuple[set[int], set[int], set[int], Any]:
    """An entry's minute, hour and month sets as its own code parsed them, and its day test."""
    if e.kind == "cronsim":
        c = CronSim(e.expr, datetime(2000, 1, 1))
        dom, dow, and_rule = set(c.days), {int(w) % 7 for w in c.weekdays if isinstance(w, int)}, c.day_and

        def day(d: date) -> bool:
            a, b = d.day in dom, (d.weekday() + 1) % 7 in dow
            return (a and b) if and_rule else (a or b)

        return set(c.minutes), set(c.hours), set(c.months), day
    s = e.schedule(app)
    assert isinstance(s, crontab)
    sdom, sdow = set(s.day_of_month), set(s.day_of_week)
    return (
        set(s.minute),
        set(s.hour),
        set(s.month_of_year),
        (lambda d: d.day in sdom and (d.weekday() + 1) % 7 in sdow),
    )


def _structure(expr: CronExpr, entries: tuple[BeatEntry, ...], app: Celery, model: CronModel) -> list[date]:
    """Days where the entries' parsed tables select other minutes than cron's (empty: the same table)."""
    tables = [_entry_table(e, app) for e in entries]
    want = (set(expr.minute), set(expr.hour), set(expr.month))
    same_times = all((m, h) == want[:2] for m, h, _mo, _d in tables)
    pairs: Counter[tuple[int, int]] = Counter()
    for _m, _h, mo, day in tables:
        pairs.update((d, w) for d in range(1, 32) for w in range(7) if day(_probe(d, w)))
        if mo != want[2]:
            same_times = False
    cron_pairs = _cron_days(expr)
    if same_times and all(pairs[p] == (p in cron_pairs) for p in set(pairs) | cron_pairs):
        return []
    out: list[date] = []
    d, last = model.start.astimezone(model.tz).date(), (model.end - _SECOND).astimezone(model.tz).date()
    while d <= last and len(out) < 10:
        n = sum(1 for _m, _h, mo, day in tables if d.month in mo and day(d))
        if n != int(model.day_ok(d)) or (n and not same_times):
            out.append(d)
        d += timedelta(days=1)
    return out


def _structure_elsewhere(
    expr: CronExpr,
    entries: tuple[BeatEntry, ...],
    app: Celery,
    zone: str,
    year: int,
    model: CronModel,
    app_zone: str,
) -> bool:
    """Stock entries read in another zone (UTC) than cron's: the same instants at every steady offset?

    True only where the structure decides it: cron selects every hour and day, every entry parsed by
    Celery selects every hour, day and month, and at each offset o the zone takes the entries' minutes
    (duplicates counted) are cron's minute set shifted by o; or the zone never changes its offset and
    `_structure_shifted` finds the same minutes on every UTC day. Anything else is left to simulation."""
    return _structure_offset_free(expr, entries, app, zone, year) or _structure_shifted(
        expr, entries, app, model, app_zone
    )


def _structure_offset_free(
    expr: CronExpr, entries: tuple[BeatEntry, ...], app: Celery, zone: str, year: int
) -> bool:
    """Every hour and day, in cron and in each entry: the minutes shifted by each offset of the zone."""
    if expr.hour != _ALL["hour"] or expr.month != _ALL["month_of_year"] or len(_cron_days(expr)) != 31 * 7:
        return False
    minutes: Counter[int] = Counter()
    for e in entries:
        if e.kind != "crontab":
            return False
        m, h, mo, day = _entry_table(e, app)
        if h != _ALL["hour"] or mo != _ALL["month_of_year"]:
            return False
        if not all(day(_probe(d, w)) for d in range(1, 32) for w in range(7)):
            return False
        minutes.update(m)
    start, end = proof_range(zone, year)
    return all(minutes == Counter((m - o) % 60 for m in expr.minute) for o in _offsets(zone, start, end))


def _structure_shifted(
    expr: CronExpr, entries: tuple[BeatEntry, ...], app: Celery, model: CronModel, app_zone: str
) -> bool:
    """Stock entries read in UTC for a zone that keeps one offset o over the range: the same minutes on
    every UTC day of the range?

    Without an offset change cron fires once at each local minute its table selects (the model has no
    loop windows), so UTC day D holds, from each local day L of D-1, D, D+1 that cron's day rule selects
    (the model's `day_ok`), each table time t (minutes into L) at minute t - o + (L - D) * 1440 of D when
    that lies in D and in the range. The entries' minutes of D are their tables as Celery parsed them.
    Compared per UTC day, duplicates counted; a day's verdict depends only on which of those days are
    selected and on the range's cut, so each distinct pattern is compared once."""
    if model.trans or not is_utc(app_zone) or any(e.kind != "crontab" for e in entries):
        return False
    o = _off(model.tz, model.start)
    if model.start.astimezone(model.tz).utcoffset() != timedelta(minutes=o):
        return False  # an offset of seconds (only before 1972): leave it to simulation
    tables = [_entry_table(e, app) for e in entries]
    times = [h * 60 + m for h in expr.hour for m in expr.minute]
    first, last = model.start.date(), (model.end - _SECOND).date()  # UTC dates
    seen: set[tuple[Any, ...]] = set()
    d = first
    while d <= last:
        day0 = datetime(d.year, d.month, d.day, tzinfo=UTC)
        lo = max(0, int((model.start - day0).total_seconds() // 60))
        hi = min(1440, -int(-(model.end - day0).total_seconds() // 60))
        cron_days = tuple(model.day_ok(d + timedelta(days=j)) for j in (-1, 0, 1))
        beat_days = tuple(d.month in mo and day(d) for _m, _h, mo, day in tables)
        key = (cron_days, beat_days, lo, hi)
        if key not in seen:
            seen.add(key)
            want = Counter(
                u
                for j, ok in zip((-1, 0, 1), cron_days, strict=True)
                if ok
                for t in times
                if lo <= (u := t - o + j * 1440) < hi
            )
            got = Counter(
                u
                for (ms, hs, _mo, _day), ok in zip(tables, beat_days, strict=True)
                if ok
                for h in hs
                for m in ms
                if lo <= (u := h * 60 + m) < hi
            )
            if want != got:
                return False
        d += timedelta(days=1)
    return True


@functools.cache
def _probe(dom: int, dow: int) -> date:
    """Some date (in 2000-2099, any month with 31 days) that is day `dom` and weekday `dow` (0 = Sunday)."""
    for y in range(2000, 2100):
        for m in (1, 3, 5, 7, 8, 10, 12):
            d = date(y, m, dom)
            if (d.weekday() + 1) % 7 == dow:
                return d
    raise AssertionError


# -- the proof ------------------------------------------------------------------------------------------


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


@functools.lru_cache(maxsize=2048)
def prove(
    expr: CronExpr,
    entries: tuple[BeatEntry, ...],
    zone: str,
    year: int,
    first_difference: bool = False,
    app_zone: str | None = None,
) -> Proof:
    """Compare beat's instants for `entries` with cron's for `expr` in `zone` over the proof range.

    `app_zone`: the zone of the app beat runs in (the zone a stock crontab's fields are read in; default
    cron's own). Counted per minute: cron runs the jobs of a minute it catches up on one after another
    within it. `first_difference`: stop at the first stretch that differs (enough to choose an entry kind)."""
    start, end = proof_range(zone, year)
    app_zone = zone if app_zone is None else app_zone
    app = proof_app(app_zone)
    model = _model(expr, zone, start, end)
    scheds = [e.schedule(app) for e in entries]
    diffs: dict[datetime, tuple[int, int]] = {}
    checks = 0
    elsewhere = app_zone != zone and any(e.kind == "crontab" for e in entries)
    if elsewhere and not _structure_elsewhere(expr, entries, app, zone, year, model, app_zone):
        # No structural argument: run beat and cron's loop side by side over the whole range, a month at a
        # time (slow for a minute-level schedule; generate only writes entries the structure covers).
        a = model.start
        while a < model.end and not diffs:
            b = min(a + timedelta(days=31), model.end)
            diffs.update(_compare(model, scheds, a - _SECOND, b - _SECOND))
            checks += 1
            if len(diffs) > _MAX_DIFFERENCES:
                break
            a = b
    for d in [] if elsewhere else _structure(expr, entries, app, model):
        # The tables differ: name the instants on the first days where they do.
        lo = datetime(d.year, d.month, d.day, tzinfo=model.tz).astimezone(UTC)
        hi = lo + timedelta(days=1)
        p = model.prev(lo)
        diffs.update(_compare(model, scheds, p or model.start - _SECOND, hi))
        checks += 1
    if not diffs:
        stretches: list[tuple[datetime, datetime]] = [(a, b) for a, b in model.windows]
        # Beat rolls dates over on its app's clock (and cronsim on the job's): each month boundary of both.
        for tz in dict.fromkeys((model.tz, _tz(app_zone))):
            local = model.start.astimezone(tz)
            y, mo = local.year, local.month
            while True:
                y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
                b = datetime(y, mo, 1, tzinfo=tz).astimezone(UTC)
                if b >= model.end:
                    break
                stretches.append((b, b))
        stretches.append((model.start, model.start))
        for a, b in stretches:
            p = model.prev(a)
            since = p if p is not None else model.start - _SECOND
            until = min(model.nth_after(b, 2), model.end - _SECOND)
            diffs.update(_compare(model, scheds, since, until))
            checks += 1
            if len(diffs) > _MAX_DIFFERENCES or (diffs and first_difference):
                break
    tz = model.tz
    listed = [
        {"instant": t.astimezone(tz).isoformat(), "cron": c, "celery": g}
        for t, (c, g) in sorted(diffs.items())
    ]
    shown = tuple(listed[:_MAX_DIFFERENCES])
    window = (start.isoformat(), end.isoformat())
    return Proof(
        not listed, window, zone, shown, len(listed) - len(shown), model.count(), len(model.trans), checks
    )


def _compare(
    model: CronModel,
    scheds: list[BaseSchedule],
    since: datetime,
    until: datetime,
) -> dict[datetime, tuple[int, int]]:
    """Runs per minute in (since, until], cron's against beat's, where they differ."""
    want = Counter(_minute(t) for t in model.fires(since + _SECOND, until + _SECOND))
    got: Counter[datetime] = Counter()
    for sched in scheds:
        got.update(_minute(t) for t in _drive(sched, since, until))
    out: dict[datetime, tuple[int, int]] = {}
    for t in sorted(set(want) | set(got)):
        if want[t] != got[t]:
            out[t] = (want[t], got[t])
    return out


def _no_entry(expr: CronExpr) -> Translation | None:
    if expr.reboot:
        return Translation((), None, "@reboot runs when cron starts, not on the clock: no beat entry")
    reason = expr.never_fires_reason()
    if reason is not None or expr.cronsim_expr() is None:
        return Translation((), None, f"this schedule never fires ({reason}): no beat entry")
    return None


def stock_translation(
    expr: CronExpr, zone: str, year: int, app_zone: str | None = None
) -> Translation | None:
    """Stock crontab entries for cron's `expr` in `zone`, read by beat in `app_zone` (default `zone`), when
    the proof says they are exact; None when no stock crontab is (or the schedule has no entry at all).

    In cron's own zone the entries are cron's fields. In a UTC app they are the UTC minutes of a schedule
    that does not follow the wall clock (`utc_minutes`), or cron's table shifted by the one offset of a zone
    without offset changes over the proof range (`utc_tables`), and nothing else: a schedule that follows
    a changing wall clock (`0 3 * * *` in Berlin) is at 02:00 UTC in winter and 01:00 UTC in summer, which
    no crontab says."""
    if _no_entry(expr) is not None:
        return None
    app_zone = zone if app_zone is None else app_zone
    if app_zone == zone:
        stock = crontab_entries(expr, zone)
        why = "stock crontab: proved to fire at cron's instants"
        if len(stock) == 2:
            why = (
                "cron ORs day-of-month with day-of-week when both are restricted; Celery ANDs them, so the "
                "OR is split into two entries that never select the same day"
            )
    elif is_utc(app_zone):
        shifted = utc_tables(expr, zone, year)
        if not shifted.tables:
            return None
        stock = tuple(_crontab_entry(*t, app_zone) for t in shifted.tables)
        why = shifted.why
    else:
        return None
    proof = prove(expr, stock, zone, year, first_difference=True, app_zone=app_zone)
    if not proof.identical:
        return None
    return Translation(tuple(_with_why(e, why) for e in stock), proof)


def class_translation(
    expr: CronExpr, zone: str, year: int, app_zone: str | None = None, why: str = ""
) -> Translation:
    """cronshift's schedule class for `expr` in `zone` (it carries its zone, whatever the app's), proved."""
    early = _no_entry(expr)
    if early is not None:
        return early
    cexpr = expr.cronsim_expr()
    assert cexpr is not None
    app_zone = zone if app_zone is None else app_zone
    if not why:
        stock = crontab_entries(expr, zone)
        first = prove(expr, stock, zone, year, first_difference=True)
        where = first.differences[0]["instant"] if first.differences else "an offset change"
        why = (
            f"a stock crontab differs from cron at {where} ({zone} offset changes: cron runs fixed-time jobs "
            "caught in the spring gap at the change and wildcard jobs in both passes of a repeated hour); no "
            "stock Celery schedule does, so cronshift's class does (django-celery-beat cannot store it)"
        )
    entry = BeatEntry("cronsim", expr=cexpr, zone=zone, why=why)
    return Translation((entry,), prove(expr, (entry,), zone, year, app_zone=app_zone), notes=(why,))


def translate(expr: CronExpr, zone: str, year: int, app_zone: str | None = None) -> Translation:
    """Stock crontab where the proof says it is exact, else the cronsim class (proved too).

    `zone` is cron's zone for the job, `app_zone` the zone of the Celery app beat runs in (default the same).
    """
    early = _no_entry(expr)
    if early is not None:
        return early
    stock = stock_translation(expr, zone, year, app_zone)
    return stock if stock is not None else class_translation(expr, zone, year, app_zone)


def _with_why(e: BeatEntry, why: str) -> BeatEntry:
    return BeatEntry(e.kind, e.fields, e.expr, e.zone, why)
