"""What to do with each job, and why: move it to an event, to a Streams consumer, keep it on cron, or rank it.

The reason to leave cron is the poll, not the clock. A job that fires often and finds nothing to do on most
runs is a poller: an event (a row committed, a file closed, a stream entry) should run it instead. A job that
does work on most runs over data that piles up between runs is a batch: a Streams consumer can take the items
as they arrive. A report or housekeeping job at a low frequency that shows no pain is fine on cron, and the
advice says so rather than inviting a migration nobody needs. Everything else is ranked by pain as before.

The rules, in order (the first that matches wins; each names its evidence and what would change it):

1. retired / never runs: nothing to move (retired), or fix the line first (never runs).
2. poller: fires every 15 min or more often, AND either most runs were quiet (ledger: no output and under
   `QUIET_SECONDS`; logs: durations all under `QUIET_SECONDS` and no CMDOUT lines) or the command has a poll
   shape (`--since`, `sync`, `poll`, `check`, `watch`) -> an event source (`generate --trigger`).
3. batch: fires every hour or more often and either most runs did work (output, or longer than
   `QUIET_SECONDS`) or the command has a batch shape (`process`, `import`, `ingest`, `queue`, `drain`,
   `batch`, `consume`, `etl`) -> a Streams consumer (`generate --target streams` + `--trigger stream:KEY`).
   (Before it: a sampler -- sa1, heartbeat, stats, metrics -- with pain under `PAIN_THRESHOLD` stays on
   cron: it runs for the clock itself.)
4. report / housekeeping: fires at most once an hour (or with a report/housekeeping shape: `report`,
   `backup`, `rotate`, `clean`, `purge`, `prune`, `vacuum`, `digest`, `summary`, `archive`) and its pain
   score is under `PAIN_THRESHOLD` -> keep on cron.
5. otherwise: ranked by pain (score and its top reason).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cronshift.model import CronJob, RunRecord, Score
from cronshift.rank import POLL_INTERVAL, Metrics

__all__ = ["PAIN_THRESHOLD", "QUIET_SECONDS", "Advice", "advise", "quiet_runs", "suggest_trigger"]

QUIET_SECONDS = 2.0  # a run this short that printed nothing found nothing to do
PAIN_THRESHOLD = 20.0  # below it a job "shows no pain" (the scan table marks 20+ yellow)
BATCH_INTERVAL = 3600.0  # a batch that runs less often than hourly gains little from a consumer
MIN_RUNS = 5  # fewer runs than this say nothing about "most runs"

# Shapes: stems a word of the command starts with. Words come from the command's arguments split at
# non-alphanumerics; an argument starting with '-' is an option (run-parts' --report is not a report), and
# only `--since` among options counts (a poll). Matching words, not one big regex: 67,879 jobs in a scan.
_POLL = ("sync", "poll", "check", "watch")
_BATCH = ("process", "import", "ingest", "queue", "drain", "batch", "consum")
_BATCH_EXACT = frozenset({"etl"})
_REPORT = ("report", "backup", "rotate", "logrotate", "clean", "purge", "prune", "vacuum", "digest",
           "summary", "archive")  # fmt: skip
_HOUSEKEEPING = frozenset({"rotate", "logrotate", "clean", "purge", "prune", "vacuum"})
# Samplers exist for the clock itself (sysstat's sa1, metrics pushes, heartbeats): no event replaces them.
_SAMPLER = frozenset({"sa1", "sa2", "heartbeat", "collectd", "stats", "metrics"})
_WORD = re.compile(r"[a-z][a-z0-9]*")
_SQL = re.compile(r"\b(psql|pg_|postgres|FROM\s+\w+|manage\.py|rails\s+runner|mysql)\b", re.IGNORECASE)
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|--table[= ])\s*([A-Za-z_][A-Za-z0-9_.]*)", re.IGNORECASE)
_FROM = re.compile(r"\bFROM\s+([A-Za-z_][A-Za-z0-9_.]*)", re.IGNORECASE)
_DIRWORDS = ("inbox", "incoming", "upload", "uploads", "spool", "drop", "import", "queue", "in")


@dataclass(frozen=True, slots=True)
class Advice:
    """One job's advice: its kind, the action, the evidence used and what would change the advice."""

    kind: str  # poller | batch | report | housekeeping | sampler | retired | broken | other
    action: str  # event-source | streams-consumer | keep-on-cron | rank-by-pain | fix-first | none
    summary: str
    evidence: tuple[str, ...]
    would_change: tuple[str, ...]
    trigger: str | None = None  # a suggested `generate --trigger` value, when one can be guessed

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "action": self.action,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "would_change": list(self.would_change),
            "trigger": self.trigger,
        }


