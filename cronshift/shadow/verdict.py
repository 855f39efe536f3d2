"""The documented gate: when a shadow session may say `parity`, and the verdict document retire reads.

Gate (all must hold for `parity`):
1. Calibration ran: at least 2 cron-path runs, all completed, with the same exit status (a job whose exit
   status varies between cron runs cannot be judged: inconclusive).
2. No pair has a real difference (any: `mismatch`, exit 3). Noise means only "the cron path differs from
   itself at this very span or token" (A/A runs) or a rule the user named. A difference calibration cannot
   judge (too few cron runs agreeing on a number, a channel whose structure varies, a varying binary file)
   makes the verdict `insufficient evidence`, with what to do next.
3. Every side of every pair ran (a side that could not run: inconclusive, with the reason).
4. The last GATE_PAIRS (default 5) pairs all matched, consecutively.
Otherwise `insufficient evidence` (exit 0: nothing differed, but retire's gate still refuses it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Required, TypedDict

from cronshift.shadow.compare import Difference, NoiseFloor

__all__ = [
    "GATE_PAIRS",
    "LABELS",
    "VERDICT_SCHEMA",
    "PairResult",
    "ReadVerdict",
    "Verdict",
    "VerdictDoc",
    "judge",
    "make_verdict_doc",
    "parse_verdict_doc",
    "verdict_doc",
]

GATE_PAIRS = 5
MIN_CALIBRATION = 2
# What the CLI says -> what the verdict document (read by `cronshift retire`) stores.
LABELS = {"parity": "parity", "mismatch": "differences", "insufficient evidence": "inconclusive"}


@dataclass
class PairResult:
    index: int
    differences: list[Difference]
    cron_error: str | None = None
    event_error: str | None = None

    @property
    def real(self) -> list[Difference]:
        return [
            d for d in self.differences if d.explained is None and d.unjudged is None and d.kind != "error"
        ]

    @property
    def unjudged(self) -> list[Difference]:
        return [d for d in self.differences if d.unjudged is not None]

    @property
    def matched(self) -> bool:
        return not self.real and not self.unjudged and self.cron_error is None and self.event_error is None


@dataclass
class Verdict:
    label: str  # "parity" | "mismatch" | "insufficient evidence"
    missing: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    matched_tail: int = 0


def judge(
    pairs: list[PairResult],
    floor: NoiseFloor,
    calibration_runs: int,
    calibration_errors: list[str],
    gate_pairs: int = GATE_PAIRS,
) -> Verdict:
    real = _once([(p.index, _key(d), d.what) for p in pairs for d in p.real], len(pairs))
    tail = 0
    for p in reversed(pairs):
        if not p.matched:
            break
        tail += 1
    missing: list[str] = []
    if calibration_errors:
        missing += [f"calibration run failed to run: {e}" for e in calibration_errors]
    completed = calibration_runs - len(calibration_errors)
    if completed < MIN_CALIBRATION:
        missing.append(
            f"calibration needs {MIN_CALIBRATION} completed cron-path runs; "
            f"{completed} of {calibration_runs} "
            "completed"
        )
    if floor.exit_unstable:
        missing.append("the exit status varies between cron runs: this job cannot be compared run by run")
    for p in pairs:
        if p.cron_error:
            missing.append(f"pair {p.index}: the cron side did not run: {p.cron_error}")
    missing += _once(
        [(p.index, _key(d), f"cannot judge {d.what}: {d.unjudged}") for p in pairs for d in p.unjudged],
        len(pairs),
    )
    if real:
        return Verdict("mismatch", missing, real, tail)
    if tail < gate_pairs:
        missing.append(f"{tail} consecutive matched pair(s) at the end; the gate needs {gate_pairs}")
    return Verdict("insufficient evidence" if missing else "parity", missing, [], tail)


def _key(d: Difference) -> str:
    """What makes two pairs' differences the same difference: a duration is one, whatever its seconds."""
    return d.kind if d.kind == "duration" else d.what


def _once(items: list[tuple[int, str, str]], total: int) -> list[str]:
    """Each difference once, with the pairs it was seen in (not once per pair)."""
    seen: dict[str, list[int]] = {}
    first: dict[str, str] = {}
    for i, key, what in items:
        seen.setdefault(key, []).append(i)
        first.setdefault(key, what)
    out = []
    for key, idx in seen.items():
        what = first[key]
        where = f"pair {idx[0]}" if len(idx) == 1 else f"{len(idx)} of {total} pairs"
        out.append(f"{where}: {what}")
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


# -- the verdict document: one contract, written by every mode, read by retire ----------------------------

VERDICT_SCHEMA = 2  # 1: the unversioned documents before the contract (same fields retire reads)
VerdictValue = Literal["parity", "differences", "inconclusive"]


