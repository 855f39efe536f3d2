"""Time the wrapper as users install it against bare Python start-up, in the same run.

    .venv/bin/python benchmarks/bench_record.py [-n 200] [--no-deps] [--python /usr/bin/python3]

What is measured (issue 16): a regular `pip install .` of this checkout into a fresh venv (not the editable
install of the development venv, whose import finder inflates every start-up), and the exact wrapper
`cronshift wrap` writes on the line (the `python -I` shim), running `/bin/true`. The baseline is that
venv's `python -I -c pass`. The commands are interleaved round by round so machine noise hits them alike;
each run is timed with perf_counter around subprocess. Also shown: pip's console script (`cronshift
record`, no isolation and `import re`), and `--drain-at 0` (a SQLite commit every run: what the spool
saves). Goal: the shim within +5 ms of `python -I -c pass` (median).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))


def install(base: Path, python: str, deps: bool) -> Path:
    """A fresh venv with a regular install of the checkout; returns its python."""
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(PROJECT)], check=True
    )
    (wheel,) = wheels.glob("cronshift-*.whl")
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)]
    if not deps:
        pip += ["--no-deps", "--no-index"]
    subprocess.run(pip, check=True)
    return venv / "bin/python"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--no-deps", action="store_true", help="install without dependencies (faster set-up)")
    ap.add_argument("--python", default=sys.executable, help="the Python to make the venv from")
    args = ap.parse_args()
    from cronshift.edit.wrap import install_shim

    true = shutil.which("true") or "/bin/true"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        python = install(base, args.python, deps=not args.no_deps)
        root = base / "root"
        root.mkdir()
        shim = install_shim(root, str(python))
        console = str(python.parent / "cronshift")
        line = [shim, "record", "--root", str(root), "--job", "bench", "--"]
        cases = {
            "true": [true],
            "python -I -c pass": [str(python), "-I", "-c", "pass"],
            "wrap's line: <shim> record ... -- true": [*line, true],
            "pip console script: cronshift record -- true": [
                console,
                "record",
                "--root",
                str(root),
                "--",
                true,
            ],
            "  <shim> ... --drain-at 0 (SQLite every run)": [*line[:-1], "--drain-at", "0", "--", true],
        }
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LOGNAME": "bench", "SHELL": "/bin/sh"}
        times: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        for argv in cases.values():  # warm the page cache and the .pyc files
            subprocess.run(argv, env=env, check=True)
        for _ in range(args.n):
            for name, argv in cases.items():
                t0 = time.perf_counter()
                p = subprocess.Popen(argv, env=env)
                _, status, usage = os.wait4(p.pid, 0)
                times[name].append((time.perf_counter() - t0) * 1000)
                p.returncode = os.waitstatus_to_exitcode(status)
                assert p.returncode == 0, (argv, p.returncode)
                cpu[name].append((usage.ru_utime + usage.ru_stime) * 1000)  # the job's too (waited for)
    print(f"{args.n} runs each, interleaved; regular install into a fresh venv of {args.python}")
    print("wall: elapsed per run; cpu: user+sys of the process and its waited-for children (less noisy")
    print("on a busy machine)")
    print(f"{'command':48} {'wall median':>12} {'wall p90':>9} {'cpu median':>11}")
    for name, xs in times.items():
        p90 = statistics.quantiles(xs, n=10)[-1]
        print(f"{name:48} {statistics.median(xs):12.2f} {p90:9.2f} {statistics.median(cpu[name]):11.2f}")
    base_ms = statistics.median(times["python -I -c pass"])
    base_cpu = statistics.median(cpu["python -I -c pass"])
    for name in list(cases)[2:]:
        over = statistics.median(times[name]) - base_ms
        over_cpu = statistics.median(cpu[name]) - base_cpu
        print(
            f"over `python -I -c pass`, {name.strip()}: wall {over:+.2f} ms, cpu {over_cpu:+.2f} ms (median)"
        )
    print("goal: the shim within +5 ms (median)")


if __name__ == "__main__":
    main()
