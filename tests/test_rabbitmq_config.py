"""RabbitMQ (127.0.0.1:5672, guest/guest, a queue named after a unique package, deleted afterwards): the
generated project keeps a long job from being redelivered at the broker's consumer_timeout, and stores no
result for a scheduled run."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture
from tests.test_policies_celery import Project, imported, make_project, wait_for  # noqa: F401

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the generated jobs run as root; the worker must be root"),
]


def _rabbit() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")


def test_queue_outlasts_the_longest_hard_limit_and_scheduled_runs_keep_no_result(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    imported: Callable[[Project], Project],  # noqa: F811
) -> None:
    _rabbit()
    broker = "amqp://guest:guest@127.0.0.1:5672//"
    # No history: the default time limit (hours) is far above a stock broker's 30-minute consumer_timeout.
    p = imported(make_project(tmp_path, {"j": "echo amqp"}, {}, broker, state_redis=redis_server.url))
    app_py = (p.out / p.pkg / "app.py").read_text()
    assert "consumer_timeout" in app_py and "x-consumer-timeout" in app_py
    mod = importlib.import_module(f"{p.pkg}.app")
    hard = p.task("j").time_limit
    assert hard > 1800 and hard * 1000 < mod.CONSUMER_TIMEOUT_MS
    (entry,) = mod.app.conf.beat_schedule.values()
    assert entry["options"]["ignore_result"] is True
    p.worker("amqp", concurrency=1)
    try:
        rows = wait_for(
            lambda: [ln for ln in _queues() if ln.startswith(p.pkg + "\t")], "the worker declared its queue"
        )
        assert f'{{"x-consumer-timeout",{mod.CONSUMER_TIMEOUT_MS}}}' in rows[0], rows
        res = p.task("j").apply_async(**entry["options"])  # as beat sends it
        wait_for(lambda: p.runs("j"), "the scheduled run's record")
        assert mod.app.backend.__class__.__name__ == "RPCBackend"
        assert res.ignored  # the rpc:// backend opens no reply queue for it, and the worker sends none
    finally:
        p.stop_all()
        with mod.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(p.pkg)


def _queues() -> list[str]:
    got = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "arguments"], capture_output=True, text=True, timeout=60
    )
    return got.stdout.splitlines()
