"""A Celery schedule for the cron schedules a stock `crontab` cannot reproduce exactly.

Why it exists: across a DST change cron runs every fixed-time job of each minute the clock skipped at the
moment of the change (one run per skipped match), and a wildcard job (minute or hour starting with '*')
in both passes of a repeated hour; Celery's `crontab` does neither. `cronshift generate` uses stock
`crontab` wherever its proof shows it is exact and this class only where it is not, and says so next to
the entry. django-celery-beat's database scheduler cannot store it (the file scheduler and redbeat can).

How: cronsim walks the table on the naive local wall clock (no DST logic of its own), and each match is
mapped to instants by the zone's rules as cron applies them: a skipped minute runs a fixed-time job at the
first minute that exists (not a wildcard job), a repeated minute runs a wildcard job twice and a fixed-time
job once. Several runs falling on one instant are spaced 10 s apart, as cron's loop sleeps 10 s between
them. (Offset changes of at most 5 minutes or above 3 hours follow other branches of cron's loop that this
class does not model; cronshift's proof, an independent port of that loop, would report them.)
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import BaseSchedule, maybe_schedule, schedstate
from celery.signals import beat_init, before_task_publish
from cronsim import CronSim

__all__ = [
    "beat_schedules",
    "cronsim_schedule",
    "fires_between_of",
    "latest_fire_of",
    "next_fire",
    "stamp_from_beat_entries",
]

_REBUILD_AFTER = timedelta(days=2)  # a long jump (beat was down): start a fresh iterator
_MARGIN = timedelta(hours=2, minutes=1)  # more than any DST change in tzdata: instants come out in order
_SPACING = timedelta(seconds=10)  # cron sleeps 10 s after each batch of jobs it starts


def _zone(name: str) -> tzinfo:
    return UTC if name in ("UTC", "Etc/UTC", "") else ZoneInfo(name)


class cronsim_schedule(BaseSchedule):
    """Fire at the instants cron fires `expr` in `zone` (a cronsim expression, canonical from cronshift)."""

    def __init__(self, expr: str, zone: str, nowfun: Any = None, app: Any = None) -> None:
        self.expr = expr
        self.zone = zone
        self._tz = _zone(zone)
        parts = expr.split()
        self._wild = parts[0].startswith("*") or parts[1].startswith("*")
        CronSim(expr, datetime(2000, 1, 1))  # fail at import time, not at fire time
        self._it: Iterator[datetime] | None = None
        self._asked = datetime.min.replace(tzinfo=UTC)
        self._ahead: datetime | None = None
        super().__init__(nowfun=nowfun, app=app)

    def _runs(self, local: datetime) -> list[datetime]:
        """The UTC instants cron runs a match of naive local time `local` at."""
        tz = self._tz
        first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if first.astimezone(tz).replace(tzinfo=None) != local:  # skipped by a jump forward
            if self._wild:
                return []
            t = local
            while True:  # the first minute that exists runs it
                t += timedelta(minutes=1)
                u = t.replace(tzinfo=tz, fold=0).astimezone(UTC)
                if u.astimezone(tz).replace(tzinfo=None) == t:
                    return [u]
        second = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if second != first and self._wild:  # a repeated minute: wildcard jobs run in both passes
            return [first, second]
        return [first]

    def _steady(self, t: datetime) -> bool:
        """No offset change within _MARGIN of `t` (UTC): local time runs with UTC around it."""
        tz = self._tz
        return (
            tz is UTC or (t - _MARGIN).astimezone(tz).utcoffset() == (t + _MARGIN).astimezone(tz).utcoffset()
        )

    def _instants(self, after: datetime) -> Iterator[datetime]:
        """Every run strictly after `after` (UTC), in order, runs on one instant spaced by _SPACING."""
        tz = self._tz
        # Near an offset change a later wall-clock match can come earlier in real time (the repeated
        # hour): start _MARGIN back and release an instant only once no later match can precede it.
        start = after if self._steady(after) else after - _MARGIN
        heap: list[datetime] = []
        last = after
        for local in CronSim(self.expr, start.astimezone(tz).replace(tzinfo=None)):
            for t in self._runs(local):
                heapq.heappush(heap, t)
            u = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
            bound = u if self._steady(u) else u - _MARGIN
            while heap and heap[0] <= bound:
                t = heapq.heappop(heap)
                if t <= after:
                    continue
                if t <= last and last > after:
                    t = last + _SPACING
                last = t
                yield t
        while heap:  # pragma: no cover - cronsim stops after 50 years without a match
            yield heapq.heappop(heap)

    def next_after(self, when: datetime) -> datetime:
        """The first run strictly after `when` (to the second, as cron counts)."""
        w = self.maybe_make_aware(when).astimezone(UTC)
        # Beat asks with a last_run_at that only moves forward: keep one iterator and walk it on
        # (rebuilding per call costs more than the walk).
        if self._it is None or w < self._asked or w - self._asked > _REBUILD_AFTER:
            self._it = self._instants(w)
            self._ahead = None
        self._asked = w
        while self._ahead is None or self._ahead <= w:
            self._ahead = next(self._it)
        return self._ahead

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        nxt = self.next_after(last_run_at)
        now = self.maybe_make_aware(self.now())
        return nxt - now.astimezone(UTC)

    def is_due(self, last_run_at: datetime) -> schedstate:
        """As crontab.is_due: due at the fire instant; honours beat_cron_starting_deadline the same way."""
        rem_secs = self.remaining_estimate(last_run_at).total_seconds()
        due = rem_secs <= 0
        deadline = self.app.conf.beat_cron_starting_deadline
        stale = False
        if deadline is not None and rem_secs < 0:
            now = self.maybe_make_aware(self.now())
            since = now - timedelta(seconds=deadline, microseconds=1)
            if self.remaining_estimate(since).total_seconds() > 0:
                stale, due = True, False
        if due or stale:
            return schedstate(due, max(self.remaining_estimate(self.now()).total_seconds(), 0))
        return schedstate(False, max(rem_secs, 0))

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (self.__class__, (self.expr, self.zone))

    def __repr__(self) -> str:
        return f"<cronsim_schedule: {self.expr} in {self.zone}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, cronsim_schedule):
            return (self.expr, self.zone) == (other.expr, other.zone)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.expr, self.zone))


_REDBEAT_TYPE = "cronshift.cronsim_schedule"


def enable_redbeat() -> None:
    """Teach celery-redbeat to store a cronsim_schedule (it keeps schedules as JSON in Redis).

    redbeat's JSON encoder knows only its own schedule types, and its decoder hands unknown `__type__`s
    back as plain dicts; both classes are wrapped here, once, to add this one type. Generated app.py
    calls it only when it uses redbeat and a cronsim-driven entry."""
    from redbeat import decoder  # deferred: celery-redbeat is optional, only apps that use it call this

    if getattr(decoder, "_cronshift", False):
        return
    enc, dec = decoder.RedBeatJSONEncoder.default, decoder.RedBeatJSONDecoder.dict_to_object

    def default(self: Any, obj: Any) -> Any:
        if isinstance(obj, cronsim_schedule):
            return {"__type__": _REDBEAT_TYPE, "expr": obj.expr, "zone": obj.zone}
        return enc(self, obj)

    def dict_to_object(self: Any, d: dict[str, Any]) -> Any:
        if d.get("__type__") == _REDBEAT_TYPE:
            return cronsim_schedule(d["expr"], d["zone"])
        return dec(self, d)

    decoder.RedBeatJSONEncoder.default = default  # type: ignore[method-assign]
    decoder.RedBeatJSONDecoder.dict_to_object = dict_to_object  # type: ignore[method-assign]
    decoder._cronshift = True  # type: ignore[attr-defined]


# -- the beat entries as the one source of each job's schedule ------------------------------------------

_FAR = timedelta(days=4 * 366 + 1)  # every cron schedule that can fire fires within a leap cycle
_stamping_app: Any = None


def next_fire(sched: BaseSchedule, after: datetime) -> datetime:
    """The first instant strictly after `after` (aware) at which `sched` fires, by its own code."""
    if isinstance(sched, cronsim_schedule):
        return sched.next_after(after)
    # A shallow copy with its own clock (copy.copy would go through crontab.__reduce__ and lose the app,
    # hence the zone); beat's object keeps its clock.
    probe = object.__new__(type(sched))
    probe.__dict__.update(sched.__dict__)
    probe.nowfun = lambda: after
    return after + probe.remaining_estimate(after)


def latest_fire_of(scheds: list[BaseSchedule], now: datetime) -> datetime | None:
    """The latest instant <= `now` at which any of `scheds` fires: the run beat is sending now."""
    best: datetime | None = None
    for sched in scheds:
        span = timedelta(minutes=2)
        while span <= _FAR:
            f = next_fire(sched, now - span)
            if f <= now:
                while (g := next_fire(sched, f)) <= now:
                    f = g
                best = f if best is None or f > best else best
                break
            span *= 4
    return best


def fires_between_of(
    scheds: list[BaseSchedule], after: datetime, before: datetime, cap: int
) -> list[datetime]:
    """Instants strictly between `after` and `before` at which any of `scheds` fires, oldest first, <= cap."""
    out: list[datetime] = []
    for sched in scheds:
        t = after
        while len(out) < cap * len(scheds):
            t = next_fire(sched, t)
            if t >= before:
                break
            out.append(t)
    return sorted(out)[:cap]


def beat_schedules(app: Any, task: str) -> list[BaseSchedule]:
    """The schedule objects of `app`'s beat entries that send `task` (the app's beat_schedule)."""
    out = []
    for entry in (app.conf.beat_schedule or {}).values():
        if isinstance(entry, dict) and entry.get("task") == task:
            sched = maybe_schedule(entry.get("schedule"), app=app)
            if isinstance(sched, BaseSchedule):
                out.append(sched)
    return out


def due_instant_of(
    scheds: list[BaseSchedule], last_run_at: datetime | None, now: datetime
) -> datetime | None:
    """The instant beat is sending: the first fire after the entry's last run (what made it due), so a send
    that runs late (a standby's takeover, a slow tick) keeps the label of the instant that was due and the
    next real instant is not taken for a duplicate of it. Never sent: the latest fire <= `now`."""
    if last_run_at is not None:
        if last_run_at.tzinfo is None:
            last_run_at = last_run_at.replace(tzinfo=UTC)  # celery keeps naive times in UTC
        first = min((next_fire(s, last_run_at) for s in scheds), default=None)
        if first is not None and first <= now:
            return first
    return latest_fire_of(scheds, now)


def _beat_started(sender: Any = None, **_: Any) -> None:
    """In the beat process: note, around each send, the instant its entry was due (see due_instant_of)."""
    global _in_beat
    _in_beat = True
    scheduler = getattr(sender, "scheduler", None)
    if scheduler is None or getattr(scheduler, "_cronshift_due", False):
        return
    send = scheduler.apply_async

    def apply_async(entry: Any, *args: Any, **kwargs: Any) -> Any:
        sched = getattr(entry, "schedule", None)
        if isinstance(sched, BaseSchedule):
            _sending.instant = due_instant_of([sched], getattr(entry, "last_run_at", None), datetime.now(UTC))
        try:
            return send(entry, *args, **kwargs)
        finally:
            _sending.instant = None

    scheduler.apply_async = apply_async
    scheduler._cronshift_due = True


_in_beat = False
_sending = threading.local()  # .instant: the instant the entry this thread is sending was due at


def _stamp(sender: str | None = None, body: Any = None, **_: Any) -> None:
    if not _in_beat or _stamping_app is None or not isinstance(sender, str):
        return
    kwargs = body[1] if isinstance(body, tuple) and len(body) > 1 else (body or {}).get("kwargs")
    if not isinstance(kwargs, dict):
        return
    scheds = beat_schedules(_stamping_app, sender)
    if not scheds:
        return  # not a beat-driven cron task: leave the message alone
    when = getattr(_sending, "instant", None) or latest_fire_of(scheds, datetime.now(UTC))
    # Overwritten every time: an entry's own kwargs dict may be the object beat sends again.
    kwargs["scheduled_for"] = None if when is None else when.timestamp()


def stamp_from_beat_entries(app: Any) -> None:
    """In the beat process only, write each run's logical time (`scheduled_for`) into its message.

    The instant comes from the beat entries that send the task (`app.conf.beat_schedule`), so the entry
    is the only place a schedule is written: edit it and the runs follow. It is the instant the entry was
    due at (its first fire after its last run), even when the send runs late; failing that, the latest
    instant <= now at which those entries fire. The task claims it, so two beats or a redelivery cannot
    run one instant twice."""
    global _stamping_app
    _stamping_app = app
    beat_init.connect(_beat_started, weak=False, dispatch_uid="cronshift-beat-entries-init")
    before_task_publish.connect(_stamp, weak=False, dispatch_uid="cronshift-beat-entries-stamp")
