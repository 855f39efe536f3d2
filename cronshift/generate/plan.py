"""Policies for one generated job, each chosen from the job's history (or its wrappers), with the reason.

`plan_for(job, metrics, inp, ...)` reads what `cronshift scan` knows (rank.Metrics and the job's raw
durations/exit statuses) and returns a Plan; the generated task module prints every reason next to its
value. Without history the choices keep cron's own behaviour (allow overlap, skip missed runs, no retry)
and say that no history was read. `overrides` ({"overlap": "replace", ...}, from --policy) win, and say so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cronshift import rank
from cronshift.history.evidence import gather
from cronshift.model import CronJob, Dialect, Format
from cronshift.runtime.execute import DEFAULT_TIME_LIMIT

CELERY_LIMIT_MARGIN = 60  # Celery's hard limit sits above ours: the runtime kills the job's group first
LOCK_EXPIRY = 30  # seconds a forbid/replace lock outlives a dead worker (heartbeat every 10 s)
STARTING_DEADLINE = 120  # seconds a `skip` run may start late (beat start-up, a busy worker)
MAX_DELIVERIES = 3
MAX_RETRIES = 3
RETRY_BACKOFF = 30  # seconds, doubled per attempt, with jitter
RETRY_BACKOFF_MAX = 3600
HEADROOM, HEADROOM_MIN = 2.0, 60  # soft limit = max(p99 x 2, p99 + 60 s)
MIN_LIMIT = 60
# Most runs of one job a queue takes at once: beyond this a history of pile-ups (a job stuck for hours while
# cron kept starting it) is a problem to fix, not a need to provision; CRONSHIFT_CONCURRENCY overrides.
CONCURRENCY_CAP = 8

OVERLAPS = ("allow", "forbid", "replace")
MISSED = ("skip", "run-once", "catch-up")


@dataclass(frozen=True, slots=True)
class Plan:
    overlap: str  # "allow" | "forbid" | "replace"
    overlap_why: str
    time_limit: int  # soft limit, seconds: the job's process group gets SIGTERM
    limit_why: str
    kill_grace: int = 10  # then SIGKILL: the hard limit is time_limit + kill_grace
    lock_expiry: int = LOCK_EXPIRY
    missed: str = "skip"
    missed_why: str = "cron does not run a job it missed (machine or daemon down); neither does this"
    starting_deadline: int = STARTING_DEADLINE
    retry_on: tuple[int, ...] = ()
    retry_why: str = "no exit status is known to be transient for this job: a failure is final"
    max_retries: int = 0
    retry_backoff: float = RETRY_BACKOFF
    retry_backoff_max: float = RETRY_BACKOFF_MAX
    max_deliveries: int = MAX_DELIVERIES
    delivery_why: str = "a message delivered this often without finishing kills its worker: dead-letter it"
    overridden: tuple[str, ...] = field(default=())
    concurrency: int = 1  # runs of this job at once that its queue's share of the worker pool allows
    concurrency_why: str = "no history of runs at once was read: one slot of the pool is kept for it"
    peak_runs: int | None = None  # most runs the history shows running at once (None: no start/end pairs)
    peak_basis: str = ""  # what that count was read from

    @property
    def hard_limit(self) -> int:
        return self.time_limit + self.kill_grace

    @property
    def celery_limit(self) -> int:
        """Celery's own hard time limit: a backstop above the runtime's, which acts first."""
        return self.hard_limit + CELERY_LIMIT_MARGIN

    def policy(self) -> dict[str, Any]:
        """What the runtime reads (SPEC["policy"])."""
        return {
            "overlap": self.overlap,
            "lock_expiry": self.lock_expiry,
            "missed": self.missed,
            "starting_deadline": self.starting_deadline,
            "retry_on": list(self.retry_on),
            "max_retries": self.max_retries,
            "retry_backoff": self.retry_backoff,
            "retry_backoff_max": self.retry_backoff_max,
            "max_deliveries": self.max_deliveries,
        }


def _durations(inp: Any) -> list[float]:
    if inp is None:
        return []
    led = [d for r in getattr(inp, "ledger", ()) if (d := r.duration) is not None]
    if led:
        return led
    logs = getattr(inp, "logs", None)
    return list(logs.durations) if logs is not None else []


def _p99(values: list[float]) -> float:
    s = sorted(values)
    return s[max(1, math.ceil(0.99 * len(s))) - 1]


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _overlap(job: CronJob, m: Any) -> tuple[str, str]:
    kinds = {w.kind: w for w in job.wrappers}
    if "flock" in kinds or "run-one" in kinds:
        w = kinds.get("flock") or kinds["run-one"]
        return (
            "forbid",
            f"the cron line is wrapped in `{w.text}` ({w.meaning}); a Redis lock keeps that across hosts",
        )
    if m is None:
        return "allow", "cron starts a new run even while the previous one runs; no history was read"
    if m.overlaps:
        return "forbid", (
            f"the history shows {m.overlaps} run(s) that started while the previous one was still going "
            f"({m.overlap_basis}); one run at a time, a skipped start is recorded"
        )
    if m.p95_over_interval is not None and m.p95_over_interval >= 0.5:
        return "forbid", (
            f"p95 runtime is {100 * m.p95_over_interval:.0f}% of the interval: close enough to overlap; "
            "one run at a time, a skipped start is recorded"
        )
    if m.duration_p95 is not None:
        return (
            "allow",
            f"runs never overlapped in the history (p95 {_fmt(m.duration_p95)}); cron's behaviour kept",
        )
    return "allow", "cron starts a new run even while the previous one runs; the history has no durations"


def _limit(job: CronJob, m: Any, inp: Any) -> tuple[int, str]:
    kinds = {w.kind: w for w in job.wrappers}
    if "timeout" in kinds:
        secs = dict(kinds["timeout"].args).get("seconds")
        if secs:
            return max(1, int(float(secs))), f"the cron line is wrapped in `{kinds['timeout'].text}`"
    ds = _durations(inp)
    if ds:
        p99 = _p99(ds)
        soft = max(MIN_LIMIT, math.ceil(max(p99 * HEADROOM, p99 + HEADROOM_MIN)))
        return soft, (
            f"p99 runtime {_fmt(p99)} over {len(ds)} run(s) in the history, with headroom "
            f"(max(2 x p99, p99 + {HEADROOM_MIN} s))"
        )
    if m is not None and m.duration_max is not None:
        soft = max(MIN_LIMIT, math.ceil(max(m.duration_max * HEADROOM, m.duration_max + HEADROOM_MIN)))
        return soft, f"longest run {_fmt(m.duration_max)} in the history, with headroom"
    return (
        DEFAULT_TIME_LIMIT,
        "no runtime history: this default only frees a stuck worker slot (cron sets none)",
    )


def _missed(job: CronJob) -> tuple[str, str]:
    if job.format is Format.ANACRONTAB or (job.format is Format.RUN_PARTS and job.anacron):
        return "run-once", "anacron ran it once after downtime, not once per missed period"
    return "skip", "cron does not run a job it missed (machine or daemon down); neither does this"


def _retry(m: Any, transient: Iterable[int]) -> tuple[tuple[int, ...], str, int]:
    wanted = tuple(sorted(set(int(s) for s in transient)))
    if not wanted:
        return (), "no exit status is configured as transient (--transient-exit): a failure is final", 0
    seen = dict(m.exit_statuses) if m is not None else {}
    if not seen:
        return (
            wanted,
            f"exit status(es) {list(wanted)} configured as transient; no failures in the history",
            (MAX_RETRIES),
        )
    hit = tuple(s for s in wanted if s in seen)
    if not hit:
        others = ", ".join(f"{k} x{v}" for k, v in sorted(seen.items()))
        return (), f"the history's failures ({others}) are none of the transient statuses {list(wanted)}", 0
    how = ", ".join(f"exit {s} x{seen[s]}" for s in hit)
    return hit, f"the history shows {how}, configured as transient; other statuses fail at once", MAX_RETRIES


def max_at_once(runs: Iterable[tuple[float, float]]) -> int:
    """The most runs running at the same time, from (start, end) intervals (a run ending when another
    starts is not running beside it)."""
    # At one instant an end sorts before a start; a run of no length still covers its own instant.
    events = sorted(ev for a, b in runs for ev in ((a, 1), (b if b > a else a + 1e-6, -1)))
    best = now = 0
    for _t, step in events:
        now += step
        best = max(best, now)
    return best


def history_peak(inp: Any) -> tuple[int | None, str]:
    """Most runs at once in the job's history, and from what: the ledger's start/end records, else the
    start/end pairs of cron's logs. Runs with no known end are left out (a crash or a run still going would
    otherwise count as running forever). None when no run has both."""
    if inp is None:
        return None, ""
    led = [(r.start, r.end) for r in getattr(inp, "ledger", ()) if r.end is not None]
    if led:
        return max_at_once(led), f"{len(led)} run(s) with a start and an end in the ledger"
    logs = getattr(inp, "logs", None)
    if logs is not None and len(logs.ended_starts) and len(logs.ended_starts) == len(logs.durations):
        pairs = [(a, a + d) for a, d in zip(logs.ended_starts, logs.durations, strict=True)]
        return max_at_once(pairs), f"{len(pairs)} run(s) with a start and an end in cron's logs"
    return None, ""


def _concurrency(overlap: str, peak: int | None, basis: str) -> tuple[int, str]:
    """Pool slots for the job: as many runs at once as its history shows, within its overlap policy."""
    seen = "" if peak is None else f"history shows up to {peak} run(s) at once ({basis})"
    if overlap != "allow":
        return 1, f"overlap policy {overlap}: one run at a time" + (f"; {seen}" if seen else "")
    if peak is None:
        return 1, "no run with a known start and end in the history: one slot of the pool is kept for it"
    if peak > CONCURRENCY_CAP:
        return CONCURRENCY_CAP, (
            f"{seen}; capped at {CONCURRENCY_CAP} (a pile-up, not a need: CRONSHIFT_CONCURRENCY overrides "
            "the pool); a run that finds every slot taken waits, and past its starting deadline is skipped "
            "and recorded"
        )
    return max(1, peak), f"{seen}: a pool slot for each"


def plan_for(
    job: CronJob,
    metrics: Any = None,
    inp: Any = None,
    *,
    transient: Iterable[int] = (),
    overrides: Mapping[str, str] | None = None,
) -> Plan:
    """The job's policies: from its wrappers and history (`metrics`: rank.Metrics, `inp`: JobInput)."""
    overlap, why = _overlap(job, metrics)
    limit, lwhy = _limit(job, metrics, inp)
    missed, mwhy = _missed(job)
    retry_on, rwhy, max_retries = _retry(metrics, transient)
    grace = max(10, min(300, math.ceil(limit * 0.1)))
    dwhy = "a message delivered this often without finishing kills its worker: dead-letter it"
    if metrics is not None and metrics.signals.get(9):
        dwhy = f"the history shows {metrics.signals[9]} SIGKILL(s): " + dwhy
    peak, basis = history_peak(inp)
    conc, cwhy = _concurrency(overlap, peak, basis)
    plan = Plan(
        overlap, why, limit, lwhy, kill_grace=grace, missed=missed, missed_why=mwhy,
        starting_deadline=STARTING_DEADLINE, retry_on=retry_on, retry_why=rwhy, max_retries=max_retries,
        delivery_why=dwhy, concurrency=conc, concurrency_why=cwhy, peak_runs=peak, peak_basis=basis,
    )  # fmt: skip
    return apply_overrides(plan, overrides or {})


