"""The generated project for real: a test-owned Redis and a real prefork `celery worker` running as root."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.celery_worker import start_celery, start_worker
from tests.support.celery_worker import stop as _stop
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture
from tests.support.users import throwaway_user  # noqa: F401 - fixture
from tests.test_generate import generate_for_worker, one_file_root

PROJECT = Path(__file__).resolve().parent.parent
RUFF = str(Path(sys.executable).with_name("ruff"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a user and drop privileges")


@pytest.fixture
def project(
    tmp_path: Path,
    throwaway_user: pwd.struct_passwd,  # noqa: F811 - the shared fixture
    redis_server: RedisServer,  # noqa: F811
) -> Iterator[tuple[Path, str, pwd.struct_passwd]]:
    u = throwaway_user
    marker = tmp_path / "marker"
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\n{u.pw_name}:x:{u.pw_uid}:{u.pw_gid}::{u.pw_dir}:/bin/sh\n"
    )
    (root / "etc/timezone").write_text("UTC\n")
    (root / "etc/cron.d/e2e").write_text(
        'GREETING=it\'s "quoted" {{x}}\n'
        f"0 3 * * * {u.pw_name} env | sort > $HOME/env.txt; pwd >> $HOME/env.txt; "
        "cat >> $HOME/env.txt %in%put\n"
        f'0 4 * * * {u.pw_name} cat "$CRONSHIFT_PAYLOAD_FILE" > $HOME/payload.json\n'
        f"0 5 * * * {u.pw_name} echo failing; exit 7\n"
    )
    out = tmp_path / "out"
    pkg = "e2e_" + uuid.uuid4().hex[:6]
    generate_for_worker(root, out, pkg, redis_server.url)
    subprocess.run([RUFF, "check", "--no-cache", str(out)], check=True)
    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}", "CRONSHIFT_LEDGER": str(tmp_path / "ledger.db")}
    worker = start_worker(pkg, cwd=out, env=env, log=tmp_path / "worker.log")
    sys.path.insert(0, str(out))
    try:
        yield out, pkg, u
        assert not marker.exists()
    finally:
        sys.path.remove(str(out))
        _stop(worker)


def _triggers(pkg: str) -> dict[str, object]:
    import importlib

    mod = importlib.import_module(f"{pkg}.triggers")
    return {k: getattr(mod, k) for k in dir(mod) if k.startswith("trigger_")}


@pytest.mark.slow
def test_worker_runs_jobs_exactly_as_cron(
    project: tuple[Path, str, pwd.struct_passwd], tmp_path: Path
) -> None:
    out, pkg, u = project
    trig = _triggers(pkg)
    by_cmd = {}
    for name, fn in trig.items():
        src = (out / pkg / "jobs" / (name.removeprefix("trigger_") + ".py")).read_text()
        by_cmd["env" if "env | sort" in src else "payload" if "payload.json" in src else "fail"] = fn

    res = by_cmd["env"]().get(timeout=60)  # type: ignore[operator]
    assert res["exit_status"] == 0
    env_file = Path(u.pw_dir) / "env.txt"
    assert env_file.stat().st_uid == u.pw_uid
    lines = env_file.read_text().splitlines()
    # Debian's cron: PAM's variables (this host's /etc/environment and locale), then cron's own; no USER
    from cronshift.runtime.execute import pam_environment

    own = {"HOME": u.pw_dir, "LOGNAME": u.pw_name, "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
    own |= {"GREETING": 'it\'s "quoted" {{x}}', "PWD": u.pw_dir}
    expected = [f"{k}={v}" for k, v in (pam_environment() | own).items()]
    assert lines == [*sorted(expected), u.pw_dir, "in", "put"]

    marker = tmp_path / "marker"
    hostile = {
        "id": "p1",
        "x": f"$(touch {marker}); `touch {marker}`; touch {marker} && echo '\"",
        "n": [1, None],
    }
    res = by_cmd["payload"](hostile).get(timeout=60)  # type: ignore[operator]
    assert res["exit_status"] == 0
    assert json.loads((Path(u.pw_dir) / "payload.json").read_text()) == hostile
    assert not marker.exists()

    from cronshift.runtime.execute import JobFailed

    r = by_cmd["fail"]()  # type: ignore[operator]
    with pytest.raises(JobFailed) as info:
        r.get(timeout=60)
    assert info.value.exit_status == 7 and "failing" in info.value.tail and info.value.duration >= 0
    assert r.state == "FAILURE"

    from cronshift.ledger.store import open_ledger

    with open_ledger(tmp_path, store=str(tmp_path / "ledger.db")) as ledger:
        runs = list(ledger.runs())
    assert sorted(r.exit_status for r in runs) == [0, 0, 7]
    assert {r.source for r in runs} == {"celery"} and {r.user for r in runs} == {u.pw_name}
    assert [r.extra.get("payload_id") for r in runs if r.extra.get("payload_id")] == ["p1"]


def _beat_until_fired(pkg: str, out: Path, tmp_path: Path, fired: Path, timeout: float = 150) -> None:
    """A real worker and beat of the generated project, until the job has written a line to `fired`."""
    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_worker(pkg, cwd=out, env=env, log=tmp_path / "worker.log"))
        beat = ["beat", "--schedule", str(tmp_path / "beat-schedule"), "--loglevel", "info"]
        procs.append(start_celery(pkg, *beat, cwd=out, env=env, log=tmp_path / "beat.log"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (fired.exists() and fired.read_text().strip()):
            time.sleep(0.5)
    finally:
        for p in procs:
            _stop(p)


@pytest.mark.slow
def test_beat_fires_every_minute_entry_on_the_minute(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """Waits for a real minute boundary: the one test that lets real beat drive a generated entry.

    The job is yearly in cron; the user edits only its beat entry in app.py to every minute (the header
    says "edit freely"). The entry is the one source of the schedule: the run it sends is on time, not
    skipped as months late against a second copy of the old schedule."""
    fired = tmp_path / "fired.txt"
    root = one_file_root(tmp_path, "tick", f"0 0 1 1 * root date -u --iso-8601=seconds >> {fired}\n")
    out = tmp_path / "out"
    pkg = "beat_" + uuid.uuid4().hex[:6]
    generate_for_worker(root, out, pkg, redis_server.url)
    app_py = out / pkg / "app.py"
    yearly = 'crontab(minute="0", hour="0", day_of_month="1", month_of_year="1", day_of_week="*")'
    assert yearly in app_py.read_text()
    app_py.write_text(app_py.read_text().replace(yearly, "crontab()"))
    _beat_until_fired(pkg, out, tmp_path, fired)
    lines = fired.read_text().split()
    assert lines, "beat never fired the every-minute entry"
    first = datetime.fromisoformat(lines[0])
    assert first.second < 10, f"fired at {first}, not on the minute"


@pytest.mark.slow
def test_real_beat_runs_a_utc_app_made_from_a_dst_zone(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """Berlin: an every-minute job is a stock crontab in a UTC app, beside a wall-clock job on the class.
    Real beat sends it on the minute and the run is not skipped: the instant beat stamps (from the UTC
    entry) is the one cron would have used."""
    fired = tmp_path / "fired.txt"
    tab = f"* * * * * root date -u --iso-8601=seconds >> {fired}\n*/15 * * * * root true\n"
    tab += "30 2 * * * root true\n"
    root = one_file_root(tmp_path, "tick", tab, zone="Europe/Berlin")
    out = tmp_path / "out"
    pkg = "utc_" + uuid.uuid4().hex[:6]
    generate_for_worker(root, out, pkg, redis_server.url)
    app_py = (out / pkg / "app.py").read_text()
    assert 'timezone="UTC"' in app_py and 'cronsim_schedule("30 2 * * *", "Europe/Berlin")' in app_py
    assert 'crontab(minute="*", hour="*", day_of_month="*", month_of_year="*", day_of_week="*")' in app_py
    _beat_until_fired(pkg, out, tmp_path, fired)
    lines = fired.read_text().split() if fired.exists() else []
    assert lines, "beat never ran the every-minute entry: " + (tmp_path / "worker.log").read_text()[-2000:]
    assert datetime.fromisoformat(lines[0]).second < 10, f"ran at {lines[0]}, not on the minute"


@pytest.mark.slow
def test_same_project_runs_on_rabbitmq(tmp_path: Path) -> None:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    root = one_file_root(tmp_path, "amqp", f"0 6 * * * root echo via-amqp > {tmp_path / 'amqp.txt'}\n")
    out, pkg = tmp_path / "out", "amqp_" + uuid.uuid4().hex[:6]  # the package names the queue: unique
    generate_for_worker(root, out, pkg, "amqp://guest:guest@127.0.0.1:5672//")
    assert (
        'backend=os.environ.get("CRONSHIFT_RESULT_BACKEND", "rpc://")' in (out / pkg / "app.py").read_text()
    )
    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}"}
    worker = start_worker(pkg, cwd=out, env=env, log=tmp_path / "worker.log")
    sys.path.insert(0, str(out))
    try:
        (trigger,) = _triggers(pkg).values()
        assert trigger().get(timeout=60)["exit_status"] == 0  # type: ignore[operator]
    finally:
        _stop(worker)
        import importlib

        with importlib.import_module(f"{pkg}.app").app.connection_for_write() as conn:
            conn.default_channel.queue_delete(pkg)  # leave the shared broker as we found it
        sys.path.remove(str(out))
    assert (tmp_path / "amqp.txt").read_text() == "via-amqp\n"
