"""Trigger-to-start latency of a generated job on a local, bench-owned Redis: Celery and Redis Streams.

Run by hand (as root): .venv/bin/python benchmarks/bench_trigger.py [N]. For the Celery target (a real
prefork worker, -c 2) and the Streams target (two real consumers), in the same run: p50/p99 over N
sequential triggers (time from `trigger_<job>()` to the moment the runtime starts the job's command), and
jobs per second over a burst of N. Policies are on (claims, delivery counts, run records to a Redis
ledger). Baselines from the same run: a bare no-op Celery task, and the same job code (the policy engine
and `run_job`, records included) called in two processes with no broker at all.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.append(str(PROJECT))  # for tests.support; cronshift itself from the installed package if any

from cronshift.discover.schedule import parse  # noqa: E402
from cronshift.generate.celery import generate_project  # noqa: E402
from cronshift.generate.streams import generate_streams_project  # noqa: E402
from cronshift.ledger.resp import RUNTIME_STREAM  # noqa: E402 - where the runtime writes its runs
from cronshift.model import CronJob, Format, SourceRef  # noqa: E402
from tests.support.celery_worker import start_worker  # noqa: E402
from tests.support.redis_server import start_redis  # noqa: E402

# Workers import cronshift as this process does: installed (pip install .), else this checkout.
_SRC = str(Path(sys.modules["cronshift"].__file__ or "").resolve().parent.parent)
PYPATH_EXTRA = str(PROJECT) if str(PROJECT) == _SRC else ""

NOOP = """from __future__ import annotations

import time

from benchpkg.app import app


@app.task(name="benchpkg.noop")
def noop() -> float:
    return time.time()
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _ledger_starts(r: object, last: str, count: int, timeout: float = 60) -> tuple[list[float], str]:
    """The `start` of the next `count` run records on the Redis ledger stream after id `last`."""
    import json

    out: list[float] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(out)} of {count} run records arrived")
        got = r.xread({RUNTIME_STREAM: last}, count=count - len(out), block=1000)  # type: ignore[attr-defined]
        for _key, entries in got or []:
            for entry_id, fields in entries:
                last = entry_id
                out.append(float(json.loads(fields["record"])["start"]))
    return out, last


def _direct(args: tuple[dict, int, str]) -> int:  # type: ignore[type-arg]
    """The no-broker baseline: the same policy engine and run_job, in this process, `n` times."""
    from cronshift.runtime import state
    from cronshift.runtime.policy import PolicyRun

    spec, n, url = args

    class Direct:
        source, name, attempt, deliveries = "direct", "direct", 0, 1
        message_id = ""

        def retry(self, exc: Exception, delay: float, max_retries: int) -> BaseException:
            return exc

        def resend(self, scheduled_for: float) -> None:
            pass

    r = state.client(url)
    for i in range(n):
        t = Direct()
        t.message_id = f"direct-{os.getpid()}-{i}"
        PolicyRun(t, spec, None, None, {}, r, url).run()
    return n


