"""The celery event path for real: a generated project, a test-owned Redis, a real prefork worker started
in its own mount namespace (so sandbox binds stay private to it), and shadow-run judging parity over it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture
from tests.test_generate import _cli as generate_cli
from tests.test_shadow_run import _cli, report_job, shadow_root  # noqa: F401 - fixture

PROJECT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)


@pytest.fixture
def worker(shadow_root: Path, redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Path, str]]:  # noqa: F811
    job = report_job(shadow_root)
    out, pkg = tmp_path / "out", "shadow_" + uuid.uuid4().hex[:6]
    r = CliRunner().invoke(
        generate_cli(),
        [
            "generate",
            job.id,
            "--root",
            str(shadow_root),
            "--out",
            str(out),
            "--package",
            pkg,
            "--broker",
            redis_server.url,
        ],
    )
    assert r.exit_code == 0, r.output
    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}"}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - the worker outlives this scope
    proc = subprocess.Popen(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            CELERY,
            "-A",
            f"{pkg}.app",
            "worker",
            "--pool",
            "prefork",
            "-c",
            "1",
            "--loglevel",
            "info",
            "-n",
            f"{pkg}@%h",
        ],
        cwd=out,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in (tmp_path / "worker.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.1)
        yield out, pkg
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=15)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        for mod in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
            del sys.modules[mod]
        if str(out) in sys.path:
            sys.path.remove(str(out))


@pytest.mark.slow
def test_celery_event_path_reaches_parity_in_sandbox(
    shadow_root: Path,  # noqa: F811
    worker: tuple[Path, str],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    out, _pkg = worker
    dest = shadow_root / "var/out"
    r = CliRunner().invoke(
        _cli(),
        [
            "shadow-run",
            "etc/cron.d/shadow:5",
            "--root",
            str(shadow_root),
            "--runs",
            "5",
            "--writes",
            str(dest),
            "--event-path",
            "celery",
            "--project",
            str(out),
            "--broker",
            redis_server.url,
            "--timeout",
            "60",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    v = doc["verdict"]
    assert v["verdict"] == "parity", v["missing"] + v["differences"]
    assert (
        v["evidence"]["event_path"] == "celery" and v["evidence"]["event_spec_source"] == "generated project"
    )
    ev = doc["pairs"][0]["event"]
    assert ev["meta"]["task_id"] and ev["changes"]["created"] == [f"{dest}/report.txt"]
    assert sorted(os.listdir(dest)) == [".keep"], "the worker's writes went to its scratch copy"
