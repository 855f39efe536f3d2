"""Run a cron job's command exactly as cron would: its shell, cron's minimal environment plus the crontab's
assignments (nothing of the worker's), its user, its home as working directory, `%` text on stdin.

Generated task modules call `run_job(SPEC, ...)`; SPEC is the job as `cronshift generate` read it.
A trigger's payload never reaches the command line: it is written to a JSON file whose path is in the
environment variable CRONSHIFT_PAYLOAD_FILE (unset when there is no payload).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from cronshift.runtime.spec import JobSpec, check_spec

__all__ = [
    "DEFAULT_TIME_LIMIT",
    "KILL_GRACE",
    "JobFailed",
    "JobRefused",
    "cron_environment",
    "kill_group",
    "run_job",
]

DEFAULT_TIME_LIMIT = 6 * 3600  # seconds; cron has none, but a worker slot must come back eventually
KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL of the job's process group
TAIL_BYTES = 4096
PAYLOAD_ENV = "CRONSHIFT_PAYLOAD_FILE"
# Set in the worker's own environment (never the job's) by `cronshift shadow-run`: the whole merged output is
# also appended to this file, so a shadow comparison sees every byte, not only the tail kept here.
OUTPUT_COPY_ENV = "CRONSHIFT_OUTPUT_COPY"


class JobRefused(PermissionError):
    """The worker cannot run the job as its user (not root, and not that user)."""


class JobFailed(RuntimeError):
    """The command exited non-zero or was killed; carries what Celery's result and monitoring should show."""

    def __init__(
        self,
        job_id: str,
        exit_status: int | None,
        signal_no: int | None,
        tail: str,
        duration: float,
        result: dict[str, Any] | None = None,
    ):
        # args are the fields themselves, so Celery's result backend rebuilds the exception intact.
        super().__init__(job_id, exit_status, signal_no, tail, duration, result)
        self.job_id, self.exit_status, self.signal, self.tail, self.duration = (
            job_id,
            exit_status,
            signal_no,
            tail,
            duration,
        )
        self.result = result or {}  # everything run_job knows: digests, sizes, split tails, time_limit_hit

    def __str__(self) -> str:
        how = f"exit status {self.exit_status}" if self.signal is None else f"signal {self.signal}"
        tail = self.tail[-500:]
        return f"job {self.job_id} failed with {how} after {self.duration:.3f}s; output tail: {tail!r}"


PAM_ENV_FILES = ("etc/environment", "etc/default/locale")  # Debian's /etc/pam.d/cron: pam_env twice


def pam_environment(root: str = "/") -> dict[str, str]:
    """The variables Debian cron's PAM session (pam_env) adds: /etc/environment, then /etc/default/locale.

    pam_env's file format: KEY=VALUE lines, '#' comments, an optional 'export ', one pair of matching
    quotes around the value removed; no expansion. A file that cannot be read adds nothing, as with PAM."""
    env: dict[str, str] = {}
    for rel in PAM_ENV_FILES:
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read(65536).decode("utf-8", "surrogateescape")
        except OSError:
            continue
        for raw in data.splitlines():
            line = raw.strip(" \t")
            if not line or line.startswith("#"):
                continue
            if line.startswith("export ") or line.startswith("export\t"):
                line = line[7:].lstrip(" \t")
            key, eq, value = line.partition("=")
            if not eq or not key or any(c in key for c in " \t\"'$"):
                continue
            if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[key] = value
    return env