_INT = {"time_limit", "kill_grace", "lock_expiry", "starting_deadline", "max_retries", "max_deliveries"}
_FLOAT = {"retry_backoff", "retry_backoff_max"}
_WHY = {"overlap": "overlap_why", "time_limit": "limit_why", "missed": "missed_why", "retry_on": "retry_why",
        "max_retries": "retry_why", "max_deliveries": "delivery_why"}  # fmt: skip
KEYS = tuple(sorted(_INT | _FLOAT | {"overlap", "missed", "retry_on"}))


class PolicyError(ValueError):
    pass


def apply_overrides(plan: Plan, overrides: Mapping[str, str]) -> Plan:
    changes: dict[str, Any] = {}
    for key, raw in sorted(overrides.items()):
        if key not in KEYS:
            raise PolicyError(f"unknown policy '{key}' (one of {', '.join(KEYS)})")
        value: Any
        try:
            if key in _INT:
                value = int(raw)
            elif key in _FLOAT:
                value = float(raw)
            elif key == "retry_on":
                value = tuple(sorted({int(s) for s in raw.split(",") if s.strip()}))
            else:
                value = raw
        except ValueError:
            raise PolicyError(f"policy {key}={raw}: not a number") from None
        if key == "overlap" and value not in OVERLAPS:
            raise PolicyError(f"policy overlap={raw}: one of {', '.join(OVERLAPS)}")
        if key == "missed" and value not in MISSED:
            raise PolicyError(f"policy missed={raw}: one of {', '.join(MISSED)}")
        changes[key] = value
        if key in _WHY:
            changes[_WHY[key]] = f"set on the command line (--policy {key}={raw})"
    if (
        "retry_on" in changes
        and "max_retries" not in changes
        and changes["retry_on"]
        and not plan.max_retries
    ):
        changes["max_retries"] = MAX_RETRIES
    if changes:
        changes["overridden"] = tuple(sorted(overrides))
    if "overlap" in changes:  # the slots follow the policy actually used
        changes["concurrency"], changes["concurrency_why"] = _concurrency(
            changes["overlap"], plan.peak_runs, plan.peak_basis
        )
    return replace(plan, **changes) if changes else plan


