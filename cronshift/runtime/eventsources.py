"""Event sources that replace a poll: PostgreSQL LISTEN/NOTIFY, file arrival in a folder, a Redis stream,
and application calls; each feeds a job's Coalescer, which sends the job's Celery task.

A generated project's `events.py` names its sources and calls `run_sources`; `python -m PKG.events` is the
one process to run beside the workers. Each source is a thread:

- postgres (psycopg 3): LISTEN on the channel the generated trigger function NOTIFYs. A lost connection is
  retried with backoff; after reconnecting, one "gap" event runs the job once, since notifications sent
  while nobody listened are gone (PostgreSQL does not queue them for a later listener).
- path (inotify_simple, the kernel's inotify): IN_CLOSE_WRITE (a writer closed the file) and IN_MOVED_TO
  (a finished file renamed in); never IN_CREATE or IN_MODIFY, so a half-written file fires nothing. Dot
  files and *.part / *.tmp / *~ names are ignored. A queue overflow or the folder going away is a gap.
- stream (redis-py): XREAD from an existing stream, resuming after the last entry read (kept in Redis under
  `cronshift:events:last:JOB:KEY`), so a restart of this process misses nothing the stream still holds.
- call: `notify_call()` adds an entry to `cronshift:call:JOB_ID`, read like a stream; coalesced, unlike
  the generated `trigger_*()` helpers which send a run per call.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from cronshift.runtime.coalesce import Coalescer
from cronshift.runtime.state import instants_between

__all__ = ["call_key", "listen_postgres", "notify_call", "read_stream", "run_sources", "watch_path"]

log = logging.getLogger("cronshift.events")

OnEvent = Callable[..., None]
IGNORED_SUFFIXES = (".part", ".tmp", "~", ".swp")
BACKOFF_MAX = 10.0


def call_key(job_id: str) -> str:
    return f"cronshift:call:{job_id}"


def notify_call(redis_url: str, job_id: str, payload: Any = None, maxlen: int = 100_000) -> str:
    """Ask for a coalesced run of `job_id`: one stream entry (the events process turns it into a run)."""
    r = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        entry = r.xadd(call_key(job_id), {"payload": json.dumps(payload)}, maxlen=maxlen, approximate=True)
    finally:
        r.close()
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def _sleep(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


# -- postgres ---------------------------------------------------------------------------------------------


def listen_postgres(
    dsn: str,
    channel: str,
    on_event: OnEvent,
    stop: threading.Event,
    on_connect: Callable[[], None] = lambda: None,
) -> None:
    """LISTEN on `channel` until `stop`; each NOTIFY is an event, each reconnect after a loss a gap event."""
    import psycopg  # an optional dependency (cronshift[events]): only a postgres source needs it
    from psycopg import sql

    backoff, connected_before = 0.2, False
    while not stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                on_connect()
                if connected_before:
                    log.warning("postgres %s: reconnected; running the job once for the gap", channel)
                    on_event("postgres", "reconnected", None, gap=True)
                connected_before, backoff = True, 0.2
                while not stop.is_set():
                    for n in conn.notifies(timeout=0.5):
                        at = None
                        with contextlib.suppress(ValueError, TypeError, AttributeError):
                            at = float(json.loads(n.payload).get("at"))
                        if at is not None and not (time.time() - 86400 < at < time.time() + 60):
                            at = None  # any role may NOTIFY: a time that cannot be right is not believed
                        on_event("postgres", n.payload[:200], at)
        except psycopg.Error as e:
            if stop.is_set():
                return
            log.warning("postgres %s: %s; reconnecting in %.1f s", channel, str(e).strip(), backoff)
            _sleep(stop, backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)
            connected_before = True  # whatever was sent while we were away is lost: the reconnect is a gap


# -- path -------------------------------------------------------------------------------------------------


def _wanted(name: str, pattern: str) -> bool:
    return (
        bool(name)
        and not name.startswith(".")
        and not name.endswith(IGNORED_SUFFIXES)
        and (fnmatch.fnmatch(name, pattern))
    )


def watch_path(
    folder: str,
    on_event: OnEvent,
    stop: threading.Event,
    pattern: str = "*",
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Files closed after writing in, or moved into, `folder`: one event each (never a half-written file)."""
    from inotify_simple import INotify, flags  # an optional dependency: only a folder source needs it

    mask = flags.CLOSE_WRITE | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR
    ino = INotify()
    try:
        wd, gap = None, False
        while not stop.is_set():
            if wd is None:
                try:
                    wd = ino.add_watch(folder, mask)
                except OSError as e:
                    log.warning("path %s: cannot watch (%s); retrying", folder, e)
                    _sleep(stop, 1.0)
                    continue
                on_ready()
                if gap:
                    on_event("path", "watch restored", None, gap=True)
            for ev in ino.read(timeout=500):
                if ev.mask & flags.Q_OVERFLOW:
                    on_event("path", "inotify queue overflow", None, gap=True)
                    continue
                if ev.mask & (flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF):
                    wd, gap = None, True
                    continue
                closed = ev.mask & (flags.CLOSE_WRITE | flags.MOVED_TO) and not ev.mask & flags.ISDIR
                if closed and _wanted(ev.name, pattern):
                    try:
                        at = os.stat(os.path.join(folder, ev.name)).st_mtime
                    except OSError:
                        at = None
                    on_event("path", ev.name, at)
    finally:
        ino.close()


# -- redis streams ----------------------------------------------------------------------------------------


