"""Run one side of a shadow pair (the cron path, or the generated event path) under a side-effect mode.

Modes:
- sandbox (default): the side runs in its own mount and PID namespaces over a copy-on-write view of the
  whole host (sandbox.py): every write, declared or not, lands in that side's own layer, which is read and
  compared. Nothing real is written. Where the kernel refuses, the session says so and judges nothing.
- allow: the side really runs (the user asserts the job is idempotent); each side's own changes to the
  declared paths (before -> after that side) are compared, never the end state both share.
- dry-run: the job's own dry-run flag is appended (both sides) and side effects are accepted as skipped.

The cron side runs `cronshift.runtime.execute.run_job` with the job's spec (shell, cron env, user, home,
`%` stdin, own process group). The event side imports the generated project and applies the real task
object (Celery's `apply()`): what is judged is the code a worker will run. Either way the whole output
is copied to the session (CRONSHIFT_OUTPUT_COPY), so nothing is judged on a tail.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cronshift.model import CronJob
from cronshift.runtime.execute import OUTPUT_COPY_ENV
from cronshift.runtime.spec import SPEC_VERSION, JobSpec
from cronshift.shadow.compare import SideRun

__all__ = [
    "MODES",
    "SideSetup",
    "cron_spec",
    "new_scratch",
    "remove_scratch",
    "run_side",
    "sandbox_available",
]

MODES = ("sandbox", "allow", "dry-run")
HELPER_MARGIN = 60.0  # seconds the helper gets beyond the side's own timeout to kill, wait and read layers


def cron_spec(job: CronJob) -> JobSpec:
    """The runtime spec of the job exactly as cron has it (the shape `cronshift generate` embeds as SPEC).

    Built here from the crontab line on purpose, not with generate.common.job_spec: the cron side is the
    reference the generated SPEC is compared against, so a mistake in job_spec must not reach both sides."""
    return {
        "version": SPEC_VERSION,
        "id": job.id,
        "user": job.user,
        "shell": job.shell,
        "env": [list(kv) for kv in job.env],
        "command": job.shell_command or job.command,
        "stdin": job.stdin,
        "source": str(job.source),
    }


def sandbox_available() -> str | None:
    """None when a private mount + PID namespace with an overlay over `/` works here; else one line why."""
    if os.geteuid() != 0:
        return "sandbox mode needs root (private mount namespaces, overlayfs); use --mode dry-run or allow"
    probe = tempfile.mkdtemp(prefix="cronshift-probe-", dir="/var/tmp")
    code = (
        "import sys; from cronshift.shadow import sandbox as s; s.private_namespace(pid=True); "
        "s.build_view({'mount': sys.argv[1], 'channel': sys.argv[1]})"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code, probe], capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["unshare failed"])[-1]
        return f"the kernel refuses the sandbox (mount namespace + overlayfs): {last}"
    return None


@dataclass
class SideSetup:
    """How to run the sides: mode, declared write paths (absolute), scratch, scratch-store environment."""

    mode: str
    writes: tuple[str, ...]
    scratch: Path  # a directory this session owns; each side run gets a subdirectory
    root: Path
    dry_run_flag: str | None = None
    timeout: float | None = None
    store_env: dict[str, str] = field(default_factory=dict)  # the session's scratch ledger/state store

    def evidence(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "writes": list(self.writes),
            "dry_run_flag": self.dry_run_flag,
            "sandbox": "overlayfs over every real filesystem, private mount and PID namespaces"
            if self.mode == "sandbox"
            else None,
        }


def not_compared(setup: SideSetup) -> list[str]:
    """Writes that are not the job's: the session's scratch, and cronshift's own records of the run under
    the root (a wrapped line's `cronshift record` spools its run record, the runtime writes the ledger).
    Those hold pids and times, so they differ in every pair without telling anything about the job."""
    root = os.path.realpath(setup.root)
    return [str(setup.scratch), *(os.path.join(root, *d) for d in OWN_STATE)]


OWN_STATE = (("var", "spool", "cronshift"), ("var", "lib", "cronshift"))


def with_dry_run(spec: dict[str, Any], flag: str | None) -> dict[str, Any]:
    if not flag:
        raise ValueError("--mode dry-run needs --dry-run-flag TEXT (the job's own flag that changes nothing)")
    return {**spec, "command": f"{spec['command']} {flag}"}


def _file_state(path: str) -> dict[str, Any]:
    st = os.lstat(path)
    e: dict[str, Any] = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISLNK(st.st_mode):
        return e | {"type": "symlink", "link": os.readlink(path)}
    if stat.S_ISDIR(st.st_mode):
        return e | {"type": "dir"}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return e | {"type": "file", "size": st.st_size, "sha256": h.hexdigest(), "mtime_ns": st.st_mtime_ns}


def _snapshot(writes: tuple[str, ...], keep: Path | None = None) -> dict[str, dict[str, Any]]:
    """The declared paths' state; with `keep`, a copy of each file too (allow mode: to find appends)."""
    out: dict[str, dict[str, Any]] = {}
    paths: list[str] = []
    for w in writes:
        if os.path.isdir(w) and not os.path.islink(w):
            for dirpath, dirs, files in os.walk(w):
                paths += [os.path.join(dirpath, n) for n in sorted(dirs) + sorted(files)]
        elif os.path.lexists(w):
            paths.append(w)
    for p in paths:
        out[p] = _file_state(p)
        if keep is not None and out[p]["type"] == "file":
            dest = keep / "before" / p.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
            out[p]["before_copy"] = str(dest)
    return out


def _is_prefix(before: str, after: str) -> bool:
    n = os.path.getsize(before)
    with open(before, "rb") as a, open(after, "rb") as b:
        while n > 0:
            x, y = a.read(min(n, 1 << 20)), b.read(min(n, 1 << 20))
            if x != y:
                return False
            n -= len(x)
    return True


def _own_changes(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], keep: Path
) -> list[dict[str, Any]]:
    """allow mode: what this side itself changed (its before -> its after), with a copy of what it wrote."""
    out: list[dict[str, Any]] = []
    for p in sorted(set(before) | set(after)):
        a, b = before.get(p), after.get(p)
        if b is None:
            out.append({"path": p, "change": "deleted"})
            continue
        strip = {k: v for k, v in (a or {}).items() if k not in ("before_copy", "mtime_ns")}
        state = {k: v for k, v in b.items() if k != "mtime_ns"}
        if strip == state and (a or {}).get("mtime_ns") == b.get("mtime_ns"):
            continue
        # Same bytes with a newer mtime is a rewrite (a regenerated file, a touch): the write is this side's
        # effect, so it counts and the other side must make it too, as in the sandbox's overlay layer.
        c = {"path": p, "change": "created" if a is None else "changed", **state}
        if b["type"] == "file":
            dest = keep / "after" / p.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            prior = (a or {}).get("before_copy")
            grew = a is not None and b.get("size", 0) > a.get("size", 0)
            if prior and a and a.get("type") == "file" and grew and _is_prefix(prior, p):
                # Appended: this side's own change is what it added, whatever was there before it.
                with open(p, "rb") as src, open(dest, "wb") as f:
                    src.seek(os.path.getsize(prior))
                    shutil.copyfileobj(src, f)
                h = hashlib.sha256(dest.read_bytes()).hexdigest()
                c |= {"change": "appended", "sha256": h, "size": dest.stat().st_size}
            else:
                shutil.copyfile(p, dest)
            c["copy"] = str(dest)
        out.append(c)
    return out


