"""The celery event path for real: shadow-run starts a worker of the generated app per event run inside
that side's sandbox, on a test-owned Redis given with --broker (applied before the app is imported: the
project itself names a broker nobody listens on), and a timeout revokes, kills and waits."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, free_port, redis_server  # noqa: F401 - fixture
from tests.test_shadow_run import digest, project_for, run_cli, shadow_root, task_module  # noqa: F401

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sandbox mode needs root (namespaces, overlayfs)"),
    pytest.mark.slow,
]


def test_broker_option_wins_over_the_projects_own_and_parity_is_reached_on_a_real_worker(
    shadow_root: Path,  # noqa: F811
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    project = project_for(shadow_root, tmp_path / "proj", package="shc", broker=nowhere)
    before = digest(shadow_root)
    code, out, err = run_cli(
        "shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project),
        "--event-path", "celery", "--broker", redis_server.url, "--runs", "2", "--gate-pairs", "2",
        "--timeout", "60", "--json",
        "--ignore", r"took \d+s",  # the job prints its own elapsed seconds: a clock reading, named
    )  # fmt: skip
    assert code == 0, out + err
    doc = json.loads(out)
    v = doc["verdict"]
    assert v["label"] == "parity", (v["missing"], v["differences"])
    assert v["evidence"]["broker"] == redis_server.url and v["evidence"]["event_path"] == "celery"
    assert doc["pairs"][0]["event"]["meta"]["task_id"]
    assert digest(shadow_root) == before


def test_a_timeout_revokes_the_task_and_kills_the_worker_before_the_sandbox_goes(
    shadow_root: Path,  # noqa: F811
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    project = project_for(shadow_root, tmp_path / "proj", package="sht")
    mod = task_module(shadow_root, project, package="sht")
    marker = f"cronshift-celery-hang-{os.getpid()}"
    call = "    return run_cron_task(self, SPEC, payload=payload, scheduled_for=scheduled_for)"
    hang = f'    import subprocess\n    subprocess.run(["sh", "-c", "sleep 300 # {marker}"])\n'
    mod.write_text(mod.read_text().replace(call, hang + call))
    code, out, err = run_cli(
        "shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project),
        "--event-path", "celery", "--broker", redis_server.url, "--runs", "1", "--timeout", "5", "--json",
    )  # fmt: skip
    assert code == 3, out + err
    v = json.loads(out)["verdict"]
    assert any("no result within 5.0s" in d and "revoked" in d for d in v["differences"]), v["differences"]
    ps = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert ps.stdout == "", "the worker and its task were gone before the sandbox was read and removed"
