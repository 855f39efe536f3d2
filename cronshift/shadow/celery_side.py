"""The event path on a real worker: send the generated task through the generated `triggers.py`, wait for it.

The user starts the worker (`celery -A PKG.app worker`). In sandbox mode the worker must run in its own mount
namespace (`unshare -m --propagation private celery -A PKG.app worker ...`), on this host, alone on the
broker: before each run the scratch copies are bind-mounted over the declared paths *inside the worker's
namespace* (setns), and taken away after; the prefork children share that namespace. A worker in the host's
own namespace is refused, since a bind there would be seen by cron and everything else.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from cronshift.model import CronJob
from cronshift.shadow.compare import SideRun
from cronshift.shadow.execute import SideSetup, prepare_scratch, snapshot

__all__ = ["CelerySide", "EventPathError", "generated_spec", "load_project"]


class EventPathError(RuntimeError):
    """The generated project or its worker cannot serve as the event path; the message says what to do."""


def _slug(job_id: str) -> str:
    from cronshift.generate.celery import slug

    return slug(job_id)


def _package(project: Path, package: str | None) -> str:
    if package:
        return package
    found = sorted(p.parent.name for p in project.glob("*/app.py") if (p.parent / "triggers.py").exists())
    if len(found) != 1:
        raise EventPathError(
            f"{project}: expected one generated package (app.py + triggers.py), found {found}"
        )
    return found[0]


def load_project(project: Path, package: str | None, broker: str | None) -> tuple[ModuleType, str]:
    """Import the generated package's triggers (the broker override goes through the env the app reads)."""
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


def generated_spec(project: Path, package: str | None, job: CronJob) -> dict[str, Any]:
    """The SPEC the generated task module embeds for `job`: what the event path really runs."""
    pkg = _package(project, package)
    path = project / pkg / "jobs" / f"{_slug(job.id)}.py"
    if not path.exists():
        raise EventPathError(
            f"{path}: no generated task for {job.id}; run `cronshift generate {job.id}` first"
        )
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    mod = importlib.import_module(f"{pkg}.jobs.{_slug(job.id)}")
    return dict(mod.SPEC)


class CelerySide:
    """Callable(label) -> SideRun: one run of the generated task on the user's worker."""

    def __init__(
        self,
        project: Path,
        package: str | None,
        job: CronJob,
        broker: str | None,
        setup: SideSetup,
        timeout: float = 300.0,
    ) -> None:
        self.triggers, self.package = load_project(project, package, broker)
        name = f"trigger_{_slug(job.id)}"
        if not hasattr(self.triggers, name):
            raise EventPathError(
                f"{project}/{self.package}/triggers.py has no {name}: regenerate the project"
            )
        self.trigger = getattr(self.triggers, name)
        self.setup, self.timeout = setup, timeout
        self.worker_pid: int | None = None
        if setup.mode == "dry-run":
            raise EventPathError(
                "--mode dry-run with --event-path celery: the generated task runs its SPEC's command and a "
                "trigger cannot add a flag; use --event-path local, or sandbox"
            )
        if setup.mode == "sandbox":
            self.worker_pid = self._sandboxed_worker()

    def _sandboxed_worker(self) -> int:
        app = self.trigger.__self__.app if hasattr(self.trigger, "__self__") else None
        app = app or importlib.import_module(f"{self.package}.app").app
        stats = app.control.inspect(timeout=5).stats() or {}
        if len(stats) != 1:
            raise EventPathError(
                f"sandbox mode with --event-path celery needs exactly one worker on the broker; "
                f"{len(stats)} answered"
            )
        name, info = next(iter(stats.items()))
        pid = int(info["pid"])
        host = name.partition("@")[2]
        if host != socket.gethostname() or not Path(f"/proc/{pid}").exists():
            raise EventPathError(f"worker {name} is not on this host: sandbox mode cannot reach its files")
        if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            raise EventPathError(
                f"worker {name} (pid {pid}) shares this host's mount namespace: start it with "
                "`unshare -m --propagation private celery -A ... worker` so its sandbox binds stay private, "
                "or use --mode allow"
            )
        return pid

    def _helper(self, op: str, req: Path) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "cronshift.shadow.sandbox", op, str(self.worker_pid), str(req)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise EventPathError(f"sandbox {op} in worker pid {self.worker_pid}: {r.stderr.strip()[-300:]}")

    def __call__(self, label: str) -> SideRun:
        from cronshift.runtime.execute import JobFailed

        real_pairs = [(Path(w), w) for w in self.setup.writes]
        before = snapshot(real_pairs)
        pairs, req = real_pairs, None
        if self.setup.mode == "sandbox":
            side, binds, pairs = prepare_scratch(self.setup, label)
            req = side / "request.json"
            req.write_text(json.dumps({"binds": binds}), encoding="utf-8")
            self._helper("enter", req)
        started = time.monotonic()
        try:
            res = self.trigger()
            try:
                out: dict[str, Any] = res.get(timeout=self.timeout)
            except JobFailed as e:
                out = {
                    "exit_status": e.exit_status,
                    "signal": e.signal,
                    "output_tail": e.tail,
                    "duration": e.duration,
                }
            except Exception as e:
                return SideRun(
                    label,
                    None,
                    None,
                    "",
                    None,
                    time.monotonic() - started,
                    before,
                    {},
                    error=f"task {res.id}: {type(e).__name__}: {e}",
                )
        finally:
            if req is not None:
                self._helper("leave", req)
        run = SideRun(
            label,
            out.get("exit_status"),
            out.get("signal"),
            out.get("output_tail") or "",
            out.get("output_bytes"),
            float(out.get("duration") or 0.0),
            before,
            snapshot(pairs),
            meta={"task_id": res.id},
        )
        return run
