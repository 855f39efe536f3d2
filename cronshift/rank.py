"""Metrics per job and the pain score: which job hurts most, and why, from evidence only.

A reader must be able to check every point, so the score is a plain sum of capped components, each of which
becomes one `Reason` naming its evidence. Evidence that was missing is listed in `Score.unknown` and adds
nothing: a log without exit statuses says nothing about failures, and the score says so instead of
counting those runs as successes.

The score is the sum of these components, capped at 100 (weight, cap; the evidence each one needs):

- never runs: 35 flat. The scan says cron will never run this line (`why_not`).
- failures: 100 x failure rate (cap 25) + failures per day of the window (cap 10); cap 35. Exit statuses or
  signals (Debian `-L` logs, or the ledger); the rate is over runs whose status is known.
- missed runs: 30 x missed / expected, cap 15. The fire instants of the schedule (minute-exact, in the job's
  zone) that fell while cron was observed running (from a daemon start line or the first cron line, to a
  stop line or the last cron line, a whole minute before it so that a fire cron had no time to log is not
  blamed), from one interval before the job's first logged run (a line added mid-window is not blamed),
  against the instants a run was seen at; the reason names the instants missed. Only when more than
  max(1, 1% of expected) are missing; never for @reboot, anacron, RANDOM_DELAY or jobs cron does not log.
- runtime vs interval: 15 x clamp((p95 / interval - 0.5) x 2, 0, 1), cap 15. Durations (end lines or the
  ledger): nothing while p95 is under half the interval, all 15 once p95 reaches the interval.
- overlapping runs: 3 per overlap, cap 15. A run that started before an earlier one ended (start/end pairs
  from the ledger or from the logs' paired end lines). 0 when flock or run-one guards it.
- silent failure: 15, or 8 when every run with a known status succeeded. Output thrown away ("No MTA"
  lines, failing MAIL lines, or stderr sent to /dev/null) and no monitoring wrapper (cronitor, runitor,
  sentry-cli, healthcheck ping, chronic). A MAILTO does not help when the logs show mail is lost.
- no recent success: 10 when failures were seen and no run succeeded; 5 when the last success is older than
  3 intervals before the evidence ends. Exit statuses.
- polling: 5 flat. The schedule fires every 15 minutes or more often: a candidate for an event trigger.
- DST exposure: 5 flat. Fixed hours inside a DST gap or repeated hour of the job's zone (this year or next).

Output volume (ledger bytes, cronie CMDOUT lines), duration p50/max and time since the last success are
reported as metrics and add no points of their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronshift.discover.schedule import CronExpr, Dialect, ScheduleError, fires_between, parse
from cronshift.discover.timing import is_anacron_schedule
from cronshift.history.evidence import Evidence, JobInput
from cronshift.model import CronJob, Format, Reason, Score

# weights and caps, as documented above
W_NEVER = 35.0
W_FAIL_RATE, CAP_FAIL_RATE, CAP_FAIL_DAILY = 100.0, 25.0, 10.0
W_MISSED, CAP_MISSED = 30.0, 15.0
CAP_RUNTIME = 15.0
W_OVERLAP, CAP_OVERLAP = 3.0, 15.0
W_SILENT, W_SILENT_CLEAN = 15.0, 8.0
W_NO_SUCCESS, W_STALE_SUCCESS = 10.0, 5.0
W_POLL, POLL_INTERVAL = 5.0, 15 * 60.0
W_DST = 5.0

MONITORS = frozenset({"cronitor", "runitor", "sentry-cli", "healthcheck-ping", "chronic"})
LOCKS = frozenset({"flock", "run-one"})
_DEVNULL_STDERR = re.compile(r"(?:2>\s*/dev/null|&>\s*/dev/null|>\s*/dev/null\s+2>&1)")


@dataclass(frozen=True, slots=True)
class Metrics:
    """What the evidence shows about one job over `window` (unix seconds). None: not known."""

    window: tuple[float, float] | None = None
    sources: tuple[str, ...] = ()  # "logs", "ledger"
    runs_seen: int | None = None
    runs_expected: int | None = None
    missed: int | None = None
    missed_at: tuple[float, ...] = ()  # the first expected instants no run was seen at (unix seconds)
    status_known: int = 0
    failures: int | None = None
    failure_rate: float | None = None
    exit_statuses: dict[int, int] = field(default_factory=dict)
    signals: dict[int, int] = field(default_factory=dict)
    duration_p50: float | None = None
    duration_p95: float | None = None
    duration_max: float | None = None
    interval: float | None = None
    p95_over_interval: float | None = None
    overlaps: int | None = None
    overlap_basis: str = ""  # "start/end pairs" | "runs longer than the interval"
    last_success: float | None = None
    since_last_success: float | None = None  # seconds before `now`
    output_bytes: int | None = None  # ledger: stdout + stderr
    output_lines: int = 0  # cronie CMDOUT lines
    output_discarded: int = 0
    mail_failures: int = 0
    silent_risk: str | None = None  # why failures would go unnoticed, or None
    polls: bool = False
    dst: str | None = None  # which DST change the fixed hours fall in, or None
    never_runs: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "window": None if self.window is None else [_iso(self.window[0]), _iso(self.window[1])],
            "sources": list(self.sources),
            "runs_seen": self.runs_seen,
            "runs_expected": self.runs_expected,
            "missed": self.missed,
            "missed_at": [_iso(x) for x in self.missed_at],
            "status_known": self.status_known,
            "failures": self.failures,
            "failure_rate": None if self.failure_rate is None else round(self.failure_rate, 4),
            "exit_statuses": {str(k): v for k, v in sorted(self.exit_statuses.items())},
            "signals": {str(k): v for k, v in sorted(self.signals.items())},
            "duration_p50": self.duration_p50,
            "duration_p95": self.duration_p95,
            "duration_max": self.duration_max,
            "interval": self.interval,
            "p95_over_interval": None if self.p95_over_interval is None else round(self.p95_over_interval, 3),
            "overlaps": self.overlaps,
            "overlap_basis": self.overlap_basis or None,
            "last_success": None if self.last_success is None else _iso(self.last_success),
            "since_last_success": self.since_last_success,
            "output_bytes": self.output_bytes,
            "output_lines": self.output_lines,
            "output_discarded": self.output_discarded,
            "mail_failures": self.mail_failures,
            "silent_risk": self.silent_risk,
            "polls": self.polls,
            "dst": self.dst,
            "never_runs": self.never_runs,
        }


# -- small pure helpers ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): always a value that was observed."""
    if not values:
        return None
    s = sorted(values)
    k = max(1, math.ceil(q / 100 * len(s)))
    return s[min(k, len(s)) - 1]


