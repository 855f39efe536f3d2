"""The orders poller migrated end to end, through live shadow-run: scan advises it, generate wires
`postgres:orders`, the real events process (psycopg LISTEN) and a real Celery worker on a test-owned Redis
run it on inserts, a burst is coalesced, a dropped listener connection is survived, live shadow-run judges
the event path against cron's own runs of the wrapped line by the job's effect (first a broken event path:
mismatch; then the faithful one: parity), and retire takes the line out of cron.

Cron-side runs invoke the wrapped line as cron would (`env -i PATH=/usr/bin:/bin` plus the crontab's own
variables) instead of waiting minutes for a cron daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cronshift.cli.app import app
from cronshift.ledger.store import open_ledger
from tests.support.celery_worker import CELERY
from tests.support.postgres import dsn, pg_db  # noqa: F401 - fixture
from tests.support.redis_server import redis_server  # noqa: F401 - fixture
from tests.test_event_sources import (
    CRONSHIFT,
    PROJECT,
    _psql,
    _stop,
    orders_project,  # noqa: F401 - fixture
    wait_for,
)

# The effect of the sync: orders not yet in `synced`. A faithful event path leaves none behind.
PROBE = (
    "PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE={db} psql -qAtX -c "
    "'SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM synced s WHERE s.id = o.id)'"
)


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def cron_runs_the_line(root: Path) -> None:
    """The job's line as cron runs it: its command through /bin/sh, cron's minimal environment plus the
    crontab's variables."""
    text = (root / "etc/cron.d/shop-orders").read_text()
    env = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "HOME": "/root", "LOGNAME": "root"}
    line = ""
    for raw in text.splitlines():
        if raw.startswith("PG") and "=" in raw:
            k, _, v = raw.partition("=")
            env[k] = v
        elif raw.startswith("*/5 "):
            line = raw
    assert "cronshift record" in line, line
    ran = subprocess.run(["/bin/sh", "-c", line.split(None, 6)[6]], env=env, capture_output=True, timeout=60)
    assert ran.returncode == 0, ran.stderr


