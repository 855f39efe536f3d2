"""`cronshift report --html FILE`: the self-contained page (ranking, run timeline, durations, board)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cronshift.board import build_board
from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan
from cronshift.cli.evidence import LogOpt, NoHistoryOpt, RedisOpt, SinceOpt, StoreOpt, UntilOpt, load_evidence
from cronshift.cli.output import Env, ExitStatus, emit_json, fail
from cronshift.cli.status import check_projects
from cronshift.rank import rank
from cronshift.report import collect_runs, render_html


def report(
    html_file: Annotated[
        Path, typer.Option("--html", help="Write the page here, e.g. --html report.html.", dir_okay=False)
    ],
    root: RootOpt = Path("/"),
    project: Annotated[
        list[Path] | None,
        typer.Option("--project", help="A `cronshift generate` output dir for the board (repeatable)."),
    ] = None,
    max_jobs: Annotated[
        int, typer.Option("--max-jobs", min=1, help="Jobs in the charts, most painful first, e.g. 20.")
    ] = 15,
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    log: LogOpt = None,
    store: StoreOpt = None,
    redis: RedisOpt = None,
    no_history: NoHistoryOpt = False,
) -> None:
    """Write one self-contained HTML page: runs timeline, durations, pain ranking, the board.

    Everything (charts, data, JavaScript) is inside the file: it opens with no network."""
    env = Env()
    check_projects(env, project)
    result = do_scan(env, root, dialect)
    t = clock(now, result.system_timezone)
    ev = load_evidence(env, result, t, since, until, log, store, redis, no_history)
    ranked = rank(result.jobs, ev, result.system_timezone, result.dialect)
    runs = collect_runs(root, result.jobs, t, ev, extra_logs=log or ())
    board = build_board(result, root, projects=list(project or ()), store=store, redis_url=redis)
    page = render_html(
        host=board[0].host if board else "",
        root=str(root),
        now=t,
        window=ev.window,
        ranked=ranked,
        runs=runs,
        board=board,
        max_jobs=max_jobs,
    )
    tmp = html_file.with_name(f".{html_file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, html_file)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        fail(env, f"{html_file}: cannot write the report: {e.strerror}", ExitStatus.ERROR)
    n_runs = sum(len(v) for v in runs.values())
    if json:
        emit_json(
            env, {"html": str(html_file), "bytes": len(page.encode()), "jobs": len(ranked), "runs": n_runs}
        )
    else:
        env.stdout.write(
            f"{html_file}: {len(ranked)} jobs, {n_runs} runs ({len(page.encode()) // 1024} KiB)\n"
        )
