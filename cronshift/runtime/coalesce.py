"""Coalescing events into runs, so events cannot overload what cron used to pace.

Per job: a quiet period Q and a maximum wait W. Events gather into one pending batch; the batch fires (one
run of the job) once no event came for Q seconds, or W seconds after its first event, whichever is first. So
a steady burst of D seconds fires at most D / W + 1 times, and D / Q + 1 bounds it whenever W >= Q. While the
previous run is still going (`single flight`, what `forbid` means for events), nothing fires: the batch waits
and fires once that run ends, so at most one run is in flight and no event is lost to a lock skip.

A run that its overlap lock skipped (a beat safety-net run held the lock) covered none of its events: the
batch comes back and fires again once that run ends, `RETRY_DELAY` seconds apart at the least, so a skip
costs a little freshness and never an event.

Every fire is a trigger record naming how many events it covered (coalesced = events - 1), their sources,
the first and last event times and keys (the first `MAX_KEYS`), and why it fired now. The record goes to the
cronshift ledger when CRONSHIFT_LEDGER / CRONSHIFT_LEDGER_REDIS is set (kind "trigger", key
"JOB_ID:SENT_AT:ID"), so `cronshift show JOB` lists it beside the run it started (the run's
`extra.payload_id` is the trigger's id).

Why hand-written: the libraries that debounce (e.g. asyncio-throttle, ratelimit) rate-limit calls; none also
holds a batch while the previous run is in flight, which is the rule `forbid` needs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cronshift.runtime.records import LedgerConfigError, ledger_target

__all__ = ["MAX_KEYS", "Coalescer", "Pending", "record_trigger"]

log = logging.getLogger("cronshift.events")

MAX_KEYS = 100  # event keys one trigger record keeps (the count is always exact)
BUSY_POLL = 0.02  # seconds between checks of whether the previous run has ended
RETRY_DELAY = 1.0  # seconds before a batch whose run was skipped (overlap lock) fires again


@dataclass
class Pending:
    """Events waiting for their run."""

    first: float  # monotonic
    last: float
    first_at: float  # wall clock of the first / last event (the event's own time when it carries one)
    last_at: float
    events: int = 0
    sources: set[str] = field(default_factory=set)
    keys: list[str] = field(default_factory=list)
    gap: bool = False  # a source reconnected or overflowed: the run covers what may have been missed
    retried: bool = False  # its first run was skipped by the overlap lock


def record_trigger(doc: dict[str, Any]) -> bool:
    """Add a trigger record to the configured ledger; False when none is configured (or it refused)."""
    try:
        store, url = ledger_target()
    except LedgerConfigError:
        log.exception("trigger record not written")
        return False
    if not store and not url:
        return False
    from pathlib import Path

    from cronshift.ledger.store import open_ledger

    try:
        with open_ledger(Path(os.environ.get("CRONSHIFT_ROOT", "/")), store=store, redis_url=url) as led:
            led.put("trigger", f"{doc['job_id']}:{doc['sent_at']:017.6f}:{doc['id']}", doc)
    except Exception:  # a ledger that refuses must not stop the job from running
        return False
    return True


class Coalescer:
    """One job's pending events and the rule that turns them into runs (see the module docstring).

    `send(payload)` starts a run and returns a handle; `busy(handle)` says whether that run is still going.
    `event()` is called from any thread; `run()` is the loop that fires (one thread per job)."""

    def __init__(
        self,
        job_id: str,
        send: Callable[[dict[str, Any]], Any],
        *,
        quiet: float,
        max_wait: float,
        busy: Callable[[Any], bool] | None = None,
        skipped: Callable[[Any], bool] | None = None,
        max_busy: float = 3600.0,
        record: Callable[[dict[str, Any]], Any] | None = record_trigger,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if quiet < 0 or max_wait < quiet:
            raise ValueError(f"job {job_id}: need 0 <= quiet ({quiet}) <= max_wait ({max_wait})")
        self.job_id, self.send, self.quiet, self.max_wait = job_id, send, quiet, max_wait
        self.busy, self.skipped, self.max_busy, self.record = busy, skipped, max_busy, record
        self.last_batch: Pending | None = None
        self.not_before = 0.0
        self.clock, self.wall = clock, wall
        self.pending: Pending | None = None
        self.inflight: Any = None
        self.inflight_since = 0.0
        self.fires = 0
        self.events = 0
        self.send_errors = 0
        self._cv = threading.Condition()

    # -- from the sources ------------------------------------------------------------------------------
    def event(self, source: str, key: str = "", at: float | None = None, gap: bool = False) -> None:
        """One event (a row committed, a file closed, a stream entry, a call, or a gap after a reconnect)."""
        now, wall = self.clock(), self.wall()
        at = wall if at is None else at
        with self._cv:
            p = self.pending
            if p is None:
                p = self.pending = Pending(first=now, last=now, first_at=at, last_at=at)
            p.last, p.last_at = now, max(p.last_at, at)
            p.first_at = min(p.first_at, at)
            p.events += 1
            p.gap = p.gap or gap
            p.sources.add(source)
            if key and len(p.keys) < MAX_KEYS:
                p.keys.append(key)
            self.events += 1
            self._cv.notify()

    # -- the rule --------------------------------------------------------------------------------------
    def _wait_for(self, now: float) -> float | None:
        """Seconds until the pending batch may fire; 0: now; None: nothing pending."""
        if self.inflight is not None and self.pending is None and self.skipped is not None:
            # Nothing new, but the run in flight may yet be skipped: watch it so its batch comes back.
            if (
                now - self.inflight_since < self.max_busy
                and self.busy is not None
                and self.busy(self.inflight)
            ):
                return BUSY_POLL
            self._ended(now)
        p = self.pending
        if p is None:
            return None
        if self.inflight is not None and self.busy is not None:
            if now - self.inflight_since < self.max_busy and self.busy(self.inflight):
                return BUSY_POLL
            self._ended(now)
        return max(0.0, min(p.last + self.quiet, p.first + self.max_wait) - now, self.not_before - now)

    def _ended(self, now: float) -> None:
        """The in-flight run ended; if its lock skipped it, its batch is pending again (under the lock)."""
        done, batch = self.inflight, self.last_batch
        self.inflight = self.last_batch = None
        if done is None or batch is None or self.skipped is None or not self.skipped(done):
            return
        batch.retried = True
        p = self.pending
        if p is not None:
            batch.events += p.events
            batch.sources |= p.sources
            batch.keys = (batch.keys + p.keys)[:MAX_KEYS]
            batch.last, batch.last_at, batch.gap = p.last, max(batch.last_at, p.last_at), batch.gap or p.gap
        self.pending = batch
        self.not_before = now + RETRY_DELAY

    def poll(self) -> dict[str, Any] | None:
        """Fire the pending batch if it is due; the trigger record, or None."""
        with self._cv:
            now = self.clock()
            w = self._wait_for(now)
            if w is None or w > 0:
                return None
            p = self.pending
            assert p is not None
            self.pending = None
        reason = (
            "retry: the run for these events was skipped by the overlap lock"
            if p.retried
            else "gap: a source reconnected or lost events"
            if p.gap
            else "safety net: no event since its last instant"
            if p.sources == {"safety-net"}
            else "quiet period"
            if now - p.last >= self.quiet
            else "maximum wait"
        )
        doc: dict[str, Any] = {
            "id": uuid.uuid4().hex[:16],
            "job_id": self.job_id,
            "sources": sorted(p.sources),
            "events": p.events,
            "coalesced": p.events - 1,
            "first_event": p.first_at,
            "last_event": p.last_at,
            "keys": p.keys,
            "reason": reason,
            "quiet": self.quiet,
            "max_wait": self.max_wait,
        }
        try:
            handle = self.send(
                {
                    k: doc[k]
                    for k in ("id", "sources", "events", "first_event", "last_event", "keys", "reason")
                }
            )
        except Exception as e:  # the broker is away: keep the batch, try again, never drop it
            log.warning(
                "job %s: could not send its run (%s); retrying in %.0f s", self.job_id, e, RETRY_DELAY
            )
            with self._cv:
                q = self.pending
                if q is not None:
                    p.events += q.events
                    p.sources |= q.sources
                    p.keys = (p.keys + q.keys)[:MAX_KEYS]
                    p.last, p.last_at, p.gap = q.last, max(p.last_at, q.last_at), p.gap or q.gap
                self.pending = p
                self.not_before = self.clock() + RETRY_DELAY
                self.send_errors += 1
            return None
        doc["sent_at"] = self.wall()
        doc["task_id"] = str(getattr(handle, "id", "") or "")
        with self._cv:
            self.inflight, self.inflight_since, self.last_batch = handle, self.clock(), p
            self.fires += 1
        if self.record is not None:
            self.record(doc)
        return doc

    def run(self, stop: threading.Event) -> None:
        """Fire due batches until `stop` is set (a pending batch at stop fires if it is due)."""
        while not stop.is_set():
            self.poll()
            with self._cv:
                w = self._wait_for(self.clock())
                if w is None:
                    self._cv.wait(timeout=0.5)
                elif w > 0:
                    self._cv.wait(timeout=w)
