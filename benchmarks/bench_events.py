"""Freshness of event sources against the */5 poll they replace, and runs per burst of 10,000 events.

Run by hand, as root (the worker runs the jobs as root, as cron did), with PostgreSQL on 127.0.0.1:5432,
from a regular install (`python3 -m venv /tmp/bev && /tmp/bev/bin/pip install '.[test]'`):
    /tmp/bev/bin/python benchmarks/bench_events.py [N]
Generates one project with four jobs (`date +%s.%N >> FILE`), each wired to one source (postgres:TABLE,
path:DIR, stream:KEY, call), starts a bench-owned Redis, a real prefork worker and the generated events
process, then:
- freshness: N isolated events per source, each timed from the event (COMMIT returned, file closed, XADD
  returned, notify_*() returned) to the job's command start (the time the command itself printed);
- bursts: 10,000 events per source as fast as they can be made; runs = trigger records covering them, against
  the bound burst-duration / quiet-period + 1;
- baseline, in the same run: the mean wait from a uniformly random moment to the next fire of `*/5 * * * *`
  (cronsim over a day of random moments; 150 s).
Goals: p99 under 1 s for postgres and path, under 50 ms for stream and call.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.append(str(PROJECT))  # for tests.support only: cronshift itself comes from the installed package

from cronsim import CronSim  # noqa: E402

from cronshift.ledger.store import open_ledger  # noqa: E402
from tests.support.celery_worker import start_worker  # noqa: E402
from tests.support.redis_server import start_redis  # noqa: E402

PG = "host=127.0.0.1 port=5432 user=postgres dbname={db} connect_timeout=5"
BURST = 10_000
SOURCES = ("postgres", "path", "stream", "call")
GOAL = {"postgres": 1.0, "path": 1.0, "stream": 0.05, "call": 0.05}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def cron_mean_wait(expr: str = "*/5 * * * *", samples: int = 2000) -> float:
    rnd = random.Random(5)
    base = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
    total = 0.0
    for _ in range(samples):
        t = base + rnd.uniform(0, 86400)
        nxt = next(iter(CronSim(expr, datetime.fromtimestamp(t, UTC)))).timestamp()
        total += nxt - t
    return total / samples


def lines(p: Path) -> list[float]:
    try:
        return [float(x) for x in p.read_text().split()]
    except (OSError, ValueError):
        return []


def wait_for(cond, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.002)
    raise SystemExit(f"bench_events: timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def main(n: int) -> None:
    import psycopg
    import redis as redis_mod

    tmp = Path(tempfile.mkdtemp(prefix="bench-events-"))
    rds = start_redis(tmp / "redis")
    db = "cronshift_bench_" + uuid.uuid4().hex[:8]
    admin = psycopg.connect(PG.format(db="postgres"), autocommit=True)
    admin.execute(f'CREATE DATABASE "{db}"')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conn = psycopg.connect(PG.format(db=db), autocommit=True)
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text)")
        root, inbox, starts = tmp / "root", tmp / "incoming", tmp / "starts"
        (root / "etc/cron.d").mkdir(parents=True)
        inbox.mkdir()
        starts.mkdir()
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (root / "etc/timezone").write_text("UTC\n")
        (root / "etc/cron.d/bench").write_text(
            "".join(f"*/5 * * * * root /bin/date +\\%s.\\%N >> {starts}/{s}\n" for s in SOURCES)
        )
        scan = subprocess.run([sys.executable, "-m", "cronshift", "scan", "--root", str(root), "--json",
                               "--no-history"], capture_output=True, text=True, check=True)  # fmt: skip
        ids = {j["command"].rsplit("/", 1)[1]: j["id"] for j in json.loads(scan.stdout)["jobs"]}
        out, pkg = tmp / "out", "benchev"
        stream_key = "bench:orders"
        trig = [f"{ids['postgres']}=postgres:orders", f"{ids['path']}=path:{inbox}",
                f"{ids['stream']}=stream:{stream_key}", f"{ids['call']}=call"]  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "cronshift", "generate", "--all", "--root", str(root), "--out", str(out),
             "--package", pkg, "--broker", rds.url, "--no-history", "--policy", "overlap=forbid",
             *[a for t in trig for a in ("--trigger", t)]],
            check=True, capture_output=True,
        )  # fmt: skip
        up = out / pkg / "sql/cronshift_notify_orders.up.sql"
        subprocess.run(["psql", PG.format(db=db), "-qX", "-f", str(up)],
                       check=True, capture_output=True)  # fmt: skip
        cfg = json.loads(
            subprocess.run(
                [sys.executable, "-c", f"import json,{pkg}.events as e; print(json.dumps(e.JOBS))"],
                env={**os.environ, "PYTHONPATH": str(out)},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        quiet = {s: cfg[ids[s]]["quiet"] for s in SOURCES}
        ledger = tmp / "ledger.db"
        env = {**os.environ, "PYTHONPATH": str(out), "CRONSHIFT_LEDGER": str(ledger),
               "CRONSHIFT_ROOT": str(root), "CRONSHIFT_PG_DSN": PG.format(db=db),
               "CRONSHIFT_STATE_REDIS": rds.url}  # fmt: skip
        procs.append(start_worker(pkg, cwd=out, env=env, log=tmp / "worker.log", loglevel="warning"))
        with open(tmp / "events.log", "wb") as log:
            events = [sys.executable, "-m", f"{pkg}.events"]
            procs.append(subprocess.Popen(events, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))  # fmt: skip
        sys.path.insert(0, str(out))
        events_mod = __import__(f"{pkg}.events", fromlist=["x"])
        notify = getattr(events_mod, "notify_" + ids["call"].replace("-", "_"))
        r = redis_mod.Redis.from_url(rds.url)
        wait_for(
            lambda: admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN%%'", (db,)
            ).fetchone(),
            60,
            "the listener",
        )
        time.sleep(1.0)  # the other sources start with it; one warm-up event each below

        def fire(source: str, i: int) -> float:
            if source == "postgres":
                conn.execute("INSERT INTO orders (item) VALUES (%s)", (f"o{i}",))
            elif source == "path":
                with open(inbox / f"f{i}.csv", "w") as f:
                    f.write("x\n")
            elif source == "stream":
                r.xadd(stream_key, {"i": i})
            else:
                notify({"i": i})
            return time.time()

        result: dict[str, dict[str, float]] = {}
        for s in SOURCES:
            f = starts / s
            fire(s, -1)  # warm-up: connections, worker process, first-import costs
            wait_for(lambda f=f: len(lines(f)) >= 1, 60, f"{s} warm-up")
            time.sleep(quiet[s] + 0.3)
            lat = []
            for i in range(n):
                before = len(lines(f))
                t_ev = fire(s, i)
                got = wait_for(lambda f=f, b=before: (x := lines(f)) and len(x) > b and x, 60, f"{s} run {i}")
                lat.append(got[before] - t_ev)
                time.sleep(quiet[s] + 0.05)  # isolated events: the next one starts a new batch
            time.sleep(0.5)
            with open_ledger(root, store=str(ledger)) as led:
                before_docs = {d["id"] for d in led.list("trigger", prefix=ids[s] + ":")}
            t0 = time.time()
            if s == "postgres":
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO orders (item) VALUES (%s)", [(f"b{i}",) for i in range(BURST)]
                    )
            elif s == "stream":
                for k in range(0, BURST, 500):
                    pipe = r.pipeline(transaction=False)
                    for i in range(k, k + 500):
                        pipe.xadd(stream_key, {"i": i})
                    pipe.execute()
            else:
                for i in range(BURST):
                    fire(s, 100_000 + i)
            burst = time.time() - t0

            def burst_docs(s: str = s, seen: set = before_docs) -> list[dict]:  # type: ignore[type-arg]
                with open_ledger(root, store=str(ledger)) as led:
                    return [d for d in led.list("trigger", prefix=ids[s] + ":") if d["id"] not in seen]

            wait_for(lambda bd=burst_docs: sum(d["events"] for d in bd()) >= BURST, 300, f"{s} burst")
            docs = burst_docs()
            result[s] = {
                "p50": pct(lat, 50), "p99": pct(lat, 99), "burst_s": burst, "runs": len(docs),
                "events": sum(d["events"] for d in docs), "bound": burst / quiet[s] + 1, "quiet": quiet[s],
            }  # fmt: skip
            print(f"{s}: done", file=sys.stderr)
        base = cron_mean_wait()
        import cronshift

        print(f"\ncronshift from {Path(cronshift.__file__).parent}")
        print(f"*/5 cron baseline (same run): mean wait {base:.1f} s from a random moment to the next fire")
        print(
            f"{'source':9} {'p50':>9} {'p99':>9} {'goal p99':>9} {'vs */5 mean':>12}   burst of 10,000 events"
        )
        for s in SOURCES:
            x = result[s]
            ok = "ok" if x["p99"] < GOAL[s] else "MISSED"
            print(
                f"{s:9} {x['p50'] * 1000:7.1f}ms {x['p99'] * 1000:7.1f}ms {GOAL[s] * 1000:7.0f}ms {ok:>2} "
                f"{base / x['p50']:8.0f}x   {x['events']:.0f} events in {x['burst_s']:.2f} s -> "
                f"{x['runs']:.0f} runs (bound {x['bound']:.0f} at quiet {x['quiet']:g} s)"
            )
    finally:
        for p in procs:
            stop(p)
        rds.stop()
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
