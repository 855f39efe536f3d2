"""Run a cron job's command exactly as cron would: its shell, cron's minimal environment plus the crontab's
assignments (nothing of the worker's), its user, its home as working directory, `%` text on stdin.

Generated task modules call `run_job(SPEC, ...)`; SPEC is the job as `cronshift generate` read it.
A trigger's payload never reaches the command line: it is written to a JSON file whose path is in the
environment variable CRONSHIFT_PAYLOAD_FILE (unset when there is no payload).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["DEFAULT_TIME_LIMIT", "JobFailed", "JobRefused", "cron_environment", "run_job"]

DEFAULT_TIME_LIMIT = 6 * 3600  # seconds; cron has none, but a worker slot must come back eventually
KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL of the job's process group
TAIL_BYTES = 4096
PAYLOAD_ENV = "CRONSHIFT_PAYLOAD_FILE"


class JobRefused(PermissionError):
    """The worker cannot run the job as its user (not root, and not that user)."""


class JobFailed(RuntimeError):
    """The command exited non-zero or was killed; carries what Celery's result and monitoring should show."""

    def __init__(
        self, job_id: str, exit_status: int | None, signal_no: int | None, tail: str, duration: float
    ):
        # args are the fields themselves, so Celery's result backend rebuilds the exception intact.
        super().__init__(job_id, exit_status, signal_no, tail, duration)
        self.job_id, self.exit_status, self.signal, self.tail, self.duration = (
            job_id,
            exit_status,
            signal_no,
            tail,
            duration,
        )

    def __str__(self) -> str:
        how = f"exit status {self.exit_status}" if self.signal is None else f"signal {self.signal}"
        tail = self.tail[-500:]
        return f"job {self.job_id} failed with {how} after {self.duration:.3f}s; output tail: {tail!r}"


def cron_environment(spec: dict[str, Any], entry: pwd.struct_passwd) -> dict[str, str]:
    """What cron puts in a job's environment (Debian and cronie alike), then the crontab's assignments."""
    env = {
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        "HOME": entry.pw_dir,
        "LOGNAME": entry.pw_name,
        "USER": entry.pw_name,
    }
    for key, value in spec.get("env", []):
        env[key] = value
    env["LOGNAME"] = env["USER"] = entry.pw_name  # cron sets these after the crontab's own
    return env


@contextlib.contextmanager
def _payload_file(payload: Any, uid: int, gid: int) -> Iterator[str | None]:
    if payload is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="cronshift-payload-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False)
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_job(
    spec: dict[str, Any],
    payload: Any = None,
    scheduled_for: float | None = None,
    on_start: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run the job once; return {exit_status, output_tail, duration, ...} or raise JobFailed."""
    entry = pwd.getpwnam(spec["user"])
    uid, gid = entry.pw_uid, entry.pw_gid
    if os.geteuid() != 0 and os.geteuid() != uid:
        raise JobRefused(
            f"job {spec['id']} runs as {spec['user']}; this worker is uid {os.geteuid()}, not root"
        )
    env = cron_environment(spec, entry)
    shell = env.get("SHELL") or spec.get("shell") or "/bin/sh"
    stdin_text: str | None = spec.get("stdin")
    limit = float(spec.get("time_limit") or DEFAULT_TIME_LIMIT)
    drop: dict[str, Any] = {}
    if os.geteuid() == 0 and uid != 0:
        drop = {"user": uid, "group": gid, "extra_groups": os.getgrouplist(entry.pw_name, gid)}
    # cron chdirs to HOME as the job sees it, so a crontab HOME= assignment moves the working directory too.
    cwd = env["HOME"] if os.path.isdir(env["HOME"]) else "/"
    with _payload_file(payload, uid, gid) as pfile:
        if pfile is not None:
            env[PAYLOAD_ENV] = pfile
        start = clock()
        proc = subprocess.Popen(
            [shell, "-c", spec["command"]],
            env={k: v.encode("utf-8", "surrogateescape") for k, v in env.items()},  # type: ignore[misc]
            cwd=cwd,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # cron mails stdout and stderr as one stream
            process_group=0,  # its own group, so a time limit kills every child too
            close_fds=True,
            **drop,
        )
        if on_start is not None:
            on_start(proc.pid)
        data = stdin_text.encode("utf-8", "surrogateescape") if stdin_text is not None else None
        killed = False
        try:
            out, _ = proc.communicate(data, timeout=limit)
        except subprocess.TimeoutExpired:
            killed = True
            _kill_group(proc)
            out, _ = proc.communicate()
        duration = clock() - start
    rc = proc.returncode
    tail = out[-TAIL_BYTES:].decode("utf-8", "replace")
    status, sig = (rc, None) if rc >= 0 else (None, -rc)
    result = {
        "job_id": spec["id"],
        "exit_status": status,
        "signal": sig,
        "output_tail": tail,
        "output_bytes": len(out),
        "duration": duration,
        "start": start,
        "scheduled_for": scheduled_for,
        "time_limit_hit": killed,
    }
    if rc != 0:
        raise JobFailed(spec["id"], status, sig, tail, duration)
    return result
