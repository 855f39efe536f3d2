"""Live shadow mode: pair cron's wrapped runs with beat's shadow runs by (job, scheduled minute), and judge.

Cron keeps running the job, wrapped by `cronshift record` (source "record"); beat fires the generated task
at the same instants (source "celery" or "streams"). Both write run records, with `scheduled_for`, to one
ledger. Everything here is a pure function of those records, the schedule and `now`.

Schedule patterns (what "every pattern seen" means):
- time of day: each distinct HH:MM when the hour field is restricted (not `*`, not `*/N`) and the job fires
  at most 24 times a day (`0 9,17 * * *` -> 09:00, 17:00); otherwise one pattern (every-N-minutes and
  hourly jobs repeat the same way all day);
- day: each weekday when only day-of-week is restricted (`* * * * 1-5` -> Monday..Friday); the two
  branches "day-of-month" and "day-of-week" when both are restricted (cron ORs them); otherwise one;
- a pattern is a (day, time) combination: `0 9 * * 1,3` -> "Monday 09:00", "Wednesday 09:00". A pattern is
  seen when one of its instants has a matched pair (both sides ran once and agree).

The live gate (`parity` only when all hold, over the judged window):
1. Both sides have started: the window opens at the later of the live start (or `--since`) and each
   side's first scheduled run; instants before are warm-up, listed, not judged. Instants younger than the
   grace (max of `grace` and twice the longest run seen) are pending, not judged.
2. Schedule fidelity: every cron instant in the window has exactly one cron-side run and exactly one
   event-side run; no run of either side at a minute cron would not fire; no event-side skip of an
   instant cron ran. Any breach is a `mismatch` (exit 3), named per instant ("only cron fired",
   "event side ran 2 times", "event fired at 09:03, not a cron instant").
3. Behaviour per matched instant: same exit status and signal; output digests equal, or the outputs equal
   once the spans that varied among the cron side's own runs are masked (live calibration: the cron runs
   since the start are the A/A runs, learned by compare.learn_noise as in now mode; a rule masks nothing
   that stayed the same in every cron run, `--ignore` rules always mask; masked spans are counted). A value
   the cron runs so far are too few to judge is unjudged: `insufficient evidence`, saying how many more
   cron runs to wait for. A run much longer or shorter than cron's runs in the window is flagged. Anything
   else that differs is a `mismatch`. Output longer than the 4 KiB tail that differs in raw bytes cannot be
   cleared: `insufficient evidence`.
4. The last N (default 5) judged instants are consecutive matched pairs.
5. Every schedule pattern has been seen ("Monday 09:00 not yet seen").
Otherwise `insufficient evidence`, with what is missing. A mismatch stays in the window: fix the cause,
then judge from a later `--since` (or set up `--live` again).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from cronshift.discover.schedule import CronExpr, fires_between
from cronshift.ledger.kinds import LIVE_KIND
from cronshift.model import RunRecord
from cronshift.shadow.compare import (
    Difference,
    NoiseFloor,
    SideRun,
    compare_output,
    duration_outlier,
    learn_noise,
)
from cronshift.shadow.normalize import Normalizer
from cronshift.shadow.verdict import GATE_PAIRS, Verdict, VerdictDoc, make_verdict_doc

__all__ = [
    "CRON_SOURCE",
    "EVENT_SOURCES",
    "LIVE_KIND",
    "InstantResult",
    "LiveReport",
    "compare_runs",
    "evaluate",
    "learn_floors",
    "live_doc",
    "pattern_of",
    "schedule_patterns",
]

CRON_SOURCE = "record"
EVENT_SOURCES = frozenset({"celery", "streams"})
MAX_TIME_PATTERNS = 24
DEFAULT_GRACE = 120.0
TAIL = 4096  # bytes of output both writers keep as text
DIFF_LINES = 60
# What to do when the cron runs so far cannot tell noise from a change ({more}: runs still needed).
LIVE_ADVICE = "wait for {more} more cron-side run(s) (live mode learns its noise from cron's own runs)"
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")  # cron: 0 = Sunday
DOM_BRANCH, DOW_BRANCH = "day-of-month branch", "day-of-week branch"


# -- patterns ---------------------------------------------------------------------------------------------


def _fixed_times(expr: CronExpr) -> bool:
    return not expr.hour_star and len(expr.hour) * len(expr.minute) <= MAX_TIME_PATTERNS


def _label(day: str | None, time: str | None) -> str:
    return " ".join(p for p in (day, time) if p) or "every run"


def schedule_patterns(expr: CronExpr) -> list[str]:
    """Every distinct pattern of the schedule, in week order (see the module docstring)."""
    times: list[str | None] = (
        [f"{h:02d}:{m:02d}" for h in sorted(expr.hour) for m in sorted(expr.minute)]
        if _fixed_times(expr)
        else [None]
    )
    days: list[str | None]
    if not expr.dom_star and not expr.dow_star:
        days = [DOM_BRANCH, DOW_BRANCH]
    elif not expr.dow_star:
        days = [_DAYS[d] for d in sorted(expr.dow, key=lambda d: (d - 1) % 7)]
    else:
        days = [None]
    return [_label(d, t) for d in days for t in times]


def pattern_of(expr: CronExpr, local: datetime) -> list[str]:
    """The patterns one instant (wall-clock time in the job's zone) counts for: two when both OR branches
    select its day."""
    time = f"{local.hour:02d}:{local.minute:02d}" if _fixed_times(expr) else None
    dow = (local.weekday() + 1) % 7
    if not expr.dom_star and not expr.dow_star:
        days: list[str | None] = []
        if local.day in expr.dom:
            days.append(DOM_BRANCH)
        if dow in expr.dow:
            days.append(DOW_BRANCH)
    elif not expr.dow_star:
        days = [_DAYS[dow]]
    else:
        days = [None]
    return [_label(d, time) for d in days]


# -- behaviour of one pair --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Channel:
    sha256: str | None
    size: int | None
    tail: str


def _channels(r: RunRecord) -> dict[str, _Channel]:
    if r.extra.get("output") == "merged":
        return {"output": _Channel(r.stdout_sha256, r.stdout_bytes, r.stdout_tail)}
    return {
        "stdout": _Channel(r.stdout_sha256, r.stdout_bytes, r.stdout_tail),
        "stderr": _Channel(r.stderr_sha256, r.stderr_bytes, r.stderr_tail),
    }


def _complete(c: _Channel) -> bool:
    """Does the tail hold the whole output? (Only then can normalising clear a raw difference.)"""
    if c.size is None:
        return False
    return c.size <= TAIL and len(c.tail.encode("utf-8", "surrogateescape")) >= c.size - 3


def _udiff(name: str, a: str, b: str) -> str:
    lines = list(
        difflib.unified_diff(
            a.splitlines(), b.splitlines(), f"a/{name} (cron)", f"b/{name} (event)", lineterm="", n=2
        )
    )
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more diff lines"]
    return "\n".join(lines)


def _side(r: RunRecord, c: _Channel) -> SideRun:
    """One channel of a run, as the calibrated comparison reads runs."""
    return SideRun(
        side=r.source,
        exit_status=r.exit_status,
        signal=r.signal,
        output=c.tail,
        output_bytes=c.size,
        duration=r.duration or 0.0,
        started=r.start,
    )


def learn_floors(cron_runs: Iterable[RunRecord], normalize: Normalizer) -> dict[str, NoiseFloor]:
    """Live calibration: the cron side's own finished runs, in start order, are the A/A runs (per channel:
    merged output, or stdout and stderr). The same learning as now mode's (compare.learn_noise): a rule may
    mask only a span that varied between these runs. A channel whose tail does not hold the whole output
    is left out: it cannot be compared by content either."""
    by: dict[str, list[SideRun]] = {}
    for r in sorted(cron_runs, key=lambda r: r.start):
        if r.end is None:
            continue  # lost or still running: no output to learn from
        for name, c in _channels(r).items():
            if _complete(c):
                by.setdefault(name, []).append(_side(r, c))
    return {name: learn_noise(runs, normalize) for name, runs in by.items()}


def _compare_channel(
    name: str,
    cron: RunRecord,
    event: RunRecord,
    a: _Channel,
    b: _Channel,
    normalize: Normalizer,
    floor: NoiseFloor | None,
    masked: tuple[dict[str, int], dict[str, int]],
) -> list[Difference]:
    if a.sha256 == b.sha256:
        return []
    if not (_complete(a) and _complete(b)) or floor is None:
        return [
            Difference(
                "unverifiable",
                f"{name}: raw sha256 differs ({(a.sha256 or '-')[:12]} vs {(b.sha256 or '-')[:12]}) and "
                f"the output is longer than the {TAIL}-byte tail kept, so normalising cannot clear it",
                _udiff(name, a.tail, b.tail),
            )
        ]
    here: tuple[dict[str, int], dict[str, int]] = ({}, {})
    found = compare_output(
        _side(cron, a), _side(event, b), normalize, floor, here, label=name, advice=LIVE_ADVICE
    )
    for total, counts in zip(masked, here, strict=True):
        for rule, n in counts.items():
            total[rule] = total.get(rule, 0) + n
    if found:
        return found
    rules = sorted(set(here[0]) | set(here[1]))
    if not rules:
        return [
            Difference(
                "output", f"{name}: line endings or final newline differ", _udiff(name, a.tail, b.tail)
            )
        ]
    return [
        Difference(
            "output",
            f"{name}: raw sha256 differs, equal once the spans cron's own runs vary in are masked",
            _udiff(name, a.tail, b.tail),
            explained="normaliser: " + ", ".join(rules) + " (varied between cron runs)",
        )
    ]


def compare_runs(
    cron: RunRecord,
    event: RunRecord,
    normalize: Normalizer,
    cron_durations: list[float],
    *,
    floors: dict[str, NoiseFloor],
    masked: tuple[dict[str, int], dict[str, int]] | None = None,
    compare_output: bool = True,
) -> list[Difference]:
    """Every difference between the cron run and the event run of one instant (`explained` set for noise,
    `unjudged` where the cron runs so far are too few to tell). `floors`: learn_floors of the cron side."""
    counts = masked if masked is not None else ({}, {})
    out: list[Difference] = []
    if cron.signal != event.signal:
        out.append(Difference("signal", f"killed by signal {cron.signal} (cron) vs {event.signal} (event)"))
    elif cron.exit_status != event.exit_status:
        out.append(
            Difference("exit", f"exit status {cron.exit_status} (cron) vs {event.exit_status} (event)")
        )
    if compare_output:
        ca, cb = _channels(cron), _channels(event)
        if set(ca) == set(cb):
            for name in ca:
                out += _compare_channel(
                    name, cron, event, ca[name], cb[name], normalize, floors.get(name), counts
                )
        elif "output" in ca and event.extra.get("output_sha256"):
            if ca["output"].sha256 != event.extra["output_sha256"]:
                out.append(
                    Difference(
                        "unverifiable",
                        "output: raw sha256 of the merged output differs and the event side kept only "
                        "split tails, so normalising cannot clear it",
                    )
                )
        else:
            out.append(
                Difference(
                    "unverifiable",
                    "output: one side kept stdout and stderr apart, the other merged them: not comparable",
                )
            )
    if event.duration is not None:
        why = duration_outlier(event.duration, cron_durations)
        if why:
            out.append(Difference("duration", f"event side {why}"))
    return out


# -- pairing ----------------------------------------------------------------------------------------------


def _minute(t: float) -> int:
    return int(t // 60) * 60


def iso_time(t: float, zone: Any = UTC) -> str:
    return datetime.fromtimestamp(t, zone).isoformat()


@dataclass
class InstantResult:
    instant: int  # epoch seconds of cron's instant
    local: str  # ISO in the job's zone
    patterns: list[str]
    cron: list[RunRecord]
    event: list[RunRecord]  # runs (not skips, not attempts that were retried)
    skipped: list[RunRecord] = field(default_factory=list)
    retried: list[RunRecord] = field(default_factory=list)
    fidelity: list[str] = field(default_factory=list)  # schedule problems: each makes a mismatch
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        c, e = len(self.cron), len(self.event)
        if c == 1 and e == 1:
            return "both"
        if c == 0 and e == 0:
            return "neither"
        if c > 1 or e > 1:
            return "duplicate"
        return "only cron" if c else "only event"

    @property
    def real(self) -> list[Difference]:
        return [
            d
            for d in self.differences
            if d.explained is None and d.unjudged is None and d.kind != "unverifiable"
        ]

    @property
    def unverifiable(self) -> list[Difference]:
        """Differences the evidence cannot judge: too long to compare, or too few cron runs to tell."""
        return [d for d in self.differences if d.kind == "unverifiable" or d.unjudged is not None]

    @property
    def matched(self) -> bool:
        return self.status == "both" and not self.fidelity and not self.real and not self.unverifiable

    def offsets(self) -> dict[str, list[float]]:
        return {
            "cron": [round(r.start - self.instant, 3) for r in self.cron],
            "event": [round(r.start - self.instant, 3) for r in self.event],
        }

    def to_doc(self) -> dict[str, Any]:
        def side(r: RunRecord) -> dict[str, Any]:
            return {
                "start": r.start,
                "duration": r.duration,
                "exit_status": r.exit_status,
                "signal": r.signal,
                "stdout_sha256": r.stdout_sha256,
                "stderr_sha256": r.stderr_sha256,
                "uid": r.extra.get("uid"),
            }

        return {
            "instant": iso_time(self.instant),
            "local": self.local,
            "patterns": self.patterns,
            "status": self.status,
            "matched": self.matched,
            "offsets": self.offsets(),
            "cron": [side(r) for r in self.cron],
            "event": [side(r) for r in self.event],
            "skipped": [r.extra.get("skipped", "") for r in self.skipped],
            "fidelity": self.fidelity,
            "differences": [d.to_doc() for d in self.differences],
            "notes": self.notes,
        }


@dataclass
class LiveReport:
    job_id: str
    window: tuple[float | None, float]  # judged [since, until); since None: a side has not started
    instants: list[InstantResult]
    off_schedule: list[str]  # "event side fired at ..., not a cron instant"
    patterns: dict[str, bool]  # expected pattern -> seen in a matched pair
    warmup: int  # instants before both sides started
    pending: int  # instants too young to judge
    notes: list[str]
    verdict: Verdict
    gate_pairs: int
    masked: dict[str, dict[str, int]] = field(default_factory=dict)  # side -> rule -> spans masked
    floors: dict[str, NoiseFloor] = field(default_factory=dict)  # channel -> learned from cron's runs

    @property
    def floor_text(self) -> list[str]:
        """What the cron side's own runs showed to vary (what may be masked), per channel."""
        return [
            line if name == "output" else f"{name} {line}"
            for name, f in sorted(self.floors.items())
            for line in f.describe()
        ]

    @property
    def pairs(self) -> int:
        return sum(1 for i in self.instants if i.status == "both")


