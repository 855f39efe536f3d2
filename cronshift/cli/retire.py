"""`cronshift retire`: the gate, the diff, then the one-line edit (or a script's execute bits); undo; list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan, undo_hint
from cronshift.cli.output import Env, ExitStatus, emit_json, fail, text
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.edit.crontab import EditFailed, EditRefused
from cronshift.edit.retire import (
    GateResult,
    apply_retire,
    list_retired,
    plan_retire,
    shadow_gate,
    trace_id,
    undo_retire,
)


def _refused(env: Env, exc: EditRefused) -> NoReturn:
    """A refusal changed nothing (exit 4); a failed write is an error (exit 1) and says what was kept."""
    fail(env, str(exc), ExitStatus.ERROR if isinstance(exc, EditFailed) else ExitStatus.REFUSED)


def _gate_dict(g: GateResult) -> dict[str, Any]:
    return {"ok": g.ok, "missing": list(g.missing), "source": g.source or None}


def _list(env: Env, root: Path, json: bool) -> None:
    found = list_retired(root)
    if json:
        emit_json(env, {"root": str(root), "retired": [{"job_id": r.job_id, **r.to_dict()} for r in found]})
        return
    table = Table(title=f"jobs retired under {root}")
    for col in ("job", "date", "where", "how", "backup / mode", "to", "reason"):
        table.add_column(col, overflow="fold")
    for r in found:
        where = f"{r.path}:{r.line}" if r.line else r.path
        if not r.present:
            where += " [red](marker no longer in the file)[/red]"
        how = "marker line" if r.kind == "line" else "execute bits cleared"
        kept = r.backup_path or f"{r.mode_before:04o} -> {r.mode_after:04o}"
        table.add_row(r.job_id, r.date, where, how, kept, r.to or "", text(r.reason) or "")
    env.out.print(table)
    env.out.print(f"{len(found)} retired")


def retire(
    job: Annotated[str | None, typer.Argument(help="Job id (or a unique prefix), or PATH:LINE.")] = None,
    root: RootOpt = Path("/"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the change and the gate; write nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Retire without shadow-run parity (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why; recorded with the edit.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="The task that replaces the job (recorded).")] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Put a retired job back exactly as it was.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List retired jobs and their backups.")] = False,
    store: Annotated[
        str | None, typer.Option("--store", help="Ledger to read the shadow verdict from.")
    ] = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis ledger URL for the verdict.")] = None,
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
) -> None:
    """Take a job out of cron once shadow-run showed parity (exit 4 when the gate refuses); --undo, --list."""
    env = Env()
    if list_ and (job or undo or force or dry_run):
        fail(env, "--list takes no JOB and no --undo, --force or --dry-run", ExitStatus.USAGE)
    if undo and (force or dry_run or to):
        fail(env, "--undo takes no --force, --dry-run or --to", ExitStatus.USAGE)
    if list_:
        _list(env, root, json)
        return
    if not job:
        fail(env, "give a JOB (or --list)", ExitStatus.USAGE)
    if force and not (reason or "").strip():
        fail(env, "--force needs --reason TEXT: say why the shadow-run gate is overruled", ExitStatus.USAGE)
    result = do_scan(env, root, dialect)
    t = clock(now, result.system_timezone)
    try:
        j = find_job(result, job)
        job_id = j.id
    except JobNotFound as e:
        if not undo:
            went = trace_id(root, job)
            fail(env, f"{e}: {went}" if went else str(e), ExitStatus.USAGE)
        job_id, j = job, None  # the line may be gone from scan; the journal still knows the job
    if undo:
        try:
            r = undo_retire(root, job_id, now=t)
        except EditRefused as exc:
            _refused(env, exc)
        if json:
            emit_json(env, {"action": "undo", "job_id": r.job_id, "job": r.job_id, "restored": r.to_dict()})
        else:
            where = f"{r.path}:{r.line}" if r.line else f"{r.path} (mode {r.mode_before:04o})"
            env.stdout.write(f"restored {r.job_id}: {where}\n")
        return
    assert j is not None
    try:
        plan = plan_retire(root, j, now=t)
    except EditRefused as exc:
        _refused(env, exc)
    gate = shadow_gate(root, j, store=store, redis_url=redis)
    out: dict[str, Any] = {
        "action": "retire",
        "job_id": j.id,
        "job": j.id,
        "kind": plan.kind,
        "path": plan.path,
        "line": plan.line,
        "diff": plan.diff,
        "gate": _gate_dict(gate),
        "forced": force and not gate.ok,
        "dry_run": dry_run,
        "applied": False,
        "retirement": None,
    }
    if not json:
        env.stdout.write(plan.diff)
    if dry_run or not (gate.ok or force):
        if json:
            emit_json(env, out)
        elif gate.ok:
            env.stdout.write(f"gate: shadow-run parity ({gate.source})\n")
        for m in gate.missing:
            env.stderr.write(f"cronshift: {plan.path}: gate: {text(m)}\n")
        if dry_run:
            return
        fail(
            env,
            f"{j.id}: not retired: the shadow-run gate refused (see above; --force --reason TEXT overrules)",
            ExitStatus.REFUSED,
        )
    try:
        r = apply_retire(root, plan, now=t, reason=reason, forced=not gate.ok, to=to)
    except EditRefused as exc:
        _refused(env, exc)
    if json:
        emit_json(env, out | {"applied": True, "retirement": r.to_dict()})
        return
    where = f"{r.path}:{r.line}" if r.line else f"{r.path} (mode {r.mode_before:04o} -> {r.mode_after:04o})"
    kept = f", backup {r.backup_path}" if r.backup_path else ""
    env.stdout.write(f"retired {r.job_id}: {where}{kept}; undo with `{undo_hint(r.job_id, root)}`\n")
