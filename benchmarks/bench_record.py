"""Time `cronshift record -- true` against `true` and against bare Python start-up, in the same run.

    .venv/bin/python benchmarks/bench_record.py [-n 200]

Goal (issue 4): the wrapper within 5 ms of `python -c pass`. The commands are interleaved round by round so
that machine noise hits them alike; each run is timed with perf_counter around subprocess. The variant with
`--drain-at 0` commits every record to SQLite (the naive path) to show what the spool saves.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def wrapper() -> list[str]:
    script = PROJECT / ".venv" / "bin" / "cronshift"
    if script.exists():
        return [str(script), "record"]
    return [
        sys.executable,
        "-c",
        "import sys; from cronshift.record import main; sys.exit(main(sys.argv[1:]))",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    n = ap.parse_args().n
    true = shutil.which("true") or "/bin/true"
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "true": [true],
            "python -c pass": [sys.executable, "-c", "pass"],
            "cronshift record -- true": [*wrapper(), "--root", tmp, "--", true],
            "  ... --drain-at 0 (SQLite every run)": [
                *wrapper(),
                "--root",
                tmp,
                "--drain-at",
                "0",
                "--",
                true,
            ],
        }
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT), "HOME": tmp}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for argv in cases.values():  # warm the page cache and the .pyc files
            subprocess.run(argv, env=env, check=True)
        for _ in range(n):
            for name, argv in cases.items():
                t0 = time.perf_counter()
                subprocess.run(argv, env=env, check=True)
                times[name].append((time.perf_counter() - t0) * 1000)
    print(f"{n} runs each, interleaved; wrapper: {' '.join(wrapper()[:2])}")
    print(f"{'command':40} {'mean ms':>8} {'median':>8} {'p90':>8}")
    for name, xs in times.items():
        p90 = statistics.quantiles(xs, n=10)[-1]
        print(f"{name:40} {statistics.mean(xs):8.2f} {statistics.median(xs):8.2f} {p90:8.2f}")
    base = statistics.median(times["python -c pass"])
    for name in list(cases)[2:]:
        over = statistics.median(times[name]) - base
        print(f"overhead over python start-up, {name.strip()}: {over:+.2f} ms (median; goal <= +5 ms)")


if __name__ == "__main__":
    main()
