"""Time a full `scan` of a generated tree of 10,000 crontab files (100,000 lines) against python-crontab
parsing the same files, in the same run. Run by hand: `.venv/bin/python benchmarks/bench_scan.py`."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES, LINES = 10_000, 100_000

SCHEDULES = [
    "*/5 * * * *",
    "0 3 * * *",
    "15 2 * * mon-fri",
    "@daily",
    "@hourly",
    "0 */6 * * *",
    "30 4 1 * *",
    "0 0 * * 0",
    "*/15 9-17 * * 1-5",
    "0 8,12,18 * * *",
]
COMMANDS = [
    "/usr/local/bin/sync-orders --full >/dev/null 2>&1",
    "flock -n /run/lock/x.lock /opt/app/bin/reindex",
    "timeout 3600 /usr/local/bin/backup-db",
    "cd /srv/app && php artisan schedule:run >> /dev/null 2>&1",
    "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
    "/usr/bin/find /tmp -type f -mtime +7 -delete",
    "date +\\%Y-\\%m-\\%d >> /var/log/stamp.log",
]


def make_tree(base: Path) -> list[Path]:
    rng = random.Random(42)
    cron_d = base / "etc" / "cron.d"
    spool = base / "var" / "spool" / "cron" / "crontabs"
    cron_d.mkdir(parents=True)
    spool.mkdir(parents=True)
    paths = []
    per = LINES // FILES
    for i in range(FILES):
        system = i % 2 == 0
        out = [b"# generated for the scan benchmark\n", b"MAILTO=ops@example.com\n"]
        while len(out) < per:
            r = rng.random()
            if r < 0.1:
                out.append(b"#0 4 * * * /usr/bin/old-job\n")
            elif r < 0.15:
                out.append(b"\n")
            else:
                user = b"root " if system else b""
                # Paths unique to each file, so no cache of whole commands can stand in for parsing them.
                cmd = rng.choice(COMMANDS).replace("/usr/local/bin/", f"/srv/app{i}/bin/")
                out.append(f"{rng.choice(SCHEDULES)} ".encode() + user + cmd.encode() + b"\n")
        p = (cron_d / f"job{i}") if system else (spool / f"user{i}")
        p.write_bytes(b"".join(out))
        paths.append(p)
    return paths


def time_cronshift(root: Path) -> tuple[float, int]:
    from cronshift.discover.scan import scan

    t = time.perf_counter()
    result = scan(root)
    return time.perf_counter() - t, len(result.jobs)


def time_python_crontab(root: Path) -> tuple[float, int]:
    from crontab import CronTab

    paths = sorted(p for p in root.rglob("*") if p.is_file())
    t = time.perf_counter()
    n = 0
    for p in paths:
        tab = CronTab(tabfile=str(p), user=False if "cron.d" in str(p) else None)
        n += sum(1 for _ in tab)
    return time.perf_counter() - t, n


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        paths = make_tree(root)
        lines = sum(p.read_bytes().count(b"\n") for p in paths)
        # Each side runs in its own process so peak memory is its own.
        code = (
            "import sys,json,resource;sys.path.insert(0,%r);import bench_scan as b;from pathlib import Path;"
        )
        here = str(Path(__file__).parent)
        res = {}
        for name, call in (
            ("cronshift", f"t,n=b.time_cronshift(Path({str(root)!r}))"),
            ("python-crontab", f"t,n=b.time_python_crontab(Path({str(root)!r}))"),
        ):
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    code % here
                    + call
                    + ";print(json.dumps([t,n,resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            import json

            res[name] = json.loads(out.strip().splitlines()[-1])
        cs, pc = res["cronshift"], res["python-crontab"]
        print(f"tree: {len(paths)} files, {lines} lines")
        print(f"cronshift scan:  {cs[0]:.3f} s  {cs[1]} jobs  peak RSS {cs[2] / 1024:.0f} MiB")
        print(f"python-crontab:  {pc[0]:.3f} s  {pc[1]} entries  peak RSS {pc[2] / 1024:.0f} MiB")
        print(f"ratio: cronshift is {pc[0] / cs[0]:.1f}x faster than python-crontab")


if __name__ == "__main__":
    main()
