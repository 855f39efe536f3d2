"""One place that turns results into --json or rich output, and errors into one line and an exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cronshift.cli.voice import JSON_ERRORS
from cronshift.model import CronJob, Problem, Score

# 2: every job object carries `job_id` (the old `id` / `job` keys stay, as aliases, until 3); with --json
#    errors are JSON on stdout too (`{"error": {"message", "exit_status"}}`); `status` and `report` added.
SCHEMA_VERSION = 2


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    DIFFERENCES = 3
    REFUSED = 4


@dataclass
class Env:
    """Where output goes; tests swap in their own streams."""

    stdout: Any = field(default_factory=lambda: sys.stdout)
    stderr: Any = field(default_factory=lambda: sys.stderr)

    @property
    def out(self) -> Console:
        return Console(file=self.stdout, soft_wrap=False, width=None if self.stdout.isatty() else 160)

    @property
    def err(self) -> Console:
        return Console(file=self.stderr, stderr=True)

    @property
    def interactive(self) -> bool:
        try:
            return self.stderr.isatty()
        except (AttributeError, ValueError):
            return False


def text(s: str | None) -> str | None:
    """Make a decoded-with-surrogateescape string printable: undecodable bytes shown as \\xNN."""
    if s is None:
        return None
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def emit_json(env: Env, obj: dict[str, Any]) -> None:
    env.stdout.write(
        json.dumps({"schema_version": SCHEMA_VERSION, **obj}, indent=2, ensure_ascii=False) + "\n"
    )


def say_problem(env: Env, p: Problem) -> None:
    env.stderr.write(f"cronshift: {text(str(p))}\n")


def json_error(message: str, status: int, stdout: Any = None) -> None:
    """The error as --json prints it on stdout: `{"schema_version", "error": {"message", "exit_status"}}`."""
    out = stdout if stdout is not None else sys.stdout
    doc = {"schema_version": SCHEMA_VERSION, "error": {"message": text(message), "exit_status": int(status)}}
    out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def fail(env: Env, message: str, status: ExitStatus = ExitStatus.ERROR) -> NoReturn:
    """One line on stderr and the exit status; with --json, the same error as JSON on stdout too."""
    if JSON_ERRORS.get():
        json_error(message, status, env.stdout)
    env.stderr.write(f"cronshift: {text(message)}\n")
    raise SystemExit(int(status))


@contextmanager
def progress_bar(env: Env, label: str) -> Iterator[Any]:
    """A progress bar on a terminal; a no-op callback when piped, so scripts see nothing."""
    if not env.interactive:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=env.err,
        transient=True,
        # No refresh thread: scan forks a second parser on large trees, which it only does when no other
        # thread runs. The bar is redrawn on each update instead.
        auto_refresh=False,
    ) as prog:
        task = prog.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total, refresh=True)

        yield update


@contextmanager
def busy(env: Env, label: str) -> Iterator[None]:
    """A spinner with the elapsed time on a terminal, for a step with no count to show; nothing when piped."""
    if not env.interactive:
        yield
        return
    with Progress(
        SpinnerColumn(), TextColumn(label), TimeElapsedColumn(), console=env.err, transient=True
    ) as prog:
        prog.add_task(label, total=None)
        yield


def job_to_dict(
    job: CronJob,
    description: str,
    upcoming: list[datetime],
    score: Score | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One job for --json; `score`/`reasons`/`unknown`/`metrics` are null or empty when nothing was ranked."""
    return {
        "job_id": job.id,
        "id": job.id,
        "source": {"path": job.source.path, "line": job.source.line},
        "format": str(job.format),
        "user": job.user,
        "schedule": job.schedule,
        "description": description,
        "next": [t.isoformat() for t in upcoming],
        "timezone": job.timezone,
        "command": text(job.command),
        "shell_command": text(job.shell_command),
        "stdin": text(job.stdin),
        "inner_command": text(job.inner_command),
        "shell": job.shell,
        "env": {k: text(v) for k, v in job.env},
        "runs": job.runs,
        "why_not": list(job.why_not),
        "warnings": list(job.warnings),
        "disabled": job.disabled,
        "retired": job.retired,
        "wrappers": [
            {"kind": w.kind, "text": text(w.text), "meaning": w.meaning, "args": dict(w.args)}
            for w in job.wrappers
        ],
        "anacron_job_id": job.job_id,
        "triggers": list(job.triggers),
        "anacron": job.anacron,
        "random_delay": job.random_delay,
        "no_log": job.no_log,
        "file_sha256": job.digest or None,
        "score": None if score is None else score.value,
        "reasons": []
        if score is None
        else [{"text": text(r.text), "points": r.points, "evidence": r.evidence} for r in score.reasons],
        "unknown": [] if score is None else list(score.unknown),
        "metrics": metrics,
    }
