"""Generate and prove N (default 1,000) DISTINCT random cron expressions in Europe/Berlin; goal < 60 s.

Run by hand in a regular install (`pip install .` into a fresh venv, not -e):
    python benchmarks/bench_generate.py [N] [SEED]
The expressions are written as one /etc/cron.d file into a copy of the debian fixture; the scan of that
root, timed in the same run, is the baseline the generate time is reported against. Every expression is
distinct, so each is proved on its own (no cache hit between jobs).
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cronshift.discover.scan import scan
from cronshift.discover.schedule import ScheduleError, parse
from cronshift.generate.celery import generate_project

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "debian"


def _field(rng: random.Random, low: int, high: int, star: float, step: float, steps: tuple[int, ...]) -> str:
    r = rng.random()
    if r < star:
        return "*"
    if r < star + step:
        return f"*/{rng.choice(steps)}"
    r = rng.random()
    if r < 0.6:
        return str(rng.randint(low, high))
    if r < 0.8:
        return ",".join(str(v) for v in sorted(rng.sample(range(low, high + 1), rng.randint(2, 3))))
    a = rng.randint(low, high - 1)
    b = rng.randint(a + 1, high)
    return f"{a}-{b}" if r < 0.93 else f"{a}-{b}/{rng.randint(2, 3)}"


def expressions(n: int, seed: int) -> list[str]:
    """`n` distinct expressions Debian cron accepts, shaped like real crontabs (mostly fixed times)."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        text = " ".join(
            (
                _field(rng, 0, 59, 0.08, 0.17, (2, 5, 10, 15, 20, 30)),
                _field(rng, 0, 23, 0.3, 0.1, (2, 3, 4, 6, 12)),
                _field(rng, 1, 31, 0.7, 0.05, (2, 7, 10)),
                _field(rng, 1, 12, 0.85, 0.03, (2, 3, 6)),
                _field(rng, 0, 6, 0.7, 0.02, (2,)),
            )
        )
        try:
            if parse(text).can_fire():
                out[text] = None
        except ScheduleError:
            continue
    return list(out)


def main(n: int, seed: int) -> None:
    exprs = expressions(n, seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(FIXTURE, root, symlinks=True)
        lines = "".join(f"{e} root /usr/local/bin/bench-job {k}\n" for k, e in enumerate(exprs))
        (root / "etc" / "cron.d" / "bench").write_text(lines)
        t0 = time.perf_counter()
        result = scan(root)
        t_scan = time.perf_counter() - t0
        jobs = [j for j in result.jobs if j.runs and j.source.path.endswith("cron.d/bench")]
        assert len({j.schedule for j in jobs}) == n, "every expression distinct"
        t0 = time.perf_counter()
        c0 = _cpu()
        res = generate_project(
            jobs, Path(tmp) / "out", package="bench", timezone=result.system_timezone or "UTC",
            dialect=result.dialect, year=2026,
        )  # fmt: skip
        t_gen = time.perf_counter() - t0
        c_gen = _cpu() - c0
    proved = [j for j in res.jobs if j.translation.proof is not None]
    identical = sum(1 for j in proved if j.translation.proof and j.translation.proof.identical)
    custom = sum(1 for j in res.jobs if any(e.kind == "cronsim" for e in j.entries))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    zone = result.system_timezone
    print(f"{n} distinct expressions in {zone}: {len(proved)} proved ({identical} identical)")
    print(f"{custom} need cronshift's schedule class (DST), the others are stock; app zone {res.beat_zone}")
    print(f"generate + prove: {t_gen:.1f} s (goal < 60 s); scan of the same root: {t_scan:.3f} s")
    print(f"ratio generate/scan: {t_gen / t_scan:.0f}x; peak memory {peak:.0f} MB")
    load = os.getloadavg()[0]
    print(f"CPU time of generate (with its proof workers): {c_gen:.1f} s; load average {load:.1f}")


def _cpu() -> float:
    """User + system CPU seconds of this process and its reaped children (the proof workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 17)