def _split_event(runs: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord], list[RunRecord], int]:
    """(runs, retried attempts, policy skips, duplicate sends the claim skipped)."""
    ran, retried, skipped, dup = [], [], [], 0
    for r in runs:
        why = r.extra.get("skipped")
        if why is not None:
            if why.startswith("duplicate:"):
                dup += 1
            else:
                skipped.append(r)
        elif "retry_in" in r.extra:
            retried.append(r)
        else:
            ran.append(r)
    if not ran and retried:  # the retry is still to come: the last attempt so far stands for the fire
        ran, retried = [retried[-1]], retried[:-1]
    return ran, retried, skipped, dup


def evaluate(
    job_id: str,
    expr: CronExpr,
    tz: str | None,
    records: Iterable[RunRecord],
    *,
    since: float,
    now: float,
    normalize: Normalizer,
    grace: float = DEFAULT_GRACE,
    gate_pairs: int = GATE_PAIRS,
    compare_output: bool = True,
) -> LiveReport:
    """Pair cron-side and event-side runs of `job_id` by scheduled minute over [since, now - grace) and
    judge them by the live gate (module docstring)."""
    zone = ZoneInfo(tz) if tz and tz != "UTC" else UTC
    cron_runs: dict[int, list[RunRecord]] = {}
    event_runs: dict[int, list[RunRecord]] = {}
    notes: list[str] = []
    unscheduled = 0
    longest = 0.0
    for r in records:
        if r.job_id != job_id:
            continue
        if r.source == CRON_SOURCE:
            bucket = cron_runs
        elif r.source in EVENT_SOURCES:
            bucket = event_runs
        else:
            continue
        if r.scheduled_for is None:
            unscheduled += 1
            continue
        if r.scheduled_for < since:
            continue
        longest = max(longest, r.duration or 0.0)
        bucket.setdefault(_minute(r.scheduled_for), []).append(r)
    if unscheduled:
        notes.append(f"{unscheduled} run(s) without a scheduled time (application triggers) not judged")
    until = now - max(grace, 2 * longest)
    firsts = [min(b) for b in (cron_runs, event_runs) if b]
    start = max([since, *firsts]) if len(firsts) == 2 else None
    expected_all = [
        int(dt.timestamp())
        for dt in fires_between(
            expr, tz, datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(now, UTC)
        )
    ]
    warmup = sum(1 for t in expected_all if start is None or t < start)
    pending = sum(1 for t in expected_all if t >= until and (start is None or t >= start))
    expected = [t for t in expected_all if start is not None and start <= t < until]
    all_patterns = schedule_patterns(expr)
    seen = dict.fromkeys(all_patterns, False)
    cron_durations = [r.duration for t in expected for r in cron_runs.get(t, []) if r.duration is not None]
    floors = learn_floors((r for rs in cron_runs.values() for r in rs), normalize) if compare_output else {}
    masked: dict[str, dict[str, int]] = {"cron": {}, "event": {}}
    instants: list[InstantResult] = []
    dup_sends = 0
    for t in expected:
        ran, retried, skipped, dup = _split_event(event_runs.get(t, []))
        dup_sends += dup
        local = datetime.fromtimestamp(t, zone)
        i = InstantResult(t, local.isoformat(), pattern_of(expr, local), cron_runs.get(t, []), ran)
        i.skipped, i.retried = skipped, retried
        when = local.strftime("%a %Y-%m-%d %H:%M")
        if i.status == "only cron":
            why = f" (skipped: {skipped[0].extra['skipped']})" if skipped else ""
            i.fidelity.append(f"{when}: only cron fired; the event side did not run{why}")
        elif i.status == "only event":
            i.fidelity.append(f"{when}: only the event side fired; no cron-side run was recorded")
        elif i.status == "duplicate":
            i.fidelity.append(
                f"{when}: cron side ran {len(i.cron)} time(s), event side {len(i.event)} time(s)"
            )
        if retried:
            i.notes.append(f"event side retried {len(retried)} time(s) (its retry policy)")
        if dup:
            i.notes.append(f"event side: {dup} duplicate send(s), skipped by the instant's claim")
        if i.status == "both":
            i.differences = compare_runs(
                i.cron[0],
                i.event[0],
                normalize,
                cron_durations,
                floors=floors,
                masked=(masked["cron"], masked["event"]),
                compare_output=compare_output,
            )
        if i.matched:
            for p in i.patterns:
                seen[p] = True
        instants.append(i)
    off: list[str] = []
    expected_set = set(expected_all)
    for side, runs in (("cron side", cron_runs), ("event side", event_runs)):
        for t, rs in sorted(runs.items()):
            if start is not None and start <= t < until and t not in expected_set:
                n = len([r for r in rs if "duplicate" not in r.extra.get("skipped", "")])
                local = datetime.fromtimestamp(t, zone).strftime("%a %Y-%m-%d %H:%M")
                off.append(f"{side} fired at {local} ({n} run(s)), not a cron instant")
    if dup_sends:
        notes.append(f"beat sent {dup_sends} instant(s) twice; the runtime's claim skipped the second")
    verdict = _judge(instants, off, seen, start, cron_runs, event_runs, gate_pairs)
    return LiveReport(
        job_id,
        (start, until),
        instants,
        off,
        seen,
        warmup,
        pending,
        notes,
        verdict,
        gate_pairs,
        masked,
        floors,
    )