def cron_environment(spec: JobSpec, entry: pwd.struct_passwd, root: str = "/") -> dict[str, str]:
    """The job's environment as the dialect's cron builds it.

    Debian: PAM's variables first (pam_env: /etc/environment, /etc/default/locale), then cron's own
    (SHELL, PATH, HOME, LOGNAME; no USER) and the crontab's assignments over them. cronie also sets USER.
    LOGNAME (and USER) name the job's user whatever the crontab assigns."""
    cronie = spec.get("dialect") == "cronie"
    env = {} if cronie else pam_environment(root)
    env.update({"SHELL": "/bin/sh", "PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "LOGNAME": entry.pw_name})
    if cronie:
        env["USER"] = entry.pw_name
    for key, value in spec.get("env", []):
        env[key] = value
    env["LOGNAME"] = entry.pw_name  # cron sets it after the crontab's own
    if cronie:
        env["USER"] = entry.pw_name
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


def kill_group(pgid: int, grace: float = KILL_GRACE, gone: Callable[[], bool] | None = None) -> None:
    """SIGTERM the job's whole process group, then SIGKILL whatever is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if (gone is not None and gone()) or not _group_alive(pgid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# The watchdog: a tiny shell in its own session that holds the read end of a pipe whose write end only this
# process has. If the worker dies in any way (SIGKILL, Celery's hard time limit, OOM), the pipe reaches EOF
# and the watchdog kills the job's process group, so no orphaned job outlives its lock. On a normal end we
# write "ok" first: cron leaves a job's background children alone, and so do we.
_WATCHDOG = 'read -r w; [ "$w" = ok ] || kill -KILL -"$1" 2>/dev/null; exit 0'  # dash: no "--"


def _start_watchdog(pgid: int) -> int | None:
    r, w = os.pipe()
    try:
        subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG, "cronshift-watchdog", str(pgid)],
            stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
    return w


def _stop_watchdog(fd: int | None, ok: bool) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        if ok:
            os.write(fd, b"ok\n")
        os.close(fd)


class _Stream:
    """Digest, length and tail of one output stream, without keeping all of it in memory."""

    def __init__(self, copy: Any = None) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.tail = bytearray()
        self.copy = copy  # a binary file every chunk is also written to (shadow-run), or None

    def add(self, chunk: bytes) -> None:
        if self.copy is not None:
            self.copy.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)
        self.tail += chunk
        if len(self.tail) > 2 * TAIL_BYTES:
            del self.tail[: len(self.tail) - TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.tail[-TAIL_BYTES:]).decode("utf-8", "replace")


def _pump(
    proc: subprocess.Popen[bytes],
    data: bytes | None,
    limit: float,
    streams: tuple[_Stream, _Stream | None, _Stream | None],
) -> bool:
    """Feed stdin; read output into `streams` (merged, stdout, stderr) to EOF. True: the limit came first."""
    merged, out_s, err_s = streams
    split = out_s is not None
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ, out_s)
    if split:
        assert proc.stderr is not None
        sel.register(proc.stderr, selectors.EVENT_READ, err_s)
    pending = memoryview(data) if data else None
    if proc.stdin is not None:
        if pending is None:
            proc.stdin.close()
        else:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, None)
    deadline = time.monotonic() + limit
    readers = 2 if split else 1
    while readers:
        left = deadline - time.monotonic()
        if left <= 0:
            sel.close()
            return True
        for key, _ in sel.select(min(left, 1.0)):
            if key.fileobj is proc.stdin:
                try:
                    n = os.write(key.fd, pending) if pending is not None else 0
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    n, pending = 0, None
                if pending is not None:
                    pending = pending[n:]
                if pending is None or not len(pending):
                    sel.unregister(proc.stdin)
                    proc.stdin.close()
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                readers -= 1
                continue
            merged.add(chunk)
            if key.data is not None:
                key.data.add(chunk)
    sel.close()
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    return False


def run_job(
    spec: JobSpec,
    payload: Any = None,
    scheduled_for: float | None = None,
    on_start: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run the job once; return {exit_status, output_tail, output_sha256, ...} or raise JobFailed.

    The time limit is `spec["time_limit"]` (soft: SIGTERM to the job's group) plus `spec["kill_grace"]`
    (then SIGKILL). `spec["split_output"]` also keeps stdout and stderr apart (their tails, digests and
    sizes); the merged stream, as cron mails it, stays the primary record either way. With split output the
    merged stream interleaves the two pipes in the order reads returned them, not byte-exact as one pipe.
    A SPEC of a version this runtime does not know raises SpecVersionError before anything runs.
    """
    check_spec(spec)
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
    grace = float(spec.get("kill_grace") or KILL_GRACE)
    split = bool(spec.get("split_output"))
    drop: dict[str, Any] = {}
    if os.geteuid() == 0:
        # initgroups(), as cron does: the user's own groups, also for root (never the worker's).
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
            stderr=subprocess.PIPE if split else subprocess.STDOUT,  # cron mails both as one stream
            start_new_session=True,  # setsid(), as cron does; its own group, so a time limit kills all
            close_fds=True,
            **drop,
        )
        watchdog = _start_watchdog(proc.pid)
        ok = False
        try:
            if on_start is not None:
                on_start(proc.pid)
            data = stdin_text.encode("utf-8", "surrogateescape") if stdin_text is not None else None
            copy_path = os.environ.get(OUTPUT_COPY_ENV)
            copy = open(copy_path, "ab") if copy_path else None  # noqa: SIM115 - closed below
            streams = (_Stream(copy), _Stream() if split else None, _Stream() if split else None)
            merged, out_s, err_s = streams
            killed = _pump(proc, data, limit, streams)
            if killed:
                kill_group(proc.pid, grace, gone=lambda: proc.poll() is not None)
                _pump(
                    proc, None, 1.0, streams
                )  # what the group wrote while dying (bounded: escaped children)
            proc.wait()
            ok = True
            if copy is not None:
                copy.close()
        finally:
            _stop_watchdog(watchdog, ok)
            for f in (proc.stdout, proc.stderr, proc.stdin):
                if f is not None and not f.closed:
                    f.close()
        duration = clock() - start
    rc = proc.returncode
    tail = merged.text()
    status, sig = (rc, None) if rc >= 0 else (None, -rc)
    result = {
        "job_id": spec["id"],
        "exit_status": status,
        "signal": sig,
        "output_tail": tail,
        "output_bytes": merged.size,
        "output_sha256": merged.sha.hexdigest(),
        "stdout_tail": None if out_s is None else out_s.text(),
        "stdout_bytes": None if out_s is None else out_s.size,
        "stdout_sha256": None if out_s is None else out_s.sha.hexdigest(),
        "stderr_tail": None if err_s is None else err_s.text(),
        "stderr_bytes": None if err_s is None else err_s.size,
        "stderr_sha256": None if err_s is None else err_s.sha.hexdigest(),
        "duration": duration,
        "start": start,
        "scheduled_for": scheduled_for,
        "time_limit_hit": killed,
        "pid": proc.pid,
    }
    if rc != 0:
        raise JobFailed(spec["id"], status, sig, tail, duration, result)
    return result
