"""Small per-job facts in Redis that policies need across workers: delivery counts, claims, last runs.

Which Redis: CRONSHIFT_STATE_REDIS, else CRONSHIFT_LOCK_REDIS, else the app's `cronshift_state_redis`
setting (generate writes it), else the broker when it is Redis. Without one, `forbid`, `replace`,
`run-once`, `catch-up` and delivery counting cannot work across workers, and the task says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
from cronsim import CronSim

__all__ = ["instants_between", "latest_fire", "next_fire", "state_url"]

KEEP = 7 * 86400  # seconds a claim or delivery count is kept
REPLAY = "-replay-"  # a replayed dead letter's task id: <original task id>-replay-<random>


class NoStateStore(RuntimeError):
    """A policy needs Redis and none is configured."""


def state_url(app: Any) -> str | None:
    conf = getattr(app, "conf", {}) or {}
    for url in (
        os.environ.get("CRONSHIFT_STATE_REDIS"),
        os.environ.get("CRONSHIFT_LOCK_REDIS"),
        conf.get("cronshift_state_redis"),
        str(conf.get("broker_url") or ""),
    ):
        if url and url.startswith(("redis://", "rediss://", "unix://")):
            return url
    return None


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def count_delivery(r: redis.Redis, task_id: str, attempt: int) -> int:
    """How many times this message (task id, retry number) has been delivered, this one included."""
    key = f"cronshift:deliveries:{task_id}:{attempt}"
    pipe = r.pipeline()
    pipe.incr(key)
    pipe.expire(key, KEEP)
    return int(pipe.execute()[0])


# Atomic, so that two replays of one dead letter sent at once cannot both pass: the first to arrive becomes
# the instant's head, the other is a duplicate. KEYS: the claim, its head; ARGV: task id, ttl, REPLAY.
_CLAIM = (
    "local owner = redis.call('get', KEYS[1]); "
    "if not owner then redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]); return false end; "
    "local head = redis.call('get', KEYS[2]) or owner; "
    "if ARGV[1] == head or ARGV[1] == '' then return false end; "
    "local pre = head .. ARGV[3]; "
    "if string.sub(ARGV[1], 1, #pre) == pre then "
    "redis.call('set', KEYS[2], ARGV[1], 'EX', ARGV[2]); return false end; "
    "return owner"
)


def claim(r: redis.Redis, job_id: str, scheduled_for: float, task_id: str) -> str | None:
    """Claim a fire instant for one task; the owner's id when it is already claimed (a duplicate).

    The same message again (a retry, a redelivery) passes. So does one replay of it: a message whose id is
    the instant's latest accepted id plus `-replay-<random>` becomes the new latest (a replay that failed for
    good can be replayed in turn); a second replay of the same dead letter does not."""
    key = f"cronshift:claim:{job_id}:{scheduled_for:.0f}"
    other = r.eval(_CLAIM, 2, key, key + ":head", task_id, KEEP, REPLAY)
    if other is None:
        return None
    return other.decode() if isinstance(other, bytes) else str(other)


_ADVANCE = (
    "local prev = redis.call('get', KEYS[1]); "
    "if (not prev) or tonumber(prev) < tonumber(ARGV[1]) then redis.call('set', KEYS[1], ARGV[1]) end; "
    "return prev"
)


def advance_last_scheduled(r: redis.Redis, job_id: str, scheduled_for: float) -> float | None:
    """Move the job's high-water mark of fire instants forward; the previous mark (None: first run)."""
    prev = r.eval(_ADVANCE, 1, f"cronshift:last-scheduled:{job_id}", repr(float(scheduled_for)))
    return None if prev is None else float(prev)


def last_start(r: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = r.get(f"cronshift:last-start:{job_id}")
    return None if raw is None else json.loads(raw)


def set_last_start(r: redis.Redis, job_id: str, start: float, task_id: str) -> None:
    r.set(f"cronshift:last-start:{job_id}", json.dumps({"start": start, "task_id": task_id}), ex=KEEP)


def _zone(name: str) -> Any:
    return UTC if name in ("UTC", "Etc/UTC", "") else ZoneInfo(name)


def latest_fire(expr: str | None, zone: str, now: float, tolerance: float = 0.0) -> float:
    """The latest instant <= now (+tolerance) at which cron fires `expr`.

    No tolerance by default: beat sends at or after an instant, never before it, and a tolerance labels
    a send that runs late, within it of the next instant, as that next instant (which then looks like a
    duplicate). Beat labels by `cronshift.runtime.schedules.due_instant_of`; this is its fallback.
    Without a cronsim expression, the minute `now` falls in."""
    if not expr:
        return float(int(now) - int(now) % 60)
    t = datetime.fromtimestamp(now + tolerance, UTC).astimezone(_zone(zone))
    if not t.microsecond:
        t = t.replace(microsecond=1)  # cronsim's reverse walk includes the start only with microseconds
    return next(iter(CronSim(expr, t, reverse=True))).timestamp()


def next_fire(expr: str, zone: str, after: float) -> float | None:
    """Cron's first fire strictly after `after` (None: the expression never fires again)."""
    t = datetime.fromtimestamp(after, UTC).astimezone(_zone(zone))
    for when in CronSim(expr, t):
        if when.timestamp() > after:
            return when.timestamp()
    return None


def instants_between(expr: str, zone: str, after: float, before: float, cap: int) -> Iterator[float]:
    """Cron's fire instants strictly between `after` and `before`, at most `cap` of them (oldest first)."""
    t = datetime.fromtimestamp(after, UTC).astimezone(_zone(zone))
    n = 0
    for when in CronSim(expr, t):
        ts = when.timestamp()
        if ts <= after:
            continue
        if ts >= before or n >= cap:
            return
        n += 1
        yield ts


def backoff(base: float, attempt: int, cap: float, rand: float) -> float:
    """Exponential backoff with full jitter: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2**attempt))
    return d / 2 + (d / 2) * rand