def _judge(
    instants: list[InstantResult],
    off: list[str],
    seen: dict[str, bool],
    start: float | None,
    cron_runs: dict[int, list[RunRecord]],
    event_runs: dict[int, list[RunRecord]],
    gate_pairs: int,
) -> Verdict:
    real: list[str] = [f for i in instants for f in i.fidelity] + off
    real += _once_each(instants)
    missing: list[str] = []
    if not cron_runs:
        missing.append("no cron-side run recorded yet: is the cron line wrapped by `cronshift record`?")
    if not event_runs:
        missing.append("no event-side run recorded yet: start the worker and beat with CRONSHIFT_LEDGER set")
    if start is not None and not instants:
        missing.append("no cron instant has passed since both sides started")
    missing += _grouped(
        [(i.local, d.what, d.unjudged) for i in instants for d in i.unverifiable], len(instants)
    )
    missing += [f"{i.local}: neither side fired" for i in instants if i.status == "neither"]
    tail = 0
    for i in reversed(instants):
        if not i.matched:
            break
        tail += 1
    if tail < gate_pairs:
        missing.append(f"{tail} consecutive matched instant(s) at the end; the gate needs {gate_pairs}")
    missing += [f"{p} not yet seen" for p, ok in seen.items() if not ok]
    if real:
        return Verdict("mismatch", missing, real, tail)
    return Verdict("insufficient evidence" if missing else "parity", missing, [], tail)