class VerdictDoc(TypedDict, total=False):
    """The verdict document (ledger kind "shadow-verdict", key = job id, and the file
    var/lib/cronshift/shadow/<job-id>.json). Built only by `make_verdict_doc`; read only through
    `parse_verdict_doc`. Mode-specific evidence (pairs, instants, intervals, the noise floor) rides along
    under other keys and is for reports, never for the gate."""

    schema: Required[int]
    verdict: Required[VerdictValue]  # what the gate reads
    label: Required[str]  # what the CLI says: parity | mismatch | insufficient evidence
    job: Required[str]
    command: Required[str]  # the job's command when judged: a verdict for another command is stale
    runs_compared: Required[int]  # pairs, instants or intervals judged
    matched_consecutive: Required[int]
    differences: Required[list[str]]
    missing: Required[list[str]]
    gate: Required[dict[str, Any]]  # {"mode": "now" | "live", ...}
    evidence: Required[dict[str, Any]]  # project, package, project_digests (the gate binds to these), ...
    session: str
    first: str  # ISO times of the evidence
    last: str
    written_by: Required[str]
    # Evidence for reports (mode-specific; the gate never reads these):
    judged_at: str
    calibration_runs: int
    noise_floor: dict[str, Any]
    noise_floor_text: list[str]
    summary: dict[str, Any]
    patterns: dict[str, bool]
    fidelity: dict[str, Any]
    instants: list[dict[str, Any]]
    intervals: list[dict[str, Any]]
    notes: list[str]
    verdict_file: str


def make_verdict_doc(
    v: Verdict,
    *,
    job_id: str,
    command: str,
    runs_compared: int,
    gate: dict[str, Any],
    evidence: dict[str, Any],
    written_by: str,
    first: str | None = None,
    last: str | None = None,
    session: str = "",
    **details: Any,
) -> VerdictDoc:
    """The one builder of the verdict document (now, live and event-triggered live mode alike)."""
    doc = VerdictDoc(
        schema=VERDICT_SCHEMA,
        verdict=LABELS[v.label],  # type: ignore[typeddict-item]
        label=v.label,
        job=job_id,
        command=command,
        runs_compared=runs_compared,
        matched_consecutive=v.matched_tail,
        differences=list(v.differences),
        missing=list(v.missing),
        gate={"mode": "now", **gate},
        evidence=evidence,
        session=session,
        written_by=written_by,
    )
    if first is not None:
        doc["first"] = first
    if last is not None:
        doc["last"] = last
    for k, val in details.items():
        doc[k] = val  # type: ignore[literal-required]
    return doc


@dataclass(frozen=True)
class ReadVerdict:
    """What retire's gate needs of a verdict document, checked against the contract."""

    verdict: str | None
    job: str | None
    command: str | None
    runs_compared: int | None
    differences: list[str]
    live: bool
    project: str | None
    package: str | None
    digests: dict[str, str]
    last: str | None
    problems: list[str]  # why the document cannot be trusted as written (each refuses the gate)


def parse_verdict_doc(raw: Any, where: str = "the verdict") -> ReadVerdict:
    """Read a verdict document through the contract: a newer schema, a wrong type or an unknown verdict
    value is a problem named, never a guess."""
    problems: list[str] = []
    doc: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if not isinstance(raw, dict):
        problems.append(f"{where} is not a JSON object")
    schema = doc.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool):
        problems.append(f"{where}: schema {schema!r} is not a number")
    elif schema > VERDICT_SCHEMA:
        problems.append(
            f"{where} was written by a newer cronshift (verdict schema {schema}; this one reads up to "
            f"{VERDICT_SCHEMA}): upgrade, or shadow-run again"
        )

    def field_of(key: str, kind: type | tuple[type, ...]) -> Any:
        val = doc.get(key)
        if val is None:
            return None
        if not isinstance(val, kind) or (kind is int and isinstance(val, bool)):
            problems.append(f"{where}: {key} {val!r} is not a {getattr(kind, '__name__', kind)}")
            return None
        return val

    verdict = field_of("verdict", str)
    if verdict is not None and verdict not in LABELS.values():
        problems.append(f"{where}: verdict {verdict!r} is not one of {', '.join(LABELS.values())}")
    diffs = field_of("differences", list) or []
    gate = field_of("gate", dict) or {}
    ev = field_of("evidence", dict) or {}
    digests = ev.get("project_digests")
    return ReadVerdict(
        verdict=verdict,
        job=field_of("job", str),
        command=field_of("command", str),
        runs_compared=field_of("runs_compared", int),
        differences=[str(d) for d in diffs],
        live=gate.get("mode") == "live",
        project=ev.get("project") if isinstance(ev.get("project"), str) else None,
        package=ev.get("package") if isinstance(ev.get("package"), str) else None,
        digests=dict(digests) if isinstance(digests, dict) else {},
        last=doc.get("last") if isinstance(doc.get("last"), str) else None,
        problems=problems,
    )


def verdict_doc(
    v: Verdict,
    *,
    job_id: str,
    command: str,
    pairs: list[PairResult],
    first: float,
    last: float,
    session: str,
    evidence: dict[str, Any],
    floor: NoiseFloor,
    gate_pairs: int,
) -> VerdictDoc:
    """Now mode's verdict document (see `make_verdict_doc`)."""
    return make_verdict_doc(
        v,
        job_id=job_id,
        command=command,
        runs_compared=len(pairs),
        gate={"consecutive_pairs": gate_pairs, "min_calibration_runs": MIN_CALIBRATION},
        evidence=evidence,
        written_by="cronshift shadow-run",
        first=_iso(first),
        last=_iso(last),
        session=session,
        calibration_runs=floor.runs,
        noise_floor=floor.to_doc(),
        noise_floor_text=floor.describe(),
    )
