"""The body of every generated task: the job's policies around `run_job`, and a record of every outcome.

SPEC["policy"] (written by `cronshift generate`, each value with its reason in the task module):
  overlap           allow | forbid | replace
  lock_expiry       seconds a forbid/replace lock outlives its worker (heartbeat every third of it)
  missed            skip | run-once | catch-up (what a run that could not start on time does)
  starting_deadline seconds after its instant a `skip` run may still start
  retry_on          exit statuses worth retrying (the history shows them to be transient); [] = none
  max_retries, retry_backoff, retry_backoff_max   retry count and backoff (with jitter), seconds
  max_deliveries    deliveries of one message before it is dead-lettered (a job that kills its worker)
  schedule          {"expr": cronsim expression, "zone": ...} for catch-up's missed instants
Every run, skip and dead letter is a run record (extra["skipped"] / extra["dead_letter"]) and a task result.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cronshift.runtime import state
from cronshift.runtime.deadletters import write_dead_letter
from cronshift.runtime.execute import KILL_GRACE, JobFailed, kill_group, run_job
from cronshift.runtime.records import record_from_result, write_run

__all__ = ["JobDeadLettered", "run_cron_task"]

MAX_CATCH_UP = 100  # missed instants one catch-up run sends at most (the rest are named in its record)


class JobDeadLettered(RuntimeError):
    """The message was delivered too many times without finishing; it went to the dead-letter record."""


def _policy(spec: dict[str, Any]) -> dict[str, Any]:
    p = dict(spec.get("policy") or {})
    p.setdefault("overlap", spec.get("overlap", "allow"))
    return p


def run_cron_task(
    task: Any,
    spec: dict[str, Any],
    payload: Any = None,
    scheduled_for: float | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run the job under its policies; a failure raises JobFailed (after retries), so Celery marks it."""
    req = task.request
    task_id = str(getattr(req, "id", "") or "")
    attempt = int(getattr(req, "retries", 0) or 0)
    pol = _policy(spec)
    extra = {"task_id": task_id, "attempt": str(attempt)}
    if isinstance(payload, dict) and "id" in payload:
        extra["payload_id"] = str(payload["id"])
    url = state.state_url(task.app)
    r = state.client(url) if url else None
    try:
        ctx = _Ctx(task, spec, pol, payload, scheduled_for, extra, r, url, clock, task_id, attempt)
        return ctx.run()
    finally:
        if r is not None:
            r.close()


