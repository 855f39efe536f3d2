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
from pathlib import Path
from typing import Any

from cronshift.discover.schedule import CronExpr
from cronshift.ledger.store import open_ledger
from cronshift.model import CronJob
from cronshift.shadow import effects, live
from cronshift.shadow.compare import NoiseFloor, SideRun, compare_pair, duration_outlier, learn_noise
from cronshift.shadow.effects import TriggeredReport
from cronshift.shadow.live import DEFAULT_GRACE, LiveReport
from cronshift.shadow.normalize import Normalizer
from cronshift.shadow.store import OBSERVATION_KIND, VERDICT_KIND, write_verdict_file
from cronshift.shadow.verdict import (
    GATE_PAIRS,
    PairResult,
    Verdict,
    VerdictDoc,
    judge,
    make_verdict_doc,
    verdict_doc,
)

__all__ = [
    "LiveJudgement",
    "NowOptions",
    "NowOutcome",
    "SessionResult",
    "judge_live",
    "run_now",
    "run_session",
    "summary",
]

Side = Callable[[str], SideRun]
RECALIBRATION_GAP = 1.1  # seconds between extra A/A runs, so second-granular values get a chance to tick


@dataclass
class SessionResult:
    session: str
    floor: NoiseFloor
    pairs: list[PairResult]
    verdict: Verdict
    doc: VerdictDoc
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


# -- a whole "now" shadow-run: what the CLI asks for, orchestrated here ------------------------------------


@dataclass(frozen=True)
class NowOptions:
    """Everything a now-mode shadow-run was asked for (already validated as usage by the CLI)."""

    root: Path
    project: Path
    package: str | None
    mode: str  # sandbox | allow | dry-run
    writes: tuple[str, ...]  # absolute paths
    normalizer: Normalizer
    ignore: tuple[str, ...] = ()
    dry_run_flag: str | None = None
    event_path: str = "local"  # local | celery
    broker: str | None = None
    runs: int = GATE_PAIRS
    calibration: int = 3
    gate_pairs: int = GATE_PAIRS
    timeout: float = 300.0
    store: str | None = None
    redis: str | None = None
    command_line: str | None = None


@dataclass
class NowOutcome:
    doc: VerdictDoc
    pairs: list[dict[str, Any]]
    refused: str | None = None  # the sandbox could not be set up: nothing ran (insufficient, said why)
    label: str = ""


def run_now(
    job: CronJob, o: NowOptions, *, progress: Callable[[int, int], None] = lambda done, total: None
) -> NowOutcome:
    """Calibrate, run the pairs, judge, and store the verdict (ledger and the file retire reads).

    The event path is the generated project (`--project`): imported with a scratch store so a shadow run
    never touches the project's real broker, ledger, locks or claims. Raises celery_side.EventPathError when
    the project cannot be loaded or its worker cannot start (the CLI names it)."""
    # Deferred: the sandbox and the Celery side import heavy modules only a now-mode run needs.
    from cronshift.shadow import execute as ex
    from cronshift.shadow.celery_side import CelerySide, LocalTaskSide, Project, ScratchStore

    proj = Project(o.project, o.package, job)
    session = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(2).hex()
    cron_spec = ex.cron_spec(job)
    evidence: dict[str, Any] = {
        "mode": o.mode,
        "writes": list(o.writes),
        "event_path": o.event_path,
        "project": str(proj.path),
        "package": proj.package,
        "module": proj.module,
        "project_digests": proj.digests(),
        "broker": o.broker if o.event_path == "celery" else "none (in-process apply(), scratch store)",
        "command_line": o.command_line,
        "cron_spec": cron_spec,
        "rules": o.normalizer.names,
        "ignore": list(o.ignore),
        "calibration": o.calibration,
        "runs": o.runs,
    }
    refused = ex.sandbox_available() if o.mode == "sandbox" else None
    if refused:
        # No verdict a gate could use: nothing ran, so nothing real was written either.
        doc = make_verdict_doc(
            Verdict("insufficient evidence", [refused]),
            job_id=job.id,
            command=job.command,
            runs_compared=0,
            gate={"consecutive_pairs": o.gate_pairs},
            evidence=evidence,
            written_by="cronshift shadow-run",
        )
        _store_verdict(o, job.id, doc)
        return NowOutcome(doc, [], refused, "insufficient evidence")
    scratch = ex.new_scratch(o.root, session)
    scratch_store = ScratchStore(scratch)
    setup = ex.SideSetup(o.mode, o.writes, scratch, o.root, o.dry_run_flag, o.timeout, scratch_store.env())
    evidence |= setup.evidence()
    try:
        if o.event_path == "celery":
            assert o.broker is not None
            event: Any = CelerySide(proj, o.broker, setup, session)
        else:
            event = LocalTaskSide(proj, setup)
        with open_ledger(o.root, store=o.store, redis_url=o.redis) as led:
            done, total = [0], o.calibration + 2 * o.runs

            def counted(side: Side) -> Side:
                """Each side's run ticks the progress: calibration runs, then both sides."""

                def run(label: str) -> SideRun:
                    try:
                        return side(label)
                    finally:
                        done[0] += 1
                        progress(done[0], max(total, done[0]))

                return run

            res = run_session(
                job,
                cron_side=counted(
                    lambda label: ex.run_side(setup, label, {"action": "job", "spec": cron_spec})
                ),
                event_side=counted(event),
                runs=o.runs,
                normalizer=o.normalizer,
                evidence=evidence,
                clock=time.time,
                calibration=o.calibration,
                gate_pairs=o.gate_pairs,
                record=lambda key, doc: led.put(OBSERVATION_KIND, key, doc),
                session=session,
            )
            led.put(VERDICT_KIND, job.id, res.doc)
    finally:
        scratch_store.close()
        ex.remove_scratch(scratch)
    res.doc["verdict_file"] = write_verdict_file(o.root, job.id, res.doc)
    pairs = [x for x in res.observations if x.get("phase") == "pair"]
    return NowOutcome(res.doc, pairs, None, res.verdict.label)


