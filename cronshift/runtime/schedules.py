"""A Celery schedule driven by cronsim, for the cron schedules a stock `crontab` cannot reproduce exactly.

Why it exists: across DST changes cron (and cronsim, which models it) runs a fixed-time job caught in the
spring gap at the moment of the change, and a wildcard-hour job in both passes of the repeated autumn hour;
Celery's `crontab` does neither. `cronshift generate` uses stock `crontab` wherever its proof shows it is
exact and this class only where it is not, and says so next to the entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import BaseSchedule, schedstate
from cronsim import CronSim

__all__ = ["cronsim_schedule"]

_REBUILD_AFTER = timedelta(days=2)  # a long jump (beat was down): start a fresh iterator


def _zone(name: str) -> tzinfo:
    # cronsim skips its DST logic only for datetime.timezone.utc itself.
    return UTC if name in ("UTC", "Etc/UTC", "") else ZoneInfo(name)


class cronsim_schedule(BaseSchedule):
    """Fire at the instants cron fires `expr` in `zone` (a cronsim expression, canonical from cronshift)."""

    def __init__(self, expr: str, zone: str, nowfun: Any = None, app: Any = None) -> None:
        self.expr = expr
        self.zone = zone
        self._tz = _zone(zone)
        CronSim(expr, datetime(2000, 1, 1, tzinfo=self._tz))  # fail at import time, not at fire time
        self._it: Iterator[datetime] | None = None
        self._asked = datetime.min.replace(tzinfo=UTC)
        self._ahead: datetime | None = None
        super().__init__(nowfun=nowfun, app=app)

    def next_after(self, when: datetime) -> datetime:
        """The first fire strictly after `when` (to the second, as cron counts)."""
        w = self.maybe_make_aware(when).astimezone(UTC)
        # Beat asks with a last_run_at that only moves forward: keep one cronsim iterator and walk it on
        # (rebuilding CronSim per call costs more than the walk). Compared in UTC: same-zone aware
        # datetimes compare by wall clock, which is wrong inside a repeated hour.
        if self._it is None or w < self._asked or w - self._asked > _REBUILD_AFTER:
            self._it = iter(CronSim(self.expr, w.astimezone(self._tz)))
            self._ahead = None
        self._asked = w
        while self._ahead is None or self._ahead.astimezone(UTC) <= w:
            self._ahead = next(self._it)
        return self._ahead

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        nxt = self.next_after(last_run_at)
        now = self.maybe_make_aware(self.now())
        return nxt.astimezone(UTC) - now.astimezone(UTC)

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
    from redbeat import decoder

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
