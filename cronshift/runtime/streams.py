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

Policies: each entry runs through `cronshift.runtime.policy`, the engine the Celery tasks use (overlap,
time limit, transient-exit retries, missed-run policy by `scheduled_for`, dead letters, ledger records).
Outages: Redis going away (restart, partition, a hang past the socket timeout) is waited out with bounded
backoff and logged once each way; nothing exits on it (see `Outage`, `Consumer.run`, `run_scheduler`).
Retention: every add trims its stream by length and age (`DEFAULT_RETENTION`, chosen at generation).
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

from cronshift.runtime import state
from cronshift.runtime.deadletters import replay_id
from cronshift.runtime.execute import JobFailed
from cronshift.runtime.policy import JobDeadLettered, PolicyRun
from cronshift.runtime.schedules import cronsim_schedule
from cronshift.runtime.spec import check_spec

__all__ = [
    "Consumer",
    "Scheduler",
    "consumer_main",
    "dead_key",
    "enqueue",
    "fire",
    "group_name",
    "replay",
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
MAX_BACKLOG = 10_000  # instants kept while Redis is away (a day of an every-minute job, per several jobs)

# Retention, per stream: (max age in seconds, max length). Every XADD trims by length (MAXLEN ~, cheap) and
# by age (XTRIM MINID: entry ids are millisecond times). Chosen at generation (jobs.py RETENTION, shown in
# the project's README); these are the defaults. The jobs stream holds only work not yet done (a done entry
# is XDELed), so its bound only bites while no consumer runs; the oldest waiting entries go first.
Retention = tuple[float, int]
DEFAULT_RETENTION: dict[str, Retention] = {
    "jobs": (7 * 86400.0, 100_000),
    "dead": (30 * 86400.0, 10_000),
    "ledger": (90 * 86400.0, 1_000_000),
}

log = logging.getLogger("cronshift.streams")


def _minid(retention: Retention | None) -> str:
    return "" if retention is None else f"{int((time.time() - float(retention[0])) * 1000)}-0"


def _trimmed_xadd(pipe: Any, key: str, fields: Mapping[str, str], retention: Retention | None) -> None:
    if retention is None:
        pipe.xadd(key, dict(fields))
        return
    pipe.xadd(key, dict(fields), maxlen=int(retention[1]), approximate=True)
    pipe.xtrim(key, minid=_minid(retention), approximate=False)


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


def connect(url: str, block: float = DEFAULT_BLOCK) -> redis.Redis:
    """A client for `url` exactly as given (credentials, rediss:// TLS, db number, unix socket).

    Timeouts matter more than speed here: a Redis that hangs (SIGSTOP, a network partition) must surface
    as an error the reconnect loop handles, never as a read that blocks forever. The socket timeout sits
    above XREADGROUP's BLOCK so an idle wait is not mistaken for an outage."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=block + 10, socket_connect_timeout=5,
        health_check_interval=30,
    )  # fmt: skip


def _client(target: str | redis.Redis) -> redis.Redis:
    """One connection pool per URL for the life of the process (triggers are called often)."""
    if isinstance(target, redis.Redis):
        return target
    with _clients_lock:
        if target not in _clients:
            _clients[target] = connect(target)
        return _clients[target]


def url_of(target: str | redis.Redis) -> str | None:
    """The URL a client was made from, when known: a lock must reach the same server the same way."""
    if isinstance(target, str):
        return target
    return getattr(target, "cronshift_url", None)


# Redis away (restarting, partitioned, still loading its data, password changed): wait and retry. A
# ResponseError (a bug, a wrong type) is not in this list: it stops the process, loudly.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0  # seconds between reconnect attempts: doubled per failure, capped


class Outage:
    """Bounded exponential backoff, with one log line when Redis goes away and one when it is back, so a
    long outage does not flood the journal and a short one is still visible."""

    def __init__(self, who: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.who, self.clock = who, clock
        self.since: float | None = None
        self.delay = BACKOFF_MIN

    def failed(self, err: Exception) -> float:
        """Note a failure; the seconds to wait before the next attempt."""
        if self.since is None:
            self.since = self.clock()
            log.warning(
                "Redis unreachable (%s: %s): %s retries every %.1f-%.0f s",
                type(err).__name__, err, self.who, BACKOFF_MIN, BACKOFF_MAX,
            )  # fmt: skip
            self.delay = BACKOFF_MIN
        else:
            self.delay = min(self.delay * 2, BACKOFF_MAX)
        return self.delay

    def ok(self) -> None:
        if self.since is not None:
            log.warning("Redis reachable again after %.1f s: %s resumes", self.clock() - self.since, self.who)
            self.since = None


def notify_ready() -> None:
    """Tell systemd (Type=notify) that the process reached Redis and is working.

    Written here (a datagram to $NOTIFY_SOCKET) rather than with python-systemd: it is the whole protocol,
    and the generated project should not need a C extension."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.sendall(b"READY=1")


def _entry(job_id: str, payload: Any, scheduled_for: float | None) -> dict[str, str]:
    fields = {"job": job_id, "trigger_id": uuid.uuid4().hex}
    if payload is not None:
        fields["payload"] = json.dumps(payload, ensure_ascii=False, sort_keys=True)  # TypeError if not JSON
    if scheduled_for is not None:
        fields["scheduled_for"] = repr(float(scheduled_for))
    return fields


def enqueue(
    target: str | redis.Redis,
    project: str,
    job_id: str,
    payload: Any = None,
    retention: Retention | None = None,
) -> str:
    """Add one run of `job_id` to the project's stream; return the entry id. `payload` must be JSON."""
    pipe = _client(target).pipeline(transaction=False)
    _trimmed_xadd(pipe, stream_key(project), _entry(job_id, payload, None), retention)
    return str(pipe.execute()[0])


def replay(
    target: str | redis.Redis, project: str, doc: Mapping[str, Any], retention: Retention | None = None
) -> str:
    """Add dead letter `doc` (a document `cronshift dead-letters` lists) to the project's stream again, as a
    new entry with its payload and `scheduled_for`; return the entry id.

    Not through `fire`: the scheduler's marker for that instant is set, so fire would refuse it. The entry's
    trigger id is derived from the failed one's (`deadletters.replay_id`): the consumer's claim on the
    instant (`state.claim`), which the failed run holds, lets exactly this entry through, and a redelivery
    of it too. ValueError if the dead letter came from another project's stream."""
    if doc.get("task") != stream_key(project):
        raise ValueError(
            f"dead letter of {doc.get('task')!r}, not of this project's stream {stream_key(project)}"
        )
    sf = doc.get("scheduled_for")
    fields = _entry(str(doc["job_id"]), doc.get("payload"), None if sf is None else float(sf))
    fields["trigger_id"] = replay_id(str(doc.get("task_id") or ""))
    pipe = _client(target).pipeline(transaction=False)
    _trimmed_xadd(pipe, stream_key(project), fields, retention)
    return str(pipe.execute()[0])


def marks_key(project: str) -> str:
    """A hash: job id -> the latest instant any scheduler enqueued (where a restarted scheduler resumes)."""
    return f"cronshift:{project}:scheduled"


# SET NX, the job's high-water mark and XADD in one step: a scheduler killed (or cut off from Redis) between
# them can neither lose nor double an instant, and a retry of the same instant is refused by the SET NX.
_FIRE = """
local fired = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
local mark = redis.call('HGET', KEYS[3], ARGV[3])
if (not mark) or tonumber(mark) < tonumber(ARGV[4]) then redis.call('HSET', KEYS[3], ARGV[3], ARGV[4]) end
if not fired then return false end
local id
if ARGV[5] == '' then
  id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 7))
else
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 7))
  redis.call('XTRIM', KEYS[2], 'MINID', ARGV[6])
end
return id
"""


def fire(
    target: str | redis.Redis,
    project: str,
    job_id: str,
    scheduled_for: float,
    retention: Retention | None = None,
) -> str | None:
    """Enqueue the run cron would start at `scheduled_for`, once: None when that instant was already sent."""
    fields = _entry(job_id, None, scheduled_for)
    flat = [x for kv in fields.items() for x in kv]
    keys = (_fired_key(project, job_id, scheduled_for), stream_key(project), marks_key(project))
    trim = ("", "") if retention is None else (str(int(retention[1])), _minid(retention))
    got = _client(target).eval(
        _FIRE, 3, *keys, fields["trigger_id"], FIRED_TTL, job_id, repr(float(scheduled_for)), *trim, *flat
    )
    return None if got is None else str(got)


def read_marks(target: str | redis.Redis, project: str) -> dict[str, float]:
    return {k: float(v) for k, v in _client(target).hgetall(marks_key(project)).items()}


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

    def start(self, now: float, marks: Mapping[str, float] | None = None) -> None:
        """Begin after each job's mark (the last instant any scheduler enqueued), but no more than `deadline`
        seconds back, so an instant missed during a restart still fires, once.

        A job with no mark has never been scheduled here: cron (until its line is retired) ran every
        instant up to now, so the first instant offered is the first one after `now`."""
        marks = marks or {}
        self._next = {}
        for job, s in self._sched.items():
            mark = marks.get(job)
            begin = now if mark is None else max(mark, now - self.deadline)
            self._next[job] = s.next_after(self._dt(begin))

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
    retention: Mapping[str, Retention] | None = None,
) -> None:
    """Fire every job at its cron instants until `stop` is set; Redis going away is waited out.

    An instant that falls due while Redis is unreachable is kept and fired once Redis is back: `fire`
    re-checks its claim, so one whose first attempt did reach Redis is not enqueued twice."""
    client = _client(target)
    sched = Scheduler(schedules, deadline)
    started = False
    backlog: list[tuple[str, float]] = []
    outage = Outage("the scheduler")
    while not stop.is_set():
        try:
            if not started:
                marks = read_marks(client, project)
                sched.start(clock(), marks)
                started = True
                for job in sorted(schedules):
                    if job in marks:
                        at = datetime.fromtimestamp(marks[job], UTC).isoformat()
                        log.info("%s: resuming after %s (last instant enqueued)", job, at)
                notify_ready()
            backlog.extend(sched.due(clock()))
            del backlog[:-MAX_BACKLOG]
            while backlog:
                job, when = backlog[0]
                entry = fire(client, project, job, when, (retention or {}).get("jobs"))
                at = datetime.fromtimestamp(when, UTC).isoformat()
                log.info("%s %s %s", job, at, f"enqueued {entry}" if entry else "already enqueued")
                backlog.pop(0)
            outage.ok()
        except REDIS_DOWN as e:
            stop.wait(outage.failed(e))
            continue
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
    max_deliveries: int | None = None  # None: each job's policy (generated: 3)
    block: float = DEFAULT_BLOCK
    url: str | None = None  # the URL `client` was made from, used as given for the overlap lock
    lock_url: str | None = None  # Redis for the overlap lock; default: `url`
    clock: Callable[[], float] = time.time
    retention: Mapping[str, Retention] = dataclasses.field(default_factory=dict)  # "jobs", "dead"
    _cursor: str = dataclasses.field(default="0-0", init=False, repr=False)
    _reread: bool = dataclasses.field(default=False, init=False, repr=False)  # own pending entries first
    _claim_due: float = dataclasses.field(default=0.0, init=False, repr=False)  # monotonic time
    _stop: threading.Event | None = dataclasses.field(default=None, init=False, repr=False)
    _state: Any = dataclasses.field(default=None, init=False, repr=False)

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
        if self._reread:
            mine = self._own_pending()
            if mine is not None:
                return self.handle(*mine)
        # Stale entries are looked for at most every min_idle/4 seconds (none can turn stale faster), not
        # before every read: a round trip per entry saved on a busy stream.
        if time.monotonic() >= self._claim_due:
            claimed = self._claim()
            if claimed is not None:
                return self.handle(*claimed)
            self._claim_due = time.monotonic() + min(self.min_idle / 4, 5.0)
        got = self.client.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=1, block=max(1, int(self.block * 1000))
        )
        for _stream, entries in got or []:
            for entry_id, fields in entries:
                return self.handle(entry_id, fields or {}, 1)
        return None

    def run(self, stop: threading.Event) -> None:
        """Handle entries until `stop` is set. Redis going away is waited out with bounded backoff; once
        it is back the group is (re)created if Redis lost it, and this consumer first re-reads the entries
        already delivered to it (a reply lost in the outage), before new ones."""
        self._stop = stop
        outage = Outage(f"consumer {self.name}")
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    self.ensure_group()
                    self._reread = True
                    log.info("consumer %s on %s (group %s)", self.name, self.stream, self.group)
                    notify_ready()
                    ready = True
                outcome = self.step()
                outage.ok()
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                ready = False  # Redis came back without its data: recreate the group
                continue
            except REDIS_DOWN as e:
                ready = False
                stop.wait(outage.failed(e))
                continue
            if outcome is not None:
                log.info("%s", json.dumps(outcome, sort_keys=True))

    def _own_pending(self) -> tuple[str, dict[str, str], int] | None:
        """An entry already delivered to this consumer and never acknowledged (its reply was lost)."""
        got = self.client.xreadgroup(self.group, self.name, {self.stream: "0"}, count=1)
        for _stream, entries in got or []:
            for entry_id, fields in entries:
                if not fields:  # trimmed or deleted while pending
                    self.client.xack(self.stream, self.group, entry_id)
                    return None
                pend = self.client.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
                return str(entry_id), fields, int(pend[0]["times_delivered"]) if pend else 1
        self._reread = False
        return None

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

    def _settle(self, build: Callable[[Any], None]) -> None:
        """Execute the acknowledging transaction, waiting out an outage: the run already happened, so
        giving up here would run it again from another consumer (or this one) once Redis is back.
        A fresh transaction each attempt: redis-py empties a pipeline's commands when execute() fails."""
        outage = Outage(f"consumer {self.name} (acknowledging)")
        stop = self._stop
        given_up = None
        while True:
            try:
                pipe = self.client.pipeline(transaction=True)
                build(pipe)
                pipe.execute()
                outage.ok()
                return
            except redis.ResponseError as e:
                if "NOGROUP" in str(e):  # Redis lost the stream with it: nothing left to acknowledge
                    return
                raise
            except REDIS_DOWN as e:
                delay = outage.failed(e)
                if stop is not None and stop.is_set():
                    given_up = given_up or time.monotonic()
                    if time.monotonic() - given_up > 30:
                        log.error("stopping with an unacknowledged entry: another consumer may rerun it")
                        raise
                time.sleep(delay)

    def _done(self, entry_id: str) -> None:
        def build(pipe: Any) -> None:
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)

        self._settle(build)

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

        def build(pipe: Any) -> None:
            _trimmed_xadd(pipe, dead_key(self.project), dead, self.retention.get("dead"))
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)

        self._settle(build)
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
        """Run the entry's job under its policies (`cronshift.runtime.policy`, the Celery target's own), or
        dead-letter it; acknowledged afterwards whatever the outcome."""
        job_id = fields.get("job", "")
        spec = self.jobs.get(job_id)
        if spec is None:
            return self._dead(entry_id, fields, deliveries, "no such job in this project")
        try:
            payload = json.loads(fields["payload"]) if "payload" in fields else None
            scheduled_for = float(fields["scheduled_for"]) if "scheduled_for" in fields else None
            attempt = int(fields.get("attempt", "0"))
        except ValueError as e:
            return self._dead(entry_id, fields, deliveries, f"malformed entry: {e}")
        if self.max_deliveries is not None:  # --max-deliveries wins over the generated policy
            spec = {**spec, "policy": {**(spec.get("policy") or {}), "max_deliveries": self.max_deliveries}}
        extra = {"stream_entry": entry_id, "consumer": self.name, "deliveries": str(deliveries)}
        if fields.get("trigger_id"):
            extra["trigger_id"] = fields["trigger_id"]
        if isinstance(payload, dict) and "id" in payload:
            extra["payload_id"] = str(payload["id"])
        outcome: dict[str, Any] = {"entry": entry_id, "job": job_id, "deliveries": deliveries}
        url = self.lock_url or self.url or url_of(self.client)
        with self._heartbeat(entry_id):
            while True:
                transport = _StreamsTransport(self, job_id, fields.get("trigger_id") or entry_id, attempt,
                                              deliveries)  # fmt: skip
                run = PolicyRun(transport, spec, payload, scheduled_for, {**extra, "attempt": str(attempt)},
                                self._state_client(url), url, self.clock)  # fmt: skip
                try:
                    res = run.run()
                except RetryLater as later:
                    stop = self._stop
                    if stop is not None and stop.wait(later.delay):
                        # Stopping during the backoff: hand the retry to another consumer, as a new entry.
                        again = {**fields, "attempt": str(attempt + 1)}
                        self._requeue(entry_id, again)
                        return {**outcome, "status": "retry handed on", "attempt": attempt + 1}
                    if stop is None:
                        time.sleep(later.delay)
                    attempt += 1
                    continue
                except JobDeadLettered as e:
                    return self._dead(entry_id, fields, deliveries, str(e))
                except JobFailed as e:
                    outcome.update(status="failed", exit_status=e.exit_status, signal=e.signal)
                except (PermissionError, KeyError, OSError) as e:
                    # The worker cannot start this job at all (another user's job, an unknown user, no
                    # shell): another delivery would fail the same way.
                    return self._dead(entry_id, fields, deliveries, f"cannot run: {type(e).__name__}: {e}")
                else:
                    if res.get("skipped"):
                        outcome.update(status="skipped", reason=res.get("reason"))
                    else:
                        outcome.update(status="ok", exit_status=res.get("exit_status"),
                                       duration=round(float(res.get("duration") or 0), 3))  # fmt: skip
                break
        self._done(entry_id)
        return outcome

    def _state_client(self, url: str | None) -> Any:
        """The policy state (claims, last starts) lives in the stream's Redis; the engine reads bytes."""
        if url is None:
            return None
        if self._state is None:
            self._state = state.client(url)
        return self._state

    def _requeue(self, entry_id: str, fields: Mapping[str, str]) -> None:
        def build(pipe: Any) -> None:
            _trimmed_xadd(pipe, self.stream, fields, self.retention.get("jobs"))
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)

        self._settle(build)