def _every(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def quiet_runs(runs: Sequence[RunRecord]) -> tuple[int, int]:
    """(quiet, judged): runs with a known duration and output size that printed nothing and were short."""
    judged = [r for r in runs if r.duration is not None and r.stdout_bytes is not None]
    quiet = sum(
        1
        for r in judged
        if (r.stdout_bytes or 0) + (r.stderr_bytes or 0) == 0 and (r.duration or 0) < QUIET_SECONDS
    )
    return quiet, len(judged)


def suggest_trigger(command: str) -> str | None:
    """A `--trigger` guess from the command: postgres:TABLE for SQL-looking jobs, path:DIR for folders."""
    if _SQL.search(command):
        m = _FROM.search(command) or _TABLE.search(command)
        return f"postgres:{m.group(1)}" if m else "postgres:TABLE"
    try:
        words = shlex.split(command, comments=False)
    except ValueError:
        words = command.split()
    for w in words:
        if (
            w.startswith("/")
            and not w.startswith(("/var/log", "/dev/"))
            and any(part.lower() in _DIRWORDS for part in w.rstrip("/").split("/")[1:] if part)
        ):
            return f"path:{w.rstrip('/')}"
    return None


def _words(command: str) -> tuple[list[str], list[str]]:
    """(words of the arguments, option names): lowercase, in order."""
    words: list[str] = []
    options: list[str] = []
    for arg in command.lower().split():
        if arg.startswith("-"):
            options.append(arg.split("=", 1)[0])
        else:
            words.extend(_WORD.findall(arg))
    return words, options


def _shape(words: list[str], stems: tuple[str, ...], exact: frozenset[str] = frozenset()) -> list[str]:
    """The stems (or exact words) the command's words show, each once, in sorted order."""
    found = {next(st for st in stems if w.startswith(st)) for w in words if w.startswith(stems)}
    return sorted(found | {w for w in words if w in exact})


def advise(job: CronJob, m: Metrics, score: Score, runs: Sequence[RunRecord] = ()) -> Advice:
    """The advice for one job from its line, metrics, pain score and ledger runs (see the module rules)."""
    if job.retired:
        return Advice("retired", "none", "retired by cronshift: no longer run by cron", ("scan",), ())
    if m.never_runs:
        return Advice(
            "broken",
            "fix-first",
            "cron never runs this line: fix it before moving it anywhere",
            ("scan: " + "; ".join(job.why_not),),
            ("a line cron accepts",),
        )
    cmd = job.inner_command or job.shell_command or job.command
    interval = m.interval
    evidence: list[str] = []
    quiet, judged = quiet_runs(runs)
    busy = judged - quiet
    hist_quiet: bool | None = None  # None: the history cannot tell
    if judged >= MIN_RUNS:
        hist_quiet = quiet * 2 > judged
        hist_line = (
            f"ledger: {quiet} of {judged} runs printed nothing and took under {QUIET_SECONDS:g} s"
            if hist_quiet
            else f"ledger: {busy} of {judged} runs printed output or took {QUIET_SECONDS:g} s or longer"
        )
    elif m.duration_p50 is not None and (m.runs_seen or 0) >= MIN_RUNS and "ledger" not in m.sources:
        # The logs give durations but, except for cronie's CMDOUT lines, no output: "quiet" is "short".
        hist_quiet = m.duration_p50 < QUIET_SECONDS and m.output_lines == 0
        half = (
            f"under {QUIET_SECONDS:g} s" if m.duration_p50 < QUIET_SECONDS else f"{QUIET_SECONDS:g} s or more"
        )
        hist_line = (
            f"logs: {m.runs_seen} runs, half of them {half} (p50 {m.duration_p50:g} s), "
            f"{m.output_lines} output lines"
        )
    else:
        hist_line = (
            f"history: too few runs with a known duration and output ({judged} in the ledger; "
            f"{MIN_RUNS} needed) to tell quiet runs from busy ones"
        )
    words, options = _words(cmd)
    poll_words = sorted(_shape(words, _POLL) + (["--since"] if "--since" in options else []))
    batch_words = _shape(words, _BATCH, _BATCH_EXACT)
    report_words = _shape(words, _REPORT)
    pain = f"pain score {score.value:g}" + (f" (top: {score.reasons[0]})" if score.reasons else "")

    if interval is None:
        return Advice(
            "other",
            "rank-by-pain",
            f"no fixed interval (@reboot or anacron): ranked by pain, {pain}",
            (f"schedule {job.schedule!r}",),
            ("a fixed cron schedule",),
        )
    often = interval <= POLL_INTERVAL
    sched = f"schedule {job.schedule!r}: every {_every(interval)}"

    sampler = sorted({w for w in words if w in _SAMPLER})
    if sampler and score.value < PAIN_THRESHOLD:
        return Advice(
            "sampler",
            "keep-on-cron",
            "sampler: it runs for the clock itself (a reading every interval), so no event can replace it",
            (sched, "command has a sampler shape: " + ", ".join(repr(w) for w in sampler), pain),
            (f"pain {PAIN_THRESHOLD:g} or more: then move it for retries, locks and alerts",),
        )
    # 2. poller
    if often and (hist_quiet or poll_words):
        trig = suggest_trigger(cmd)
        evidence.append(sched + f" (at most {_every(POLL_INTERVAL)})")
        if hist_quiet:
            evidence.append(hist_line)
        if poll_words:
            evidence.append("command has a poll shape: " + ", ".join(repr(w) for w in poll_words))
        change = []
        if hist_quiet and not poll_words:
            change.append("most runs doing work (output, or longer runs) in the ledger: then it is a batch")
        elif hist_quiet is False:
            change.append(
                f"the history says most runs do work ({hist_line.split(': ', 1)[1]}): the poll shape "
                "alone made it a poller"
            )
        else:
            change.append("ledger runs (`cronshift record`) showing most runs do work: then it is a batch")
        change.append(f"a schedule slower than every {_every(POLL_INTERVAL)}")
        how = f"`cronshift generate {job.id} --trigger {trig or 'KIND:ARGS'}`"
        why = "most runs find nothing to do" if hist_quiet else "it asks on a clock whether there is work"
        return Advice(
            "poller",
            "event-source",
            f"poller: {why}; let an event run it ({how}), keep the old schedule as the safety net",
            tuple(evidence),
            tuple(change),
            trig,
        )
    # 3. batch
    if interval <= BATCH_INTERVAL and (hist_quiet is False or (batch_words and hist_quiet is not True)):
        evidence.append(sched)
        if hist_quiet is False:
            evidence.append(hist_line)
        if batch_words:
            evidence.append("command has a batch shape: " + ", ".join(repr(w) for w in batch_words))
        return Advice(
            "batch",
            "streams-consumer",
            "batch over data that piles up between runs: a Streams consumer takes items as they arrive "
            f"(`cronshift generate {job.id} --target streams`, then `--trigger stream:KEY`)",
            tuple(evidence),
            (
                "most runs quiet in the ledger (no output, under "
                f"{QUIET_SECONDS:g} s): then it is a poller for an event source",
                f"a schedule slower than every {_every(BATCH_INTERVAL)}: then a consumer gains little",
            ),
            None,
        )
    # 4. report / housekeeping
    rare = interval >= BATCH_INTERVAL
    if (rare or report_words) and score.value < PAIN_THRESHOLD:
        kind = "housekeeping" if any(w in _HOUSEKEEPING for w in report_words) else "report"
        evidence.append(sched)
        evidence.append(f"{pain}, under {PAIN_THRESHOLD:g}")
        if report_words:
            evidence.append(f"command has a {kind} shape: " + ", ".join(repr(w) for w in report_words))
        return Advice(
            kind,
            "keep-on-cron",
            f"{kind} at a low frequency with no pain: fine on cron (or beat); nothing waits on it sooner",
            tuple(evidence),
            (
                f"pain {PAIN_THRESHOLD:g} or more (failures, overlaps, silent failures): then move it for "
                "retries, locks and alerts",
                "someone needing its result sooner than its schedule gives it",
            ),
        )
    # 5. everything else
    evidence.append(sched)
    evidence.append(pain)
    evidence.append(hist_line)
    return Advice(
        "other",
        "rank-by-pain",
        f"ranked by pain: {score.value:g}",
        tuple(evidence),
        (
            "a poll shape or quiet runs at 15 min or more often: then a poller",
            f"pain under {PAIN_THRESHOLD:g} at hourly or slower: then keep on cron",
        ),
    )