def count_overlaps(runs: Iterable[tuple[float, float | None]]) -> int:
    """Runs that started before an earlier run had ended; a run with no end stays open to the end."""
    n = 0
    busy_until = -math.inf
    for start, end in sorted(runs, key=lambda r: r[0]):
        if start < busy_until:
            n += 1
        busy_until = max(busy_until, math.inf if end is None else end)
    return n


def expected_runs(expr: CronExpr, tz: str | None, start: float, end: float) -> int:
    """Fires from the minute `start` falls in to `end` included (cron logs a fire a second or so after it).

    Whole days without a DST change count as hours x minutes when the day matches (cronsim stepping through
    a year of a per-minute job takes seconds); partial days and DST days go through cronsim, the reference.
    """
    a = datetime.fromtimestamp(start - start % 60, UTC)
    b = datetime.fromtimestamp(end + 1, UTC)

    def exact(lo: datetime, hi: datetime) -> int:
        return sum(1 for _ in fires_between(expr, tz, lo, hi))

    if b - a <= timedelta(days=3):
        return exact(a, b)
    zone = ZoneInfo(tz) if tz and tz != "UTC" else UTC
    first = a.astimezone(zone).date() + timedelta(days=1)
    last = b.astimezone(zone).date()

    def midnight(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)

    n = exact(a, midnight(first)) + exact(midnight(last), b)
    per_day = len(expr.hour) * len(expr.minute)
    d = first
    while d < last:
        lo, hi = midnight(d), midnight(d + timedelta(days=1))
        if lo.astimezone(zone).utcoffset() != hi.astimezone(zone).utcoffset():
            n += exact(lo, hi)
        elif d.month in expr.month and expr._day_matches(d):
            n += per_day
        d += timedelta(days=1)
    return n


