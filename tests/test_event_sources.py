"""Event sources that replace a poll (generate --trigger): the coalescing rule, each source against its real
part (a PostgreSQL database the test creates, a real folder, a test-owned Redis), and the orders poller
migrated end to end with a real Celery worker and the generated events process."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cronshift.ledger.store import open_ledger
from cronshift.runtime.coalesce import Coalescer
from cronshift.runtime.eventsources import listen_postgres, notify_call, read_stream, watch_path
from tests.support.celery_worker import start_worker
from tests.support.celery_worker import stop as _stop
from tests.support.postgres import dsn, pg_db  # noqa: F401 - fixture
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture
from tests.test_generate import _cli

PROJECT = Path(__file__).resolve().parent.parent
CRONSHIFT = str(Path(sys.executable).with_name("cronshift"))


def wait_for(cond: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `cond` until it is truthy; a bound on waiting, not an assertion about speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- the coalescing rule, on a fake clock ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _coalescer(quiet: float, max_wait: float, busy: Any = None) -> tuple[Coalescer, list[dict], FakeClock]:
    clock, sent, records = FakeClock(), [], []

    def send(payload: dict) -> dict:
        sent.append(payload)
        return payload

    co = Coalescer("job-1", send, quiet=quiet, max_wait=max_wait, busy=busy, record=records.append,
                   clock=clock, wall=clock)  # fmt: skip
    return co, records, clock


def test_a_burst_of_10000_events_runs_the_job_a_bounded_number_of_times() -> None:
    quiet, max_wait, duration = 0.5, 2.0, 10.0
    co, records, clock = _coalescer(quiet, max_wait)
    for i in range(10_000):
        clock.t = 1000.0 + duration * i / 10_000
        co.event("postgres", str(i))
        co.poll()
    clock.t += quiet
    co.poll()
    assert sum(r["events"] for r in records) == 10_000  # every event is in some trigger record
    assert len(records) <= duration / quiet + 1
    assert len(records) <= duration / max_wait + 1
    assert all(r["coalesced"] == r["events"] - 1 for r in records)


def test_a_single_event_fires_after_the_quiet_period_not_before() -> None:
    co, _records, clock = _coalescer(0.25, 5.0)
    co.event("call", "a")
    assert co.poll() is None
    clock.t += 0.25
    doc = co.poll()
    assert doc is not None and doc["events"] == 1 and doc["reason"] == "quiet period"


def test_nothing_fires_while_the_previous_run_is_in_flight_and_nothing_is_lost() -> None:
    running = {"yes": True}
    co, records, clock = _coalescer(0.1, 1.0, busy=lambda _h: running["yes"])
    co.event("path", "a")
    clock.t += 0.1
    assert co.poll() is not None  # first run starts
    for k in range(50):
        co.event("path", f"f{k}")
        clock.t += 0.1
        assert co.poll() is None  # the run is still going: the batch waits (single flight)
    running["yes"] = False
    doc = co.poll()
    assert doc is not None and doc["events"] == 50
    assert len(records) == 2


def test_a_run_skipped_by_the_overlap_lock_gives_its_events_back() -> None:
    state = {"busy": True, "skipped": True}
    clock, sent, records = FakeClock(), [], []
    co = Coalescer("job-1", lambda p: sent.append(p) or p, quiet=0.1, max_wait=1.0,
                   busy=lambda _h: state["busy"], skipped=lambda _h: state["skipped"], record=records.append,
                   clock=clock, wall=clock)  # fmt: skip
    for k in range(3):
        co.event("postgres", str(k))
    clock.t += 0.1
    assert co.poll()["events"] == 3
    co.event("postgres", "3")  # arrives while the (soon skipped) run is in flight
    clock.t += 0.5
    state["busy"] = False  # it ended: skipped by the lock a beat run held
    assert co.poll() is None  # not at once: a skipped batch waits RETRY_DELAY
    clock.t += 1.0
    doc = co.poll()
    assert doc is not None and doc["events"] == 4 and doc["reason"].startswith("retry")
    state["skipped"] = False
    assert co.poll() is None and co.pending is None  # a run that really ran: nothing comes back


def test_the_safety_net_runs_the_job_only_when_no_event_came() -> None:
    from cronshift.runtime.eventsources import safety_net

    t0 = 1_767_225_600.0  # 2026-01-01T00:00Z
    wall = {"t": t0}
    co, records, _clock = _coalescer(0.0, 1.0)
    co.clock = co.wall = lambda: wall["t"]

    class FakeStop(threading.Event):
        """Waiting moves the fake clock; an application event arrives at 01:30; stop after 03:30."""

        def wait(self, timeout: float | None = None) -> bool:
            left = timeout or 0.0
            while left > 0:
                step = min(1.0, left)
                wall["t"] += step
                left -= step
                if wall["t"] == t0 + 90:
                    co.event("postgres", "an order")
                co.poll()
            co.poll()
            return wall["t"] > t0 + 210

    safety_net("* * * * *", "UTC", co, FakeStop(), clock=lambda: wall["t"])
    # 00:01 no event: the net runs it; 01:30 an event runs it, so 02:00 stays quiet; 03:00 no event: the net
    assert [r["sources"] for r in records] == [["safety-net"], ["postgres"], ["safety-net"]]


def test_a_broker_that_refuses_the_send_keeps_the_batch() -> None:
    clock, records, up = FakeClock(), [], {"yes": False}

    def send(payload: dict) -> dict:
        if not up["yes"]:
            raise ConnectionError("broker down")
        return payload

    co = Coalescer("job-1", send, quiet=0.1, max_wait=1.0, record=records.append, clock=clock, wall=clock)
    co.event("stream", "1-0")
    clock.t += 0.1
    assert co.poll() is None and co.send_errors == 1 and records == []
    co.event("stream", "2-0")
    up["yes"] = True
    clock.t += 1.0
    doc = co.poll()
    assert doc is not None and doc["events"] == 2 and doc["keys"] == ["1-0", "2-0"]


def test_a_gap_event_says_so_in_the_record() -> None:
    co, _records, clock = _coalescer(0.1, 1.0)
    co.event("postgres", "reconnected", gap=True)
    clock.t += 0.1
    assert co.poll()["reason"].startswith("gap")


# -- --trigger on the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("kafka:orders", "kind must be one of"),
        ("postgres:orders;drop table x", "TABLE must be a table name"),
        ("postgres:orders,quiet=soon", "quiet must be a number"),
        ("path:relative/dir", "DIR must be an absolute path"),
        ("stream:", "name the stream KEY"),
        ("postgres:orders,colour=red", "option 'colour=red'"),
        ("call,safety=61_*_*_*_*", "safety is not a cron schedule"),
    ],
)
def test_a_bad_trigger_is_a_one_line_usage_error(tmp_path: Path, value: str, says: str) -> None:
    root = tmp_path / "root"
    shutil.copytree(PROJECT / "fixtures" / "poller", root)
    r = CliRunner().invoke(
        _cli(), ["generate", "--all", "--root", str(root), "--out", str(tmp_path / "out"), "--trigger", value]
    )
    assert r.exit_code == 2
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- each source against its real part ----------------------------------------------------------------------


def _generate(root: Path, out: Path, pkg: str, *args: str, broker: str = "redis://127.0.0.1:1/0") -> dict:
    r = CliRunner().invoke(
        _cli(),
        ["generate", "--all", "--root", str(root), "--out", str(out), "--package", pkg, "--json",
         "--broker", broker, "--now", "2026-03-01T00:00", *args],
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _psql(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", dsn(db), "-v", "ON_ERROR_STOP=1", "-qAtX", *args], capture_output=True, text=True, check=True
    )


def test_generated_postgres_sql_notifies_on_commit_and_is_reversible(tmp_path: Path, pg_db: str) -> None:  # noqa: F811
    import psycopg

    root = tmp_path / "root"
    shutil.copytree(PROJECT / "fixtures" / "poller", root)
    out = _generate(root, tmp_path / "out", "shop", "--trigger", "postgres:orders")
    assert out["event_sources"][0]["safety"] is None  # the beat entry is the safety net unless one is named
    assert out["event_sources"][0]["sources"] == [
        {"kind": "postgres", "table": "orders", "channel": "cronshift_orders"}
    ]
    sql = tmp_path / "out/shop/sql"
    _psql(pg_db, "-c", "CREATE TABLE orders (id serial PRIMARY KEY, item text)")
    _psql(pg_db, "-f", str(sql / "cronshift_notify_orders.up.sql"))
    _psql(pg_db, "-f", str(sql / "cronshift_notify_orders.up.sql"))  # applying twice is harmless

    got: list[tuple[str, str, float | None]] = []
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(
        target=listen_postgres,
        args=(dsn(pg_db), "cronshift_orders", lambda s, k, at, gap=False: got.append((s, k, at)), stop),
        kwargs={"on_connect": ready.set},
        daemon=True,
    )
    t.start()
    try:
        assert ready.wait(10)
        with psycopg.connect(dsn(pg_db)) as conn:  # a rolled-back insert notifies nobody
            conn.execute("INSERT INTO orders (item) VALUES ('x')")
            conn.rollback()
        _psql(pg_db, "-c", "INSERT INTO orders (item) SELECT 'y' FROM generate_series(1, 500)")
        wait_for(lambda: got, 10, "a notification")
        time.sleep(0.3)
        assert len(got) == 1  # one statement of 500 rows: one event
        assert json.loads(got[0][1])["op"] == "INSERT" and got[0][2] is not None
    finally:
        stop.set()
        t.join(5)
    _psql(pg_db, "-f", str(sql / "cronshift_notify_orders.down.sql"))
    left = _psql(
        pg_db,
        "-c",
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'cronshift%' UNION ALL "
        "SELECT count(*) FROM pg_proc WHERE proname LIKE 'cronshift%'",
    ).stdout.split()
    assert left == ["0", "0"]


def test_a_folder_fires_on_close_and_move_in_never_on_a_half_written_file(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    got: list[str] = []
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(
        target=watch_path,
        args=(str(folder), lambda s, k, at, gap=False: got.append(k if not gap else "GAP"), stop, "*"),
        kwargs={"on_ready": ready.set},
        daemon=True,
    )
    t.start()
    try:
        assert ready.wait(10)
        with open(folder / "orders.csv", "w") as f:
            f.write("id,item\n")
            f.flush()
            time.sleep(0.3)
            assert got == []  # written, not closed: nothing yet
            f.write("1,x\n")
        wait_for(lambda: "orders.csv" in got, 10, "the close event")
        (folder / ".upload.tmp").write_text("half")  # dot files are ignored...
        (folder / "big.part").write_text("half")  # ...and so are *.part
        os.rename(folder / ".upload.tmp", folder / "upload.csv")  # ...until moved in under their name
        wait_for(lambda: "upload.csv" in got, 10, "the move-in event")
        time.sleep(0.3)
        assert got == ["orders.csv", "upload.csv"]
        shutil.rmtree(folder)  # the folder goes away and comes back: a gap, and the watch resumes
        folder.mkdir()
        wait_for(lambda: "GAP" in got, 10, "the gap after the folder came back")
        (folder / "again.csv").write_text("1")
        wait_for(lambda: "again.csv" in got, 10, "an event after the folder came back")
    finally:
        stop.set()
        t.join(5)


def test_a_stream_resumes_after_the_last_entry_read(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    import redis

    r = redis.Redis.from_url(redis_server.url)
    key = f"orders:new:{time.time_ns()}"
    r.xadd(key, {"id": "old"})  # written before anyone listened: not an event
    got: list[str] = []

    def listen() -> tuple[threading.Event, threading.Thread]:
        stop, ready = threading.Event(), threading.Event()
        t = threading.Thread(
            target=read_stream,
            args=(redis_server.url, key, lambda s, k, at, gap=False: got.append(k), stop, "job-1"),
            kwargs={"on_ready": ready.set},
            daemon=True,
        )
        t.start()
        assert ready.wait(10)
        return stop, t

    stop, t = listen()
    first = r.xadd(key, {"id": "1"}).decode()
    wait_for(lambda: got == [first], 10, "the first entry")
    stop.set()
    t.join(5)
    missed = r.xadd(key, {"id": "2"}).decode()  # written while the reader was down
    stop, t = listen()
    try:
        wait_for(lambda: got == [first, missed], 10, "the entry written while the reader was down")
        call = notify_call(redis_server.url, "job-1", {"order": 3})
        assert r.xlen("cronshift:call:job-1") >= 1 and call
    finally:
        stop.set()
        t.join(5)
        r.close()


# -- the orders poller, migrated end to end ----------------------------------------------------------------


@pytest.fixture
def orders_project(
    tmp_path: Path,
    pg_db: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.skip("the worker runs the root job as cron would: needs root")
    root = tmp_path / "root"
    shutil.copytree(PROJECT / "fixtures" / "poller", root)
    crontab = root / "etc/cron.d/shop-orders"
    crontab.write_text(crontab.read_text().replace("PGDATABASE=cronshift_orders", f"PGDATABASE={pg_db}"))
    _psql(pg_db, "-c", "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
    _psql(pg_db, "-c", "CREATE TABLE synced (id int PRIMARY KEY, synced_at timestamptz NOT NULL)")
    yield {"root": root, "db": pg_db, "tmp": tmp_path, "redis": redis_server}


@pytest.mark.slow
def test_the_orders_poller_moves_to_postgres_events_end_to_end(orders_project: dict[str, Any]) -> None:
    import psycopg

    root, db, tmp = orders_project["root"], orders_project["db"], orders_project["tmp"]
    redis_url = orders_project["redis"].url

    # 1. scan advises it
    scan = subprocess.run([CRONSHIFT, "scan", "--root", str(root), "--json", "--no-history"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    job = next(j for j in json.loads(scan.stdout)["jobs"] if j["source"]["line"] == 5)
    assert (job["advice"]["action"], job["advice"]["trigger"]) == ("event-source", "postgres:orders")

    # 2. generate wires postgres:orders, the SQL is applied
    out, pkg = tmp / "out", "orders_" + os.urandom(3).hex()
    r = CliRunner().invoke(
        _cli(),
        ["generate", job["id"], "--root", str(root), "--out", str(out), "--package", pkg,
         "--broker", redis_url, "--now", "2026-03-01T00:00",
         "--trigger", job["advice"]["trigger"] + ",quiet=0.2,max_wait=1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    _psql(db, "-f", str(out / pkg / "sql/cronshift_notify_orders.up.sql"))
    ledger = tmp / "ledger.db"
    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}", "CRONSHIFT_LEDGER": str(ledger),
           "CRONSHIFT_ROOT": str(root), "CRONSHIFT_PG_DSN": dsn(db)}  # fmt: skip
    elog = open(tmp / "events.log", "wb")  # noqa: SIM115
    worker = start_worker(pkg, cwd=out, env=env, log=tmp / "worker.log")
    events = subprocess.Popen([sys.executable, "-m", f"{pkg}.events"], cwd=out, env=env, stdout=elog,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    admin = psycopg.connect(dsn(db), autocommit=True)

    def listener_pid() -> int | None:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN%%'", (db,)
        ).fetchone()
        return row[0] if row else None

    def synced() -> int:
        return admin.execute("SELECT count(*) FROM synced").fetchone()[0]

    try:
        wait_for(listener_pid, 30, "the events process to LISTEN")
        # 3. an insert runs the job
        admin.execute("INSERT INTO orders (item) VALUES ('first')")
        wait_for(lambda: synced() == 1, 60, "the job to sync the first order")

        # 4. a burst of 10,000 single-row commits is coalesced, one run at a time
        t0 = time.monotonic()
        with admin.cursor() as cur:
            cur.executemany("INSERT INTO orders (item) VALUES (%s)", [(f"o{i}",) for i in range(10_000)])
        burst = time.monotonic() - t0
        wait_for(lambda: synced() == 10_001, 120, "the burst to be synced")

        def triggers() -> list[dict[str, Any]]:
            with open_ledger(root, store=str(ledger)) as led:
                return led.list("trigger")

        wait_for(lambda: sum(d["events"] for d in triggers()) >= 10_001, 30, "every event in a record")
        docs = triggers()
        assert sum(d["events"] for d in docs) == 10_001
        assert len(docs) - 1 <= burst / 0.2 + 1 + 1  # the first insert's run, then the bound (+1: a run
        # may straddle the burst's start)

        def ran() -> list[Any]:
            with open_ledger(root, store=str(ledger)) as led:
                return [x for x in led.runs(job_id=job["id"]) if not x.extra.get("skipped")]

        # each trigger's run is recorded when it ends
        wait_for(lambda: {x.extra.get("payload_id") for x in ran()} >= {d["id"] for d in docs}, 60, "runs")
        runs = ran()
        spans = sorted((x.start, x.end or x.start) for x in runs)
        assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))  # never two at a time

        # 5. a dropped listener connection is survived: the gap runs the job once, later inserts still do
        pid = wait_for(listener_pid, 10, "the listener")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.execute("INSERT INTO orders (item) VALUES ('during the gap')")
        wait_for(lambda: synced() == 10_002, 60, "the gap run to sync the order inserted while away")
        wait_for(lambda: (p := listener_pid()) and p != pid, 30, "the listener to reconnect")
        admin.execute("INSERT INTO orders (item) VALUES ('after')")
        wait_for(lambda: synced() == 10_003, 60, "an insert after the reconnect")
        assert any(d["reason"].startswith("gap") for d in triggers())

        # 6. show lists the triggers, with the time from event to command start
        shown = subprocess.run(
            [CRONSHIFT, "show", job["id"], "--root", str(root), "--store", str(ledger), "--json",
             "--no-history", "--last", "1000"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        fired = json.loads(shown.stdout)["triggers"]
        assert len(fired) == len(triggers())
        assert any(f["freshness"] is not None and f["freshness"] >= 0 for f in fired)
        table = subprocess.run(
            [CRONSHIFT, "show", job["id"], "--root", str(root), "--store", str(ledger), "--no-history"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "event triggers (one run each)" in table and "gap: a source reconnected" in table
    finally:
        admin.close()
        _stop(events)
        _stop(worker)
        elog.close()
        for f in ("worker.log", "events.log"):
            sys.stderr.write(f"--- {f}\n" + (tmp / f).read_text(errors="replace")[-3000:])


def test_a_trigger_can_name_its_job_and_unknown_jobs_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(PROJECT / "fixtures" / "poller", root)
    scan = subprocess.run([CRONSHIFT, "scan", "--root", str(root), "--json", "--no-history"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    ids = {j["source"]["line"]: j["id"] for j in json.loads(scan.stdout)["jobs"]}
    out = _generate(root, tmp_path / "out", "shop", "--trigger", f"{ids[5]}=postgres:orders",
                    "--trigger", f"{ids[9]}=path:/srv/shop/incoming")  # fmt: skip
    wired = {w["id"]: [s["kind"] for s in w["sources"]] for w in out["event_sources"]}
    assert wired == {ids[5]: ["postgres"], ids[9]: ["path"]}  # the report (line 7) keeps cron's clock
    r = CliRunner().invoke(
        _cli(), ["generate", "--all", "--root", str(root), "--out", str(tmp_path / "o2"),
                 "--trigger", "nosuchjob=call"],
    )  # fmt: skip
    assert r.exit_code == 2 and "no job generated here has an id starting with 'nosuchjob'" in r.stderr
