"""`wrap` / `unwrap`: put `cronshift record --job ID -- ` in front of a job's command, and take it off.

The words go right where the command starts (after the schedule and, in system files, the user column), so
every other byte of the line stays as it was, CR included; unwrap removes exactly those bytes. The write goes
through crontab_edit like every other crontab change. `--job ID` carries the job's id, so the id the job had
before wrapping stays its id (scan takes the id from the wrapper; see the report on issue 4).

`cronshift record -- WORDS` executes WORDS itself, without a shell, so only a simple command can be wrapped:
a shell list (`a && b`, `a; b`, a pipe, a subshell), a builtin (`cd`, `.`, `exec`) or an assignment in front
would be broken or only half recorded. Those are refused with the reason; put them in a script first.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cronshift import crontab_edit as ce
from cronshift.crontab_edit import EditJournal, EditRecord, LineEdit
from cronshift.model import CronJob, Format
from cronshift.retire import SAFE_ID, RetireRefused, unified_diff

WRAPPER_KIND = "cronshift-record"
# Shell words that are not programs `cronshift record` could execute, or that start a compound command.
_WORDS = (
    "if then else elif fi case esac for while until do done { } ! [[ ]] function select time cd . source "
    "exec export eval set unset alias unalias ulimit umask trap readonly local return exit shift builtin "
    "command wait read type hash times break continue declare typeset let"
)
_NOT_PROGRAMS = frozenset(_WORDS.split())


class WrapRefused(RetireRefused):
    """Nothing was changed: this job cannot be wrapped or unwrapped; the message says why."""


@dataclass(frozen=True)
class WrapPlan:
    job_id: str
    path: str
    line: int
    before: bytes
    after: bytes
    expected_sha256: str
    diff: str
    action: str  # "wrap" | "unwrap"


def wrapper_words(job_id: str, store: str | None = None, redis_url: str | None = None) -> str:
    """The words put in front of the command, ending in `-- ` (one blank, which unwrap takes off again)."""
    words = ["cronshift", "record", "--job", shlex.quote(job_id)]
    if store:
        words += ["--store", shlex.quote(store)]
    if redis_url:
        words += ["--redis", shlex.quote(redis_url)]
    return " ".join(words) + " -- "


def not_simple(command: str) -> str | None:
    """Why `command` is not one simple command the wrapper can execute, or None when it is."""
    first = command.lstrip(" \t").split(None, 1)[0] if command.strip(" \t") else ""
    if first in _NOT_PROGRAMS:
        return f"it starts with the shell word `{first}`, which no program can run"
    if "=" in first.split("'", 1)[0].split('"', 1)[0]:
        return f"it starts with the assignment `{first}`"
    quote, escaped, subst, backtick, prev, at_word_start = "", False, 0, False, "", True
    for c in command:
        if escaped:
            escaped, prev, at_word_start = False, c, False
            continue
        if c == "\\" and quote != "'":
            escaped = True
            continue
        if quote:
            if c == quote:
                quote = ""
            elif quote == '"' and c == "`":
                backtick = not backtick
            prev = c
            continue
        if c in "'\"":
            quote = c
        elif c == "`":
            backtick = not backtick
        elif backtick:
            pass
        elif subst:
            subst += {"(": 1, ")": -1}.get(c, 0)
        elif c == "(" and prev == "$":
            subst = 1
        elif c == "#" and at_word_start:
            break  # a comment: the shell ignores the rest of the line
        elif c == "\n":
            return "it spans several lines"
        elif c == ";":
            return "it is a shell list (`;`): the wrapper would record only the first command"
        elif c == "|" and prev != ">":
            return "it is a pipeline or list (`|`, `||`): the wrapper would record only the first command"
        elif c == "&" and prev not in "<>":
            return "it is a shell list or runs in the background (`&`, `&&`)"
        elif c in "()":
            return "it has a subshell `( ... )`"
        at_word_start = c in " \t"
        prev = c
    return None


def _command_span(before: bytes, job: CronJob) -> int:
    """Byte offset in the line where the command starts (the line ends with the command, then LF or not)."""
    cmd = job.command.encode("utf-8", "surrogateescape")
    body = before[:-1] if before.endswith(b"\n") else before
    if not cmd or not body.endswith(cmd):
        raise WrapRefused(job.source.path, job.source.line, "cannot find the command in the line")
    return len(body) - len(cmd)


def _read_line(root: Path, job: CronJob) -> tuple[bytes, list[bytes], str]:
    path, n = job.source.path, job.source.line
    if job.format is Format.RUN_PARTS or n is None:
        raise WrapRefused(
            path,
            None,
            "a run-parts script has no command line to wrap: wrap the line that runs its folder, or "
            "call `cronshift record` inside the script",
        )
    if job.retired or job.disabled:
        raise WrapRefused(path, n, f"{job.id} does not run (retired or commented out); nothing to wrap")
    try:
        data = Path(root, path).read_bytes()
    except OSError as exc:
        raise WrapRefused(path, n, f"cannot read it: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if job.digest and digest != job.digest:
        raise WrapRefused(path, n, "the file changed since it was scanned; scan again")
    lines = ce.split_lines(data)
    if not 1 <= n <= len(lines):
        raise WrapRefused(path, n, f"no such line (the file has {len(lines)})")
    return lines[n - 1], lines, digest


def _plan(
    job: CronJob, lines: list[bytes], digest: str, before: bytes, after: bytes, action: str
) -> WrapPlan:
    n = job.source.line
    assert n is not None
    new = b"".join(lines[: n - 1]) + after + b"".join(lines[n:])
    diff = unified_diff(job.source.path, b"".join(lines), new)
    return WrapPlan(job.id, job.source.path, n, before, after, digest, diff, action)


def plan_wrap(
    root: Path, job: CronJob, *, store: str | None = None, redis_url: str | None = None
) -> WrapPlan:
    before, lines, digest = _read_line(root, job)
    if not SAFE_ID.fullmatch(job.id):
        raise WrapRefused(job.source.path, job.source.line, f"job id {job.id!r} is not a plain id")
    if any(w.kind == WRAPPER_KIND for w in job.wrappers) or "cronshift record" in job.command:
        raise WrapRefused(
            job.source.path, job.source.line, f"{job.id} is already wrapped by cronshift record"
        )
    for value, what in ((store, "--store"), (redis_url, "--redis")):
        if value and any(c in value for c in "%\n\r"):
            raise WrapRefused(
                job.source.path, job.source.line, f"{what} may not hold '%' or a line break in a crontab"
            )
    shell_command = job.command if job.format is Format.ANACRONTAB else job.shell_command
    why = not_simple(shell_command)
    if why:
        raise WrapRefused(
            job.source.path,
            job.source.line,
            f"cannot wrap {job.id}: {why}; put the command in a script first",
        )
    at = _command_span(before, job)
    after = before[:at] + wrapper_words(job.id, store, redis_url).encode("utf-8") + before[at:]
    return _plan(job, lines, digest, before, after, "wrap")


def plan_unwrap(root: Path, job: CronJob) -> WrapPlan:
    before, lines, digest = _read_line(root, job)
    outer = job.wrappers[0] if job.wrappers else None
    if outer is None or outer.kind != WRAPPER_KIND:
        raise WrapRefused(job.source.path, job.source.line, f"{job.id} is not wrapped by cronshift record")
    if not job.command.startswith(outer.text):
        raise WrapRefused(
            job.source.path,
            job.source.line,
            "`cronshift record` is not at the very start of the command; unwrap it by hand",
        )
    at = _command_span(before, job)
    cut = len(outer.text.encode("utf-8", "surrogateescape"))
    if before[at + cut : at + cut + 1] in (b" ", b"\t"):
        cut += 1
    after = before[:at] + before[at + cut :]
    return _plan(job, lines, digest, before, after, "unwrap")


def apply_plan(
    root: Path,
    plan: WrapPlan,
    *,
    now: datetime,
    journal: EditJournal | None = None,
    lock_timeout: float = 10.0,
) -> EditRecord:
    edit = LineEdit(
        plan.path, plan.line, plan.before, plan.after, plan.expected_sha256, f"{plan.action} {plan.job_id}"
    )
    return ce.apply_edit(Path(root), edit, now=now.timestamp(), journal=journal, lock_timeout=lock_timeout)