MISSED_LISTED = 20  # missed instants named per job
MISSED_ENUMERATE = 50000  # above this many expected fires the instants are counted, not listed


def _observed(ev: Evidence) -> list[tuple[float, float]]:
    """When cron was observed running, clipped to --since/--until (the whole window when not known)."""
    h = ev.history
    spans = list(h.daemon_windows) if h is not None and h.daemon_windows else []
    w = ev.window
    if w is None:
        return []
    if not spans:
        return [w]
    return [(max(a, w[0]), min(b, w[1] + 1)) for a, b in spans if min(b, w[1] + 1) > max(a, w[0])]


def missed_instants(
    expr: CronExpr, tz: str | None, spans: Sequence[tuple[float, float]], starts: Iterable[float]
) -> tuple[int, int, tuple[float, ...]]:
    """(expected, missed, first missed instants) over `spans` of observed running.

    A fire instant M is expected when cron was observed running at M and still a minute later (it logs a
    run within a second or two of M), so neither a start nor a stop blames a run cron had no time to log;
    a run seen at a fire instant outside those spans (the log's first minute) counts as expected and seen.
    A run is seen at M when its start falls in M's minute.
    """
    zone = _zone_of(tz)
    ranges = []
    for a, b in spans:
        lo = math.ceil(a / 60) * 60
        hi = math.floor((b - 60) / 60) * 60
        if hi >= lo:
            ranges.append((lo, hi))
    expected = sum(expected_runs(expr, tz, lo, hi) for lo, hi in ranges)
    seen = {int(x // 60) * 60 for x in starts}
    matched = outside = 0
    offsets: dict[int, int] = {}
    days: dict[int, bool] = {}
    for m in seen:
        inside = any(lo <= m <= hi for lo, hi in ranges)
        off = offsets.get(m // 3600)
        if off is None:
            u = datetime.fromtimestamp(m, UTC).astimezone(zone).utcoffset()
            off = offsets[m // 3600] = int(u.total_seconds()) if u is not None else 0
        local = m + off
        if (local // 60) % 60 not in expr.minute or (local // 3600) % 24 not in expr.hour:
            continue
        dk = local // 86400
        ok = days.get(dk)
        if ok is None:
            d = date(1970, 1, 1) + timedelta(days=dk)
            ok = days[dk] = d.month in expr.month and expr._day_matches(d)
        if inside:
            matched += ok
        else:
            outside += ok
    missed = max(0, expected - matched)
    expected += outside  # runs seen at fire instants cron was not observed around (the log's first minute)
    listed: list[float] = []
    if missed and expected <= MISSED_ENUMERATE:
        for lo, hi in ranges:
            a = datetime.fromtimestamp(lo, UTC)
            b = datetime.fromtimestamp(hi + 1, UTC)
            for f in fires_between(expr, tz, a, b):
                x = f.timestamp()
                if x not in seen:
                    listed.append(x)
                    if len(listed) >= MISSED_LISTED:
                        break
            if len(listed) >= MISSED_LISTED:
                break
    return expected, missed, tuple(listed)


def _zone_of(tz: str | None):
    if not tz or tz == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


@lru_cache(maxsize=64)
def dst_hours(tz: str | None, year: int) -> tuple[tuple[frozenset[int], str], ...]:
    """Local hours a DST change skips or repeats in `tz` during `year`, each with a description."""
    if not tz:
        return ()
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return ()
    out = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    prev = t.astimezone(zone).utcoffset()
    for _ in range(366 * 24):
        t2 = t + timedelta(hours=1)
        off = t2.astimezone(zone).utcoffset()
        if off != prev and off is not None and prev is not None:
            # find the exact minute of the change inside the hour
            lo = t
            while lo < t2 and (lo + timedelta(minutes=1)).astimezone(zone).utcoffset() == prev:
                lo += timedelta(minutes=1)
            change = lo + timedelta(minutes=1)
            a, b = change + prev, change + off  # naive local wall clock before/after (as UTC arithmetic)
            first, last = (a, b) if off > prev else (b, a)
            hours = set()
            m = first
            while m < last:
                hours.add(m.hour)
                m += timedelta(minutes=1)
            what = "skipped" if off > prev else "repeated"
            out.append(
                (frozenset(hours), f"{first:%H:%M}-{last:%H:%M} is {what} on {change:%Y-%m-%d} in {tz}")
            )
        prev = off
        t = t2
    return tuple(out)


def dst_exposure(expr: CronExpr, tz: str | None, now: float) -> str | None:
    """Fixed local hours that fall into a DST gap or fold in the twelve months after `now`."""
    if expr.reboot or expr.hour_star or len(expr.hour) == 24:
        return None
    year = datetime.fromtimestamp(now, UTC).year
    for y in (year, year + 1):
        for hours, what in dst_hours(tz, y):
            if hours & expr.hour:
                return what
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _dur(seconds: float) -> str:
    if 120 <= seconds < 600:
        return f"{seconds / 60:.1f} min"
    return _ago(seconds)


def _expr(job: CronJob, dialect: str) -> CronExpr | None:
    if not job.schedule or is_anacron_schedule(job.schedule) or job.format is Format.ANACRONTAB:
        return None
    try:
        return parse(job.schedule, Dialect(dialect))
    except (ScheduleError, ValueError):
        return None


# -- metrics -----------------------------------------------------------------------------------------------


def metrics(
    job: CronJob, inp: JobInput, ev: Evidence, tz: str | None, dialect: str = "debian"
) -> tuple[Metrics, list[str]]:
    """The job's metrics over the evidence window, and what could not be known (in words)."""
    unknown: list[str] = []
    expr = _expr(job, dialect)
    zone = job.timezone or tz
    interval = expr.interval_seconds() if expr is not None else None
    logs = inp.logs
    led = [r for r in inp.ledger]
    window = ev.window
    sources: list[str] = []
    if logs is not None and logs.runs:
        sources.append("logs")
    if led:
        sources.append("ledger")

    # runs seen and expected
    runs_seen: int | None = None
    runs_expected = missed = None
    missed_at: tuple[float, ...] = ()
    logs_read = ev.history is not None and window is not None
    if job.no_log:
        unknown.append("cron does not log this job ('-' prefix): runs seen unknown")
    elif logs_read:
        runs_seen = logs.runs if logs is not None else 0
        if job.format is Format.RUN_PARTS and logs is None:
            runs_seen = None
            unknown.append("run-parts does not log its scripts one by one here: runs seen unknown")
    elif led:
        runs_seen = len(led)
    else:
        unknown.append("no cron logs or ledger runs: runs, failures and durations unknown")
    if runs_seen is not None and job.runs:
        if expr is None or expr.reboot:
            unknown.append("anacron or @reboot schedule: expected runs not computed")
        elif job.random_delay:
            unknown.append("RANDOM_DELAY shifts fire times: expected runs not computed")
        else:
            if logs_read:
                spans = _observed(ev)
                seen = logs.starts if logs is not None else ()
            else:
                spans = [(min(r.start for r in led), ev.end)]
                seen = [r.start for r in led]
            first = logs.first_seen if logs_read and logs is not None else None
            if first is not None:
                # Fires before the first logged run may predate the line itself (a job added mid-window):
                # count from one interval before it, which still catches a run missed right at the start.
                lo = first - (interval or 0)
                spans = [(max(a, lo), b) for a, b in spans if b > lo]
            try:
                runs_expected, missed, missed_at = missed_instants(expr, zone, spans, seen)
            except ScheduleError as exc:
                unknown.append(f"expected runs unknown: {exc}")

    # outcomes: the ledger when it has runs (exact), else the logs
    exit_statuses: dict[int, int] = {}
    signals: dict[int, int] = {}
    durations: list[float] = []
    overlaps: int | None = None
    basis = ""
    last_success: float | None = None
    output_bytes: int | None = None
    if led:
        known = [r for r in led if r.failed is not None]
        status_known = len(known)
        failures: int | None = sum(1 for r in known if r.failed)
        for r in known:
            if r.signal is not None:
                signals[r.signal] = signals.get(r.signal, 0) + 1
            elif r.exit_status:
                exit_statuses[r.exit_status] = exit_statuses.get(r.exit_status, 0) + 1
        durations = [d for r in led if (d := r.duration) is not None]
        overlaps, basis = count_overlaps((r.start, r.end) for r in led), "start/end pairs"
        ok = [r.end or r.start for r in known if not r.failed]
        last_success = max(ok) if ok else None
        sizes = [(r.stdout_bytes or 0) + (r.stderr_bytes or 0) for r in led if r.stdout_bytes is not None]
        output_bytes = sum(sizes) if sizes else None
    elif logs is not None and logs.runs:
        status_known = logs.status_known
        failures = logs.failed if status_known else None
        exit_statuses, signals = dict(logs.exit_statuses), dict(logs.signals)
        durations = list(logs.durations)
        if durations and len(logs.ended_starts) == len(durations):
            pairs = zip(logs.ended_starts, logs.durations, strict=True)
            overlaps, basis = count_overlaps((a, a + d) for a, d in pairs), "start/end pairs"
        elif durations and interval:  # evidence without start/end pairs: a run longer than the interval
            overlaps = sum(1 for d in durations if d > interval)
            basis = "runs longer than the interval"
        last_success = logs.last_success
    else:
        status_known, failures = 0, None
    ran = bool(led) or (logs is not None and logs.runs > 0)
    if ran and failures is None:
        unknown.append("no exit statuses in the logs: failures unknown (wrap it with `cronshift record`)")
    if ran and not durations:
        unknown.append("no end lines in the logs: durations and overlaps unknown")
    rate = failures / status_known if failures is not None and status_known else None
    p95 = percentile(durations, 95)

    # alarms: is anyone told when it fails?
    discarded = logs.output_discarded if logs else 0
    mail_failed = logs.mail_failures if logs else 0
    monitored = [w.kind for w in job.wrappers if w.kind in MONITORS]
    mailto = job.env_dict.get("MAILTO")
    silent = None
    if not monitored:
        lost = []
        if discarded:
            lost.append(f"output discarded {discarded}x (no MTA)")
        if mail_failed:
            lost.append(f"mail failed {mail_failed}x")
        if _DEVNULL_STDERR.search(job.shell_command or job.command):
            lost.append("stderr goes to /dev/null")
        if lost:
            to = f"MAILTO={mailto} never arrives" if mailto else "no MAILTO"
            silent = "; ".join(lost) + f"; {to}; no monitoring wrapper"

    unknown.sort(key=lambda u: 0 if "failures" in u else 1 if "durations" in u else 2)  # most telling first
    m = Metrics(
        window=window if logs_read else ((min(r.start for r in led), ev.end) if led else None),
        sources=tuple(sources),
        runs_seen=runs_seen,
        runs_expected=runs_expected,
        missed=missed,
        missed_at=missed_at,
        status_known=status_known,
        failures=failures,
        failure_rate=rate,
        exit_statuses=exit_statuses,
        signals=signals,
        duration_p50=percentile(durations, 50),
        duration_p95=p95,
        duration_max=max(durations) if durations else None,
        interval=interval,
        p95_over_interval=(p95 / interval) if p95 is not None and interval else None,
        overlaps=overlaps,
        overlap_basis=basis,
        last_success=last_success,
        since_last_success=(ev.now - last_success) if last_success is not None else None,
        output_bytes=output_bytes,
        output_lines=logs.output_lines if logs else 0,
        output_discarded=discarded,
        mail_failures=mail_failed,
        silent_risk=silent,
        polls=bool(job.runs and interval is not None and interval <= POLL_INTERVAL),
        dst=dst_exposure(expr, zone, ev.now) if expr is not None and job.runs else None,
        never_runs=not job.runs,
    )
    return m, unknown


# -- the score ---------------------------------------------------------------------------------------------


def _pts(x: float) -> float:
    return round(x, 1)


def score(job: CronJob, m: Metrics, unknown: Sequence[str] = (), evidence_end: float | None = None) -> Score:
    """The documented formula (module docstring): one Reason per component that found pain."""
    if job.retired:
        # Moved off cron on purpose: whatever it did under cron is no longer pain to rank.
        return Score(0.0, (Reason("retired by cronshift: no longer run by cron", 0.0, "scan"),), ())
    reasons: list[Reason] = []

    def add(points: float, text: str, evidence: str) -> None:
        p = _pts(points)
        if p > 0:
            reasons.append(Reason(text=f"{text}: +{p:g}", points=p, evidence=evidence))

    if m.never_runs:
        add(W_NEVER, "cron never runs it (" + "; ".join(job.why_not) + ")", "scan")

    if m.failures and m.status_known:
        rate = m.failures / m.status_known
        days = max((m.window[1] - m.window[0]) / 86400, 1 / 24) if m.window else 1.0
        per_day = m.failures / days
        pts = min(CAP_FAIL_RATE, W_FAIL_RATE * rate) + min(CAP_FAIL_DAILY, per_day)
        how = [f"exit {k} x{v}" for k, v in sorted(m.exit_statuses.items(), key=lambda kv: -kv[1])]
        how += [f"signal {k} x{v}" for k, v in sorted(m.signals.items(), key=lambda kv: -kv[1])]
        add(
            pts,
            f"failed {m.failures} of {m.status_known} runs ({100 * rate:.1f}%; {', '.join(how)}; "
            f"{per_day:.1f}/day)",
            "ledger" if "ledger" in m.sources else "logs: exit status lines",
        )

    if m.missed and m.runs_expected and m.missed > max(1, 0.01 * m.runs_expected):
        at = ", ".join(_iso(x)[:16].replace("T", " ") for x in m.missed_at[:3])
        more = "" if len(m.missed_at) <= 3 and m.missed_at else ", ..."
        add(
            min(CAP_MISSED, W_MISSED * m.missed / m.runs_expected),
            f"missed {m.missed} of {m.runs_expected} runs the schedule expected while cron ran"
            + (f" (UTC {at}{more})" if at else ""),
            "schedule vs logs",
        )

    if m.p95_over_interval is not None and m.interval and m.duration_p95 is not None:
        frac = min(1.0, max(0.0, (m.p95_over_interval - 0.5) * 2))
        add(
            CAP_RUNTIME * frac,
            f"p95 runtime {_dur(m.duration_p95)} is {100 * m.p95_over_interval:.0f}% of its "
            f"{_dur(m.interval)} interval",
            "durations",
        )

    if m.overlaps:
        guards = [w.kind for w in job.wrappers if w.kind in LOCKS]
        what = (
            f"started while the previous run was still going {m.overlaps}x"
            if m.overlap_basis == "start/end pairs"
            else f"ran longer than its {_dur(m.interval or 0)} interval {m.overlaps}x, so runs overlapped"
        )
        if guards:
            add(0, what + f" ({guards[0]} guards it)", "durations")
        else:
            add(min(CAP_OVERLAP, W_OVERLAP * m.overlaps), what + ", no lock", "durations")

    if m.silent_risk:
        clean = m.failures == 0 and m.status_known > 0
        add(
            W_SILENT_CLEAN if clean else W_SILENT,
            f"fails silently: {m.silent_risk}",
            "logs: No MTA / MAIL lines, command text",
        )

    if m.status_known and m.runs_seen:
        if m.last_success is None and m.failures:
            add(
                W_NO_SUCCESS, f"no successful run among {m.status_known} with a known status", "exit statuses"
            )
        elif m.last_success is not None and m.interval and evidence_end is not None:
            gap = evidence_end - m.last_success
            if gap > 3 * m.interval:
                add(
                    W_STALE_SUCCESS,
                    f"last success {_ago(gap)} before the evidence ends (runs every {_dur(m.interval)})",
                    "exit statuses",
                )

    if m.polls and m.interval:
        add(W_POLL, f"polls every {_dur(m.interval)}: a candidate for an event trigger", "schedule")

    if m.dst:
        add(W_DST, f"fixed hour in a DST change: {m.dst}", "schedule + time zone")

    reasons.sort(key=lambda r: -r.points)
    total = min(100.0, _pts(sum(r.points for r in reasons)))
    return Score(value=total, reasons=tuple(reasons), unknown=tuple(unknown))


def rank(
    jobs: Sequence[CronJob], ev: Evidence, tz: str | None, dialect: str = "debian"
) -> list[tuple[CronJob, Metrics, Score]]:
    """Every job with its metrics and score, most painful first (ties: source order)."""
    out = []
    end = ev.window[1] if ev.window else ev.end
    for job in jobs:
        m, unknown = metrics(job, ev.for_job(job.id), ev, tz, dialect)
        out.append((job, m, score(job, m, unknown, end)))
    order = {j.id: i for i, j in enumerate(jobs)}
    out.sort(key=lambda t: (-t[2].value, order[t[0].id]))
    return out
