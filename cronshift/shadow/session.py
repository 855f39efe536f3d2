"""One "now" shadow session: calibrate the cron path against itself, then N (cron, event) pairs, judged.

Each side runs sequentially (cron, then event), each in its own sandbox. Every run is handed to `record`
as it happens (the CLI puts it in the ledger), so an interrupted session still leaves its evidence. The
noise floor is learned from every cron run of the session (the calibration runs and the cron side of each
pair are all A/A evidence), then the pairs are judged against it.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cronshift.model import CronJob
from cronshift.shadow.compare import NoiseFloor, SideRun, compare_pair, duration_outlier, learn_noise
from cronshift.shadow.normalize import Normalizer
from cronshift.shadow.verdict import GATE_PAIRS, PairResult, Verdict, judge, verdict_doc

__all__ = ["SessionResult", "run_session", "summary"]

Side = Callable[[str], SideRun]
RECALIBRATION_GAP = 1.1  # seconds between extra A/A runs, so second-granular values get a chance to tick


@dataclass
class SessionResult:
    session: str
    floor: NoiseFloor
    pairs: list[PairResult]
    verdict: Verdict
    doc: dict[str, Any]
    observations: list[dict[str, Any]] = field(default_factory=list)


def summary(
    cal: list[SideRun],
    pairs: list[tuple[SideRun, SideRun]],
    masked: dict[str, dict[str, int]],
    declared: list[str],
) -> dict[str, Any]:
    """The numbers the report's first screen shows."""
    cron_d = [r.duration for r in cal + [a for a, _ in pairs] if r.error is None]
    ev_d = [b.duration for _, b in pairs if b.error is None]
    ratio = None
    if cron_d and ev_d and statistics.median(cron_d) > 0:
        ratio = statistics.median(ev_d) / statistics.median(cron_d)
    undeclared: dict[str, list[str]] = {}
    for a, b in pairs:
        for side, run in (("cron", a), ("event", b)):
            for c in run.changes:
                p = c["path"]
                if not any(p == d or p.startswith(d.rstrip("/") + "/") for d in declared):
                    undeclared.setdefault(p, [])
                    if side not in undeclared[p]:
                        undeclared[p].append(side)
    return {
        "calibration_runs": len(cal),
        "calibration_completed": sum(1 for r in cal if r.error is None),
        "pairs": len(pairs),
        "masked": masked,
        "undeclared_writes": [{"path": p, "sides": s} for p, s in sorted(undeclared.items())],
        "duration": {
            "cron_median": statistics.median(cron_d) if cron_d else None,
            "event_median": statistics.median(ev_d) if ev_d else None,
            "ratio": ratio,
            "cron_runs": len(cron_d),
            "event_runs": len(ev_d),
            "cron_spread": [min(cron_d), max(cron_d)] if cron_d else None,
        },
    }


def run_session(
    job: CronJob,
    *,
    cron_side: Side,
    event_side: Side,
    runs: int,
    normalizer: Normalizer,
    evidence: dict[str, Any],
    clock: Callable[[], float],
    calibration: int = 3,
    gate_pairs: int = GATE_PAIRS,
    record: Callable[[str, dict[str, Any]], None] = lambda key, doc: None,
    session: str | None = None,
    recalibrate: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> SessionResult:
    session = session or os.urandom(4).hex()
    first = clock()
    observations: list[dict[str, Any]] = []

    def keep(key: str, doc: dict[str, Any]) -> None:
        doc = {"job": job.id, "session": session, "evidence": evidence, **doc}
        observations.append(doc)
        record(f"{job.id}/{session}/{key}", doc)

    cal_runs: list[SideRun] = []
    for k in range(1, calibration + 1):
        r = cron_side(f"cron-aa-{k}")
        cal_runs.append(r)
        keep(f"cal-{k:03d}", {"phase": "calibration", "round": k, "cron": r.to_doc(), "event": None})
    ran: list[tuple[SideRun, SideRun]] = []
    for i in range(1, runs + 1):
        a = cron_side(f"cron-{i}")
        b = event_side(f"event-{i}")
        ran.append((a, b))
        keep(f"run-{i:03d}", {"phase": "run", "round": i, "cron": a.to_doc(), "event": b.to_doc()})

    def judge_all() -> tuple[NoiseFloor, list[PairResult], dict[str, dict[str, int]]]:
        floor = learn_noise(cal_runs + [a for a, _ in ran], normalizer)
        masked: dict[str, dict[str, int]] = {"cron": {}, "event": {}}
        pairs = []
        ev = [b for _, b in ran if b.error is None]
        allowance = max([float(b.meta.get("latency_allowance") or 0) for b in ev], default=0.0)
        typical = (
            bool(ev)
            and duration_outlier(statistics.median(b.duration for b in ev), floor.durations, allowance)
            is None
        )
        for i, (a, b) in enumerate(ran, 1):
            diffs = compare_pair(a, b, normalizer, floor, (masked["cron"], masked["event"]))
            if typical:
                # One slow run on a busy host says nothing when the event side's median run is in range.
                diffs = [
                    dataclasses.replace(d, explained="a single slow run; the median event run is in range")
                    if d.kind == "duration"
                    else d
                    for d in diffs
                ]
            pairs.append(PairResult(i, diffs, a.error, b.error if b.meta.get("infra") else None))
        return floor, pairs, masked

    floor, pairs, masked = judge_all()
    if recalibrate and any(p.unjudged for p in pairs):
        # Too little A/A evidence for some value: more cron runs, spread in time (a timestamp that did
        # not tick between quick runs will now), then judge again. Never a guess either way.
        for k in range(1, recalibrate + 1):
            sleep(RECALIBRATION_GAP)
            r = cron_side(f"cron-aa-extra-{k}")
            cal_runs.append(r)
            keep(
                f"cal-extra-{k:03d}", {"phase": "calibration", "round": k, "cron": r.to_doc(), "event": None}
            )
        floor, pairs, masked = judge_all()
    keep("noise-floor", {"phase": "noise-floor", "noise_floor": floor.to_doc(), "text": floor.describe()})
    for i, ((a, b), p) in enumerate(zip(ran, pairs, strict=True), 1):
        diffs = p.differences
        keep(
            f"pair-{i:03d}",
            {
                "phase": "pair",
                "round": i,
                "matched": p.matched,
                "cron": a.to_doc(),
                "event": b.to_doc(),
                "differences": [d.to_doc() for d in diffs],
            },
        )
    cal_errors = [r.error for r in cal_runs if r.error]
    v = judge(pairs, floor, len(cal_runs), [e for e in cal_errors if e], gate_pairs)
    doc = verdict_doc(
        v,
        job_id=job.id,
        command=job.command,
        pairs=pairs,
        first=first,
        last=clock(),
        session=session,
        evidence=evidence,
        floor=floor,
        gate_pairs=gate_pairs,
    )
    doc["summary"] = summary(cal_runs, ran, masked, list(evidence.get("writes") or []))
    return SessionResult(session, floor, pairs, v, doc, observations)
