"""The nouns every stage passes to the next: plain frozen data, no behaviour beyond small helpers.

Data flows one way (sources -> jobs -> history -> plan -> generated code -> observations -> verdict -> edit);
keeping these types free of I/O lets each stage be tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Dialect(StrEnum):
    """Which cron reads the files: the two differ in schedule syntax, environment and file names."""

    DEBIAN = "debian"  # Vixie cron 3.0pl1 as patched by Debian/Ubuntu
    CRONIE = "cronie"  # RHEL/Fedora/Arch/SUSE


# The wrapper kind of `cronshift record`: discover recognises it, wrap writes it, the board counts it.
WRAPPER_KIND = "cronshift-record"
# The file a generated project lists its files' hashes in: generate writes it, the board and status read it.
MANIFEST = ".cronshift-manifest.json"


class Format(StrEnum):
    """How a source file lays out its lines."""

    SYSTEM = "system"  # /etc/crontab, /etc/cron.d/*: a user column after the schedule
    USER = "user"  # spool files: no user column, the owner is the file's name
    ANACRONTAB = "anacrontab"  # period, delay, job id, command
    RUN_PARTS = "run-parts-script"  # a script in /etc/cron.{hourly,...}: the whole file is the job


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a job or problem was read: a path relative to the root and a 1-based line (None: whole file)."""

    path: str
    line: int | None = None

    def __str__(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with the input; reported, never fatal to the scan."""

    path: str
    line: int | None
    message: str
    severity: str = "error"  # "error": cron rejects it; "warning": accepted but suspicious

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Wrapper:
    """A recognised guard or monitor in front of the real command (flock, timeout, cronitor exec, ...)."""

    kind: str  # "flock", "timeout", "nice", "ionice", "chronic", "run-one", "cronitor", "runitor",
    # "sentry-cli", "healthcheck-ping", "cronshift-record", "test-x"
    text: str  # the words of the command that make up this wrapper
    meaning: str  # what it protects against, in plain English
    args: tuple[tuple[str, str], ...] = ()  # parsed options that later stages use (lock file, seconds, ...)


@dataclass(slots=True, unsafe_hash=True)
class CronJob:
    """One job cron (or anacron, or run-parts) will run, or would run but for `why_not`.

    Treat as immutable (use dataclasses.replace). Not declared frozen: building 70,000 frozen instances
    cost a fifth of a 100,000-line scan (callgrind), since each field is set through object.__setattr__."""

    id: str
    source: SourceRef
    format: Format
    user: str
    schedule: str  # as written, whitespace collapsed ('*/5 * * * *', '@daily', '1 5' for anacron)
    command: str  # exactly what cron hands to the shell before `%` processing (CR kept if present)
    env: tuple[tuple[str, str], ...] = ()  # assignments in force at this line, in order
    shell: str = "/bin/sh"
    timezone: str | None = None  # CRON_TZ / TZ in force, else None (the system zone)
    runs: bool = True
    why_not: tuple[str, ...] = ()  # reasons cron will never run it (empty when runs is True)
    warnings: tuple[str, ...] = ()  # accepted by cron but probably not what was meant
    disabled: bool = False  # a commented-out job line: listed, never run
    retired: bool = False  # commented out by `cronshift retire`
    stdin: str | None = None  # text after the first unescaped %, with % turned into newlines
    shell_command: str = ""  # what the shell runs: command up to the first unescaped %, \% unescaped
    wrappers: tuple[Wrapper, ...] = ()
    inner_command: str = ""  # the shell command with recognised wrappers taken off
    job_id: str | None = None  # anacron job identifier
    triggers: tuple[str, ...] = ()  # run-parts scripts: 'path:line' of every line that runs the folder
    anacron: str | None = None  # run-parts scripts: the anacrontab line that runs the folder, if any
    random_delay: int | None = None  # cronie RANDOM_DELAY (minutes) or anacron delay
    digest: str = ""  # sha256 of the source file as read, so a later edit can refuse a changed file
    no_log: bool = False  # cronie's '-' prefix: cron does not log this job's runs
    retired_id: str | None = None

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@dataclass(frozen=True, slots=True)
class ScanResult:
    root: str
    jobs: tuple[CronJob, ...]
    problems: tuple[Problem, ...]
    files: tuple[str, ...] = ()  # every file read, relative to the root
    disabled: tuple[CronJob, ...] = ()  # commented-out job lines: listed, never run
    system_timezone: str | None = None
    dialect: Dialect = Dialect.DEBIAN


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One execution of a job, from the wrapper, cron's log, or a generated task."""

    job_id: str | None
    source: str  # "record", "syslog", "journal", "cronie", "celery", "shadow"
    start: float  # unix seconds
    end: float | None = None
    exit_status: int | None = None  # None: not known
    signal: int | None = None
    host: str = ""
    user: str = ""
    pid: int | None = None
    command: str = ""
    scheduled_for: float | None = None
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
    stdout_sha256: str | None = None
    stderr_sha256: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    @property
    def failed(self) -> bool | None:
        if self.signal is not None:
            return True
        if self.exit_status is None:
            return None
        return self.exit_status != 0


@dataclass(frozen=True, slots=True)
class Reason:
    """One line of a score's explanation: the evidence, and the points it added.

    `text` says what was seen, without the points; str() is the line as shown: 'text: +points'."""

    text: str
    points: float
    evidence: str = ""

    def __str__(self) -> str:
        return f"{self.text}: +{self.points:g}" if self.points > 0 else self.text


@dataclass(frozen=True, slots=True)
class Score:
    value: float  # 0..100
    reasons: tuple[Reason, ...] = ()
    unknown: tuple[str, ...] = ()  # evidence that was missing, said rather than scored as zero pain