def _store_verdict(o: NowOptions, job_id: str, doc: VerdictDoc) -> None:
    with open_ledger(o.root, store=o.store, redis_url=o.redis) as led:
        led.put(VERDICT_KIND, job_id, doc)
    write_verdict_file(o.root, job_id, doc)


# -- judging live shadowing so far ------------------------------------------------------------------------


@dataclass
class LiveJudgement:
    doc: VerdictDoc
    report: LiveReport | TriggeredReport  # instants (beat) or intervals (an event-triggered event path)
    label: str


def judge_live(
    job: CronJob,
    led: Any,
    setup: dict[str, Any],
    *,
    root: Path,
    expr: CronExpr,
    tz: str | None,
    start: float,
    now: float,
    normalizer: Normalizer,
    ignore: tuple[str, ...] = (),
    grace: float = DEFAULT_GRACE,
    gate_pairs: int = GATE_PAIRS,
) -> LiveJudgement:
    """Judge the live evidence in the ledger so far (by instant, or by interval and effect when the event
    path is event-triggered), and store the verdict where retire reads it."""
    kept = ("mode", "dry_run_flag", "started_iso", "store", "redis", "session", "inner_command")
    bound = ("project", "package", "project_digests")  # what retire's gate binds the verdict to
    evidence = {k: setup.get(k) for k in (*kept, *bound)}
    evidence |= {"writes": [], "rules": normalizer.names, "ignore": list(ignore)}
    rep: LiveReport | TriggeredReport
    if setup.get("event_path") == "triggered":
        evidence |= {"probe": setup.get("probe"), "triggers": setup.get("triggers")}
        rep = effects.evaluate_triggered(
            job.id,
            led.runs(job.id),
            led.list(effects.EFFECT_KIND, prefix=f"{job.id}/"),
            since=start,
            now=now,
            user_rules=effects.user_only(normalizer),
            gate_pairs=gate_pairs,
            tz=tz,
        )
        doc = effects.triggered_doc(rep, command=job.command, setup=evidence, now=now)
    else:
        rep = live.evaluate(
            job.id,
            expr,
            tz,
            led.runs(job.id),
            since=start,
            now=now,
            normalize=normalizer,
            grace=grace,
            gate_pairs=gate_pairs,
            compare_output=setup.get("mode") != "dry-run",
        )
        doc = live.live_doc(rep, command=job.command, setup=evidence, now=now)
    led.put(VERDICT_KIND, job.id, doc)
    doc["verdict_file"] = write_verdict_file(root, job.id, doc)
    return LiveJudgement(doc, rep, rep.verdict.label)
