"""The real `celery` processes of a generated project (a prefork worker, beat), as tests and benchmarks start
them: in their own session, so that `stop` reaches the pool children and the jobs they run too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

CELERY = str(Path(sys.executable).with_name("celery"))


def start_celery(
    pkg: str, *args: str, cwd: Path, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """`celery -A PKG.app ARGS` run from `cwd` (the folder the project was generated into); its output is
    appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [CELERY, "-A", f"{pkg}.app", *args], cwd=cwd, env=dict(env),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def start_worker(
    pkg: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    concurrency: int = 2,
    name: str | None = None,
    loglevel: str = "info",
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """A real prefork worker for the generated project `pkg`; `extra` adds worker options (`-I MOD`).

    Its node name is the package's (NAME-PKG@host with a `name`, for tests that run several workers): on a
    shared RabbitMQ a node's pidbox queue is exclusive, so a second `celery@host` (another test run on this
    host) would fail with RESOURCE_LOCKED, and generated package names are unique."""
    node = f"{name}-{pkg}" if name else pkg
    args = ["worker", "--pool", "prefork", "-c", str(concurrency), "-n", f"{node}@%h", "--loglevel", loglevel]
    return start_celery(pkg, *args, *extra, cwd=cwd, env=env, log=log)


def stop(proc: subprocess.Popen[bytes], first: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Signal the process group (`first`, then SIGKILL if it is still there after `timeout` s)."""
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue
