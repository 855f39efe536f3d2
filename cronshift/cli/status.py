"""`cronshift status`: the migration board, one row per job with its stage and the next command."""

from __future__ import annotations

import shlex
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cronshift.board import MANIFEST, STAGES, BoardRow, build_board, read_project, stage_counts
from cronshift.cli.common import DialectOpt, JsonOpt, RootOpt, do_scan
from cronshift.cli.output import Env, ExitStatus, emit_json, fail, text

Stage = StrEnum("Stage", {s.upper().replace("-", "_"): s for s in STAGES})  # the board's stages, for --stage

STAGE_STYLE = {
    "not-run": "dim",
    "cron": "",
    "wrapped": "cyan",
    "generated": "blue",
    "shadowing": "yellow",
    "differences": "red",
    "parity": "green",
    "retired": "bold green",
}


def check_projects(env: Env, projects: list[Path] | None) -> None:
    """A --project that is not a generate output is a usage error, not a silently empty board."""
    for p in projects or ():
        if read_project(p) is None:
            fail(env, f"{p}: not a `cronshift generate` output (no {MANIFEST} in it)", ExitStatus.USAGE)


def render_board(env: Env, rows: list[BoardRow], root: Path) -> None:
    """A table whose id and stage never fold; the detail folds first, then the next command."""
    table = Table(title=f"migration board for {rows[0].host if rows else root}", expand=False)
    table.add_column("job", no_wrap=True, min_width=max((len(r.job_id) for r in rows), default=3))
    table.add_column("stage", no_wrap=True)
    table.add_column("where it stands", overflow="fold", ratio=3)
    table.add_column("next: cronshift …", overflow="fold", ratio=2)
    root_words = f" --root {shlex.quote(str(root))}"
    for r in rows:
        style = STAGE_STYLE.get(r.stage, "")
        nxt = r.next_command or (f"done; undo: {r.undo_command}" if r.undo_command else "")
        # The id is in the first column and --root is the same on every row: said once, below the table.
        nxt = nxt.replace(f" {shlex.quote(r.job_id)}", " JOB", 1).removesuffix(root_words)
        nxt = nxt.replace(root_words, "").replace("cronshift ", "", 1)
        table.add_row(
            escape(r.job_id),
            f"[{style}]{r.stage}[/]" if style else r.stage,
            escape(text(r.detail) or ""),
            escape(nxt),
        )
    env.out.print(table)
    counts = ", ".join(f"{n} {s}" for s, n in stage_counts(rows).items())
    env.out.print(f"{len(rows)} jobs: {counts}", highlight=False)
    if rows and Path(root).resolve() != Path("/"):
        env.out.print(f"JOB is the row's job; add{root_words} to each command (--json has them whole)")
    elif rows:
        env.out.print("JOB is the row's job (--json has each command whole)")


def status(
    root: RootOpt = Path("/"),
    project: Annotated[
        list[Path] | None,
        typer.Option(
            "--project",
            help="A `cronshift generate` output dir to look in (repeatable), e.g. --project ./migrated.",
        ),
    ] = None,
    store: Annotated[str | None, typer.Option("--store", help="Ledger (SQLite) path.")] = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis ledger URL.")] = None,
    stage: Annotated[
        list[Stage] | None,
        typer.Option("--stage", help="Only jobs at this stage (repeatable), e.g. --stage parity."),
    ] = None,
    json: JsonOpt = False,
    dialect: DialectOpt = None,
) -> None:
    """The migration board: each job's stage and the one command to run next (writes nothing).

    Stages: not-run, cron, wrapped, generated, shadowing, differences, parity, retired. Read from the
    crontabs, the ledger, shadow-run's verdicts, the retire journal and the --project dirs."""
    env = Env()
    check_projects(env, project)
    result = do_scan(env, root, dialect)
    rows = build_board(result, root, projects=list(project or ()), store=store, redis_url=redis)
    if stage:
        rows = [r for r in rows if r.stage in stage]
    if json:
        emit_json(env, {"root": str(root), "jobs": [r.to_dict() for r in rows], "stages": stage_counts(rows)})
        return
    render_board(env, rows, root)