def read_stream(
    redis_url: str,
    key: str,
    on_event: OnEvent,
    stop: threading.Event,
    job_id: str,
    source: str = "stream",
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """New entries of an existing stream, resuming after the last one read by this job."""
    last_key = f"cronshift:events:last:{job_id}:{key}"
    backoff = 0.2
    while not stop.is_set():
        r = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            last = r.get(last_key)
            last_id = last.decode() if last else "$"
            if last_id == "$":
                # Start from the newest entry now, and keep that position, so a restart resumes here.
                newest = r.xrevrange(key, count=1)
                last_id = newest[0][0].decode() if newest else "0-0"
                r.set(last_key, last_id)
            on_ready()
            backoff = 0.2
            while not stop.is_set():
                got = r.xread({key: last_id}, count=1000, block=500)
                for _stream, entries in got or ():
                    for entry_id, _fields in entries:
                        eid = entry_id.decode()
                        on_event(source, eid, int(eid.split("-", 1)[0]) / 1000)
                        last_id = eid
                    r.set(last_key, last_id)
        except redis.RedisError as e:
            if stop.is_set():
                return
            log.warning("stream %s: %s; reconnecting in %.1f s", key, e, backoff)
            _sleep(stop, backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)
        finally:
            r.close()


# -- the process ------------------------------------------------------------------------------------------


def _busy(result: Any) -> bool:
    try:
        return not result.ready()
    except Exception:  # the result backend is away: do not hold events forever on it
        return False


def _skipped(result: Any) -> bool:
    """The run's overlap lock skipped it (it ran none of its events' work)."""
    try:
        value = result.result if result.successful() else None
    except Exception:
        return False
    return isinstance(value, dict) and bool(value.get("skipped")) and "overlap" in str(value.get("reason"))


def safety_net(
    expr: str, zone: str, co: Coalescer, stop: threading.Event, clock: Callable[[], float] | None = None
) -> None:
    """At each instant of `expr` (cron syntax, in `zone`), run the job if no event ran it since the last one.

    For a safety net slower than the old schedule once its beat entry is removed: a lost notification then
    costs at most one interval of this schedule in freshness."""
    now = clock or time.time
    seen = co.events
    while not stop.is_set():
        t = now()
        nxt = next(iter(instants_between(expr, zone, t, t + 400 * 86400, 1)), None)
        if nxt is None:
            return
        if stop.wait(max(0.0, nxt - now())):
            return
        if co.events == seen:
            co.event("safety-net", f"no event since the last instant of {expr}", None)
        seen = co.events


def run_sources(
    jobs: Mapping[str, Mapping[str, Any]],
    tasks: Mapping[str, Any],
    *,
    pg_dsn: str = "",
    redis_url: str = "",
    stop: threading.Event | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run every job's sources and coalescer until SIGTERM/SIGINT (or `stop`).

    `jobs`: job id -> {"quiet", "max_wait", "max_busy", "safety", "zone", "sources": [{"kind", ...}]};
    `tasks`: job id -> its Celery task. `ready(name)` is called once each source listens."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    threads: list[threading.Thread] = []

    def start(name: str, target: Callable[..., None], *args: Any, **kw: Any) -> None:
        t = threading.Thread(target=target, args=args, kwargs=kw, name=name, daemon=True)
        t.start()
        threads.append(t)

    for job_id, cfg in jobs.items():
        task = tasks[job_id]

        def send(payload: dict[str, Any], task: Any = task) -> Any:
            return task.apply_async(kwargs={"payload": payload})

        co = Coalescer(
            job_id,
            send,
            quiet=float(cfg["quiet"]),
            max_wait=float(cfg["max_wait"]),
            busy=_busy,
            skipped=_skipped,
            max_busy=float(cfg.get("max_busy") or 3600),
        )

        def on_event(
            source: str, key: str = "", at: float | None = None, gap: bool = False, co: Coalescer = co
        ) -> None:
            co.event(source, key, at, gap)

        start(f"coalesce:{job_id}", co.run, stop)
        if cfg.get("safety"):
            start(f"safety-net:{job_id}", safety_net, cfg["safety"], cfg.get("zone") or "UTC", co, stop)
        for src in cfg["sources"]:
            kind = src["kind"]
            name = f"{kind}:{job_id}:{src.get('table') or src.get('dir') or src.get('key') or ''}"
            note = (lambda n=name: ready(n)) if ready else (lambda: None)
            if kind == "postgres":
                start(name, listen_postgres, src.get("dsn") or pg_dsn, src["channel"], on_event, stop, note)
            elif kind == "path":
                start(name, watch_path, src["dir"], on_event, stop, src.get("pattern") or "*", note)
            elif kind in ("stream", "call"):
                key = src["key"] if kind == "stream" else call_key(job_id)
                url = src.get("redis") or redis_url
                start(name, read_stream, url, key, on_event, stop, job_id, kind, note)
            else:
                raise ValueError(f"job {job_id}: unknown event source kind {kind!r}")
    log.info("cronshift events: %d source thread(s) for %d job(s)", len(threads) - len(jobs), len(jobs))
    dead: list[str] = []
    while not stop.is_set() and not dead:
        stop.wait(0.5)
        dead = [t.name for t in threads if not t.is_alive()]
    stop.set()
    for t in threads:
        t.join(timeout=2)
    if dead:
        # A source that died would go quiet without a word; exit so the supervisor restarts the process
        # (and the restart's reconnect runs each job once for the gap).
        log.error("cronshift events: %s stopped unexpectedly; exiting", ", ".join(dead))
        raise SystemExit(1)
