"""Generate and prove N jobs (default 1,000) built from the debian fixture's schedules; goal < 60 s.

Run by hand: .venv/bin/python benchmarks/bench_generate.py [N]. Prints the time against a baseline measured in
the same run (rendering without proofs' cache warm-up is not separable, so the baseline is the scan).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from cronshift.discover.scan import scan
from cronshift.generate.celery import generate_project

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "debian"


def main(n: int) -> None:
    t0 = time.perf_counter()
    result = scan(ROOT)
    t_scan = time.perf_counter() - t0
    base = [j for j in result.jobs if j.runs]
    jobs = [dataclasses.replace(base[k % len(base)], id=f"{base[k % len(base)].id}-{k}") for k in range(n)]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = generate_project(
            jobs, Path(out), package="bench", timezone=result.system_timezone or "UTC",
            dialect=result.dialect, year=2026,
        )  # fmt: skip
        t_gen = time.perf_counter() - t0
    proved = sum(1 for j in res.jobs if j.translation.proof is not None)
    print(f"{n} jobs generated, {proved} proofs, in {t_gen:.1f} s (goal < 60 s); scan {t_scan:.3f} s")
    print(f"ratio generate/scan: {t_gen / t_scan:.0f}x; distinct schedules are proved once (cached)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
