"""The Typer app: each command lives in its own module and only parses options and renders."""

from __future__ import annotations

import typer

from cronshift.cli import deadletters as deadletters_cmd
from cronshift.cli import generate as generate_cmd
from cronshift.cli import report as report_cmd
from cronshift.cli import retire as retire_cmd
from cronshift.cli import scan as scan_cmd
from cronshift.cli import shadow_run as shadow_run_cmd
from cronshift.cli import show as show_cmd
from cronshift.cli import status as status_cmd
from cronshift.cli import wrap as wrap_cmd

app = typer.Typer(
    name="cronshift",
    help="Move cron jobs, safely and provably, to event-driven Celery tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("scan")(scan_cmd.scan)
app.command("show")(show_cmd.show)
app.command("generate")(generate_cmd.generate)
app.command("shadow-run")(shadow_run_cmd.shadow_run)
app.command("retire")(retire_cmd.retire)
app.command("status")(status_cmd.status)
app.command("report")(report_cmd.report)
app.command("dead-letters")(deadletters_cmd.dead_letters)
app.command("wrap")(wrap_cmd.wrap)
app.command("unwrap")(wrap_cmd.unwrap)


@app.command(
    "record",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def record(ctx: typer.Context) -> None:
    """Run a command and record its run (start, end, exit status, output digests), invisibly to the job.

    Usage: cronshift record [--job ID] [--store PATH] [--redis URL] [--root DIR] -- CMD ARGS..."""
    from cronshift.record import main as record_main

    raise SystemExit(record_main(list(ctx.args)))


def run(argv: list[str]) -> None:
    try:
        app(args=argv, prog_name="cronshift", standalone_mode=True)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
