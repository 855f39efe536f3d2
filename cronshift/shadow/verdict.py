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
from typing import Any

from cronshift.shadow.compare import Difference, NoiseFloor

__all__ = ["GATE_PAIRS", "LABELS", "PairResult", "Verdict", "judge", "verdict_doc"]

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

    @property
    def doc_value(self) -> str:
        return LABELS[self.label]


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
) -> dict[str, Any]:
    """The document `cronshift retire` reads (ledger kind "shadow-verdict" and the JSON file)."""
    return {
        "verdict": v.doc_value,
        "label": v.label,
        "job": job_id,
        "command": command,
        "runs_compared": len(pairs),
        "matched_consecutive": v.matched_tail,
        "differences": v.differences,
        "missing": v.missing,
        "gate": {"consecutive_pairs": gate_pairs, "min_calibration_runs": MIN_CALIBRATION},
        "calibration_runs": floor.runs,
        "noise_floor": floor.to_doc(),
        "noise_floor_text": floor.describe(),
        "evidence": evidence,
        "session": session,
        "first": _iso(first),
        "last": _iso(last),
        "written_by": "cronshift shadow-run",
    }
