"""The shadow session's scratch Redis is its own: never a server that already held the port, never
reachable without the session's password, and the password never in `ps`."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cronshift.shadow.celery_side import start_private_redis
from tests.support.redis_server import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture
def impostor() -> Iterator[int]:
    """A listener that answers every request as Redis would a PING: what a naive readiness check adopts."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", free_port()))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.5)
                try:
                    conn.recv(256)
                    conn.sendall(b"+PONG\r\n")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        srv.close()


def test_a_port_someone_else_holds_is_never_adopted(impostor: int, tmp_path: Path) -> None:
    picks = iter([impostor, free_port()])
    started = start_private_redis(shutil.which("redis-server") or "", tmp_path, ports=lambda: next(picks))
    assert started is not None
    proc, url = started
    try:
        client = redis.Redis.from_url(url)
        assert client.connection_pool.connection_kwargs["port"] != impostor
        assert client.ping() is True
        client.set("k", "v")  # a real Redis, not the impostor
        assert client.get("k") == b"v"
        client.close()
    finally:
        proc.kill()
        proc.wait()


def test_the_scratch_redis_needs_the_password_and_keeps_it_out_of_argv(tmp_path: Path) -> None:
    started = start_private_redis(shutil.which("redis-server") or "", tmp_path)
    assert started is not None
    proc, url = started
    try:
        password = redis.Redis.from_url(url).connection_pool.connection_kwargs["password"]
        assert password
        port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET k\r\n")
            assert s.recv(64).startswith(b"-NOAUTH")  # another local user gets nothing without it
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        conf = tmp_path / "redis.conf"
        assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    finally:
        proc.kill()
        proc.wait()
