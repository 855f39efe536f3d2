"""Time `read_history` on a generated 1,000,000-line syslog against `grep -c CRON` on the same file.

About a third of the lines are cron's (Debian cron with `-L 15`: CMD with the job pid, END, error lines for
failures, pam_unix session lines) for ~50 jobs, interleaved with other daemons. Every CMD line must come out
as a run attributed to its job. Peak memory is the max RSS of a child process that only parses.
Then the same syslog beside a `cron.log` holding its cron lines (Debian 12's rsyslog writes both): every run
must still come out once.

    .venv/bin/python benchmarks/bench_history.py [--lines N]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# The cronshift this interpreter has installed (run it with a regular `pip install .` venv's python), not the
# checkout: the script's own folder is first on sys.path, the repository root is not.
import cronshift
from cronshift.history.logfiles import read_history
from cronshift.model import CronJob, Format, SourceRef

USERS = ["root", "www-data", "postgres", "deploy", "backup-svc"]
OTHER = [
    "systemd[1]: Started Session {n} of user deploy.",
    "kernel: [{n}.123456] IPv4: martian source 10.0.0.{m} from 10.0.0.1, on dev eth0",
    "sshd[{n}]: Accepted publickey for deploy from 10.1.2.{m} port {n} ssh2: ED25519 SHA256:abc",
    "postfix/smtpd[{n}]: connect from unknown[192.0.2.{m}]",
    "dhclient[{n}]: DHCPREQUEST of 10.0.0.{m} on eth0 to 10.0.0.1 port 67",
    "rsyslogd: action 'action-{m}-builtin:omfwd' resumed (module 'builtin:omfwd')",
    "systemd-logind[{n}]: New session {m} of user deploy.",
    "nginx[{n}]: 2026/11/24 upstream timed out (110: Connection timed out) while reading",
]


def make_jobs() -> list[CronJob]:
    rnd = random.Random(7)
    jobs = []
    for i in range(50):
        user = USERS[i % len(USERS)]
        mode = rnd.choice(["full", "delta"])
        cmd = f"/usr/local/bin/task-{i:02d} --mode={mode} >> /var/log/task-{i}.log 2>&1"
        jobs.append(
            CronJob(
                id=f"job-{i:02d}",
                source=SourceRef(f"var/spool/cron/crontabs/{user}", i + 1),
                format=Format.USER,
                user=user,
                schedule="* * * * *",
                command=cmd,
                shell_command=cmd,
            )
        )
    return jobs


def generate(path: Path, total: int, jobs: list[CronJob]) -> int:
    """Write the log; return the number of CMD lines."""
    rnd = random.Random(42)
    t = datetime(2026, 11, 20, 0, 0).timestamp()
    pid = 1000
    cmds = 0
    pending: list[tuple[float, str]] = []  # (when, line) end/error lines waiting for their time
    out = []
    host = "web-01.example-dc"
    n = 0

    def stamp(ts: float) -> str:
        return time.strftime("%b %e %H:%M:%S", time.localtime(ts))

    while n < total:
        t += 0.37
        # flush due end lines
        if pending and pending[0][0] <= t:
            pending.sort()
            while pending and pending[0][0] <= t and n < total:
                out.append(pending.pop(0)[1])
                n += 1
        if rnd.random() < 0.118:  # a job starts: CMD + pam open now, error/END/pam close later
            job = rnd.choice(jobs)
            child, jobpid = pid, pid + 1
            pid += 3
            s = stamp(t)
            out.append(
                f"{s} {host} CRON[{child}]: pam_unix(cron:session): session opened for user {job.user}"
            )
            out.append(f"{s} {host} CRON[{child}]: ({job.user}) CMD ([{jobpid}] {job.command})")
            n += 2
            cmds += 1
            end = t + rnd.uniform(0.5, 90)
            e = stamp(end)
            if rnd.random() < 0.05:
                what = "terminated by signal 9" if rnd.random() < 0.2 else "failed with exit status 2"
                pending.append((end, f"{e} {host} CRON[{child}]: (CRON) error (grandchild #{jobpid} {what})"))
            pending.append(
                (end + 0.01, f"{e} {host} CRON[{jobpid}]: ({job.user}) END ([{jobpid}] {job.command})")
            )
            pending.append((end + 0.02, f"{e} {host} CRON[{child}]: pam_unix(cron:session): session closed"))
        else:
            msg = rnd.choice(OTHER).format(n=rnd.randint(100, 99999), m=rnd.randint(1, 254))
            out.append(f"{stamp(t)} {host} {msg}")
            n += 1
        if len(out) > 50000:
            with path.open("a") as f:
                f.write("\n".join(out) + "\n")
            out.clear()
    with path.open("a") as f:
        f.write("\n".join(out[: max(0, len(out))]) + ("\n" if out else ""))
    return cmds


def child_peak(path: Path) -> tuple[float, int, int]:
    """Parse in a fresh process; return (seconds, runs attributed, max RSS KiB of it and its workers)."""
    code = "\n".join(
        [
            "import sys, time, resource",
            "from datetime import datetime",
            "from pathlib import Path",
            "sys.path.append(sys.argv[2])",
            "from bench_history import make_jobs",
            "import cronshift",
            "from cronshift.history.logfiles import read_history",
            "t = time.perf_counter()",
            "h = read_history([Path(sys.argv[1])], make_jobs(), None, None, datetime.now())",
            "d = time.perf_counter() - t",
            "who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)",
            "rss = max(resource.getrusage(w).ru_maxrss for w in who)",
            "print(d, sum(e.runs for e in h.per_job.values()), rss, cronshift.__file__)",
        ]
    )
    here = Path(__file__).resolve().parent
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(here)],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # not the checkout: `python -c` puts the working folder first on sys.path
        check=True,
    )
    d, runs, rss, where = out.stdout.split()
    if where != cronshift.__file__:
        sys.exit(f"the parsing process imported {where}, not {cronshift.__file__}")
    return float(d), int(runs), int(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"cronshift imported from {cronshift.__file__}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    jobs = make_jobs()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syslog"
        cmds = generate(path, args.lines, jobs)
        size = path.stat().st_size
        lines = sum(1 for _ in path.open("rb"))
        # grep and the reader alternate, so each ratio compares two runs under the same load
        ratios: list[tuple[float, float]] = []
        cpu: list[float] = []  # CPU seconds of the reader and its workers: what load cannot inflate as much
        history = None
        for _ in range(args.repeat):
            g = _time(lambda: subprocess.run(["grep", "-c", "CRON", str(path)], capture_output=True))
            c0 = _cpu()
            t0 = time.perf_counter()
            history = read_history([path], jobs, None, None, datetime.now())
            ratios.append((g, time.perf_counter() - t0))
            cpu.append(_cpu() - c0)
        grep_best = min(g for g, _ in ratios)
        best = min(r for _, r in ratios)
        assert history is not None
        runs = sum(e.runs for e in history.per_job.values())
        ended = sum(e.ended for e in history.per_job.values())
        failed = sum(e.failed for e in history.per_job.values())
        _, child_runs, rss_kib = child_peak(path)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"file: {lines:,} lines, {size / 2**20:.1f} MiB, {history.cron_lines:,} cron lines, {cmds:,} CMD"
        )
        print(
            f"runs attributed: {runs:,} (ended {ended:,}, failed {failed:,}), "
            f"unmatched {len(history.unmatched)}, malformed {history.malformed}, "
            f"orphan ends {history.orphan_ends}"
        )
        for (g, r), c in zip(ratios, cpu, strict=True):
            print(
                f"  grep -c CRON {g * 1000:.0f} ms, read_history {r * 1000:.0f} ms: {r / g:.1f}x grep "
                f"({c:.2f} CPU s)"
            )
        print(f"grep -c CRON: {grep_best * 1000:.0f} ms (best)")
        print(
            f"read_history: {best * 1000:.0f} ms (best) = {lines / best:,.0f} lines/s, "
            f"{best / grep_best:.1f}x the best grep"
        )
        print(
            f"peak RSS of a parsing process: {rss_kib / 1024:.1f} MiB (this process: {base / 1024:.1f} MiB)"
        )
        cron_log = Path(tmp) / "cron.log"
        with path.open("rb") as src, cron_log.open("wb") as dst:
            dst.writelines(line for line in src if b" CRON[" in line)
        t0 = time.perf_counter()
        both = read_history([cron_log, path], jobs, None, None, datetime.now())
        both_s = time.perf_counter() - t0
        both_runs = sum(e.runs for e in both.per_job.values())
        print(
            f"syslog + cron.log: {both_s * 1000:.0f} ms, {both_runs:,} runs, "
            f"{both.duplicates_dropped:,} duplicate lines dropped"
        )
        if runs != cmds or child_runs != cmds or both_runs != cmds:
            print(f"MISMATCH: {cmds} CMD lines but {runs} / {both_runs} runs", file=sys.stderr)
            sys.exit(1)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
