"""What cron's own logs say about each job, as per-job aggregates rather than a list of lines.

Aggregates (counts, one array of start times per job) keep memory proportional to the number of runs, never to
the number of log lines, so a year of syslog fits in a few MiB.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

# Which evidence a run (or a job) had: cron logged only the start, also the end, or also the exit status.
CMD_ONLY = "cmd-only"
END = "end"
STATUS = "status"


@dataclass(slots=True)
class JobEvidence:
    """Everything the logs showed for one job (or one unmatched command) over the window."""

    runs: int = 0
    starts: array = field(default_factory=lambda: array("d"))  # unix seconds, in log order
    durations: array = field(default_factory=lambda: array("d"))  # seconds, for runs whose end was logged
    ended_starts: array = field(default_factory=lambda: array("d"))  # start of each run in `durations`
    ended: int = 0  # runs whose end was logged
    status_known: int = 0  # runs whose exit status is known (failure lines were being logged)
    failed: int = 0  # non-zero exit status or killed by a signal
    exit_statuses: dict[int, int] = field(default_factory=dict)  # non-zero status -> count
    signals: dict[int, int] = field(default_factory=dict)  # signal number -> count
    output_discarded: int = 0  # "(CRON) info (No MTA installed, discarding output)"
    mail_failures: int = 0  # "MAIL (mailed N bytes of output but got status 0x...)"
    output_lines: int = 0  # cronie CMDOUT lines
    inferred_pairings: int = 0  # ends paired to a start by user and command, not by a pid
    guessed_pairings: int = 0  # of those, paired while two or more runs of the command were open
    first_seen: float | None = None
    last_seen: float | None = None
    last_failure: float | None = None
    last_success: float | None = None
    evidence: set[str] = field(default_factory=set)  # subset of {CMD_ONLY, END, STATUS}

    def merge(self, other: JobEvidence) -> None:
        self.runs += other.runs
        self.starts.extend(other.starts)
        self.durations.extend(other.durations)
        self.ended_starts.extend(other.ended_starts)
        self.ended += other.ended
        self.status_known += other.status_known
        self.failed += other.failed
        for k, v in other.exit_statuses.items():
            self.exit_statuses[k] = self.exit_statuses.get(k, 0) + v
        for k, v in other.signals.items():
            self.signals[k] = self.signals.get(k, 0) + v
        self.output_discarded += other.output_discarded
        self.mail_failures += other.mail_failures
        self.output_lines += other.output_lines
        self.inferred_pairings += other.inferred_pairings
        self.guessed_pairings += other.guessed_pairings
        self.first_seen = _min(self.first_seen, other.first_seen)
        self.last_seen = _max(self.last_seen, other.last_seen)
        self.last_failure = _max(self.last_failure, other.last_failure)
        self.last_success = _max(self.last_success, other.last_success)
        self.evidence |= other.evidence


@dataclass(slots=True)
class UnmatchedEvidence:
    """A command cron ran that no scanned job accounts for (removed since, or in a crontab we did not see)."""

    user: str
    command: str
    count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None


@dataclass(frozen=True, slots=True)
class SourceInfo:
    path: str
    dialect: str  # "debian", "debian-L" (end/status lines), "cronie", "journal", "mixed", "none"
    lines: int
    cron_lines: int
    malformed: int
    duplicates: int = 0  # lines dropped because a source read before held the same line
    untrusted: int = 0  # journal cron lines a non-root process sent (forged?): not read


@dataclass(slots=True)
class History:
    per_job: dict[str, JobEvidence] = field(default_factory=dict)
    unmatched: dict[tuple[str, str], UnmatchedEvidence] = field(default_factory=dict)
    ambiguous: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # -> candidate ids
    ambiguous_runs: int = 0  # runs not counted for any job because several jobs fit
    lines_read: int = 0
    cron_lines: int = 0
    malformed: int = 0
    unreadable_stamps: int = 0  # cron lines whose timestamp we could not read (e.g. localised months)
    orphan_ends: int = 0  # end/status lines whose start was not in the logs read
    unattributed_discarded: int = 0  # "No MTA" lines we could not tie to a run
    unattributed_mail_failures: int = 0
    unattributed_output: int = 0  # CMDOUT lines we could not tie to a run
    duplicates_dropped: int = 0  # lines read from more than one source (syslog + cron.log...), kept once
    untrusted: int = 0  # journal cron lines whose sender journald saw was not root (forged?): not read
    window: tuple[float, float] | None = None
    # When cron was observed running: from a start line (or the first cron line) to a stop line (or the last
    # cron line before the next start). Expected runs are counted only inside these.
    daemon_windows: list[tuple[float, float]] = field(default_factory=list)
    sources: list[SourceInfo] = field(default_factory=list)

    @property
    def unattributed_notes(self) -> int:
        """No MTA, MAIL and CMDOUT lines that neither an exact link nor the named user tie to one job."""
        return self.unattributed_discarded + self.unattributed_mail_failures + self.unattributed_output


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a >= b else b
