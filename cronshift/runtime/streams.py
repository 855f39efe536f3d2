"""The Redis Streams target at run time: a producer, a consumer-group worker and a one-instance scheduler.

Why Streams: no Celery, one Redis, and the delivery guarantees are visible in Redis itself. An entry is
`{job, payload?, scheduled_for?, trigger_id}`: data only. The consumer looks `job` up in the project's own
specs, so nothing in an entry can name a command, and the payload reaches the job only as the JSON file
$CRONSHIFT_PAYLOAD_FILE (see `cronshift.runtime.execute`).

Delivery: XREADGROUP hands an entry to one consumer; it is XACKed (and XDELed: one group per stream, so
the stream only holds work not yet done) after the run, whatever the exit status. A consumer that dies
leaves the entry pending; another claims it with XAUTOCLAIM once it has been idle for `min_idle` seconds.
A live consumer keeps its entry's idle time near zero (a heartbeat), so a long job is never stolen.
An entry delivered more than `max_deliveries` times goes to the dead-letter stream unrun.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from cronshift.runtime.execute import JobFailed, run_job
from cronshift.runtime.records import record_from_result, write_run
from cronshift.runtime.schedules import cronsim_schedule

__all__ = [
    "Consumer",
    "Scheduler",
    "consumer_main",
    "dead_key",
    "enqueue",
    "fire",
    "group_name",
    "run_scheduler",
    "scheduler_main",
    "stream_key",
]

DEFAULT_MIN_IDLE = (
    60.0  # seconds an entry sits unacknowledged, heartbeat-free, before another consumer takes it
)
DEFAULT_MAX_DELIVERIES = 3
DEFAULT_BLOCK = 2.0  # seconds XREADGROUP waits; also how soon SIGTERM is noticed when idle
STARTING_DEADLINE = 120.0  # seconds: an instant missed by less than this at scheduler start still fires
LATE_OK = 10.0  # seconds: an instant reached this late while running (busy host, slow Redis) still fires
FIRED_TTL = 2 * 86400  # seconds a scheduled_for marker lives; far above the starting deadline

log = logging.getLogger("cronshift.streams")


def stream_key(project: str) -> str:
    return f"cronshift:{project}:jobs"


def dead_key(project: str) -> str:
    return f"cronshift:{project}:dead"


def group_name(project: str) -> str:
    return f"cronshift:{project}:workers"


def _fired_key(project: str, job_id: str, scheduled_for: float) -> str:
    return f"cronshift:{project}:fired:{job_id}:{scheduled_for:.0f}"


_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _client(target: str | redis.Redis) -> redis.Redis:
    """One connection pool per URL for the life of the process (triggers are called often)."""
    if isinstance(target, redis.Redis):
        return target
    with _clients_lock:
        if target not in _clients:
            _clients[target] = redis.Redis.from_url(target, decode_responses=True)
        return _clients[target]


def _entry(job_id: str, payload: Any, scheduled_for: float | None) -> dict[str, str]:
    fields = {"job": job_id, "trigger_id": uuid.uuid4().hex}
    if payload is not None:
        fields["payload"] = json.dumps(payload, ensure_ascii=False, sort_keys=True)  # TypeError if not JSON
    if scheduled_for is not None:
        fields["scheduled_for"] = repr(float(scheduled_for))
    return fields


def enqueue(target: str | redis.Redis, project: str, job_id: str, payload: Any = None) -> str:
    """Add one run of `job_id` to the project's stream; return the entry id. `payload` must be JSON."""
    return str(_client(target).xadd(stream_key(project), _entry(job_id, payload, None)))


