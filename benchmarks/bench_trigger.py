"""Trigger-to-start latency of a generated task on a local, bench-owned Redis and a real prefork worker.

Run by hand (as root): .venv/bin/python benchmarks/bench_trigger.py [N]. Prints p50/p99 over N sequential
triggers (time from `trigger_<job>()` to the moment the runtime starts the job's command), tasks per
second over a burst of N, and ratios against a bare no-op Celery task measured in the same run and against
the mean wait of the cron schedule replaced (half its interval).
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
sys.path.insert(0, str(PROJECT))

from cronshift.discover.schedule import parse  # noqa: E402
from cronshift.generate.celery import generate_project  # noqa: E402
from cronshift.model import CronJob, Format, SourceRef  # noqa: E402
from tests.support.redis_server import start_redis  # noqa: E402

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
    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}"}
    with open(tmp / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("celery")), "-A", "benchpkg.app", "worker",
             "--pool", "prefork", "-c", "2", "-I", "benchpkg.bench_noop", "--loglevel", "warning"],
            cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
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
    print(f"burst: {burst:.0f} tasks/s over {n} generated tasks (each forks `true`)")
    print(
        f"cron '{schedule}' mean wait {interval / 2:.0f} s;"
        f" trigger p50 is {interval / 2 * 1000 / g50:.0f}x sooner"
        f" (mean {statistics.mean(gen) * 1000:.2f} ms)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