@pytest.mark.slow
def test_the_orders_poller_reaches_live_parity_by_its_effect_and_is_retired(
    orders_project: dict[str, Any],  # noqa: F811
) -> None:
    import psycopg

    root, db, tmp = orders_project["root"], orders_project["db"], orders_project["tmp"]
    redis_url = orders_project["redis"].url
    ledger = str(tmp / "ledger.db")

    # scan advises the poller onto an event source
    scan = subprocess.run([CRONSHIFT, "scan", "--root", str(root), "--json", "--no-history"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    job = next(j for j in json.loads(scan.stdout)["jobs"] if j["source"]["line"] == 5)
    jid = job["id"]
    assert (job["advice"]["action"], job["advice"]["trigger"]) == ("event-source", "postgres:orders")

    # generate wires postgres:orders; the SQL is applied
    out, pkg = tmp / "out", "orders_" + os.urandom(3).hex()
    r = _run("generate", jid, "--root", str(root), "--out", str(out), "--package", pkg, "--broker", redis_url,
             "--now", "2026-03-01T00:00", "--trigger", "postgres:orders,quiet=0.2,max_wait=1")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    _psql(db, "-f", str(out / pkg / "sql/cronshift_notify_orders.up.sql"))

    # live shadowing: the cron line is wrapped; the triggered event path needs an effect probe
    where = ("--root", str(root), "--store", ledger)
    r = _run("shadow-run", jid, *where, "--live", "--mode", "allow", "--project", str(out), "--package", pkg)
    assert r.exit_code == 2 and "--probe" in r.stderr
    r = _run("shadow-run", jid, *where, "--live", "--mode", "allow", "--project", str(out), "--package", pkg,
             "--probe", PROBE.format(db=db))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "event-triggered (postgres:orders)" in r.stdout

    admin = psycopg.connect(dsn(db), autocommit=True)

    def unsynced() -> int:
        return admin.execute(
            "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM synced s WHERE s.id = o.id)"
        ).fetchone()[0]

    def event_runs() -> list[Any]:
        with open_ledger(root, store=ledger) as led:
            return [x for x in led.runs(job_id=jid) if x.source == "celery" and x.end is not None]

    def probe(side: str) -> None:
        got = _run("shadow-run", jid, *where, "--probe-now", "--side", side)
        assert got.exit_code == 0, got.output

    def report(*extra: str) -> tuple[int, dict[str, Any]]:
        got = _run("shadow-run", jid, *where, "--report", "--json", "--gate-pairs", "3", *extra)
        return got.exit_code, json.loads(got.stdout)["verdict"]

    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}", "CRONSHIFT_LEDGER": ledger,
           "CRONSHIFT_ROOT": str(root), "CRONSHIFT_PG_DSN": dsn(db)}  # fmt: skip
    wlog, elog = open(tmp / "worker.log", "wb"), open(tmp / "events.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [CELERY, "-A", f"{pkg}.app", "worker", "--pool", "prefork", "-c", "2", "--loglevel", "info"],
        cwd=out, env=env, stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    events: subprocess.Popen[bytes] | None = None
    try:
        # The broken migration first: the worker runs, but nobody listens (the events process is not
        # started). An order arrives in the interval; cron's next run would sync it, the event side did not.
        cron_runs_the_line(root)
        probe("cron")
        admin.execute("INSERT INTO orders (item) VALUES ('nobody listens')")
        time.sleep(1.0)
        probe("event")
        cron_runs_the_line(root)  # the interval closes
        code, v = report()
        assert code == 3 and v["verdict"] == "differences", v
        assert "the effect differs after 0 event run(s)" in v["differences"][0], v["differences"]
        assert "'0' after cron's run, '1' after the event side's" in v["differences"][0]
        r = _run("retire", jid, "--root", str(root), "--store", ledger)
        assert r.exit_code == 4, r.output

        # The faithful event path: the generated events process LISTENs.
        events = subprocess.Popen([sys.executable, "-m", f"{pkg}.events"], cwd=out, env=env, stdout=elog,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

        def listener_pid() -> int | None:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN%%'", (db,)
            ).fetchone()
            return row[0] if row else None

        wait_for(listener_pid, 30, "the events process to LISTEN")
        since = datetime.now(UTC).isoformat()

        def interval(arrive: Any) -> None:
            """Cron runs the line and its effect is probed; orders arrive and the event side syncs them;
            its effect is probed before cron's next run."""
            cron_runs_the_line(root)
            probe("cron")
            before = len(event_runs())
            arrive()
            wait_for(lambda: unsynced() == 0, 60, "the event side to sync the new orders")
            wait_for(lambda: len(event_runs()) > before, 30, "the event run's record")
            probe("event")

        # 1. an insert runs the job
        interval(lambda: admin.execute("INSERT INTO orders (item) VALUES ('first')"))

        # 2. a burst of 300 single-row commits is coalesced (quiet 0.2 s, max wait 1 s)
        t0 = time.monotonic()

        def burst() -> None:
            with admin.cursor() as cur:
                cur.executemany("INSERT INTO orders (item) VALUES (%s)", [(f"o{i}",) for i in range(300)])

        n0 = len(event_runs())
        interval(burst)
        took = time.monotonic() - t0
        assert len(event_runs()) - n0 <= took / 0.2 + 2, "a burst runs the job a bounded number of times"

        # 3. a dropped listener connection is survived: the gap run syncs what came while it was away
        def drop_and_insert() -> None:
            pid = wait_for(listener_pid, 10, "the listener")
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            admin.execute("INSERT INTO orders (item) VALUES ('during the gap')")
            wait_for(lambda: (p := listener_pid()) and p != pid, 30, "the listener to reconnect")

        interval(drop_and_insert)
        cron_runs_the_line(root)  # the last interval closes; the new one is pending

        code, v = report("--since", since)
        assert code == 0 and v["verdict"] == "parity", v["missing"] + v["differences"]
        assert v["gate"]["event_path"] == "triggered" and v["runs_compared"] == 3
        assert all(i["triggered_runs"] >= 1 for i in v["intervals"])
        with open_ledger(root, store=ledger) as led:
            assert any(d["reason"].startswith("gap") for d in led.list("trigger"))

        # retire takes the cron line out
        r = _run("retire", jid, "--root", str(root), "--store", ledger)
        assert r.exit_code == 0, r.output
        line = next(x for x in (root / "etc/cron.d/shop-orders").read_text().splitlines() if "synced" in x)
        assert not line.startswith("*/5"), line
    finally:
        admin.close()
        if events is not None:
            _stop(events)
        _stop(worker)
        wlog.close()
        elog.close()
        for f in ("worker.log", "events.log"):
            sys.stderr.write(f"--- {f}\n" + (tmp / f).read_text(errors="replace")[-3000:])