def _once_each(instants: list[InstantResult]) -> list[str]:
    """Each real difference once, with the instants it was seen at (a duration is one difference)."""
    at: dict[str, list[InstantResult]] = {}
    first: dict[str, str] = {}
    for i in instants:
        for d in i.real:
            key = d.kind if d.kind == "duration" else d.what
            at.setdefault(key, []).append(i)
            first.setdefault(key, d.what)
    out = []
    for key, where in at.items():
        when = (
            where[0].local
            if len(where) == 1
            else f"{len(where)} of {len(instants)} instants from {where[0].local}"
        )
        out.append(f"{when}: {first[key]}")
    return out


def _grouped(items: list[tuple[str, str, str | None]], total: int) -> list[str]:
    """Each thing that cannot be judged once, with the instants it was seen at (not once per instant)."""
    at: dict[tuple[str, str | None], list[str]] = {}
    for local, what, why in items:
        at.setdefault((what, why), []).append(local)
    out = []
    for (what, why), where in at.items():
        when = where[0] if len(where) == 1 else f"{len(where)} of {total} instants"
        out.append(f"{when}: cannot tell: {what}" + (f": {why}" if why else ""))
    return out


def live_doc(
    rep: LiveReport,
    *,
    command: str,
    setup: dict[str, Any],
    now: float,
) -> VerdictDoc:
    """The verdict document `cronshift retire` reads (same kind, key and file as now mode), with the live
    evidence: every judged instant with both sides, schedule fidelity and the patterns seen."""
    v = rep.verdict
    start, until = rep.window
    offsets = [o for i in rep.instants for o in i.offsets()["event"]]
    cron_offsets = [o for i in rep.instants for o in i.offsets()["cron"]]
    return make_verdict_doc(
        v,
        job_id=rep.job_id,
        command=command,
        runs_compared=rep.pairs,
        gate={
            "mode": "live",
            "consecutive_pairs": rep.gate_pairs,
            "patterns": list(rep.patterns),
            "no_missing_or_duplicate_fire": True,
        },
        evidence={
            **setup,
            "event_path": "beat (live)",
            "window": {"since": None if start is None else iso_time(start), "until": iso_time(until)},
        },
        written_by="cronshift shadow-run --report (live)",
        first=iso_time(start if start is not None else until),
        last=iso_time(until),
        session=setup.get("session", ""),
        patterns=rep.patterns,
        fidelity={
            "instants": len(rep.instants),
            "both": sum(1 for i in rep.instants if i.status == "both"),
            "only_cron": sum(1 for i in rep.instants if i.status == "only cron"),
            "only_event": sum(1 for i in rep.instants if i.status == "only event"),
            "duplicate": sum(1 for i in rep.instants if i.status == "duplicate"),
            "neither": sum(1 for i in rep.instants if i.status == "neither"),
            "off_schedule": rep.off_schedule,
            "warmup": rep.warmup,
            "pending": rep.pending,
            "max_start_offset": {
                "cron": max(cron_offsets, default=None),
                "event": max(offsets, default=None),
            },
        },
        instants=[i.to_doc() for i in rep.instants],
        notes=rep.notes,
        noise_floor_text=rep.floor_text,
        noise_floor={name: f.to_doc() for name, f in sorted(rep.floors.items())},
        summary={
            "masked": rep.masked,
            "calibration_runs": max((f.runs for f in rep.floors.values()), default=0),
        },
        judged_at=iso_time(now),
    )


