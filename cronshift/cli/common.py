"""Options every command shares, and the scan every command starts from."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from cronshift.cli.output import Env, ExitStatus, fail, progress_bar
from cronshift.discover.scan import RootUnreadable, scan
from cronshift.discover.schedule import Dialect
from cronshift.model import ScanResult

RootOpt = Annotated[
    Path, typer.Option("--root", help="Filesystem root to read cron from (a copy of a server works).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (see README for the schema).")]
DialectOpt = Annotated[
    Dialect | None, typer.Option("--dialect", help="Cron dialect (default: detected from the root).")
]
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        help="Pretend it is this ISO 8601 time, for reproducible output "
        "(e.g. --now 2026-11-24T10:10:00+01:00; default: the clock).",
    ),
]


def do_scan(env: Env, root: Path, dialect: Dialect | None) -> ScanResult:
    try:
        with progress_bar(env, "scanning") as update:
            return scan(root, dialect=dialect, progress=update)
    except RootUnreadable as e:
        fail(env, str(e), ExitStatus.ERROR)


def clock(now: str | None, tz: str | None) -> datetime:
    """The one place the CLI reads the wall clock; everything below takes `now` as an argument."""
    try:
        zone = ZoneInfo(tz) if tz else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if now:
        t = datetime.fromisoformat(now)
        return t if t.tzinfo else t.replace(tzinfo=zone)
    return datetime.now(zone).astimezone(zone) if zone else datetime.now().astimezone()
