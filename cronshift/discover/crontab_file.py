"""A crontab file as a list of lines that keep their exact bytes, and what each line means to cron.

This is the model `retire` edits: rendering an untouched file gives back the same bytes, so changing one line
can never disturb another. Meaning follows Debian/Vixie cron 3.0pl1 (and cronie where it differs): cron
splits on LF only, so a CR stays part of the line (and of the command it runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from cronshift.discover.schedule import Dialect, ScheduleError, parse
from cronshift.model import Format


class Kind(StrEnum):
    JOB = "job"
    ENV = "env"
    COMMENT = "comment"
    BLANK = "blank"
    DISABLED = "disabled"  # a commented-out job line: looks like a job, never runs
    RETIRED = "retired"  # commented out by cronshift retire; keeps the original bytes after a marker
    PROBLEM = "problem"  # cron rejects it


# `retire` comments a line out behind this marker; the original bytes follow it unchanged, so undo is exact.
RETIRED_MARKER = b"#cronshift:retired "
_RETIRED_RE = re.compile(rb"#cronshift:retired id=(\S+) date=(\S+) (.*)", re.DOTALL)

# Vixie env.c: a name (bare, or quoted), optional blanks, '=', then the value (blanks and matching quotes
# around it removed). A job line never matches: its first word is followed by a blank, not '='.
_ENV_RE = re.compile(r"""[ \t]*(?:"([^"]*)"|'([^']*)'|([^\s="']+))[ \t]*=(.*)""", re.DOTALL)
_WS = " \t"
# Five fields, then the rest; for system files the user column follows. Blanks are spaces and tabs only.
_FIVE_RE = re.compile(
    r"[ \t]*(-?)(\S+)[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)(?:[ \t]+(.*))?", re.DOTALL
)
_MACRO_RE = re.compile(r"[ \t]*(-?)(@\S+)(?:[ \t]+(.*))?", re.DOTALL)
_ANACRON_RE = re.compile(r"[ \t]*(\S+)[ \t]+(\S+)[ \t]+(\S+)(?:[ \t]+(.*))?", re.DOTALL)
_ANACRON_PERIODS = {"@daily": 1, "@weekly": 7, "@monthly": 30, "@yearly": 365, "@annually": 365}


@dataclass(slots=True)
class Line:
    """One physical line: its exact bytes, and what cron makes of it."""

    number: int  # 1-based
    raw: bytes  # exact bytes, line ending included
    kind: Kind
    text: str = ""  # decoded (surrogateescape, so no byte is lost), line ending removed, CR kept
    schedule: str = ""  # fields as written, whitespace collapsed
    user: str | None = None
    command: str = ""
    name: str = ""  # env assignment
    value: str = ""
    message: str = ""  # PROBLEM: what cron rejects
    no_log: bool = False  # cronie's '-' prefix
    job_id: str = ""  # anacron job identifier
    retired_id: str = ""
    retired_date: str = ""

    @property
    def ending(self) -> bytes:
        if self.raw.endswith(b"\r\n"):
            return b"\r\n"
        return b"\n" if self.raw.endswith(b"\n") else b""


@dataclass(slots=True)
class CrontabFile:
    path: str  # relative to the root
    format: Format
    data: bytes
    lines: list[Line] = field(default_factory=list)

    def render(self) -> bytes:
        return b"".join(line.raw for line in self.lines)

    @property
    def final_newline(self) -> bool:
        return not self.data or self.data.endswith(b"\n")


def split_lines(data: bytes) -> list[bytes]:
    """Split after every LF, keeping it; a last line without LF is kept as it is."""
    parts = data.split(b"\n")
    out = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def parse_file(data: bytes, path: str, fmt: Format, dialect: Dialect = Dialect.DEBIAN) -> CrontabFile:
    """Read every line; never raises: what cron rejects becomes a PROBLEM line with a message."""
    lines = [parse_line(raw, i, fmt, dialect) for i, raw in enumerate(split_lines(data), start=1)]
    return CrontabFile(path=path, format=fmt, data=data, lines=lines)


def parse_line(raw: bytes, number: int, fmt: Format, dialect: Dialect = Dialect.DEBIAN) -> Line:
    text = raw.decode("utf-8", "surrogateescape")
    if text.endswith("\n"):
        text = text[:-1]
    stripped = text.strip()
    if not stripped:
        return Line(number, raw, Kind.BLANK, text)
    if stripped[0] == "#":
        return _comment(raw, number, text, stripped, fmt, dialect)
    m = _ENV_RE.fullmatch(text) if "=" in text else None
    if m:
        name = (
            m.group(1) if m.group(1) is not None else (m.group(2) if m.group(2) is not None else m.group(3))
        )
        raw_value = m.group(4).strip(" \t\r") if m.group(4).endswith("\r") else m.group(4).strip(" \t")
        if (
            dialect is Dialect.DEBIAN
            and raw_value[:1] in ("'", '"')
            and (len(raw_value) < 2 or raw_value[-1] != raw_value[0])
        ):
            # Seen with Debian's cron beside this parser: an unterminated quote makes the whole file ignored.
            msg = f"unterminated quote in the value of {name}: Debian cron ignores this whole file"
            return Line(number, raw, Kind.PROBLEM, text, message=msg)
        return Line(number, raw, Kind.ENV, text, name=name, value=_env_value(m.group(4), dialect))
    if fmt is Format.ANACRONTAB:
        return _anacron_job(raw, number, text)
    return _job(raw, number, text, fmt, dialect)


