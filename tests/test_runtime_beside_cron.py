"""The runtime's job environment beside Debian's real cron daemon running the same crontab line.

cron runs in a private mount namespace: /etc/cron.d, /etc/crontab, the spool, /run, /etc/environment and
/etc/default/locale are test copies mounted over the real ones for that process only, so the system's
crontabs are never read or touched. cronshift's run_job runs the scanned job in the same kind of
namespace, and both outputs are compared line for line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
CRON, UNSHARE = shutil.which("cron") or "/usr/sbin/cron", shutil.which("unshare")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs cron and mounts in a private namespace"),
    pytest.mark.skipif(not (Path(CRON).exists() and UNSHARE), reason="needs Debian's cron and unshare"),
    pytest.mark.skipif(
        not (Path("/etc/environment").exists() and Path("/etc/default/locale").exists()),
        reason="PAM's files must exist to be mounted over",
    ),
]

CRONTAB = (
    'MAILTO=""\n'
    'A="x  "\n'
    "B='  y'\n"
    "C=  z  \n"
    'F=" lead"\n'
    "* * * * * root { env | sort; echo groups=$(id -G); "
    "[ \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ ] && echo leader=yes; echo end; }"
    " > {out}; cat {out}\n"
)


def _mounts(tmp: Path) -> str:
    return (
        f"mount --bind {tmp}/environment /etc/environment && "
        f"mount --bind {tmp}/locale /etc/default/locale && "
    )


def test_job_environment_matches_debians_cron(tmp_path: Path) -> None:
    (tmp_path / "environment").write_text('http_proxy="http://proxy:3128"\nPATH=/from/pam\n')
    (tmp_path / "locale").write_text("LANG=C.UTF-8\n")
    (tmp_path / "empty").write_text("")
    out = tmp_path / "cron.out"
    line = CRONTAB.replace("{out}", str(out))
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text(Path("/etc/passwd").read_text())
    (root / "etc/cron.d/side").write_text(line)
    script = (
        "mount -t tmpfs none /etc/cron.d && "
        f"cp {root}/etc/cron.d/side /etc/cron.d/side && "
        f"mount --bind {tmp_path}/empty /etc/crontab && "
        "mount -t tmpfs none /run && mount -t tmpfs none /var/spool/cron/crontabs && "
        + _mounts(tmp_path)
        + f"exec {CRON} -f"
    )
    cron = subprocess.Popen(
        [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script],  # type: ignore[list-item]
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = (
            time.monotonic() + 150
        )  # the next minute boundary, or the one after when cron starts late in one
        while time.monotonic() < deadline and not (out.exists() and "end" in out.read_text()):
            time.sleep(0.5)
    finally:
        os.killpg(cron.pid, signal.SIGKILL)
        cron.wait(timeout=10)
    assert out.exists(), "Debian's cron never ran the line"
    by_cron = out.read_text()
    out.unlink()
    code = (
        "import json, sys\nfrom pathlib import Path\n"
        "from cronshift.discover.scan import scan\nfrom cronshift.generate.common import job_spec\n"
        "from cronshift.generate.plan import plan_for\nfrom cronshift.runtime.execute import run_job\n"
        "job = next(j for j in scan(Path(sys.argv[1])).jobs if j.runs)\n"
        "print(json.dumps(run_job(job_spec(job, plan_for(job)))['output_tail']))\n"
    )
    ours = subprocess.run(
        [UNSHARE, "-m", "--propagation", "private", "sh", "-c",  # type: ignore[list-item]
         _mounts(tmp_path) + f'exec "{sys.executable}" -c "$0" "$1"', code, str(root)],
        capture_output=True, text=True, cwd=PROJECT, env={"PATH": "/usr/bin:/bin", "WORKER_ONLY": "1"},
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    by_us = json.loads(ours.stdout)
    assert by_us.splitlines() == by_cron.splitlines()
    env = dict(x.split("=", 1) for x in by_cron.splitlines() if "=" in x and not x.startswith("leader"))
    # What Debian's cron does, pinned: PAM's variables below cron's own, no USER, quotes as it strips them.
    assert env["http_proxy"] == "http://proxy:3128" and env["LANG"] == "C.UTF-8"
    assert env["PATH"] == "/usr/bin:/bin" and "USER" not in env
    assert (env["A"], env["B"], env["C"], env["F"]) == ("x", "  y", "z", " lead")
    assert "leader=yes" in by_cron.splitlines()  # the job leads a new session (setsid)
