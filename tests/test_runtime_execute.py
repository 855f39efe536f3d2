"""cronshift.runtime.execute: cron's environment, stdin, failure details, time limits, user refusal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cronshift.runtime.execute import JobFailed, run_job

PROJECT = Path(__file__).resolve().parent.parent


def spec(command: str, **kw: object) -> dict[str, object]:
    return {"id": "t", "user": "root", "command": command, "env": [], "stdin": None, **kw}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs root's job")


@needs_root
def test_environment_is_crons_not_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_SECRET", "leak")
    res = run_job(
        spec("env | sort; cat", env=[["A", "x y"], ["PATH", "/opt/bin:/usr/bin:/bin"]], stdin="l1\nl2\n")
    )
    lines = res["output_tail"].splitlines()
    assert "WORKER_SECRET=leak" not in lines and "CRONSHIFT_PAYLOAD_FILE" not in res["output_tail"]
    assert {"A=x y", "PATH=/opt/bin:/usr/bin:/bin", "LOGNAME=root", "USER=root", "HOME=/root"} <= set(lines)
    assert lines[-2:] == ["l1", "l2"]


@needs_root
def test_failure_carries_status_tail_and_duration() -> None:
    with pytest.raises(JobFailed) as info:
        run_job(spec("echo out; echo err >&2; exit 3"))
    assert info.value.exit_status == 3 and info.value.tail == "out\nerr\n" and info.value.duration >= 0


@needs_root
def test_time_limit_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    with pytest.raises(JobFailed) as info:
        run_job(spec(f"sleep 300 & echo $! > {pidfile}; wait", time_limit=1))
    assert info.value.signal is not None or info.value.exit_status != 0
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


@needs_root
def test_non_root_worker_refuses_another_users_job() -> None:
    code = (
        "import os\nfrom cronshift.runtime.execute import run_job, JobRefused\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n run_job({'id': 't', 'user': 'root', 'command': 'true'})\n"
        "except JobRefused as e:\n print('refused', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                       env={"PYTHONPATH": str(PROJECT)})  # fmt: skip
    assert r.stdout.startswith("refused job t runs as root"), r.stderr