def _env_value(v: str, dialect: Dialect = Dialect.DEBIAN) -> str:
    v = v.strip(" \t\r") if v.endswith("\r") else v.strip(" \t")
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        v = v[1:-1]
        if dialect is Dialect.DEBIAN:
            v = v.rstrip(
                " \t"
            )  # Debian's cron also strips blanks inside the closing quote (seen: A="x  " -> x)
    return v


def _comment(raw: bytes, number: int, text: str, stripped: str, fmt: Format, dialect: Dialect) -> Line:
    if raw.startswith(RETIRED_MARKER):
        m = _RETIRED_RE.match(raw)
        if m:
            original = parse_line(m.group(3), number, fmt, dialect)
            original.raw = raw
            original.kind = Kind.RETIRED
            original.retired_id = m.group(1).decode("ascii", "replace")
            original.retired_date = m.group(2).decode("ascii", "replace")
            return original
    inner = stripped[1:].lstrip()
    # A commented-out job: the text after '#' parses as a job line with a valid schedule. The field-help
    # line that Debian and RHEL ship in /etc/crontab has that shape too, and is documentation.
    if (
        inner
        and (inner[0].isdigit() or inner[0] in "*@")
        and fmt is not Format.ANACRONTAB
        and "command to be executed" not in inner
    ):
        candidate = _job(raw, number, inner, fmt, dialect)
        if candidate.kind is Kind.JOB and candidate.command.strip():
            candidate.kind = Kind.DISABLED
            candidate.text = text
            return candidate
    return Line(number, raw, Kind.COMMENT, text)


def _problem(raw: bytes, number: int, text: str, message: str) -> Line:
    return Line(number, raw, Kind.PROBLEM, text, message=message)


def _job(raw: bytes, number: int, text: str, fmt: Format, dialect: Dialect) -> Line:
    system = fmt is Format.SYSTEM
    if text.lstrip(_WS).startswith(("@", "-@")):
        m = _MACRO_RE.fullmatch(text)
        if not m:
            return _problem(raw, number, text, "cannot read this line")
        dash, schedule, rest = m.group(1), m.group(2), m.group(3) or ""
    else:
        m = _FIVE_RE.fullmatch(text)
        if not m:
            return _problem(raw, number, text, "not a job, an environment setting or a comment")
        dash = m.group(1)
        schedule = " ".join(m.group(2, 3, 4, 5, 6))
        rest = m.group(7) or ""
    if dash and dialect is not Dialect.CRONIE:
        return _problem(raw, number, text, "a leading '-' is cronie syntax; Debian cron rejects this line")
    verdict = check_schedule(schedule, dialect)
    if verdict is not None and verdict[0]:
        return _problem(raw, number, text, f"bad schedule '{schedule}': {verdict[1]}")
    user: str | None = None
    if system:
        parts = rest.split(None, 1) if rest else []
        if not parts:
            return _problem(raw, number, text, "no user and no command after the schedule")
        user = parts[0]
        # Vixie cron consumes one blank after the user name and keeps the rest, leading blanks included.
        after = rest[len(user) :]
        command = after[1:] if after else ""
    else:
        command = rest
    if not command.strip(" \t\r"):
        return _problem(raw, number, text, "no command after the schedule")
    return Line(number, raw, Kind.JOB, text, schedule=schedule, user=user, command=command, no_log=bool(dash))


@lru_cache(maxsize=16384)
def check_schedule(schedule: str, dialect: Dialect) -> tuple[bool, str] | None:
    """None when the schedule is fine; (True, error) when cron rejects it; (False, why) when it never fires.

    Cached on the text: a large tree repeats the same few hundred schedules thousands of times."""
    try:
        expr = parse(schedule, dialect)
    except ScheduleError as e:
        return True, str(e)
    if not expr.reboot and not expr.can_fire():
        return False, expr.never_fires_reason() or "no date matches"
    return None


def _anacron_job(raw: bytes, number: int, text: str) -> Line:
    m = _ANACRON_RE.fullmatch(text)
    if not m or not (m.group(4) or "").strip():
        return _problem(raw, number, text, "anacrontab lines need a period, a delay, a job id and a command")
    period, delay, ident, command = m.groups()
    if not (period.isdigit() or period.lower() in _ANACRON_PERIODS):
        return _problem(raw, number, text, f"bad anacron period '{period}'")
    if not delay.isdigit():
        return _problem(raw, number, text, f"bad anacron delay '{delay}' (minutes)")
    if "/" in ident:
        return _problem(raw, number, text, f"anacron job id '{ident}' may not contain '/'")
    return Line(
        number, raw, Kind.JOB, text, schedule=f"{period} {delay}", command=command or "", job_id=ident
    )


def anacron_period_days(schedule: str) -> int:
    period = schedule.split()[0]
    return int(period) if period.isdigit() else _ANACRON_PERIODS[period.lower()]
