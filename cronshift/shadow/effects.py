"""Live shadow mode for an event-triggered event path: pair cron intervals with event runs, compare effects.

When the generated project runs a job on events (`generate --trigger postgres:TABLE|path:DIR|stream:KEY|
call`), its runs do not line up with cron instants: a poll every five minutes becomes a run per batch of
inserts. What can be compared is what the job achieves, not what it prints. The user declares an effect
probe (`--probe CMD`): a command whose output summarises the job's effect in a way a faithful migration
leaves the same on both sides, e.g. "rows of `orders` not yet in `synced`" or the names of files still
waiting in a folder. It runs (`--probe-now --side cron|event`, or the `--probe-watch` loop) after each cron
run and again at the end of the interval, after the interval's event runs.

Intervals (a pure function of the run records and the probes, by their real times):
- interval k starts with cron run k and ends when cron run k+1 starts (the last one is open);
- its event runs are the event side's runs (triggered, or beat's safety net) that started in it;
- its cron probe is the first cron-side probe taken after cron run k ended; its event probe is the last
  event-side probe taken in the interval after cron run k ended.

The triggered gate (`parity` only when all hold):
1. Every judged interval has both probes, and no event run of it was still running when its event probe
   was taken (else the interval cannot be judged: insufficient, with what is missing).
2. The event probe's exit status and output equal the cron probe's (`--ignore` rules masked): else
   `mismatch`, naming how many event runs the interval had. An event path that never runs, or runs but
   leaves the effect undone, shows there: what cron did for its interval, the event side did not.
3. No event run's exit status or signal differs from the cron run's of its interval (`mismatch`).
4. The last N (`--gate-pairs`) judged intervals matched in a row, and in at least N matched intervals an
   event (not only the safety-net schedule) ran the job: an event path that was never exercised proves
   nothing (insufficient).
An open interval without its probes yet is pending, not judged. Output and durations of the runs are not
compared: the two sides do different amounts of work by design.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cronshift.model import RunRecord
from cronshift.shadow.live import CRON_SOURCE, EVENT_SOURCES, LIVE_KIND, iso_time
from cronshift.shadow.normalize import USER_PREFIX, Normalizer
from cronshift.shadow.verdict import Verdict, VerdictDoc, make_verdict_doc

__all__ = [
    "EFFECT_KIND",
    "IntervalResult",
    "TriggeredReport",
    "due_probe",
    "evaluate_triggered",
    "probe_doc",
    "probe_once",
    "probe_setup",
    "project_triggers",
    "run_probe",
    "triggered_doc",
    "user_only",
    "watch",
    "watch_job",
]

EFFECT_KIND = "shadow-effect"
SIDES = ("cron", "event")
PROBE_TIMEOUT = 120.0
OUTPUT_KEPT = 8192  # bytes of probe output kept (a probe is a summary; the sha256 covers all of it)


def project_triggers(project: Path, package: str, job_id: str) -> list[dict[str, Any]]:
    """The event sources the generated project wires to `job_id` (its events.py `JOBS`), read without
    importing it (importing would import the Celery app); [] when the job is not event-triggered."""
    path = project / package / "events.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id == "JOBS" and node.value is not None):
            continue
        value = node.value
        if isinstance(value, ast.Call) and value.args:  # json.loads('...')
            value = value.args[0]
        try:
            raw = ast.literal_eval(value)
            jobs = json.loads(raw) if isinstance(raw, str) else raw
        except (ValueError, TypeError, SyntaxError):
            return []
        cfg = jobs.get(job_id) if isinstance(jobs, dict) else None
        return list(cfg.get("sources") or []) if isinstance(cfg, dict) else []
    return []


def run_probe(command: str, side: str, *, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """Run the effect probe once (`/bin/sh -c`, stdout and stderr merged) and return its observation.
    CRONSHIFT_PROBE_SIDE tells the probe which side it summarises, for a job whose sides write apart."""
    started = time.time()
    env = dict(os.environ, CRONSHIFT_PROBE_SIDE=side)
    try:
        p = subprocess.run(
            ["/bin/sh", "-c", command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        out, status, error = p.stdout, p.returncode, None
    except subprocess.TimeoutExpired as e:
        out, status, error = e.stdout or b"", None, f"the probe did not finish in {timeout:.0f}s"
    return probe_doc(side, command, started, time.time(), status, out, error)


def probe_doc(
    side: str, command: str, started: float, ended: float, status: int | None, out: bytes, error: str | None
) -> dict[str, Any]:
    """The ledger document of one probe (kind EFFECT_KIND, key JOB/STARTED/SIDE)."""
    return {
        "side": side,
        "probe": command,
        "started": started,
        "ended": ended,
        "exit_status": status,
        "output": out[:OUTPUT_KEPT].decode("utf-8", "backslashreplace"),
        "output_bytes": len(out),
        "output_sha256": hashlib.sha256(out).hexdigest(),
        "error": error,
    }


def probe_key(job_id: str, doc: dict[str, Any]) -> str:
    return f"{job_id}/{doc['started']:017.6f}/{doc['side']}"


# -- judging ----------------------------------------------------------------------------------------------


def _effect(doc: dict[str, Any], user_rules: Normalizer) -> tuple[Any, str]:
    """What is compared of a probe: its exit status and its output with only the user's rules masked (the
    probe is declared to summarise the effect, so there is no built-in noise to guess at)."""
    text = str(doc.get("output") or "")
    if int(doc.get("output_bytes") or 0) > OUTPUT_KEPT:
        text = "sha256:" + str(doc.get("output_sha256"))
    return doc.get("exit_status"), user_rules(text)


@dataclass
class IntervalResult:
    start: float  # the cron run's start
    end: float | None  # the next cron run's start; None: open
    cron: RunRecord
    event: list[RunRecord]
    cron_probe: dict[str, Any] | None
    event_probe: dict[str, Any] | None
    after_probe: int = 0  # event runs that started after the event probe (its effect is not judged here)
    differences: list[str] = field(default_factory=list)  # real: each makes a mismatch
    unjudged: list[str] = field(default_factory=list)  # what keeps it from being judged
    local: str = ""

    @property
    def triggered(self) -> int:
        """Event runs an event started (not beat's safety-net schedule)."""
        return sum(1 for r in self.event if r.scheduled_for is None)

    @property
    def matched(self) -> bool:
        return not self.differences and not self.unjudged

    def to_doc(self) -> dict[str, Any]:
        def probe(d: dict[str, Any] | None) -> dict[str, Any] | None:
            if d is None:
                return None
            keys = ("started", "exit_status", "output", "output_sha256", "error")
            return {k: d.get(k) for k in keys}

        return {
            "start": iso_time(self.start),
            "end": None if self.end is None else iso_time(self.end),
            "cron": {
                "start": self.cron.start,
                "exit_status": self.cron.exit_status,
                "signal": self.cron.signal,
            },
            "event_runs": len(self.event),
            "triggered_runs": self.triggered,
            "event": [
                {
                    "start": r.start,
                    "exit_status": r.exit_status,
                    "signal": r.signal,
                    "scheduled": r.scheduled_for,
                }
                for r in self.event
            ],
            "after_probe": self.after_probe,
            "cron_probe": probe(self.cron_probe),
            "event_probe": probe(self.event_probe),
            "matched": self.matched,
            "differences": self.differences,
            "unjudged": self.unjudged,
        }


@dataclass
class TriggeredReport:
    job_id: str
    intervals: list[IntervalResult]
    pending: int
    notes: list[str]
    verdict: Verdict
    gate_pairs: int
    exercised: int  # matched intervals in which an event ran the job


def _split(
    records: Iterable[RunRecord], job_id: str, since: float
) -> tuple[list[RunRecord], list[RunRecord]]:
    cron: list[RunRecord] = []
    event: list[RunRecord] = []
    for r in records:
        if r.job_id != job_id or r.start < since:
            continue
        if r.source == CRON_SOURCE:
            cron.append(r)
        elif r.source in EVENT_SOURCES and r.extra.get("skipped") is None:
            event.append(r)
    return sorted(cron, key=lambda r: r.start), sorted(event, key=lambda r: r.start)


def evaluate_triggered(
    job_id: str,
    records: Iterable[RunRecord],
    probes: Iterable[dict[str, Any]],
    *,
    since: float,
    now: float,
    user_rules: Normalizer,
    gate_pairs: int,
    tz: str | None = None,
) -> TriggeredReport:
    """Pair each cron run with the event runs of its interval and judge the two effects (module docstring)."""

    zone = ZoneInfo(tz) if tz and tz != "UTC" else UTC
    cron, event = _split(records, job_id, since)
    obs = sorted((p for p in probes if p.get("side") in SIDES), key=lambda p: float(p["started"]))
    notes: list[str] = []
    intervals: list[IntervalResult] = []
    pending = 0
    finished = [r for r in cron if r.end is not None]
    if len(finished) < len(cron):
        notes.append(f"{len(cron) - len(finished)} cron-side run(s) still running or lost: not judged")
    for k, c in enumerate(finished):
        end = finished[k + 1].start if k + 1 < len(finished) else None
        hi = end if end is not None else float("inf")
        assert c.end is not None
        inside = [p for p in obs if c.end <= float(p["started"]) < hi]
        cp = next((p for p in inside if p["side"] == "cron"), None)
        ep = next((p for p in reversed(inside) if p["side"] == "event"), None)
        runs = [r for r in event if c.start <= r.start < hi]
        when = datetime.fromtimestamp(c.start, zone).strftime("%a %Y-%m-%d %H:%M:%S")
        i = IntervalResult(c.start, end, c, runs, cp, ep, local=when)
        if end is None and (cp is None or ep is None):
            pending += 1  # the open interval, its probes not taken yet
            continue
        if cp is None:
            i.unjudged.append(
                f"interval from {when}: no cron-side probe after cron's run (--probe-now --side cron)"
            )
        if ep is None:
            i.unjudged.append(
                f"interval from {when}: no event-side probe before the next cron run "
                "(--probe-now --side event)"
            )
        for p in (cp, ep):
            if p is not None and p.get("error"):
                i.unjudged.append(
                    f"interval from {when}: the {p['side']}-side probe failed to run: {p['error']}"
                )
        if ep is not None:
            t = float(ep["started"])
            judged = [r for r in runs if r.start < t]
            i.after_probe = len(runs) - len(judged)
            i.event = judged
            busy = [r for r in judged if r.end is None or r.end > t]
            if busy:
                i.unjudged.append(
                    f"interval from {when}: {len(busy)} event run(s) still running when the event-side probe "
                    "was taken: probe later in the interval"
                )
        for r in i.event:
            if (r.exit_status, r.signal) != (c.exit_status, c.signal):
                how = f"signal {r.signal}" if r.signal is not None else f"exit status {r.exit_status}"
                cron_how = f"signal {c.signal}" if c.signal is not None else f"exit status {c.exit_status}"
                i.differences.append(
                    f"interval from {when}: an event run at "
                    f"{datetime.fromtimestamp(r.start, zone).strftime('%H:%M:%S')} ended with {how}; "
                    f"cron's run of the interval with {cron_how}"
                )
        if cp is not None and ep is not None and not cp.get("error") and not ep.get("error"):
            a, b = _effect(cp, user_rules), _effect(ep, user_rules)
            if a != b:
                i.differences.append(
                    f"interval from {when}: the effect differs after {len(i.event)} event run(s): the probe "
                    f"gave {_show(cp)} after cron's run, {_show(ep)} after the event side's"
                )
        intervals.append(i)
    exercised = sum(1 for i in intervals if i.matched and i.triggered)
    verdict = _judge(intervals, cron, event, obs, exercised, gate_pairs)
    late = sum(i.after_probe for i in intervals)
    if late:
        notes.append(f"{late} event run(s) started after their interval's event probe: judged by no probe")
    return TriggeredReport(job_id, intervals, pending, notes, verdict, gate_pairs, exercised)


def _show(p: dict[str, Any]) -> str:
    out = str(p.get("output") or "").strip()
    lines = out.splitlines()
    text = " | ".join(lines[:3]) + (f" | ... ({len(lines) - 3} more lines)" if len(lines) > 3 else "")
    status = p.get("exit_status")
    return repr(text) + ("" if status == 0 else f" (exit {status})")


def _judge(
    intervals: list[IntervalResult],
    cron: list[RunRecord],
    event: list[RunRecord],
    probes: list[dict[str, Any]],
    exercised: int,
    gate_pairs: int,
) -> Verdict:
    real = [d for i in intervals for d in i.differences]
    missing: list[str] = []
    if not cron:
        missing.append("no cron-side run recorded yet: is the cron line wrapped by `cronshift record`?")
    if not probes:
        missing.append("no effect probe taken yet: run `--probe-watch` (or `--probe-now --side cron|event`)")
    if cron and not intervals:
        missing.append("no interval with both probes yet")
    missing += [u for i in intervals for u in i.unjudged]
    tail = 0
    for i in reversed(intervals):
        if not i.matched:
            break
        tail += 1
    if tail < gate_pairs:
        missing.append(f"{tail} consecutive matched interval(s) at the end; the gate needs {gate_pairs}")
    if exercised < gate_pairs:
        missing.append(
            f"{exercised} matched interval(s) in which an event ran the job; the gate needs {gate_pairs} "
            + (
                "(no event-side run recorded yet: start the events process and the worker with "
                "CRONSHIFT_LEDGER set)"
                if not event
                else "(make the event happen: insert a row, drop a file, add a stream entry)"
            )
        )
    if real:
        return Verdict("mismatch", missing, real, tail)
    return Verdict("insufficient evidence" if missing else "parity", missing, [], tail)


def triggered_doc(rep: TriggeredReport, *, command: str, setup: dict[str, Any], now: float) -> VerdictDoc:
    """The verdict document retire reads (same kind, key, file and gate binding as every live verdict)."""
    first = rep.intervals[0].start if rep.intervals else now
    return make_verdict_doc(
        rep.verdict,
        job_id=rep.job_id,
        command=command,
        runs_compared=len(rep.intervals),
        gate={
            "mode": "live",
            "event_path": "triggered",
            "consecutive_pairs": rep.gate_pairs,
            "exercised_intervals": rep.exercised,
            "compared": "effects (the declared probe), not output",
        },
        evidence={**setup, "event_path": "triggered (live)"},
        written_by="cronshift shadow-run --report (live, triggered)",
        first=iso_time(first),
        last=iso_time(now),
        session=setup.get("session", ""),
        fidelity={
            "intervals": len(rep.intervals),
            "pending": rep.pending,
            "event_runs": sum(len(i.event) for i in rep.intervals),
            "triggered_runs": sum(i.triggered for i in rep.intervals),
        },
        intervals=[i.to_doc() for i in rep.intervals],
        notes=rep.notes,
        judged_at=iso_time(now),
    )


def user_only(normalize: Normalizer) -> Normalizer:
    """Only the user's own --ignore rules: what a probe's output may have masked."""
    return Normalizer(tuple(r for r in normalize.rules if r.name.startswith(USER_PREFIX)))


# -- the probe watcher ------------------------------------------------------------------------------------

WATCH_MARGIN = 15.0  # seconds before the next cron instant the event side's effect is probed
WATCH_POLL = 2.0


def due_probe(
    cron_runs: Iterable[RunRecord],
    probes: Iterable[dict[str, Any]],
    next_instant: float,
    now: float,
    margin: float,
) -> str | None:
    """Which side's probe is due now: 'cron' once cron's latest run has ended (and none was taken since),
    'event' within `margin` seconds of the next cron instant (and none was taken since cron's run ended)."""
    done = [r for r in cron_runs if r.end is not None]
    if not done:
        return None
    last = max(done, key=lambda r: r.start)
    assert last.end is not None
    taken = {p.get("side") for p in probes if float(p["started"]) >= last.end}
    if "cron" not in taken:
        return "cron"
    if "event" not in taken and now >= next_instant - margin:
        return "event"
    return None


def watch(
    read: Any,
    write: Any,
    probe: str,
    next_instant: Any,
    *,
    margin: float = WATCH_MARGIN,
    poll: float = WATCH_POLL,
    clock: Any = time.time,
    sleep: Any = time.sleep,
    stop: Any = lambda: False,
    on_probe: Any = lambda doc: None,
) -> None:
    """Take each interval's two probes at their times until `stop()`: `read()` -> (cron runs, probes),
    `write(doc)` stores a probe, `next_instant(now)` is cron's next instant after `now`."""
    while not stop():
        now = clock()
        cron_runs, probes = read()
        side = due_probe(cron_runs, probes, next_instant(now), now, margin)
        if side is not None:
            doc = run_probe(probe, side)
            write(doc)
            on_probe(doc)
            continue
        sleep(poll)


def _ledger(root: Path, store: str | None, redis: str | None) -> Any:
    from cronshift.ledger.store import open_ledger  # deferred: a probe is a short process

    return open_ledger(root, store=store, redis_url=redis)


def probe_setup(root: Path, job_id: str, store: str | None, redis: str | None) -> dict[str, Any] | None:
    """The job's live setup when it is an event-triggered one with an effect probe; else None."""
    with _ledger(root, store, redis) as led:
        setup = led.get(LIVE_KIND, job_id)
    if not setup or setup.get("event_path") != "triggered" or not setup.get("probe"):
        return None
    return dict(setup)


def probe_once(
    root: Path, job_id: str, setup: dict[str, Any], side: str, store: str | None, redis: str | None
) -> dict[str, Any]:
    """Take the declared probe now for `side` and store it in the ledger."""
    doc = run_probe(str(setup["probe"]), side)
    with _ledger(root, store, redis) as led:
        led.put(EFFECT_KIND, probe_key(job_id, doc), doc)
    return doc


def watch_job(
    root: Path,
    job_id: str,
    setup: dict[str, Any],
    expr: Any,
    tz: str | None,
    store: str | None,
    redis: str | None,
    *,
    on_probe: Any = lambda doc: None,
    stop: Any = lambda: False,
) -> None:
    """Take every interval's two probes, at their times, until `stop()` (or an interrupt)."""

    from cronshift.discover.schedule import fires_between

    started = float(setup["started"])

    def read() -> tuple[list[RunRecord], list[dict[str, Any]]]:
        with _ledger(root, store, redis) as led:
            runs = [r for r in led.runs(job_id) if r.source == CRON_SOURCE and r.start >= started]
            return runs, led.list(EFFECT_KIND, prefix=f"{job_id}/")

    def write(doc: dict[str, Any]) -> None:
        with _ledger(root, store, redis) as led:
            led.put(EFFECT_KIND, probe_key(job_id, doc), doc)

    def next_instant(t: float) -> float:
        a = datetime.fromtimestamp(t, UTC)
        nxt = next(iter(fires_between(expr, tz, a, a + timedelta(days=400))), None)
        return float("inf") if nxt is None else nxt.timestamp()

    watch(read, write, str(setup["probe"]), next_instant, on_probe=on_probe, stop=stop)
