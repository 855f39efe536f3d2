"""`cronshift wrap` / `unwrap`: put `cronshift record` in front of a job's command, or take it off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan
from cronshift.cli.output import Env, ExitStatus, emit_json, fail
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.edit.crontab import EditFailed, EditRefused
from cronshift.edit.wrap import WrapPlan, apply_plan, plan_unwrap, plan_wrap
from cronshift.model import CronJob, Dialect

JobArg = Annotated[str, typer.Argument(help="Job id (or a unique prefix), or PATH:LINE.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the change; write nothing.")]


def _run(
    root: Path,
    job: str,
    dialect: Dialect | None,
    now: str | None,
    json: bool,
    dry_run: bool,
    make: Callable[[CronJob], WrapPlan],
) -> None:
    """Scan, plan, show the diff, write through edit.crontab; a refusal is exit 4 and changes nothing."""
    env = Env()
    result = do_scan(env, root, dialect)
    try:
        j = find_job(result, job)
    except JobNotFound as e:
        fail(env, str(e), ExitStatus.USAGE)
    try:
        plan = make(j)
        if not json:
            env.stdout.write(plan.diff)
        rec = None if dry_run else apply_plan(root, plan, now=clock(now, result.system_timezone))
    except EditRefused as exc:
        fail(env, str(exc), ExitStatus.ERROR if isinstance(exc, EditFailed) else ExitStatus.REFUSED)
    if json:
        emit_json(
            env,
            {
                "action": plan.action,
                "job_id": plan.job_id,
                "job": plan.job_id,
                "path": plan.path,
                "line": plan.line,
                "diff": plan.diff,
                "dry_run": dry_run,
                "applied": rec is not None,
                "edit_id": rec.id if rec else None,
                "backup": rec.backup_path if rec else None,
            },
        )
    elif rec is not None:
        env.stdout.write(
            f"{plan.action}ped {plan.job_id}: {plan.path}:{plan.line}, backup {rec.backup_path}\n"
        )


def wrap(
    job: JobArg,
    root: RootOpt = Path("/"),
    store: Annotated[str | None, typer.Option("--store", help="Ledger path the wrapper writes to.")] = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL the wrapper writes to.")] = None,
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            help="Python that has cronshift installed, for the wrapper (default: this one, then those of "
            "installed cronshift scripts). Checked as the job's user under cron's environment.",
        ),
    ] = None,
    digest: Annotated[
        bool,
        typer.Option(
            "--digest",
            help="Hash the job's output even where its line redirects it to a file (the job then writes "
            "to a pipe, not its file). Live shadow-run asks for it.",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
) -> None:
    """Put `cronshift record --job ID --` in front of a job's command, so its runs leave a history."""
    _run(
        root,
        job,
        dialect,
        now,
        json,
        dry_run,
        lambda j: plan_wrap(
            root, j, store=store, redis_url=redis, python=python, dry_run=dry_run, digest=digest
        ),
    )


def unwrap(
    job: JobArg,
    root: RootOpt = Path("/"),
    dry_run: DryRunOpt = False,
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
) -> None:
    """Take `cronshift record` off a job's command again, leaving the line as it was before `wrap`."""
    _run(root, job, dialect, now, json, dry_run, lambda j: plan_unwrap(root, j))