class _Ctx:
    def __init__(
        self,
        task: Any,
        spec: dict[str, Any],
        pol: dict[str, Any],
        payload: Any,
        scheduled_for: float | None,
        extra: dict[str, str],
        r: Any,
        url: str | None,
        clock: Callable[[], float],
        task_id: str,
        attempt: int,
    ) -> None:
        self.task, self.spec, self.pol, self.payload = task, spec, pol, payload
        self.scheduled_for, self.extra, self.r, self.url = scheduled_for, extra, r, url
        self.clock, self.task_id, self.attempt = clock, task_id, attempt
        self.deliveries = 1

    def need_state(self, what: str) -> Any:
        if self.r is None:
            raise state.NoStateStore(
                f"job {self.spec['id']}: {what} needs Redis: set CRONSHIFT_STATE_REDIS to a redis:// URL"
            )
        return self.r

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
        write_run(record_from_result(self.spec, res, {**self.extra, "skipped": reason}))
        return res

    def dead_letter(self, reason: str, failed: dict[str, Any] | None) -> str:
        now = self.clock()
        doc = {
            "job_id": self.spec["id"],
            "task": self.task.name,
            "task_id": self.task_id,
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
        write_dead_letter(doc, self.url)
        from cronshift.runtime.deadletters import dead_letter_id

        return dead_letter_id(now, self.task_id)

    # -- the policies in order -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        pol = self.pol
        max_deliveries = int(pol.get("max_deliveries") or 0)
        if max_deliveries and self.r is not None and self.task_id:
            self.deliveries = state.count_delivery(self.r, self.task_id, self.attempt)
            self.extra["deliveries"] = str(self.deliveries)
            if self.deliveries > max_deliveries:
                why = (
                    f"delivered {self.deliveries} times without finishing (max_deliveries {max_deliveries}):"
                    " the job kills its worker or the worker dies under it"
                )
                dl = self.dead_letter(why, None)
                self.skip(f"dead-lettered ({dl}): {why}")
                raise JobDeadLettered(f"job {self.spec['id']}: {why}; dead letter {dl}")
        if self.scheduled_for is not None:
            self.extra["scheduled_for"] = repr(self.scheduled_for)
            skipped = self.missed_policy()
            if skipped is not None:
                return skipped
        overlap = pol.get("overlap", "allow")
        if overlap == "allow":
            return self.execute(None)
        from cronshift.runtime import lock

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
            if self.r.exists(self._started_key()):
                # acks_late redelivers a message whose worker died; cron never starts one instant twice.
                return self.skip(
                    f"redelivered after this run scheduled for {sf:.0f} had started (its worker died): "
                    "cron starts each scheduled instant at most once"
                )
        missed = pol.get("missed", "skip")
        late = now - sf
        if missed == "skip":
            deadline = float(pol.get("starting_deadline") or 0)
            if deadline and late > deadline and self.attempt == 0:
                return self.skip(
                    f"missed-run policy skip: starting {late:.0f} s after its time, past the "
                    f"{deadline:.0f} s starting deadline"
                )
        elif missed == "run-once":
            r = self.need_state("missed-run policy run-once")
            last = state.last_start(r, self.spec["id"])
            if last is not None and sf < float(last["start"]) and last.get("task_id") != self.task_id:
                return self.skip(
                    "missed-run policy run-once: a run started after this one's time, so the missed "
                    "runs are covered by it"
                )
        elif missed == "catch-up":
            r = self.need_state("missed-run policy catch-up")
            prev = state.advance_last_scheduled(r, self.spec["id"], sf)
            sched = pol.get("schedule") or {}
            gaps: list[float] = []
            entries = _beat_entries(self.task)
            if prev is not None and sf > prev and entries:
                # The beat entries that send this task are the one source of its schedule.
                from cronshift.runtime.schedules import fires_between_of

                a, b = datetime.fromtimestamp(prev, UTC), datetime.fromtimestamp(sf, UTC)
                gaps = [t.timestamp() for t in fires_between_of(entries, a, b, MAX_CATCH_UP)]
            elif prev is not None and sf > prev and sched.get("expr"):  # the Streams target's specs
                gaps = list(
                    state.instants_between(sched["expr"], sched.get("zone", "UTC"), prev, sf, MAX_CATCH_UP)
                )
            if gaps:
                for t in gaps:
                    self.task.apply_async(kwargs={"payload": None, "scheduled_for": t})
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
        if self.r is not None and self.scheduled_for is not None:
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
                write_run(record_from_result(spec, failed, extra))
                raise self.task.retry(exc=e, countdown=delay, max_retries=max_retries) from None
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
            write_run(record_from_result(spec, failed, extra))
            raise
        self.note_lease(lease)
        write_run(record_from_result(spec, res, self.extra))
        return res

    def note_lease(self, lease: Any) -> None:
        """A lock that could not be renewed (Redis away longer than its expiry) is said in the record."""
        if lease is not None and lease.lost:
            self.extra["lock_lost"] = "1"


def _beat_entries(task: Any) -> list[Any]:
    """The schedules of the beat entries in the task's app that send it (none for a plain trigger app)."""
    from cronshift.runtime.schedules import beat_schedules

    app, name = getattr(task, "app", None), getattr(task, "name", None)
    if app is None or not isinstance(name, str):
        return []
    try:
        return beat_schedules(app, name)
    except (AttributeError, TypeError, ValueError):
        return []
