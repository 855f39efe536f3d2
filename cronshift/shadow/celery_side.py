"""The generated project as the event path: in-process (`local`) or on a real Celery worker (`celery`).

`local` imports the generated task module inside the side's sandbox and applies the real task object with
Celery's own `apply()`; `celery` starts a worker of the generated app for each event run, inside the side's
sandbox (its own mount and PID namespaces, copy-on-write view of the host), on a queue of its own on the
broker given with --broker, sends the real task to it and waits. A timeout revokes the task, kills every
process of the worker's namespace and waits for them before the sandbox is read and removed.

Either way the project's own broker, ledger, locks, claims and dead letters are never touched: the app is
imported with the session's broker and a scratch store (a private ledger file, a private redis-server when
one is installed) set in the environment before any import.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from cronshift.model import CronJob
from cronshift.runtime.execute import OUTPUT_COPY_ENV
from cronshift.shadow.compare import SideRun
from cronshift.shadow.execute import HELPER_MARGIN, SideSetup, not_compared, side_from_result
from cronshift.shadow.store import project_digests

__all__ = [
    "CelerySide",
    "EventPathError",
    "LocalTaskSide",
    "Project",
    "ScratchStore",
    "load_project",
    "project_target",
    "start_private_redis",
]

LOCAL_BROKER = "memory://"
LOCAL_BACKEND = "cache+memory://"
WORKER_READY = 60.0  # seconds a shadow worker may take to start
BROKER_LATENCY = 0.5  # seconds of a broker round trip not held against the task's duration


class EventPathError(RuntimeError):
    """The generated project or its worker cannot serve as the event path; the message says what to do."""


def _slug(job_id: str) -> str:
    from cronshift.generate.common import slug  # deferred: generate pulls in jinja2, which a side never needs

    return slug(job_id)


def _package(project: Path, package: str | None) -> str:
    if package:
        return package
    found = sorted(
        p.parent.name
        for p in [*project.glob("*/app.py"), *project.glob("*/consumer.py")]
        if (p.parent / "triggers.py").exists()
    )
    if len(found) != 1:
        raise EventPathError(
            f"{project}: expected one generated package (app.py + triggers.py), found {found}"
        )
    return found[0]


def project_target(project: Path, package: str | None) -> tuple[str, str]:
    """("streams" | "celery", package) of a generated project. The manifest records file digests only, so
    the generated files say it: a Streams project has consumer.py (and jobs.py), a Celery one app.py."""
    pkg = _package(project, package)
    return ("streams" if (project / pkg / "consumer.py").exists() else "celery"), pkg


def load_project(project: Path, package: str | None, broker: str | None) -> tuple[ModuleType, str]:
    """Import the generated package's triggers, the broker override set first (the app reads it at import).

    Used by `cronshift dead-letters --replay`."""
    pkg = _package(project, package)
    if broker:
        os.environ["CRONSHIFT_BROKER_URL"] = broker
        if broker.startswith(("redis://", "rediss://")):
            os.environ["CRONSHIFT_RESULT_BACKEND"] = broker
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    try:
        return importlib.import_module(f"{pkg}.triggers"), pkg
    except ImportError as e:
        raise EventPathError(f"{project}/{pkg}/triggers.py: cannot import: {e}") from None


class Project:
    """A `cronshift generate` output directory, and the generated files a verdict is bound to."""

    def __init__(self, path: Path, package: str | None, job: CronJob) -> None:
        self.path = path.resolve()
        # The Redis Streams target: one jobs.py (the SPECs) read by the runtime's consumer.
        self.target, self.package = project_target(self.path, package)
        package = self.package
        self.job_id = job.id
        self.module = f"{package}.jobs" if self.target == "streams" else f"{package}.jobs.{_slug(job.id)}"
        task_file = self.path / package / "jobs" / f"{_slug(job.id)}.py"
        if self.target == "streams":
            task_file = self.path / package / "jobs.py"
            if task_file.exists() and job.id not in task_file.read_text(encoding="utf-8", errors="replace"):
                raise EventPathError(
                    f"{task_file}: no SPEC for {job.id}; run `cronshift generate {job.id}` first"
                )
        if not task_file.exists():
            raise EventPathError(
                f"{task_file}: no generated task for {job.id}; run `cronshift generate {job.id}` first"
            )

    def digests(self) -> dict[str, str]:
        """sha256 of every generated source file the event path imports (the package's .py files)."""
        return project_digests(self.path, self.package)


class ScratchStore:
    """The session's own ledger and (when redis-server is installed) Redis for locks, claims, dead letters."""

    def __init__(self, scratch: Path) -> None:
        self.dir = scratch / "store"
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        exe = shutil.which("redis-server")
        if exe:
            started = start_private_redis(exe, self.dir)
            if started is not None:
                self.proc, self.url = started

    def env(self) -> dict[str, str]:
        env = {"CRONSHIFT_LEDGER": str(self.dir / "ledger.sqlite"), "CRONSHIFT_LEDGER_REDIS": ""}
        env["CRONSHIFT_STATE_REDIS"] = self.url or ""
        env["CRONSHIFT_LOCK_REDIS"] = ""
        env["CRONSHIFT_REDBEAT_REDIS"] = self.url or ""
        return env

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def _below_ephemeral() -> range:
    """Ports outside the kernel's ephemeral range: bind(0) and every outgoing connection take theirs from
    that range, so a port picked there can be taken by a client socket before the server binds it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(20000, low) if low > 21000 else range(1025, max(low, 2025))


def _answers(port: int, password: str) -> bool:
    """Our server is up: it knows the session's password (a foreign server on the port would not)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            got = b""
            while b"PONG" not in got and len(got) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                got += chunk
            return got.startswith(b"+OK") and b"+PONG" in got
    except OSError:
        return False


def start_private_redis(
    exe: str, folder: Path, ports: Callable[[], int] | None = None, attempts: int = 20
) -> tuple[subprocess.Popen[bytes], str] | None:
    """A redis-server only this session can use: a random password in a 0600 config file (never in argv,
    so never in `ps`), on a loopback port below the ephemeral range. A port another server already holds
    (or takes first) makes ours exit or leaves it unanswered; then another port is tried, so the session
    never adopts somebody else's Redis. None when no attempt came up."""
    pick = random.SystemRandom()
    candidates = _below_ephemeral()
    password = secrets.token_hex(24)
    conf = folder / "redis.conf"
    for _ in range(attempts):
        port = ports() if ports else pick.choice(candidates)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\nrequirepass {password}\n')
            f.write(f"dir {json.dumps(str(folder))}\n")
        proc = subprocess.Popen(
            [exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(port, password):
                return proc, f"redis://:{password}@127.0.0.1:{port}/0"
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    return None


class LocalTaskSide:
    """Callable(label) -> SideRun: the generated task applied in-process, inside the side's sandbox."""

    def __init__(self, project: Project, setup: SideSetup) -> None:
        self.project, self.setup = project, setup

    def __call__(self, label: str) -> SideRun:
        from cronshift.shadow.execute import run_side

        env = {
            "CRONSHIFT_BROKER_URL": LOCAL_BROKER,
            "CRONSHIFT_RESULT_BACKEND": LOCAL_BACKEND,
            "CRONSHIFT_QUEUE": "cronshift-shadow",
        }
        action = "task"
        if self.project.target == "streams":
            # The consumer's stream lives in the session's scratch Redis, never the project's own.
            url = self.setup.store_env.get("CRONSHIFT_STATE_REDIS")
            if not url:
                from cronshift.shadow.compare import SideRun

                why = "the Streams target needs redis-server installed for the session's scratch stream"
                return SideRun(label, None, None, "", None, 0.0, error=why, meta={"infra": True})
            env = {"CRONSHIFT_STREAMS_REDIS": url}
            action = "streams"
        req = {"action": action, "project": str(self.project.path), "module": self.project.module, "env": env}
        return run_side(self.setup, label, {**req, "job_id": self.project.job_id})


class CelerySide:
    """Callable(label) -> SideRun: one run of the real task on a worker started for it inside the sandbox."""

    def __init__(self, project: Project, broker: str, setup: SideSetup, session: str) -> None:
        if project.target == "streams":
            raise EventPathError("--event-path celery: this project is the Redis Streams target; use local")
        if setup.mode == "dry-run":
            raise EventPathError(
                "--mode dry-run with --event-path celery: a worker runs the SPEC's command and cannot add a "
                "flag; use --event-path local"
            )
        self.project, self.setup, self.broker = project, setup, broker
        self.queue = f"cronshift-shadow-{session}"
        backend = broker if broker.startswith(("redis://", "rediss://")) else "rpc://"
        self.env = {
            "CRONSHIFT_BROKER_URL": broker,
            "CRONSHIFT_RESULT_BACKEND": backend,
            "CRONSHIFT_QUEUE": self.queue,
        }
        # --broker applies before the app is imported: the import reads these.
        os.environ.update(self.env)
        for name in [m for m in sys.modules if m == project.package or m.startswith(project.package + ".")]:
            del sys.modules[name]  # another project of the same package name imported before (tests)
        if str(project.path) in sys.path:
            sys.path.remove(str(project.path))
        sys.path.insert(0, str(project.path))
        try:
            mod = importlib.import_module(project.module)
        except Exception as e:
            raise EventPathError(f"{project.module}: cannot import: {type(e).__name__}: {e}") from None
        from cronshift.shadow.sandbox import _find_task

        try:
            self.task = _find_task(mod, None)
        except LookupError as e:
            raise EventPathError(f"{project.module}: {e}") from None
        self.task_name = self.task.name

    def __call__(self, label: str) -> SideRun:
        side = self.setup.scratch / label
        chan, layer, mnt = side / "channel", side / "layer", side / "mnt"
        for d in (chan, layer, mnt):
            d.mkdir(parents=True)
        output, log = chan / "output", chan / "worker.log"
        wtmp = side / "tmp"  # the worker's own temporary files (billiard's pymp-*): not the job's writes
        wtmp.mkdir()
        queue = f"{self.queue}-{label}"
        celery = str(Path(sys.executable).with_name("celery"))
        argv = [celery, "-A", f"{self.project.package}.app", "worker", "--pool", "prefork", "-c", "1",
                "-Q", queue, "-n", f"{queue}@%h", "--without-heartbeat", "--without-mingle",
                "--without-gossip", "--loglevel", "info"]  # fmt: skip
        path = os.pathsep.join([str(self.project.path), *[p for p in sys.path if p]])
        req = {
            "action": "worker",
            "argv": argv,
            "cwd": str(self.project.path),
            "log": str(log),
            "env": {**self.setup.store_env, **self.env, "CRONSHIFT_QUEUE": queue,
                    OUTPUT_COPY_ENV: str(output),
                    "PYTHONPATH": path, "TMPDIR": str(wtmp)},
            "mount": str(mnt),
            "channel": str(chan),
            "layer_out": str(layer),
            "exclude": not_compared(self.setup),
            "timeout": None,
            "isolate": self.setup.mode == "sandbox",
        }  # fmt: skip
        (side / "request.json").write_text(json.dumps(req), encoding="utf-8")
        before: dict[str, Any] = {}
        if self.setup.mode == "allow":
            from cronshift.shadow.execute import _snapshot

            before = _snapshot(self.setup.writes, layer)
        helper = subprocess.Popen(
            [sys.executable, "-m", "cronshift.shadow.sandbox", str(side / "request.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )  # fmt: skip
        out: dict[str, Any] = {}
        try:
            deadline = time.monotonic() + WORKER_READY
            while not (log.exists() and b"ready." in log.read_bytes()):
                if helper.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-300:] if log.exists() else ""
                    return self._finish(helper, chan, label, output, before, layer, {
                        "ok": False,
                        "infra_error": f"the shadow worker did not start: {tail.strip()}"})  # fmt: skip
                time.sleep(0.05)
            started = time.monotonic()
            res = self.task.apply_async(kwargs={"payload": None}, queue=queue)
            out["task_id"] = res.id
            try:
                value = res.get(timeout=self.setup.timeout, propagate=False)
            except Exception as e:
                res.revoke(terminate=True, signal="SIGKILL")
                out |= {"timed_out": True,
                        "error": f"no result within {self.setup.timeout}s ({type(e).__name__}): "
                        "task revoked, worker and every process of it killed and waited for"}  # fmt: skip
                return self._finish(helper, chan, label, output, before, layer, out)
            took = time.monotonic() - started
            out |= _task_outcome(res.state, value, self.task_name) | {"duration_end_to_end": took}
            return self._finish(helper, chan, label, output, before, layer, out)
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()

    def _finish(
        self,
        helper: subprocess.Popen[bytes],
        chan: Path,
        label: str,
        output: Path,
        before: dict[str, Any],
        layer: Path,
        out: dict[str, Any],
    ) -> SideRun:
        """Stop the worker (the helper kills its namespace and waits), then read the side's layer."""
        if helper.poll() is None:
            helper.send_signal(signal.SIGTERM)
            try:
                helper.wait(timeout=HELPER_MARGIN)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        res_path = chan / "result.json"
        res = json.loads(res_path.read_text(encoding="utf-8")) if res_path.exists() else {}
        if res.get("sandbox_error"):
            out = {"sandbox_error": res["sandbox_error"]}
        if out.get("infra_error"):
            out = {"sandbox_error": out["infra_error"]}
        merged = {**out, "layer": res.get("layer") or [], "notes": res.get("notes") or []}
        run = side_from_result(label, merged, output, self.setup, before, layer)
        run.meta["latency_allowance"] = BROKER_LATENCY
        return run


def _task_outcome(state: str, value: Any, name: str) -> dict[str, Any]:
    from cronshift.runtime.execute import JobFailed

    if state == "SUCCESS":
        if not isinstance(value, dict) or "exit_status" not in value:
            r = repr(value)[:80]
            return {
                "task_error": f"task {name} returned {type(value).__name__} {r}, not the runtime's run result"
            }
        return {k: value.get(k) for k in ("exit_status", "signal", "output_bytes")}
    if isinstance(value, JobFailed):
        return {"exit_status": value.exit_status, "signal": value.signal}
    return {"task_error": f"task {name} ended {state}: {type(value).__name__}: {value}"}
