"""Everything the scan can learn about past runs: cron's logs and the run ledger, bounded by one window.

The ranker must know which evidence it had (a log without exit statuses is not a log of successes), so this
module keeps the two sources apart per job and records what was read, what was missing and why.
Reading never creates anything under the root: a ledger that does not exist is reported, not made.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cronshift.history.events import History, JobEvidence
from cronshift.history.logfiles import find_logs, iter_runs, read_history
from cronshift.ledger import store as ledger_mod
from cronshift.model import CronJob, RunRecord


@dataclass(frozen=True, slots=True)
class JobInput:
    """What one job's metrics are computed from."""

    logs: JobEvidence | None  # None: cron's logs had no line for this job
    ledger: tuple[RunRecord, ...] = ()  # runs recorded by `cronshift record`, start order


@dataclass(slots=True)
class Evidence:
    """The history a scan ranks from. `window` is what the logs cover (clipped to --since/--until)."""

    now: float
    since: float | None = None
    until: float | None = None
    history: History | None = None  # None: logs not read (--no-history) or none found
    log_paths: list[str] = field(default_factory=list)
    ledger_where: str | None = None  # store path or Redis URL that was read; None: no ledger
    ledger_runs: dict[str, list[RunRecord]] = field(default_factory=dict)
    skipped_runs: dict[str, list[RunRecord]] = field(default_factory=dict)  # a policy chose not to start
    ledger_unmatched: int = 0  # ledger runs whose job id no scanned job has
    notes: list[str] = field(default_factory=list)  # what was missing or failed, in words

    @property
    def window(self) -> tuple[float, float] | None:
        """The span cron's logs cover, clipped to the requested bounds; None when no log line was read."""
        if self.history is None or self.history.window is None:
            return None
        lo, hi = self.history.window
        if self.since is not None:
            lo = max(lo, self.since)
        if self.until is not None:
            hi = min(hi, self.until - 1)  # --until is exclusive; the window's end is its last second
        return (lo, hi) if hi >= lo else None

    @property
    def end(self) -> float:
        """Where the evidence stops: --until, else now."""
        return min(self.until, self.now) if self.until is not None else self.now

    def for_job(self, job_id: str) -> JobInput:
        logs = None if self.history is None else self.history.per_job.get(job_id)
        return JobInput(logs=logs, ledger=tuple(self.ledger_runs.get(job_id, ())))

    @property
    def kinds(self) -> list[str]:
        """Which kinds of evidence there were: 'logs', 'exit-status', 'end', 'ledger'."""
        out: list[str] = []
        h = self.history
        if h is not None and h.cron_lines:
            out.append("logs")
            seen: set[str] = set()
            for ev in h.per_job.values():
                seen |= ev.evidence
            out += [k for k in ("end", "status") if k in seen]
        if any(self.ledger_runs.values()):
            out.append("ledger")
        return out


def default_store(root: Path) -> Path:
    return Path(root) / ledger_mod.DEFAULT_STORE


