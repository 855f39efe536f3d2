"""Options every command shares, and the scan every command starts from."""

from __future__ import annotations

import keyword
import os
import shlex
from datetime import datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from cronshift.cli.output import Env, ExitStatus, fail, progress_bar
from cronshift.discover.scan import RootUnreadable, scan
from cronshift.model import Dialect, ScanResult

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
        try:
            t = datetime.fromisoformat(now)
        except ValueError:
            fail(
                Env(), f"--now '{now}' is not an ISO time (e.g. 2026-11-24T10:10:00+01:00)", ExitStatus.USAGE
            )
        return t if t.tzinfo else t.replace(tzinfo=zone)
    return datetime.now(zone).astimezone(zone) if zone else datetime.now().astimezone()


def undo_hint(job_id: str, root: str | Path) -> str:
    """The exact command that undoes a retirement, with --root when it is not / (so pasting it works)."""
    where = f" --root {shlex.quote(os.path.abspath(root))}" if str(root).rstrip("/") else ""
    return f"cronshift retire --undo {shlex.quote(job_id)}{where}"


# Brokers Celery (kombu) has a transport for; anything else fails only when a worker starts, far from here.
CELERY_BROKER_SCHEMES = frozenset(
    ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp", "librabbitmq", "sqs", "memory", "filesystem",
     "mongodb", "zookeeper", "consul", "etcd", "gcpubsub", "azureservicebus", "azurestoragequeues")
)  # fmt: skip
REDIS_SCHEMES = frozenset(("redis", "rediss", "unix"))


def check_url(env: Env, option: str, url: str, schemes: frozenset[str]) -> None:
    """Refuse, as a usage error, a URL whose scheme the consumer of `option` cannot use."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in schemes:
        fail(
            env,
            f"{option} '{url}': the scheme must be one of {', '.join(sorted(schemes))}",
            ExitStatus.USAGE,
        )


def check_package(env: Env, package: str) -> None:
    """A generated package must be importable: an identifier that is not a Python keyword."""
    if not package.isidentifier() or keyword.iskeyword(package) or keyword.issoftkeyword(package):
        fail(env, f"--package '{package}' is not an importable Python name (an identifier, not a keyword)",
             ExitStatus.USAGE)  # fmt: skip