class RetryLater(Exception):
    """The policy engine asks for this entry's job to run again in `delay` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay:.1f} s")
        self.delay = delay


@dataclasses.dataclass
class _StreamsTransport:
    """The policy engine's transport for a stream entry: a retry waits in the consumer (Streams has no
    delayed delivery, and the entry stays pending to this consumer, so a crash meanwhile hands it on)."""

    consumer: Consumer
    job_id: str
    message_id: str
    attempt: int
    deliveries: int | None
    source: str = "streams"

    @property
    def name(self) -> str:
        return self.consumer.stream

    def retry(self, exc: JobFailed, delay: float, max_retries: int) -> BaseException:
        return RetryLater(delay)

    def resend(self, scheduled_for: float) -> None:
        c = self.consumer
        fire(c.client, c.project, self.job_id, scheduled_for, c.retention.get("jobs"))


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
    jobs: Mapping[str, dict[str, Any]],
    *,
    project: str,
    redis_url: str,
    argv: list[str] | None = None,
    retention: Mapping[str, Retention] | None = None,
) -> int:
    """`python -m <package>.consumer`: run one consumer until SIGTERM/SIGINT (the current job finishes)."""
    p = argparse.ArgumentParser(prog=f"python -m {project}.consumer", description=consumer_main.__doc__)
    p.add_argument("--redis", default=redis_url, help="Redis URL (default: %(default)s)")
    p.add_argument("--name", default=None, help="consumer name (default: host-pid)")
    p.add_argument("--min-idle", type=float, default=DEFAULT_MIN_IDLE, help="seconds before claiming")
    p.add_argument("--max-deliveries", type=int, default=None, help="override each job's policy")
    p.add_argument("--block", type=float, default=DEFAULT_BLOCK, help="seconds to wait for an entry")
    a = p.parse_args(argv)
    for spec in jobs.values():  # refuse to start, rather than dead-letter every run, on an unknown SPEC
        check_spec(spec)
    _logging()
    retention = dict(retention or {})
    if "ledger" in retention:  # a Redis ledger (CRONSHIFT_LEDGER_REDIS) is trimmed as runs are added
        age, length = retention["ledger"]
        os.environ.setdefault("CRONSHIFT_LEDGER_RETENTION", f"{float(age):.0f}:{int(length)}")
    consumer = Consumer(
        connect(a.redis, a.block), project, jobs, url=a.redis,
        min_idle=a.min_idle, max_deliveries=a.max_deliveries, block=a.block, retention=retention,
    )  # fmt: skip
    if a.name:
        consumer.name = a.name
    consumer.run(_stop_on_signals())
    return 0


def scheduler_main(
    schedules: Mapping[str, tuple[str, str]],
    *,
    project: str,
    redis_url: str,
    argv: list[str] | None = None,
    retention: Mapping[str, Retention] | None = None,
) -> int:
    """`python -m <package>.scheduler`: enqueue each job at its cron instants until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog=f"python -m {project}.scheduler", description=scheduler_main.__doc__)
    p.add_argument("--redis", default=redis_url, help="Redis URL (default: %(default)s)")
    p.add_argument("--deadline", type=float, default=STARTING_DEADLINE, help="starting deadline, seconds")
    a = p.parse_args(argv)
    _logging()
    log.info("scheduler for %s: %d job(s) on %s", project, len(schedules), stream_key(project))
    run_scheduler(
        a.redis, project, schedules, stop=_stop_on_signals(), deadline=a.deadline, retention=retention
    )
    return 0
