"""Run one side of a shadow pair (the cron path, or the event path) under a side-effect mode.

Modes (never a side effect twice unless the user chose `allow`):
- sandbox (default): the side runs in its own mount namespace where a scratch copy of every declared write
  path is bind-mounted over the real one (the job's own absolute paths land in the copy), and a private empty
  /tmp when neither the root nor a declared path lies under /tmp. The real paths are never written.
- allow: the side really runs; the user asserts the job is idempotent.
- dry-run: the side runs the command with the job's own dry-run flag appended (both sides, so they compare).

The cron side always goes through `cronshift.runtime.execute.run_job` with the job's spec: the same code that
runs it as cron did (shell, cron env, user, home, `%` stdin, own process group).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cronshift.model import CronJob
from cronshift.shadow.compare import FileState, SideRun

__all__ = [
    "MODES",
    "SandboxUnavailable",
    "SideSetup",
    "cron_spec",
    "new_scratch",
    "remove_scratch",
    "run_local",
    "sandbox_available",
    "snapshot",
]

MODES = ("sandbox", "allow", "dry-run")
TEXT_LIMIT = 64 * 1024  # files up to this size are kept as text for diffs and token comparison


class SandboxUnavailable(RuntimeError):
    """No private mount namespace here (not root, or unshare refused): sandbox cannot keep its promise."""


def cron_spec(job: CronJob) -> dict[str, Any]:
    """The runtime spec of the job exactly as cron has it (the shape `cronshift generate` embeds as SPEC)."""
    return {
        "id": job.id,
        "user": job.user,
        "shell": job.shell,
        "env": [list(kv) for kv in job.env],
        "command": job.shell_command or job.command,
        "stdin": job.stdin,
        "source": str(job.source),
    }


def sandbox_available() -> str | None:
    """None when a private mount namespace with bind mounts works here; else why not."""
    if os.geteuid() != 0:
        return "sandbox mode needs root (a private mount namespace, bind mounts); use --mode allow or dry-run"
    probe = [sys.executable, "-c", "from cronshift.shadow import sandbox; sandbox.private_namespace()"]
    r = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["unshare failed"])[-1]
        return f"sandbox mode needs a private mount namespace and this host refuses it ({last})"
    return None


def _state(path: Path) -> FileState:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        return FileState(
            hashlib.sha256(target.encode()).hexdigest(),
            stat.S_IMODE(st.st_mode),
            0,
            st.st_uid,
            st.st_gid,
            link=target,
        )
    data = path.read_bytes()
    text = None
    if len(data) <= TEXT_LIMIT:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return FileState(
        hashlib.sha256(data).hexdigest(), stat.S_IMODE(st.st_mode), len(data), st.st_uid, st.st_gid, text
    )


def snapshot(pairs: list[tuple[Path, str]]) -> dict[str, FileState]:
    """Every file under each (where-it-is-now, name-the-job-knows-it-by) pair, keyed by the job's name."""
    out: dict[str, FileState] = {}
    for actual, shown in pairs:
        if actual.is_symlink() or actual.is_file():
            out[shown] = _state(actual)
            continue
        if not actual.is_dir():
            continue
        for dirpath, dirs, files in os.walk(actual):
            dirs.sort()
            for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
                p = Path(dirpath, name)
                rel = p.relative_to(actual).as_posix()
                out[f"{shown.rstrip('/')}/{rel}"] = _state(p)
    return out


@dataclass
class SideSetup:
    """How to run one side: the mode, the declared write paths (absolute, as the job sees them), scratch."""

    mode: str
    writes: tuple[str, ...]
    scratch: Path  # a directory this run owns; each side gets a subdirectory
    root: Path
    dry_run_flag: str | None = None
    timeout: float | None = None

    def private_tmp(self) -> str | None:
        """Why the side does NOT get a private /tmp (None: it does)."""
        # cronshift's own code and interpreter must stay visible too: the side runs the job through them.
        code = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sys.prefix)
        under = [p for p in (str(self.root), str(self.scratch), *self.writes, *code) if _under_tmp(p)]
        if under:
            return f"no private /tmp: {under[0]} lies under /tmp and would be hidden"
        return None

    def evidence(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "writes": list(self.writes),
            "dry_run_flag": self.dry_run_flag,
            "private_tmp": self.private_tmp() is None if self.mode == "sandbox" else False,
            "private_tmp_note": self.private_tmp() if self.mode == "sandbox" else None,
        }