def parse_policy_options(values: Iterable[str]) -> list[tuple[str, str, str]]:
    """`--policy [JOB:]key=value` -> (job id prefix or "", key, value); raises PolicyError."""
    out = []
    for v in values:
        head, eq, value = v.partition("=")
        if not eq:
            raise PolicyError(f"--policy {v}: expected [JOB:]key=value")
        job, _, key = head.rpartition(":")
        if key not in KEYS:
            raise PolicyError(f"--policy {v}: unknown policy '{key}' (one of {', '.join(KEYS)})")
        out.append((job, key, value))
    return out


def plans_from_history(
    root: Any,
    scan_jobs: Iterable[CronJob],
    jobs: Iterable[CronJob],
    now: Any,
    tz: str | None,
    dialect: Dialect,
    *,
    history: bool = True,
    store: str | None = None,
    redis_url: str | None = None,
    transient: Iterable[int] = (),
    policies: Iterable[tuple[str, str, str]] = (),
) -> tuple[dict[str, Plan], list[str]]:
    """A plan per job from the evidence `cronshift scan` ranks with (logs + ledger); notes on what was read.

    With `history` False, neither logs nor the ledger is read: choices come from the cron lines alone."""
    jobs = list(jobs)
    transient = tuple(transient)
    policies = list(policies)
    plans: dict[str, Plan] = {}
    notes: list[str] = []
    ev = None
    if history:
        ev = gather(Path(root), list(scan_jobs), now, store=store, redis_url=redis_url)
        notes += ev.notes
    for job in jobs:
        m = inp = None
        if ev is not None:
            inp = ev.for_job(job.id)
            m, _ = rank.metrics(job, inp, ev, tz, dialect)
        over = {k: v for (prefix, k, v) in policies if not prefix or job.id.startswith(prefix)}
        plans[job.id] = plan_for(job, m, inp, transient=transient, overrides=over)
    return plans, notes


def without_run_parts_triggers(jobs: list[CronJob]) -> list[CronJob]:
    """`generate --all`: each run-parts script is generated once, under its own id, so the crontab or
    anacrontab line that runs its folder is left out (generating both would run every script twice)."""
    triggers = {t for j in jobs if j.format is Format.RUN_PARTS for t in (*j.triggers, j.anacron) if t}
    return [j for j in jobs if str(j.source) not in triggers]
