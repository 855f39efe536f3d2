"""Overlap locks that survive production: an owner token, a heartbeat, and a short expiry after death.

Why not celery-once / celery-singleton or a fixed TTL: a TTL long enough for the longest run leaves a stale
lock for that long after a SIGKILL or a hard time limit, and a shorter one expires under a long run. Here the
key expires `expiry` seconds after the last heartbeat, and a thread renews it every `expiry / 3` seconds
while the job runs, so a live run keeps its lock for as long as it runs and a dead worker's lock is gone
within `expiry` seconds. Only the owner (its random token) renews or releases it.

`replace` asks the holder to stop through a per-job Redis list that the holder's heartbeat thread waits on
(BLPOP), so the request reaches a run on any host within moments; the holder kills its job's process group
and releases the lock, and the newcomer takes it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

__all__ = ["DEFAULT_EXPIRY", "Lease", "acquire", "hold", "lock_key", "request_stop"]

DEFAULT_EXPIRY = 30.0  # seconds a lock outlives its last heartbeat

log = logging.getLogger("cronshift.lock")

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
    "else return 0 end"
)


def lock_key(job_id: str) -> str:
    return f"cronshift:lock:{job_id}"


def _stop_key(job_id: str, token: str) -> str:
    return f"cronshift:stop:{job_id}:{token}"


def _client(url: str, timeout: float | None = 5.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=5)


@dataclass
class Lease:
    """A held lock; `on_stop` runs (in the heartbeat thread) when another run asks this one to stop."""

    url: str
    job_id: str
    token: str
    expiry: float
    on_stop: Callable[[], None] | None = None
    stopped: bool = False  # a `replace` newcomer asked us to stop
    lost: bool = False  # a renewal found the key gone or owned by someone else
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return lock_key(self.job_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"cronshift-lease-{self.job_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        period = max(self.expiry / 3, 0.2)
        # BLPOP's timeout is whole or fractional seconds; the socket must wait longer than BLPOP does.
        client = _client(self.url, timeout=period + 5)
        stop_key = _stop_key(self.job_id, self.token)
        try:
            while not self._done.is_set():
                try:
                    got = client.blpop([stop_key], timeout=period)
                    if self._done.is_set():
                        return
                    if got is not None and not self.stopped:
                        self.stopped = True
                        if self.on_stop is not None:
                            self.on_stop()
                    if not client.eval(_RENEW, 1, self.key, self.token, int(self.expiry * 1000)):
                        self.lost = True
                except redis.RedisError:
                    time.sleep(min(period, 1.0))  # Redis away: the key may expire; renew when it is back
        finally:
            client.close()

    def release(self) -> None:
        """Release the lock. With Redis unreachable the key is left to expire (within `expiry` seconds,
        no heartbeat renews it now): the run is over, and raising here would make its caller run it again."""
        self._done.set()
        client = _client(self.url)
        try:
            stop_key = _stop_key(self.job_id, self.token)
            client.rpush(stop_key, "done")  # wakes the heartbeat thread out of BLPOP at once
            client.expire(stop_key, 60)
            client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as e:
            log.warning("lock %s not released (%s); it expires within %.0f s", self.key, e, self.expiry)
        finally:
            client.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


def acquire(url: str, job_id: str, expiry: float = DEFAULT_EXPIRY) -> Lease | None:
    """Take the job's lock (heartbeat started), or None when another live run holds it."""
    client = _client(url)
    token = secrets.token_hex(16)
    try:
        if not client.set(lock_key(job_id), token, nx=True, px=int(expiry * 1000)):
            return None
    finally:
        client.close()
    lease = Lease(url, job_id, token, expiry)
    lease.start()
    return lease


def request_stop(url: str, job_id: str) -> str | None:
    """Ask the run holding the job's lock to stop; the holder's token, or None when nobody holds it."""
    client = _client(url)
    try:
        token = client.get(lock_key(job_id))
        if token is None:
            return None
        key = _stop_key(job_id, token.decode())
        client.rpush(key, "stop")
        client.expire(key, 3600)
        return token.decode()
    finally:
        client.close()


def acquire_replacing(
    url: str, job_id: str, expiry: float, wait: float, sleep: Callable[[float], None] = time.sleep
) -> tuple[Lease | None, str | None]:
    """Stop the current holder (if any) and take the lock; gives up after `wait` seconds.

    Returns the lease (or None) and the token of the run that was asked to stop."""
    stopped: str | None = None
    deadline = time.monotonic() + wait
    while True:
        lease = acquire(url, job_id, expiry)
        if lease is not None:
            return lease, stopped
        stopped = request_stop(url, job_id) or stopped
        if time.monotonic() >= deadline:
            return None, stopped
        sleep(0.05)


@contextlib.contextmanager
def hold(url: str, job_id: str, expiry: float = DEFAULT_EXPIRY) -> Iterator[Lease | None]:
    """Yield the lease while holding the job's lock, or None when another run holds it (nothing runs)."""
    lease = acquire(url, job_id, expiry)
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()


def holder_info(url: str, job_id: str) -> dict[str, Any]:
    """The lock's token and remaining lifetime in ms (for `cronshift` status and tests)."""
    client = _client(url)
    try:
        tok = client.get(lock_key(job_id))
        return {"token": tok.decode() if tok else None, "pttl": client.pttl(lock_key(job_id))}
    finally:
        client.close()
