"""A test-owned redis-server on a free loopback port: real Redis, never the machine's own.

Use `start_redis(tmp_dir)` for a server a test may pause, restart or kill; import the session-scoped
`redis_server` fixture (`from support.redis_server import redis_server`) to share one between tests that
only read and write. Each server runs with no persistence and is stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int, timeout: float = 0.2, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                if not s.recv(16).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    port: int
    pid: int
    dir: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel queues them) but nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def start_redis(
    tmp_dir: Path, port: int | None = None, *, password: str | None = None, durable: bool = False
) -> RedisServer:
    """Start redis-server on a free loopback port and wait until it answers PING.

    `password`: clients must AUTH (the URL carries it). `durable`: an append-only file fsynced on every
    write in `tmp_dir`, so a server SIGKILLed and started again on the same port keeps every entry."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        p = port or free_port()
        args = [exe, "--port", str(p), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        args += ["--requirepass", password] if password else []
        args += ["--dir", str(tmp_dir), "--daemonize", "no"]
        log = open(tmp_dir / f"redis-{p}.log", "wb")  # noqa: SIM115 - the server outlives this scope
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        server = RedisServer(port=p, pid=proc.pid, dir=tmp_dir, proc=proc, password=password)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _ping(p, password=password):
                return server
            time.sleep(0.02)
        server.stop()
        if port is not None:
            break
    raise RuntimeError(f"redis-server did not start; see {tmp_dir}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the whole session. Tests that need a hung or restarted Redis start their own."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
