"""A test-owned redis-server on a free loopback port: real Redis, never the machine's own.

Use `start_redis(tmp_dir)` for a server a test may pause, restart or kill; import the session-scoped
`redis_server` fixture (`from support.redis_server import redis_server`) to share one between tests that
only read and write. Each server runs with no persistence and is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Below Linux's ephemeral range (32768-60999), where bind(0) and outgoing connections take their ports: a
# port picked here and freed is not handed to a client socket before the server binds it.
PORTS = range(20000, 32768)
_pick = random.SystemRandom()  # not the global generator: a test may seed that, the same in every worker


def free_port() -> int:
    """A loopback port nothing listens on now, at random: parallel workers rarely pick the same one, and a
    server that then loses the race fails to bind (start_redis tries another) rather than sharing it."""
    for _ in range(100):
        p = _pick.choice(PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise RuntimeError(f"no free port in {PORTS}")


def _ping(port: int, timeout: float = 0.2, password: str | None = None, ca: Path | None = None) -> bool:
    try:
        with contextlib.ExitStack() as stack:
            s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=timeout))
            if ca is not None:
                s = stack.enter_context(
                    ssl.create_default_context(cafile=str(ca)).wrap_socket(s, server_hostname="127.0.0.1")
                )
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                if not s.recv(16).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except (OSError, ssl.SSLError):
        return False


@dataclass
class RedisServer:
    port: int
    pid: int
    dir: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    password: str | None = None
    ca: Path | None = None  # TLS: the CA certificate clients verify the server with

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.ca is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"
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


def _self_signed(tmp_dir: Path) -> Path:
    """A certificate for 127.0.0.1 (its own CA) and its key, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_dir / "tls.key"),
         "-out", str(tmp_dir / "tls.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    return tmp_dir / "tls.crt"


def start_redis(
    tmp_dir: Path,
    port: int | None = None,
    *,
    password: str | None = None,
    durable: bool = False,
    tls: bool = False,
) -> RedisServer:
    """Start redis-server on a free loopback port and wait until it answers PING.

    `password`: clients must AUTH (the URL carries it). `durable`: an append-only file fsynced on every
    write in `tmp_dir`, so a server SIGKILLed and started again on the same port keeps every entry.
    `tls`: the port speaks TLS only (a self-signed certificate; the URL is rediss:// naming its CA)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    ca = _self_signed(tmp_dir) if tls else None
    for _ in range(5):
        p = port or free_port()
        args = [exe, "--bind", "127.0.0.1", "--save", ""]
        if ca is None:
            args += ["--port", str(p)]
        else:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(p),
                "--tls-cert-file",
                str(ca),
                "--tls-ca-cert-file",
                str(ca),
            ]
            args += ["--tls-key-file", str(tmp_dir / "tls.key"), "--tls-auth-clients", "no"]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        args += ["--requirepass", password] if password else []
        args += ["--dir", str(tmp_dir), "--daemonize", "no"]
        log = open(tmp_dir / f"redis-{p}.log", "wb")  # noqa: SIM115 - the server outlives this scope
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        server = RedisServer(port=p, pid=proc.pid, dir=tmp_dir, proc=proc, password=password, ca=ca)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            # Its own log saying it listens, so that a PONG is from this server, not from another
            # worker's that took the port first (this one then exits and the next port is tried).
            ready = b"Ready to accept connections" in (tmp_dir / f"redis-{p}.log").read_bytes()
            if ready and _ping(p, password=password, ca=ca):
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