# -- set-up -----------------------------------------------------------------------------------------------

LIVE_MODES = ("allow", "dry-run")


def trigger_refusal(triggers: list[dict[str, Any]], probe: str | None, mode: str) -> str | None:
    """Why live shadowing may not start with this probe for this project's event path (None: it may)."""
    if triggers and not probe:
        kinds = ", ".join(sorted({str(t.get("kind")) for t in triggers}))
        return (
            f"the generated project runs this job on events ({kinds}): its runs do not line up with cron "
            "instants, so live mode compares effects per cron interval; declare an effect probe, "
            "--probe CMD, whose output summarises what the job achieves (e.g. a SQL count of rows not "
            "yet synced, the files still waiting in a folder)"
        )
    if probe and not triggers:
        return (
            "--probe is for an event-triggered event path (a project generated with --trigger for this job); "
            "this job's event path fires at cron's instants and is compared run by run"
        )
    if triggers and mode != "allow":
        return (
            "an event-triggered event path is judged by its effects: both sides must really run "
            "(--mode allow)"
        )
    return None


def mode_refusal(mode: str, dry_run_flag: str | None) -> str | None:
    """Why live shadowing may not start with this side-effect mode (None: it may)."""
    if mode == "dry-run" and not dry_run_flag:
        return "--mode dry-run needs --dry-run-flag TEXT (the job's own no-side-effect flag)"
    if mode not in LIVE_MODES:
        return (
            "--live runs the job twice at every instant (cron, and beat's shadow run) with no sandbox "
            "around either: state --mode allow (the job is idempotent, running it twice is harmless) or "
            "--mode dry-run --dry-run-flag FLAG (the event path runs only the job's own dry run); for a "
            "sandboxed comparison use now mode (`cronshift shadow-run JOB --runs N`)"
        )
    return None


