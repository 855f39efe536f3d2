"""The Redis ledger on a shared host: who may write which run records is decided by Redis ACL users, and a
reader takes a record's writer (`source`) from the stream it is in, never from the record's body.

A test-owned redis-server with three ACL users, as README's threat model sets them up:
- `cronshift-runtime` (the Celery workers): XADD/XTRIM on `cronshift:runs:runtime` and its documents only;
- `cronshift-record` (the wrappers on a host): XADD on `cronshift:runs` only;
- `cronshift-reader` (scan, show, shadow-run --report): read commands only.
A real prefork worker of a generated project writes its run with the runtime's credentials, read from a
0600 file (CRONSHIFT_LEDGER_REDIS_CONFIG), not from its environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cronshift.ledger.resp import RUNTIME_STREAM, STREAM
from cronshift.ledger.store import open_ledger
from cronshift.runtime.records import LedgerConfigError, read_private_url
from tests.support.celery_worker import stop
from tests.support.redis_server import RedisServer, start_redis
from tests.test_generate import generate_for_worker, one_file_root

PROJECT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))
CONSOLE_SCRIPT = Path(sys.executable).parent / "cronshift"
ADMIN_PW = "admin-" + uuid.uuid4().hex
USERS = {
    "cronshift-runtime": ["~cronshift:runs:runtime", "~cronshift:doc:*", "+xadd", "+xtrim", "+hset"],
    "cronshift-record": ["~cronshift:runs", "+xadd"],
    "cronshift-reader": ["%R~cronshift:*", "+@read"],
}


def _url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, dict[str, str]]]:
    """A Redis whose default user is the admin (broker, results) and the three cronshift users."""
    server = start_redis(tmp_path / "redis", password=ADMIN_PW)
    admin = redis.Redis.from_url(server.url)
    urls = {}
    for user, rules in USERS.items():
        pw = uuid.uuid4().hex
        admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{pw}", "-@all", *rules)
        urls[user] = _url(server, user, pw)
    admin.close()
    try:
        yield server, urls
    finally:
        server.stop()


def _private(path: Path, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode())
    os.close(fd)
    return str(path)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the worker runs the job as its crontab user (root here)")
def test_runtime_records_are_written_with_its_own_acl_user_and_readers_cannot_forge_or_delete(
    tmp_path: Path, acl_redis: tuple[RedisServer, dict[str, str]]
) -> None:
    server, urls = acl_redis
    root = one_file_root(tmp_path, "acl", "0 3 * * * root echo ran-by-celery\n")
    out, pkg = tmp_path / "out", "acl_" + uuid.uuid4().hex[:6]
    generate_for_worker(root, out, pkg, server.url)
    (doc,) = (out / pkg / "jobs").glob("*.md")
    assert "CRONSHIFT_LEDGER_REDIS_CONFIG" in doc.read_text()

    config = _private(tmp_path / "ledger-redis.url", urls["cronshift-runtime"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONSHIFT_")}
    env |= {"PYTHONPATH": f"{out}:{PROJECT}", "CRONSHIFT_LEDGER_REDIS_CONFIG": config}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - the worker outlives this statement
    worker = subprocess.Popen(
        [CELERY, "-A", f"{pkg}.app", "worker", "--pool", "prefork", "-c", "1", "--loglevel", "info"],
        cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    sys.path.insert(0, str(out))
    try:
        import importlib

        triggers = importlib.import_module(f"{pkg}.triggers")
        (trigger,) = [getattr(triggers, k) for k in dir(triggers) if k.startswith("trigger_")]
        res = trigger().get(timeout=120)
        assert res["exit_status"] == 0
        deadline = time.monotonic() + 30
        admin = redis.Redis.from_url(server.url)
        while time.monotonic() < deadline and not admin.xlen(RUNTIME_STREAM):
            time.sleep(0.1)
    finally:
        sys.path.remove(str(out))
        stop(worker)
        log.close()
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert admin.xlen(RUNTIME_STREAM) == 1, worker_log  # written by the runtime's user, to its own stream
    assert urls["cronshift-runtime"].split("@")[0].split(":")[-1] not in worker_log  # the password

    # A wrapper (the wrappers' credential) records a run, and tries to pass a forged one off as the runtime's.
    wrapped = subprocess.run(
        [str(CONSOLE_SCRIPT), "record", "--root", str(root), "--job", "wrapped", "--redis",
         urls["cronshift-record"], "--", "true"],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=60,
    )  # fmt: skip
    assert wrapped.returncode == 0
    record_user = redis.Redis.from_url(urls["cronshift-record"])
    forged = '{"cronshift_run":1,"uid":"f00d","job_id":"acl","source":"celery","user":"root","start":1.0}'
    record_user.xadd(STREAM, {"record": forged})
    with pytest.raises(redis.exceptions.NoPermissionError):
        record_user.xadd(RUNTIME_STREAM, {"record": forged})

    reader = redis.Redis.from_url(urls["cronshift-reader"])
    for attempt in (
        lambda: reader.xadd(STREAM, {"record": forged}),
        lambda: reader.xadd(RUNTIME_STREAM, {"record": forged}),
        lambda: reader.xdel(RUNTIME_STREAM, admin.xrange(RUNTIME_STREAM)[0][0]),
        lambda: reader.delete(RUNTIME_STREAM),
        lambda: reader.xtrim(RUNTIME_STREAM, maxlen=0),
        lambda: reader.xtrim(STREAM, maxlen=0),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()

    with open_ledger(root, redis_url=urls["cronshift-reader"]) as led:
        runs = {r.extra.get("uid"): r for r in led.runs()}
    celery = [r for r in runs.values() if r.source == "celery"]
    assert len(celery) == 1 and celery[0].stdout_tail == "ran-by-celery\n"
    assert runs["f00d"].source == "record" and runs["f00d"].extra["claimed_source"] == "celery"
    assert [r.source for r in runs.values() if r.job_id == "wrapped"] == ["record"]
    assert admin.xlen(RUNTIME_STREAM) == 1 and admin.xlen(STREAM) == 2


def test_the_runtime_reads_its_redis_url_only_from_a_private_file(tmp_path: Path) -> None:
    good = _private(tmp_path / "good.url", "redis://cronshift-runtime:pw@127.0.0.1:6379/0\n")
    assert read_private_url(good) == "redis://cronshift-runtime:pw@127.0.0.1:6379/0"
    shared = tmp_path / "shared.url"
    shared.write_text("redis://x:pw@127.0.0.1/0\n")
    shared.chmod(0o644)
    link = tmp_path / "link.url"
    link.symlink_to(good)
    for path in (shared, link, tmp_path / "missing.url"):
        with pytest.raises(LedgerConfigError):
            read_private_url(str(path))