def bench_streams(tmp: Path, redis_url: str, job: CronJob, n: int) -> dict[str, float]:
    import multiprocessing

    import redis as redis_py

    out = tmp / "streams"
    generate_streams_project(
        [job], out, package="benchstreams", timezone="UTC", dialect="debian", year=2026, redis_url=redis_url
    )  # type: ignore[arg-type]
    env = {**os.environ, "PYTHONPATH": f"{out}:{PYPATH_EXTRA}", "CRONSHIFT_LEDGER_REDIS": redis_url,
           "CRONSHIFT_ROOT": str(tmp)}  # fmt: skip
    env.pop("CRONSHIFT_LEDGER", None)
    consumers = []
    for k in range(2):
        with open(tmp / f"consumer{k}.log", "wb") as log:
            consumers.append(subprocess.Popen(
                [sys.executable, "-m", "benchstreams.consumer", "--name", f"bench-{k}"],
                cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
    sys.path.insert(0, str(out))
    os.environ["CRONSHIFT_LEDGER_REDIS"] = redis_url
    os.environ["CRONSHIFT_ROOT"] = str(tmp)
    r = redis_py.Redis.from_url(redis_url, decode_responses=True)
    try:
        from benchstreams.jobs import JOBS  # type: ignore[import-not-found]
        from benchstreams.triggers import trigger_bench_true as strigger  # type: ignore[import-not-found]

        last = r.xinfo_stream(RUNTIME_STREAM)["last-generated-id"] if r.exists(RUNTIME_STREAM) else "0-0"
        strigger()
        _, last = _ledger_starts(r, last, 1)  # warm up: consumers ready
        lat = []
        for _ in range(n):
            t0 = time.time()
            strigger()
            (start,), last = _ledger_starts(r, last, 1)
            lat.append(start - t0)
        t0 = time.time()
        for _ in range(n):
            strigger()
        _, last = _ledger_starts(r, last, n, timeout=600)
        burst = n / (time.time() - t0)
        spec = next(iter(JOBS.values()))
        t0 = time.time()
        with multiprocessing.get_context("fork").Pool(2) as pool:
            done = sum(pool.map(_direct, [(spec, n // 2, redis_url), (spec, n - n // 2, redis_url)]))
        direct = done / (time.time() - t0)
    finally:
        for c in consumers:
            os.killpg(c.pid, signal.SIGTERM)
            try:
                c.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(c.pid, signal.SIGKILL)
        os.environ.pop("CRONSHIFT_LEDGER_REDIS", None)
    return {"p50": pct(lat, 50) * 1000, "p99": pct(lat, 99) * 1000, "burst": burst, "direct": direct}


def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-trigger-"))
    redis = start_redis(tmp / "redis")
    schedule = "*/5 * * * *"
    job = CronJob(
        id="bench-true", source=SourceRef("etc/cron.d/bench", 1), format=Format.SYSTEM, user="root",
        schedule=schedule, command="true", shell_command="true",
    )  # fmt: skip
    out = tmp / "out"
    generate_project(
        [job], out, package="benchpkg", timezone="UTC", dialect="debian", year=2026, broker=redis.url
    )
    (out / "benchpkg/bench_noop.py").write_text(NOOP)
    env = {**os.environ, "PYTHONPATH": f"{out}:{PYPATH_EXTRA}"}
    worker = start_worker("benchpkg", cwd=out, env=env, log=tmp / "worker.log", loglevel="warning",
                          extra=["-I", "benchpkg.bench_noop"])  # fmt: skip
    sys.path.insert(0, str(out))
    try:
        from benchpkg.app import app  # type: ignore[import-not-found]
        from benchpkg.triggers import trigger_bench_true  # type: ignore[import-not-found]

        trigger_bench_true().get(timeout=60)  # warm up: worker ready, connections open
        app.send_task("benchpkg.noop").get(timeout=60)
        gen, bare = [], []
        for _ in range(n):
            t0 = time.time()
            gen.append(trigger_bench_true().get(timeout=60)["start"] - t0)
            t0 = time.time()
            bare.append(app.send_task("benchpkg.noop").get(timeout=60) - t0)
        t0 = time.time()
        results = [trigger_bench_true() for _ in range(n)]
        for r in results:
            r.get(timeout=300)
        burst = n / (time.time() - t0)
        st = bench_streams(tmp, redis.url, job, n)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    interval = parse(schedule).interval_seconds() or 0
    g50, g99, b50, b99 = (x * 1000 for x in (pct(gen, 50), pct(gen, 99), pct(bare, 50), pct(bare, 99)))
    print(
        f"generated task: trigger-to-start p50 {g50:.2f} ms, p99 {g99:.2f} ms over {n} triggers"
        " (goal p99 < 10 ms)"
    )
    print(f"bare no-op task: p50 {b50:.2f} ms, p99 {b99:.2f} ms; ratio generated/bare p50 {g50 / b50:.2f}x")
    print(f"celery burst: {burst:.0f} tasks/s over {n} generated tasks (each forks `true`)")
    print(
        f"streams: trigger-to-start p50 {st['p50']:.2f} ms, p99 {st['p99']:.2f} ms (goal p99 < 5 ms);"
        f" burst {st['burst']:.0f} jobs/s with 2 consumers"
    )
    print(
        f"no broker (same policy engine + run_job, 2 processes): {st['direct']:.0f} jobs/s;"
        f" streams/no-broker {st['burst'] / st['direct']:.2f} (goal >= 0.80),"
        f" celery/no-broker {burst / st['direct']:.2f}"
    )
    print(
        f"cron '{schedule}' mean wait {interval / 2:.0f} s;"
        f" trigger p50 is {interval / 2 * 1000 / g50:.0f}x sooner"
        f" (mean {statistics.mean(gen) * 1000:.2f} ms)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