def run_side(setup: SideSetup, label: str, action: dict[str, Any]) -> SideRun:
    """One side run: `action` is {"action": "job", "spec": ...} or {"action": "task", "project": ...,
    "module": ...}. Returns what it did; a failure of the generated code is in `error`, never raised."""
    side = setup.scratch / label
    chan, layer, mnt = side / "channel", side / "layer", side / "mnt"
    for d in (chan, layer, mnt):
        d.mkdir(parents=True)
    chan.chmod(0o700)
    output = chan / "output"
    (
        side / "tmp"
    ).mkdir()  # the interpreter's own temporary files; never the job's (cron's env has no TMPDIR)
    req = {
        **action,
        "env": {
            **setup.store_env,
            **(action.get("env") or {}),
            OUTPUT_COPY_ENV: str(output),
            "TMPDIR": str(side / "tmp"),
        },
        "mount": str(mnt),
        "channel": str(chan),
        "layer_out": str(layer),
        "exclude": not_compared(setup),
        "timeout": setup.timeout,
        "isolate": setup.mode == "sandbox",
    }
    if setup.mode == "dry-run":
        if action["action"] == "job":
            req["spec"] = with_dry_run(action["spec"], setup.dry_run_flag)
        else:
            req["append_flag"] = setup.dry_run_flag
    (side / "request.json").write_text(json.dumps(req), encoding="utf-8")
    before = _snapshot(setup.writes, layer) if setup.mode == "allow" else {}
    wall = time.time()
    started = time.monotonic()
    cmd = [sys.executable, "-m", "cronshift.shadow.sandbox", str(side / "request.json")]
    backstop = None if setup.timeout is None else setup.timeout + HELPER_MARGIN
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=backstop, env=env)
    except subprocess.TimeoutExpired:
        return SideRun(label, None, None, "", None, time.monotonic() - started, error="sandbox helper hung",
                       meta={"infra": True})  # fmt: skip
    res_path = chan / "result.json"
    if not res_path.exists():
        tail = (p.stderr.strip().splitlines() or ["no result"])[-1]
        return SideRun(
            label, None, None, "", None, time.monotonic() - started, error=tail, meta={"infra": True}
        )
    res = json.loads(res_path.read_text(encoding="utf-8"))
    run = side_from_result(label, res, output, setup, before, layer)
    run.started = wall
    return run


def side_from_result(
    label: str,
    res: dict[str, Any],
    output: Path,
    setup: SideSetup,
    before: dict[str, dict[str, Any]],
    keep: Path,
) -> SideRun:
    meta: dict[str, Any] = {}
    error = None
    if res.get("sandbox_error"):
        error, meta["infra"] = f"sandbox: {res['sandbox_error']}", True
    elif res.get("task_error"):
        error = str(res["task_error"])
    elif res.get("timed_out") or res.get("error"):
        error = str(res.get("error"))
    for k in ("task_id", "spec"):
        if res.get(k):
            meta[k] = res[k]
    if not error and not output.exists():
        meta["ran_command"] = False
    changes = res.get("layer") or []
    if setup.mode == "allow":
        changes = _own_changes(before, _snapshot(setup.writes), keep)
    tail = ""
    if output.exists():
        with open(output, "rb") as f:
            f.seek(max(0, output.stat().st_size - 4096))
            tail = f.read().decode("utf-8", "replace")
    duration = res.get("duration_end_to_end")
    if duration is None:
        duration = res.get("duration") or res.get("elapsed") or 0.0
    return SideRun(
        label,
        res.get("exit_status"),
        res.get("signal"),
        tail,
        output.stat().st_size if output.exists() else None,
        float(duration),
        changes,
        error,
        meta,
        str(output) if output.exists() else None,
        list(res.get("notes") or []),
    )


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