def _under_tmp(p: str) -> bool:
    rp = os.path.realpath(p)
    return rp == "/tmp" or rp.startswith("/tmp/")


def with_dry_run(spec: dict[str, Any], flag: str | None) -> dict[str, Any]:
    if not flag:
        raise ValueError("--mode dry-run needs --dry-run-flag TEXT (the job's own flag that changes nothing)")
    return {**spec, "command": f"{spec['command']} {flag}"}


def prepare_scratch(
    setup: SideSetup, label: str
) -> tuple[Path, list[tuple[str, str]], list[tuple[Path, str]]]:
    """A scratch copy of each declared path (owner, mode, times kept) and the binds that cover the originals.

    Returns (side dir, binds [(scratch, real)], snapshot pairs [(scratch, real)])."""
    side = setup.scratch / label
    side.mkdir(parents=True)
    binds: list[tuple[str, str]] = []
    pairs: list[tuple[Path, str]] = []
    for k, w in enumerate(setup.writes):
        copy = side / f"w{k}"
        subprocess.run(["cp", "-a", "--", w, str(copy)], check=True, capture_output=True)
        binds.append((str(copy), w))
        pairs.append((copy, w))
    if setup.private_tmp() is None:
        tmp = side / "tmp"
        tmp.mkdir()
        os.chmod(tmp, 0o1777)
        binds.append((str(tmp), "/tmp"))
    return side, binds, pairs


def _from_result(label: str, res: dict[str, Any]) -> SideRun:
    return SideRun(
        side=label,
        exit_status=res.get("exit_status"),
        signal=res.get("signal"),
        output=res.get("output_tail") or "",
        output_bytes=res.get("output_bytes"),
        duration=float(res.get("duration") or 0.0),
    )


def run_local(spec: dict[str, Any], setup: SideSetup, label: str) -> SideRun:
    """Run `spec` through the runtime on this host, under the side-effect mode; files snapshotted around."""
    from cronshift.runtime.execute import JobFailed, JobRefused, run_job

    if setup.mode == "dry-run":
        spec = with_dry_run(spec, setup.dry_run_flag)
    real_pairs = [(Path(w), w) for w in setup.writes]
    before = snapshot(real_pairs)
    if setup.mode == "sandbox":
        side, binds, pairs = prepare_scratch(setup, label)
        req, res_path = side / "request.json", side / "result.json"
        req.write_text(json.dumps({"spec": spec, "binds": binds}), encoding="utf-8")
        started = time.monotonic()
        try:
            p = subprocess.run(
                [sys.executable, "-m", "cronshift.shadow.sandbox", "run", str(req), str(res_path)],
                capture_output=True,
                text=True,
                timeout=setup.timeout,
            )
        except subprocess.TimeoutExpired:
            return SideRun(
                label,
                None,
                None,
                "",
                None,
                time.monotonic() - started,
                before,
                {},
                error=f"no result within {setup.timeout}s",
            )
        if p.returncode != 0 or not res_path.exists():
            tail = (p.stderr.strip().splitlines() or ["no result"])[-1]
            return SideRun(label, None, None, "", None, time.monotonic() - started, before, {}, error=tail)
        run = _from_result(label, json.loads(res_path.read_text(encoding="utf-8")))
        run.files_before, run.files_after = before, snapshot(pairs)
        return run
    try:
        res = run_job(spec)
    except JobFailed as e:
        res = {
            "exit_status": e.exit_status,
            "signal": e.signal,
            "output_tail": e.tail,
            "duration": e.duration,
        }
    except (JobRefused, KeyError) as e:
        return SideRun(label, None, None, "", None, 0.0, before, before, error=str(e))
    run = _from_result(label, res)
    run.files_before, run.files_after = before, snapshot(real_pairs)
    return run


def new_scratch(root: Path, session: str) -> Path:
    """Scratch space for one shadow session, under the root's state directory (or /var/tmp if unwritable)."""
    base = Path(root, "var/lib/cronshift/shadow/scratch")
    try:
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{session}-", dir=base))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f"cronshift-shadow-{session}-", dir="/var/tmp"))


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
