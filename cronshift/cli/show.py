"""`cronshift show JOB`: everything known about one job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan
from cronshift.cli.output import Env, emit_json, fail, job_to_dict, text
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.discover.timing import describe_schedule, upcoming


def show(
    job: Annotated[str, typer.Argument(help="Job id (or a unique prefix), or PATH:LINE.")],
    root: RootOpt = Path("/"),
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
) -> None:
    """Print everything known about one job."""
    env = Env()
    result = do_scan(env, root, dialect)
    try:
        j = find_job(result, job)
    except JobNotFound as e:
        fail(env, str(e))
    t = clock(now, result.system_timezone)
    d = describe_schedule(j.schedule, result.dialect)
    nxt = upcoming(j, t, result.system_timezone, 5, result.dialect)
    if json:
        emit_json(env, {"root": result.root, "job": job_to_dict(j, d, nxt)})
        return
    tab = Table(show_header=False, title=f"job {j.id}", title_justify="left")
    tab.add_column("field", style="bold")
    tab.add_column("value", overflow="fold")
    tab.add_row("source", f"{j.source} ({j.format})")
    tab.add_row("user", j.user)
    tab.add_row("schedule", f"{j.schedule}  —  {d}")
    tab.add_row("time zone", j.timezone or f"{result.system_timezone or 'system'} (system)")
    tab.add_row("next runs", "\n".join(x.isoformat(sep=" ") for x in nxt) or "—")
    tab.add_row("command", text(j.command) or "")
    if j.stdin is not None:
        tab.add_row("stdin", repr(j.stdin))
    if j.wrappers:
        tab.add_row(
            "guards", "\n".join(f"{w.kind}: {w.meaning}  [dim]({text(w.text)})[/dim]" for w in j.wrappers)
        )
        tab.add_row("inner command", text(j.inner_command) or "")
    tab.add_row("shell", j.shell)
    tab.add_row("environment", "\n".join(f"{k}={text(v)}" for k, v in j.env) or "(cron's defaults only)")
    if j.triggers or j.anacron:
        tab.add_row("run by", "\n".join([*j.triggers, *([j.anacron] if j.anacron else [])]))
    tab.add_row("runs", "yes" if j.runs else "NO: " + "; ".join(j.why_not))
    for w in j.warnings:
        tab.add_row("warning", w)
    env.out.print(tab)
