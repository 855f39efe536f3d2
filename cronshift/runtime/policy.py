"""One policy engine for both targets: what happens around `run_job`, and a record of every outcome.

The Celery task (`cronshift.runtime.tasks`) and the Streams consumer (`cronshift.runtime.streams`) differ
only in how a message is identified, how a run is retried later and how a missed instant is sent again;
a `Transport` says that, and `PolicyRun` applies the same policies in the same order for both.

SPEC["policy"] (written by `cronshift generate`, each value with its reason next to it):
  overlap           allow | forbid | replace
  lock_expiry       seconds a forbid/replace lock outlives its worker (heartbeat every third of it)
  missed            skip | run-once | catch-up (what a run that could not start on time does)
  starting_deadline seconds after its instant a `skip` run may still start
  retry_on          exit statuses worth retrying (the history shows them to be transient); [] = none
  max_retries, retry_backoff, retry_backoff_max   retry count and backoff (with jitter), seconds
  max_deliveries    deliveries of one message before it is dead-lettered (a job that kills its worker)
  schedule          {"expr": cronsim expression, "zone": ...} for catch-up's missed instants
Every run, skip and dead letter is a run record in the ledger (extra["skipped"] / extra["dead_letter"]);
a dead letter is also a "dead-letter" document that `cronshift dead-letters` lists.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cronshift.runtime import lock, state
from cronshift.runtime.deadletters import dead_letter_id, write_dead_letter
from cronshift.runtime.execute import KILL_GRACE, JobFailed, kill_group, run_job
from cronshift.runtime.records import record_from_result, write_run
from cronshift.runtime.spec import JobSpec, check_spec

__all__ = ["MAX_CATCH_UP", "JobDeadLettered", "PolicyRun", "Transport", "policy_of"]

MAX_CATCH_UP = 100  # missed instants one catch-up run sends at most (the rest are named in its record)

log = logging.getLogger("cronshift.policy")


class JobDeadLettered(RuntimeError):
    """The message was delivered too many times without finishing; it went to the dead-letter record."""


class Transport(Protocol):
    """What differs between the targets."""

    source: str  # the run record's `source`: "celery" | "streams"
    name: str  # what sent the run (a task name; for Streams the job's stream), kept in a dead letter
    message_id: str  # one message, the same across its redeliveries and retries
    attempt: int  # 0 for the first run of a message, n for its n-th retry
    deliveries: int | None  # known to the transport (Streams), or None: counted in the state Redis

    def retry(self, exc: JobFailed, delay: float, max_retries: int) -> BaseException:
        """The exception that makes the transport run this message again in `delay` seconds."""
        ...

    def resend(self, scheduled_for: float) -> None:
        """Send a run of the same job for a missed instant (catch-up)."""
        ...


def policy_of(spec: JobSpec) -> dict[str, Any]:
    p = dict(spec.get("policy") or {})
    p.setdefault("overlap", spec.get("overlap", "allow"))
    return p


@dataclass
class PolicyRun:
    """One message's run under its job's policies (see the module docstring for the order)."""

    transport: Transport
    spec: JobSpec
    payload: Any
    scheduled_for: float | None
    extra: dict[str, str]
    r: Any  # redis.Redis of the policy state, or None
    url: str | None  # its URL (locks open their own connections)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        check_spec(self.spec)  # before any lock or claim: a SPEC this runtime cannot read runs nothing
        self.pol = policy_of(self.spec)
        self.deliveries = self.transport.deliveries or 1

    @property
    def task_id(self) -> str:
        return self.transport.message_id

    @property
    def attempt(self) -> int:
        return self.transport.attempt

    @property
    def replay(self) -> bool:
        """A dead letter an operator sent again (`cronshift dead-letters --replay`): it runs however late,
        as a retry does; the missed-run policy is for runs nobody asked for by hand."""
        return state.REPLAY in self.task_id

    def need_state(self, what: str) -> Any:
        if self.r is None:
            raise state.NoStateStore(
                f"job {self.spec['id']}: {what} needs Redis: set CRONSHIFT_STATE_REDIS to a redis:// URL"
            )
        return self.r

    def write(self, res: dict[str, Any], extra: dict[str, str]) -> None:
        """Record an outcome. A ledger that cannot be written (Redis away, a locked SQLite file) is logged,
        never raised: the run already happened, and an error here would have it run again."""
        rec = record_from_result(self.spec, res, extra)
        try:
            write_run(replace(rec, source=self.transport.source))
        except Exception:  # sqlite3, redis-py, OSError: any of them, the outcome stands
            log.exception("could not write the run record of %s", self.spec["id"])

    # -- outcomes that are not a run -------------------------------------------------------------------
    def skip(self, reason: str) -> dict[str, Any]:
        now = self.clock()
        res = {
            "job_id": self.spec["id"],
            "skipped": True,
            "reason": reason,
            "start": now,
            "duration": 0.0,
            "scheduled_for": self.scheduled_for,
            "exit_status": None,
            "signal": None,
            "output_tail": "",
        }
        self.write(res, {**self.extra, "skipped": reason})
        return res

    def dead_letter(self, reason: str, failed: dict[str, Any] | None) -> str:
        now = self.clock()
        doc = {
            "job_id": self.spec["id"],
            "task": self.transport.name,
            "task_id": self.task_id,
            "source": self.transport.source,
            "scheduled_for": self.scheduled_for,
            "attempts": self.attempt + 1,
            "deliveries": self.deliveries,
            "reason": reason,
            "last_error": None
            if failed is None
            else {k: failed.get(k) for k in ("exit_status", "signal", "duration", "time_limit_hit")},
            "output_tail": "" if failed is None else failed.get("output_tail", ""),
            "payload": self.payload,
            "created": now,
        }
        dl = dead_letter_id(now, self.task_id)
        try:
            write_dead_letter(doc, self.url)
        except Exception:  # as for run records: logged (with the whole document), never a reason to rerun
            log.exception("could not store dead letter %s: %s", dl, doc)
        return dl

    def dead_unrun(self, why: str) -> JobDeadLettered:
        """Dead-letter this message without running it (delivered too often); recorded as a skip too."""
        dl = self.dead_letter(why, None)
        self.skip(f"dead-lettered ({dl}): {why}")
        return JobDeadLettered(f"job {self.spec['id']}: {why}; dead letter {dl}")

    # -- the policies in order -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        pol = self.pol
        max_deliveries = int(pol.get("max_deliveries") or 0)
        if self.transport.deliveries is None and max_deliveries and self.r is not None and self.task_id:
            self.deliveries = state.count_delivery(self.r, self.task_id, self.attempt)
        self.extra["deliveries"] = str(self.deliveries)
        if max_deliveries and self.deliveries > max_deliveries:
            raise self.dead_unrun(
                f"delivered {self.deliveries} times without finishing (max_deliveries {max_deliveries}):"
                " the job kills its worker or the worker dies under it"
            )
        if self.scheduled_for is not None:
            self.extra["scheduled_for"] = repr(self.scheduled_for)
            skipped = self.missed_policy()
            if skipped is not None:
                return skipped
        overlap = pol.get("overlap", "allow")
        if overlap == "allow":
            return self.execute(None)
        url = self.url
        if url is None:
            self.need_state(f"overlap policy {overlap}")
        assert url is not None
        expiry = float(pol.get("lock_expiry") or lock.DEFAULT_EXPIRY)
        if overlap == "replace":
            wait = float(self.spec.get("kill_grace") or KILL_GRACE) + expiry + 5
            lease, stopped = lock.acquire_replacing(url, self.spec["id"], expiry, wait)
            if stopped:
                self.extra["replaced"] = stopped
        else:
            lease = lock.acquire(url, self.spec["id"], expiry)
        if lease is None:
            return self.skip(f"overlap policy {overlap}: another run of {self.spec['id']} holds the lock")
        try:
            return self.execute(lease)
        finally:
            lease.release()

    def missed_policy(self) -> dict[str, Any] | None:
        pol, sf = self.pol, self.scheduled_for
        assert sf is not None
        now = self.clock()
        if self.r is not None:
            other = state.claim(self.r, self.spec["id"], sf, self.task_id)
            if other is not None:
                return self.skip(f"duplicate: task {other} already has the run scheduled for {sf:.0f}")
            if getattr(self.transport, "once_per_instant", False) and self.r.exists(self._started_key()):
                # acks_late redelivers a message whose worker died; cron never starts one instant twice.
                return self.skip(
                    f"redelivered after this run scheduled for {sf:.0f} had started (its worker died): "
                    "cron starts each scheduled instant at most once"
                )
        missed = pol.get("missed", "skip")
        late = now - sf
        if missed == "skip":
            deadline = float(pol.get("starting_deadline") or 0)
            if deadline and late > deadline and self.attempt == 0 and not self.replay:
                return self.skip(
                    f"missed-run policy skip: starting {late:.0f} s after its time, past the "
                    f"{deadline:.0f} s starting deadline"
                )
        elif missed == "run-once":
            r = self.need_state("missed-run policy run-once")
            last = state.last_start(r, self.spec["id"])
            covered = last is not None and sf < float(last["start"]) and last.get("task_id") != self.task_id
            if covered and not self.replay:
                return self.skip(
                    "missed-run policy run-once: a run started after this one's time, so the missed "
                    "runs are covered by it"
                )
        elif missed == "catch-up":
            r = self.need_state("missed-run policy catch-up")
            prev = state.advance_last_scheduled(r, self.spec["id"], sf)
            sched = pol.get("schedule") or {}
            gaps: list[float] = []
            between = getattr(self.transport, "scheduled_between", None)
            own = between(prev, sf, MAX_CATCH_UP) if between and prev is not None and sf > prev else None
            if own is not None:  # the beat entries that send a Celery task are the one source of its schedule
                gaps = own
            elif prev is not None and sf > prev and sched.get("expr"):  # the Streams target's specs
                gaps = list(
                    state.instants_between(sched["expr"], sched.get("zone", "UTC"), prev, sf, MAX_CATCH_UP)
                )
            if gaps:
                for t in gaps:
                    self.transport.resend(t)
                self.extra["caught_up"] = ",".join(f"{t:.0f}" for t in gaps)
        return None

    def _started_key(self) -> str:
        """Set when this message's run of its instant starts (per retry: a retry is meant to run)."""
        sf = self.scheduled_for or 0.0
        return f"cronshift:started:{self.spec['id']}:{sf:.0f}:{self.task_id}:{self.attempt}"

    def execute(self, lease: Any) -> dict[str, Any]:
        pol, spec = self.pol, self.spec
        if self.r is not None and pol.get("missed") == "run-once":
            state.set_last_start(self.r, spec["id"], self.clock(), self.task_id)
        once = getattr(self.transport, "once_per_instant", False)
        if once and self.r is not None and self.scheduled_for is not None:
            self.r.set(self._started_key(), "1", ex=state.KEEP)

        def on_start(pid: int) -> None:
            if lease is not None:
                grace = float(spec.get("kill_grace") or KILL_GRACE)

                def stop() -> None:
                    # Off the heartbeat thread: the lease keeps renewing through the grace period, so the
                    # newcomer cannot start before this run is really gone.
                    threading.Thread(target=kill_group, args=(pid, grace), daemon=True).start()

                lease.on_stop = stop
                if lease.stopped:
                    stop()

        try:
            res = run_job(spec, payload=self.payload, scheduled_for=self.scheduled_for, on_start=on_start)
        except JobFailed as e:
            self.note_lease(lease)
            failed = {**e.result, "scheduled_for": self.scheduled_for}
            failed.setdefault("start", self.clock() - (e.duration or 0.0))
            failed.setdefault("duration", e.duration or 0.0)
            extra = dict(self.extra)  # after note_lease
            if lease is not None and lease.stopped:
                extra["replaced_by_newer_run"] = "1"
            if failed.get("time_limit_hit"):
                extra["time_limit_hit"] = "1"
            retry_on = {int(s) for s in pol.get("retry_on") or ()}
            max_retries = int(pol.get("max_retries") or 0)
            retryable = e.exit_status in retry_on and not extra.get("replaced_by_newer_run")
            if retryable and self.attempt < max_retries:
                delay = state.backoff(
                    float(pol.get("retry_backoff") or 30),
                    self.attempt,
                    float(pol.get("retry_backoff_max") or 3600),
                    random.random(),
                )
                extra["retry_in"] = f"{delay:.3f}"
                self.write(failed, extra)
                raise self.transport.retry(e, delay, max_retries) from None
            if not extra.get("replaced_by_newer_run"):
                why = (
                    f"exit status {e.exit_status} after {self.attempt + 1} attempt(s) "
                    f"(max_retries {max_retries})"
                    if retryable
                    else (
                        f"{'signal ' + str(e.signal) if e.signal else 'exit status ' + str(e.exit_status)}"
                        + (" at the time limit" if failed.get("time_limit_hit") else "")
                        + " is not in retry_on "
                        + str(sorted(retry_on))
                    )
                )
                extra["dead_letter"] = self.dead_letter(why, failed)
            self.write(failed, extra)
            raise
        self.note_lease(lease)
        self.write(res, self.extra)
        return res

    def note_lease(self, lease: Any) -> None:
        """A lock that could not be renewed (Redis away longer than its expiry) is said in the record."""
        if lease is not None and lease.lost:
            self.extra["lock_lost"] = "1"
