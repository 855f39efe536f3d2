"""One "now" shadow session: calibrate the cron path against itself, then N (cron, event) pairs, judged.

Each side runs sequentially (cron, then event), so in `allow` mode the two never race on the same files.
Every observation is handed to `record` as it happens (the CLI puts it in the ledger), so an interrupted
session still leaves its evidence.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cronshift.model import CronJob
from cronshift.shadow.compare import NoiseFloor, SideRun, compare_pair, learn_noise
from cronshift.shadow.normalize import Normalizer
from cronshift.shadow.verdict import GATE_PAIRS, PairResult, Verdict, judge, verdict_doc

__all__ = ["SessionResult", "run_session"]

Side = Callable[[str], SideRun]


@dataclass
class SessionResult:
    session: str
    floor: NoiseFloor
    pairs: list[PairResult]
    verdict: Verdict
    doc: dict[str, Any]
    observations: list[dict[str, Any]] = field(default_factory=list)


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
) -> SessionResult:
    session = session or os.urandom(4).hex()
    first = clock()
    observations: list[dict[str, Any]] = []

    def keep(key: str, doc: dict[str, Any]) -> None:
        doc = {"job": job.id, "session": session, "evidence": evidence, **doc}
        observations.append(doc)
        record(f"{job.id}/{session}/{key}", doc)

    cal_runs = [cron_side(f"cron-aa-{k}") for k in range(1, calibration + 1)]
    cal_errors = [r.error for r in cal_runs if r.error]
    floor = learn_noise([r for r in cal_runs if not r.error], normalizer)
    for k, r in enumerate(cal_runs, 1):
        keep(
            f"cal-{k:03d}", {"phase": "calibration", "round": k, "cron": r.to_doc(normalizer), "event": None}
        )
    keep("noise-floor", {"phase": "noise-floor", "noise_floor": floor.to_doc(), "text": floor.describe()})
    pairs: list[PairResult] = []
    for i in range(1, runs + 1):
        a = cron_side(f"cron-{i}")
        b = event_side(f"event-{i}")
        diffs = compare_pair(a, b, normalizer, floor)
        if not a.error:
            floor.durations.append(a.duration)
        p = PairResult(i, diffs, a.error, b.error)
        pairs.append(p)
        keep(
            f"pair-{i:03d}",
            {
                "phase": "pair",
                "round": i,
                "matched": p.matched,
                "cron": a.to_doc(normalizer),
                "event": b.to_doc(normalizer),
                "differences": [d.to_doc() for d in diffs],
            },
        )
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
    return SessionResult(session, floor, pairs, v, doc, observations)