# SET NX and XADD in one step: a scheduler killed between them can neither lose nor double an instant.
_FIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
end
return false
"""


def fire(target: str | redis.Redis, project: str, job_id: str, scheduled_for: float) -> str | None:
    """Enqueue the run cron would start at `scheduled_for`, once: None when that instant was already sent."""
    fields = _entry(job_id, None, scheduled_for)
    flat = [x for kv in fields.items() for x in kv]
    key = _fired_key(project, job_id, scheduled_for)
    got = _client(target).eval(_FIRE, 2, key, stream_key(project), fields["trigger_id"], FIRED_TTL, *flat)
    return None if got is None else str(got)


class Scheduler:
    """Which (job, instant) pairs are due, from cronsim through `cronsim_schedule` (the class whose instants
    `cronshift generate` proves against cron). Pure: the caller passes the time."""

    def __init__(self, schedules: Mapping[str, tuple[str, str]], deadline: float = STARTING_DEADLINE) -> None:
        self.deadline = deadline
        self._sched = {job: cronsim_schedule(expr, zone) for job, (expr, zone) in sorted(schedules.items())}
        self._next: dict[str, datetime] = {}

    @staticmethod
    def _dt(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, UTC)

    def start(self, now: float) -> None:
        """Begin `deadline` seconds back, so an instant missed during a restart still fires (once)."""
        self._next = {job: s.next_after(self._dt(now - self.deadline)) for job, s in self._sched.items()}

    def due(self, now: float) -> list[tuple[str, float]]:
        """Instants in (last call, now], oldest first; those older than `deadline` are skipped as missed.

        LATE_OK is a floor: with a deadline of 0 the loop, which always wakes a little after an instant,
        would otherwise drop every run (celery#4806's lesson)."""
        late_ok = max(self.deadline, LATE_OK)
        out: list[tuple[str, float]] = []
        for job, s in self._sched.items():
            t = self._next[job]
            while t.timestamp() <= now:
                if now - t.timestamp() <= late_ok:
                    out.append((job, t.timestamp()))
                t = s.next_after(t)
            self._next[job] = t
        return sorted(out, key=lambda p: (p[1], p[0]))

    def wake_at(self) -> float | None:
        return min((t.timestamp() for t in self._next.values()), default=None)


def run_scheduler(
    target: str | redis.Redis,
    project: str,
    schedules: Mapping[str, tuple[str, str]],
    *,
    stop: threading.Event,
    deadline: float = STARTING_DEADLINE,
    clock: Callable[[], float] = time.time,
) -> None:
    """Fire every job at its cron instants until `stop` is set."""
    client = _client(target)
    sched = Scheduler(schedules, deadline)
    sched.start(clock())
    while not stop.is_set():
        for job, when in sched.due(clock()):
            entry = fire(client, project, job, when)
            at = datetime.fromtimestamp(when, UTC).isoformat()
            log.info("%s %s %s", job, at, f"enqueued {entry}" if entry else "already enqueued")
        wake = sched.wake_at()
        # Wake at least every second: a clock step or a signal is noticed promptly.
        stop.wait(1.0 if wake is None else min(max(wake - clock(), 0.0), 1.0))


# Reset the idle time of an entry we still own (XCLAIM JUSTID does not count a delivery). Checking the
# owner first keeps a consumer that stalled past min-idle from taking back an entry another one claimed.
_HEARTBEAT = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] and p[1][2] == ARGV[2] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
  return 1
