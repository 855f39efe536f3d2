"""The Typer app: each command lives in its own module and only parses options and renders."""

from __future__ import annotations

import os
import sys
from typing import Annotated
from zoneinfo import ZoneInfoNotFoundError

import typer
import typer.main
from typer._click.exceptions import ClickException

from cronshift import __version__
from cronshift.cli import deadletters as deadletters_cmd
from cronshift.cli import generate as generate_cmd
from cronshift.cli import report as report_cmd
from cronshift.cli import retire as retire_cmd
from cronshift.cli import scan as scan_cmd
from cronshift.cli import shadow_run as shadow_run_cmd
from cronshift.cli import show as show_cmd
from cronshift.cli import status as status_cmd
from cronshift.cli import wrap as wrap_cmd
from cronshift.cli.output import ExitStatus, json_error
from cronshift.cli.voice import JSON_ERRORS, friendly_help, wants_json

app = typer.Typer(
    name="cronshift",
    help="Move cron jobs, safely and provably, to event-driven Celery tasks.\n\n"
    "Exit codes (every command): 0 ok, 1 the operation failed, 2 usage error or unknown job, "
    "3 a difference was found (generate's proof, shadow-run), 4 a safety gate refused (retire, wrap).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cronshift {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Move cron jobs, safely and provably, to event-driven Celery tasks."""


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
    from cronshift.record import main as record_main  # deferred: ~7 ms (measured) no other command needs

    raise SystemExit(record_main(list(ctx.args)))


def run(argv: list[str]) -> None:
    """The one place errors become exit codes: a command's own refusals exit through `fail` (one line, a
    documented status); anything that escapes it is still one line and exit 1, never a traceback (set
    CRONSHIFT_DEBUG=1 to see one). With --json, errors are also JSON on stdout."""
    command = friendly_help(typer.main.get_command(app))
    as_json = wants_json(argv)
    token = JSON_ERRORS.set(as_json)
    try:
        if not as_json:
            command.main(args=argv, prog_name="cronshift", standalone_mode=True)
            return
        try:
            command.main(args=argv, prog_name="cronshift", standalone_mode=False)
        except typer.Exit as e:
            raise SystemExit(e.exit_code) from None
        except typer.Abort:
            raise SystemExit(1) from None
        except ClickException as e:
            # A usage error under --json: the JSON error on stdout, the usual message on stderr.
            from typer import rich_utils  # deferred: rich's error formatting, only on a usage error

            json_error(e.format_message(), e.exit_code)
            rich_utils.rich_format_error(e)
            raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # the last resort: see the docstring
        if os.environ.get("CRONSHIFT_DEBUG"):
            raise
        if as_json:
            json_error(one_line(exc), ExitStatus.ERROR)
        sys.stderr.write(f"cronshift: {one_line(exc)}\n")
        raise SystemExit(int(ExitStatus.ERROR)) from None
    finally:
        JSON_ERRORS.reset(token)  # for this invocation only: a caller's next one in this process decides anew


def one_line(exc: BaseException) -> str:
    """An error as the user needs it: the file it is about and what went wrong, on one line."""
    if isinstance(exc, ZoneInfoNotFoundError):  # Celery needs a zone even for UTC
        return f"this host has no time-zone database ({exc}): install tzdata (the OS package or pip's)"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return f"{msg} ({type(exc).__name__})"