def gather(
    root: Path,
    jobs: Sequence[CronJob],
    now: datetime,
    *,
    since: float | None = None,
    until: float | None = None,
    extra_logs: Iterable[Path] = (),
    store: str | None = None,
    redis_url: str | None = None,
    logs: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Evidence:
    """Read cron's logs under `root` (plus `extra_logs`) and the ledger, if there is one, for `jobs`."""
    ev = Evidence(now=now.timestamp(), since=since, until=until)
    if logs:
        paths = find_logs(Path(root), [Path(p) for p in extra_logs])
        ev.log_paths = [str(p) for p in paths]
        if not paths:
            ev.notes.append("no cron logs found under the root (var/log/syslog*, cron*, messages*)")
        else:
            total = sum(_size(p) for p in paths)
            cb = None if progress is None else (lambda done: progress(done, total))
            ev.history = read_history(paths, jobs, since, until, now, cb)
            if not ev.history.cron_lines:  # scan prints no history line: say what was ignored here
                forged = ev.history.untrusted
                but = f" ({forged} from non-root senders ignored: forged?)" if forged else ""
                ev.notes.append(f"no cron lines in {len(paths)} log file(s){but}")
    else:
        ev.notes.append("history not read (--no-history)")
    _read_ledger(ev, Path(root), jobs, store, redis_url)
    return ev


def _size(p: Path) -> int:
    """Bytes the reader will report for this file: a gzip's uncompressed size (its ISIZE trailer)."""
    try:
        with open(p, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return p.stat().st_size
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")  # modulo 4 GiB: good enough for a progress bar
    except OSError:
        return 0


def _read_ledger(
    ev: Evidence, root: Path, jobs: Sequence[CronJob], store: str | None, redis: str | None
) -> None:
    if redis is None:
        path = Path(store) if store else default_store(root)
        if not path.is_file() and not ledger_mod.has_spooled(root, str(path)):
            if store:  # asked for by name: say so; the default store simply is not there yet
                ev.notes.append(f"no ledger at {path}")
            return
        where = str(path)
    else:
        where = redis
    ids = {j.id for j in jobs}
    users = {j.id: j.user for j in jobs}
    skipped = foreign = 0
    try:
        with ledger_mod.open_ledger(root, store=None if redis else where, redis_url=redis) as led:
            for r in led.runs(since=ev.since, until=ev.until):
                if r.extra.get("skipped"):
                    # A run a policy decided not to start (overlap, missed, duplicate): no exit status
                    # and no duration, so it would skew failure rates, percentiles and overlaps.
                    skipped += 1
                    if r.job_id in ids:
                        ev.skipped_runs.setdefault(r.job_id, []).append(r)  # type: ignore[arg-type]
                    continue
                if r.job_id in ids:
                    if r.source == "record" and r.user and users[r.job_id] not in ("", r.user):
                        foreign += 1  # the wrapper runs as the job's user: another user wrote this
                        continue
                    ev.ledger_runs.setdefault(r.job_id, []).append(r)  # type: ignore[arg-type]
                else:
                    ev.ledger_unmatched += 1
            ev.notes += [f"ledger record skipped: {s}" for s in led.skipped]
    except (OSError, sqlite3.Error, RuntimeError, ValueError) as exc:
        ev.notes.append(f"ledger {where} unreadable: {exc}")
        return
    except Exception as exc:  # redis-py's errors: the scan goes on with the logs
        if type(exc).__module__.startswith("redis"):
            ev.notes.append(f"ledger {where} unreachable: {exc}")
            return
        raise
    ev.ledger_where = where
    if skipped:
        ev.notes.append(f"{skipped} ledger record(s) of runs a policy skipped are not counted as runs")
    if foreign:
        ev.notes.append(f"{foreign} ledger record(s) written by another user than the job's are ignored")


def last_runs(
    root: Path,
    jobs: Sequence[CronJob],
    job_id: str,
    now: datetime,
    evidence: Evidence,
    *,
    extra_logs: Iterable[Path] = (),
    n: int = 20,
) -> list[RunRecord]:
    """The last `n` runs of one job, from the logs and the ledger, oldest first.

    A run the ledger recorded is preferred to the log line of the same start (within two seconds): it has the
    exit status and output sizes the log lacks.
    """
    recorded = evidence.ledger_runs.get(job_id, [])[-n:]
    from_logs: list[RunRecord] = []
    if evidence.history is not None and evidence.log_paths:
        paths = find_logs(Path(root), [Path(p) for p in extra_logs])
        from_logs = list(
            iter_runs(paths, jobs, job_id, now, last=n, since=evidence.since, until=evidence.until)
        )
    starts = sorted(r.start for r in recorded)
    merged = list(recorded)
    for r in from_logs:
        if not any(abs(r.start - s) <= 2 for s in starts):
            merged.append(r)
    merged.sort(key=lambda r: r.start)
    return merged[-n:]


def env_redis_url() -> str | None:
    """CRONSHIFT_REDIS_URL, the same variable `cronshift record` reads."""
    return os.environ.get("CRONSHIFT_REDIS_URL") or None