end
return 0
"""


@dataclasses.dataclass
class Consumer:
    """One worker of the project's consumer group; runs one job at a time (start several for more)."""

    client: redis.Redis
    project: str
    jobs: Mapping[str, dict[str, Any]]
    name: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    min_idle: float = DEFAULT_MIN_IDLE
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    block: float = DEFAULT_BLOCK
    lock_url: str | None = None  # Redis for the overlap lock; default: this client's server
    clock: Callable[[], float] = time.time
    _cursor: str = dataclasses.field(default="0-0", init=False, repr=False)

    @property
    def stream(self) -> str:
        return stream_key(self.project)

    @property
    def group(self) -> str:
        return group_name(self.project)

    def ensure_group(self) -> None:
        """Create the group at id 0, so entries triggered before any consumer ever ran are not lost."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def step(self) -> dict[str, Any] | None:
        """Handle one entry (a stale pending one first, else a new one); None when there was none."""
        claimed = self._claim()
        if claimed is not None:
            return self.handle(*claimed)
        got = self.client.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=1, block=max(1, int(self.block * 1000))
        )
        for _stream, entries in got or []:
            for entry_id, fields in entries:
                return self.handle(entry_id, fields or {}, 1)
        return None

    def run(self, stop: threading.Event) -> None:
        self.ensure_group()
        log.info("consumer %s on %s (group %s)", self.name, self.stream, self.group)
        while not stop.is_set():
            outcome = self.step()
            if outcome is not None:
                log.info("%s", json.dumps(outcome, sort_keys=True))

    def _claim(self) -> tuple[str, dict[str, str], int] | None:
        res = self.client.xautoclaim(
            self.stream, self.group, self.name, int(self.min_idle * 1000), start_id=self._cursor, count=1
        )
        self._cursor = str(res[0])
        for entry_id, fields in res[1]:
            if not fields:  # deleted from the stream while pending (Redis < 7 returns it as nil)
                self.client.xack(self.stream, self.group, entry_id)
                continue
            pend = self.client.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            deliveries = int(pend[0]["times_delivered"]) if pend else self.max_deliveries + 1
            return str(entry_id), fields, deliveries
        return None

    def _done(self, entry_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()

    def _dead(self, entry_id: str, fields: Mapping[str, str], deliveries: int, reason: str) -> dict[str, Any]:
        """Move the entry, unrun, to the dead-letter stream (its fields kept as data) in one transaction."""
        dead = {f"entry_{k}": v for k, v in fields.items()}
        dead.update(
            dead_reason=reason,
            dead_from=entry_id,
            dead_deliveries=str(deliveries),
            dead_consumer=self.name,
            dead_at=repr(self.clock()),
        )
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(dead_key(self.project), dead)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()
        return {"entry": entry_id, "job": fields.get("job"), "status": "dead-letter", "reason": reason}

    @contextlib.contextmanager
    def _heartbeat(self, entry_id: str) -> Iterator[None]:
        done = threading.Event()
        interval = max(self.min_idle / 4, 0.05)

        def beat() -> None:
            while not done.wait(interval):
                with contextlib.suppress(redis.RedisError):
                    if not self.client.eval(_HEARTBEAT, 1, self.stream, self.group, self.name, entry_id):
                        log.warning("entry %s was claimed by another consumer while it ran here", entry_id)
                        return

        t = threading.Thread(target=beat, name=f"heartbeat-{entry_id}", daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()

    def handle(self, entry_id: str, fields: Mapping[str, str], deliveries: int) -> dict[str, Any]:
        """Run the entry's job once (or dead-letter it); acknowledged afterwards whatever the exit status."""
        if deliveries > self.max_deliveries:
            why = (
                f"delivered {deliveries} times (max {self.max_deliveries}); each consumer died before acking"
            )
            return self._dead(entry_id, fields, deliveries, why)
        job_id = fields.get("job", "")
        spec = self.jobs.get(job_id)
        if spec is None:
            return self._dead(entry_id, fields, deliveries, "no such job in this project")
        try:
            payload = json.loads(fields["payload"]) if "payload" in fields else None
            scheduled_for = float(fields["scheduled_for"]) if "scheduled_for" in fields else None
        except ValueError as e:
            return self._dead(entry_id, fields, deliveries, f"malformed entry: {e}")
        extra = {"stream_entry": entry_id, "consumer": self.name, "deliveries": str(deliveries)}
        if fields.get("trigger_id"):
            extra["trigger_id"] = fields["trigger_id"]
        if isinstance(payload, dict) and "id" in payload:
            extra["payload_id"] = str(payload["id"])
        outcome: dict[str, Any] = {"entry": entry_id, "job": job_id, "deliveries": deliveries}
        try:
            with self._heartbeat(entry_id):
                outcome.update(self._run(spec, payload, scheduled_for, extra))
        except (PermissionError, KeyError, OSError) as e:
            # The worker cannot start this job at all (another user's job, an unknown user, no shell):
            # another delivery would fail the same way.
            return self._dead(entry_id, fields, deliveries, f"cannot run: {type(e).__name__}: {e}")
        self._done(entry_id)
        return outcome

    def _run(
        self, spec: dict[str, Any], payload: Any, scheduled_for: float | None, extra: dict[str, str]
    ) -> dict[str, Any]:
        if spec.get("overlap") == "forbid":
            from cronshift.runtime.lock import DEFAULT_EXPIRY, hold

            url = self.lock_url or _url_of(self.client)
            # The lock is renewed by a heartbeat while the job runs: a short expiry frees it soon after a
            # consumer dies, and a long job never outlives it.
            with hold(url, spec["id"], DEFAULT_EXPIRY) as got:
                if not got:
                    return {"status": "skipped", "reason": "overlap policy forbid: already running"}
                return self._execute(spec, payload, scheduled_for, extra)
        return self._execute(spec, payload, scheduled_for, extra)

    def _execute(
        self, spec: dict[str, Any], payload: Any, scheduled_for: float | None, extra: dict[str, str]
    ) -> dict[str, Any]:
        start = self.clock()
        try:
            res = run_job(spec, payload=payload, scheduled_for=scheduled_for, clock=self.clock)
        except JobFailed as e:
            res = {
                "start": start,
                "duration": e.duration,
                "exit_status": e.exit_status,
                "signal": e.signal,
                "output_tail": e.tail,
                "scheduled_for": scheduled_for,
                **(getattr(e, "result", None) or {}),  # newer runtimes carry the whole result
            }
            _record(spec, res, extra)
            return {"status": "failed", "exit_status": e.exit_status, "signal": e.signal}
        _record(spec, res, extra)
        return {"status": "ok", "exit_status": res["exit_status"], "duration": round(res["duration"], 3)}


