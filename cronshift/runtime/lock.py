"""The `forbid` overlap policy: one Redis key per job, owned by a random token, released only by its owner.

This is the simple form (a TTL above the hard time limit); the heartbeat-renewed lock of issue 6 replaces
`hold` without changing its callers.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import redis

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


@contextlib.contextmanager
def hold(url: str, job_id: str, ttl_seconds: float) -> Iterator[bool]:
    """Yield True while holding the job's lock, False when another run holds it (nothing is run then)."""
    client = redis.Redis.from_url(url)
    key, token = f"cronshift:lock:{job_id}", secrets.token_hex(16)
    got = bool(client.set(key, token, nx=True, px=int(ttl_seconds * 1000)))
    try:
        yield got
    finally:
        if got:
            client.eval(_RELEASE, 1, key, token)
        client.close()