def setup_doc(
    *,
    job_id: str,
    command: str,
    inner_command: str,
    schedule: str,
    tz: str | None,
    mode: str,
    dry_run_flag: str | None,
    started: float,
    store: str | None,
    redis_url: str | None,
    wrapped_now: bool,
    session: str,
    project: str | None = None,
    package: str | None = None,
    project_digests: dict[str, str] | None = None,
    triggers: list[dict[str, Any]] | None = None,
    probe: str | None = None,
) -> dict[str, Any]:
    """The `shadow-live` ledger document: what live shadowing of one job started with. The generated
    project's file digests bind a later parity verdict to the code the live worker ran (retire's gate)."""
    return {
        "kind": LIVE_KIND,
        "job": job_id,
        "started": started,
        "started_iso": iso_time(started),
        "command": command,
        "inner_command": inner_command,
        "schedule": schedule,
        "timezone": tz,
        "mode": mode,
        "dry_run_flag": dry_run_flag,
        "store": store,
        "redis": redis_url,
        "wrapped_by_setup": wrapped_now,
        "session": session,
        "project": project,
        "package": package,
        "project_digests": project_digests or {},
        # An event-triggered event path (shadow/effects.py): intervals and effects, not instants and output.
        "event_path": "triggered" if triggers else "beat",
        "triggers": triggers or [],
        "probe": probe,
    }


def event_path_commands(
    *,
    root: str,
    store: str | None,
    redis_url: str | None,
    project: str | None,
    package: str | None,
    triggered: bool = False,
) -> list[str]:
    """What to run so the generated project's worker and beat write to the same ledger as the wrapper."""
    pkg = package or "<package>"
    ledger = f"CRONSHIFT_LEDGER_REDIS={redis_url}" if redis_url else f"CRONSHIFT_LEDGER={store}"
    env = f"{ledger} CRONSHIFT_ROOT={root}"
    cd = f"cd {project or '<the cronshift generate output dir>'}"
    return [
        cd,
        f"{env} celery -A {pkg}.app worker --loglevel info",
        f"{env} celery -A {pkg}.app beat --schedule celerybeat-schedule   # exactly one beat",
        *([f"{env} python -m {pkg}.events   # the event sources (settings: EVENTS.md)"] if triggered else []),
    ]