def _record(spec: dict[str, Any], res: dict[str, Any], extra: dict[str, str]) -> None:
    """The run already happened: a ledger that cannot be written is logged, never a reason to run again."""
    try:
        write_run(dataclasses.replace(record_from_result(spec, res, extra), source="streams"))
    except Exception:  # any ledger failure: the entry must still be acknowledged
        log.exception("could not write the run record of %s", spec["id"])


def _url_of(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current job", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


def consumer_main(
    jobs: Mapping[str, dict[str, Any]], *, project: str, redis_url: str, argv: list[str] | None = None
) -> int:
    """`python -m <package>.consumer`: run one consumer until SIGTERM/SIGINT (the current job finishes)."""
    p = argparse.ArgumentParser(prog=f"python -m {project}.consumer", description=consumer_main.__doc__)
    p.add_argument("--redis", default=redis_url, help="Redis URL (default: %(default)s)")
    p.add_argument("--name", default=None, help="consumer name (default: host-pid)")
    p.add_argument("--min-idle", type=float, default=DEFAULT_MIN_IDLE, help="seconds before claiming")
    p.add_argument("--max-deliveries", type=int, default=DEFAULT_MAX_DELIVERIES)
    p.add_argument("--block", type=float, default=DEFAULT_BLOCK, help="seconds to wait for an entry")
    a = p.parse_args(argv)
    _logging()
    consumer = Consumer(
        redis.Redis.from_url(a.redis, decode_responses=True), project, jobs,
        min_idle=a.min_idle, max_deliveries=a.max_deliveries, block=a.block,
    )  # fmt: skip
    if a.name:
        consumer.name = a.name
    consumer.run(_stop_on_signals())
    return 0


def scheduler_main(
    schedules: Mapping[str, tuple[str, str]], *, project: str, redis_url: str, argv: list[str] | None = None
) -> int:
    """`python -m <package>.scheduler`: enqueue each job at its cron instants until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog=f"python -m {project}.scheduler", description=scheduler_main.__doc__)
    p.add_argument("--redis", default=redis_url, help="Redis URL (default: %(default)s)")
    p.add_argument("--deadline", type=float, default=STARTING_DEADLINE, help="starting deadline, seconds")
    a = p.parse_args(argv)
    _logging()
    log.info("scheduler for %s: %d job(s) on %s", project, len(schedules), stream_key(project))
    run_scheduler(a.redis, project, schedules, stop=_stop_on_signals(), deadline=a.deadline)
    return 0
