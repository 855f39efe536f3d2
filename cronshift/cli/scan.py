"""`cronshift scan`: every cron job under a root, ranked, each with why it may not run."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan
from cronshift.cli.output import Env, emit_json, job_to_dict, say_problem, text
from cronshift.discover.timing import describe_schedule, upcoming


def scan(
    root: RootOpt = Path("/"),
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
    all_jobs: bool = False,
) -> None:
    """Find every cron job (crontab, cron.d, user spools, run-parts folders, anacrontab)."""
    env = Env()
    result = do_scan(env, root, dialect)
    t = clock(now, result.system_timezone)
    for p in result.problems:
        say_problem(env, p)
    rows = [
        (
            j,
            describe_schedule(j.schedule, result.dialect),
            upcoming(j, t, result.system_timezone, 3, result.dialect),
        )
        for j in result.jobs
    ]
    if json:
        emit_json(
            env,
            {
                "root": result.root,
                "dialect": result.dialect,
                "timezone": result.system_timezone,
                "jobs": [job_to_dict(j, d, u) for j, d, u in rows],
                "disabled": [
                    job_to_dict(j, describe_schedule(j.schedule, result.dialect), []) for j in result.disabled
                ],
                "problems": [
                    {"path": p.path, "line": p.line, "message": text(p.message), "severity": p.severity}
                    for p in result.problems
                ],
                "files": list(result.files),
            },
        )
        return
    table = Table(title=f"cron jobs under {result.root}", show_lines=False, expand=False)
    for col in ("id", "user", "schedule", "command", "source", "status"):
        table.add_column(col, overflow="fold" if col == "command" else "ellipsis")
    for j, d, _ in rows:
        status = "runs" if j.runs else "[red]never: " + "; ".join(j.why_not) + "[/red]"
        if j.runs and j.warnings:
            status = "[yellow]runs, but " + j.warnings[0] + "[/yellow]"
        cmd = text(j.inner_command or j.command) or ""
        guards = ", ".join(w.kind for w in j.wrappers)
        table.add_row(
            j.id,
            j.user,
            f"{j.schedule}\n[dim]{d}[/dim]",
            (cmd[:90] + "…" if len(cmd) > 90 else cmd) + (f"\n[dim]guards: {guards}[/dim]" if guards else ""),
            str(j.source),
            status,
        )
    env.out.print(table)
    never = sum(1 for j in result.jobs if not j.runs)
    env.out.print(
        f"{len(result.jobs)} jobs ({never} never run), {len(result.disabled)} commented out, "
        f"{len(result.problems)} problems in {len(result.files)} files"
    )
