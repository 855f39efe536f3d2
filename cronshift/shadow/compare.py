"""Compare two runs of a job: exit status, output, files under the watched paths, duration. Pure: no I/O.

Noise is removed in two steps that can only ever *explain* a difference, never hide one:
1. the named normalisers (normalize.py) turn known noise (timestamps, PIDs...) into placeholders;
2. A/A calibration: the cron path run against itself; a token position that differed there (same line,
   same token, same kind of token: a number stays a number) is that job's noise floor. Anything else is real:
   a different exit status, a signal, a file missing or extra, a changed mode or owner, a line added or
   removed, a token that was stable between cron runs, a binary file whose bytes differ while they did not
   between cron runs.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Difference",
    "FileState",
    "NoiseFloor",
    "SideRun",
    "compare_pair",
    "duration_outlier",
    "learn_noise",
]

DIFF_LINES = 40  # lines of unified diff kept per difference
_TOKEN = re.compile(r"<[a-z0-9-]+>|\d+(?:\.\d+)?|[A-Za-z_]+|\s+|.", re.DOTALL)


@dataclass(frozen=True, slots=True)
class FileState:
    sha256: str
    mode: int
    size: int
    uid: int
    gid: int
    text: str | None = None  # the content when small and UTF-8, for diffs and token comparison
    link: str | None = None  # a symlink's target (then sha256 is of the target text)


@dataclass(slots=True)
class SideRun:
    """One run of one side: what it printed, how it ended, how long it took, what it left in the files."""

    side: str  # "cron", "cron-aa" (calibration), "event"
    exit_status: int | None
    signal: int | None
    output: str  # stdout and stderr as one stream, as cron mails it (the runtime's tail)
    output_bytes: int | None
    duration: float
    files_before: dict[str, FileState] = field(default_factory=dict)
    files_after: dict[str, FileState] = field(default_factory=dict)
    error: str | None = None  # the side could not be run at all (refused, timed out, no worker)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_doc(self, normalize: Callable[[str], str]) -> dict[str, Any]:
        norm = normalize(self.output)
        files = {
            p: {k: v for k, v in asdict(s).items() if k != "text"}
            for p, s in sorted(self.files_after.items())
        }
        return {
            "side": self.side,
            "exit_status": self.exit_status,
            "signal": self.signal,
            "duration": round(self.duration, 6),
            "output_bytes": self.output_bytes,
            "output_raw_sha256": _sha(self.output),
            "output_normalized_sha256": _sha(norm),
            "output_tail": self.output[-2000:],
            "files": files,
            "changes": file_changes(self),
            "error": self.error,
            "meta": self.meta,
        }


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str  # exit | signal | error | output | file-missing | file-extra | file-content | file-mode | ...
    what: str  # one line naming the cause
    diff: str = ""  # unified diff, git-diff-like
    explained: str | None = None  # why this is noise (a calibration position); None: a real difference

    def to_doc(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "diff": self.diff, "explained": self.explained}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def file_changes(run: SideRun) -> dict[str, list[str]]:
    before, after = run.files_before, run.files_after
    return {
        "created": sorted(set(after) - set(before)),
        "deleted": sorted(set(before) - set(after)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    }


def _tokens(line: str) -> list[str]:
    return _TOKEN.findall(line)


def _kind(tok: str) -> str:
    if tok[:1].isdigit():
        return "number"
    if tok[:1].isalpha() or tok[:1] == "_":
        return "word"
    return "other:" + tok


def _token_diffs(a: list[str], b: list[str]) -> list[tuple[int, int, str, str]] | None:
    """(line, token, a-token, b-token) for every differing token; None when lines or token counts differ."""
    if len(a) != len(b):
        return None
    out: list[tuple[int, int, str, str]] = []
    for i, (la, lb) in enumerate(zip(a, b, strict=True)):
        if la == lb:
            continue
        ta, tb = _tokens(la), _tokens(lb)
        if len(ta) != len(tb):
            return None
        out.extend((i, k, x, y) for k, (x, y) in enumerate(zip(ta, tb, strict=True)) if x != y)
    return out


@dataclass
class NoiseFloor:
    """What differed between cron runs of the same job: learned in calibration, frozen before judging."""

    positions: dict[str, set[tuple[int, int, str]]] = field(
        default_factory=dict
    )  # channel -> (line, tok, kind)
    unstable: dict[str, str] = field(default_factory=dict)  # channel -> why it cannot be compared token-wise
    exit_unstable: bool = False
    durations: list[float] = field(default_factory=list)  # cron-path durations
    pairs: int = 0

    def to_doc(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "positions": {c: sorted([list(p) for p in s]) for c, s in sorted(self.positions.items())},
            "unstable": dict(sorted(self.unstable.items())),
            "exit_unstable": self.exit_unstable,
            "durations": [round(d, 6) for d in self.durations],
        }

    def describe(self) -> list[str]:
        out = [
            f"{c}: line {ln + 1} token {t + 1} ({k}) varies"
            for c, s in self.positions.items()
            for ln, t, k in sorted(s)
        ]
        out += [f"{c}: {why}" for c, why in self.unstable.items()]
        if self.exit_unstable:
            out.append("exit status varies between cron runs")
        return out


def _channels(run: SideRun, normalize: Callable[[str], str]) -> dict[str, list[str] | None]:
    """Comparable texts by channel: 'output' and 'file:PATH' (None for a binary file)."""
    ch: dict[str, list[str] | None] = {"output": normalize(run.output).splitlines()}
    for p, s in run.files_after.items():
        ch["file:" + p] = None if s.text is None else normalize(s.text).splitlines()
    return ch


def learn_noise(cron_runs: Iterable[SideRun], normalize: Callable[[str], str]) -> NoiseFloor:
    """A/A calibration: compare consecutive cron runs and record where (and how) they differ."""
    runs = list(cron_runs)
    floor = NoiseFloor(durations=[r.duration for r in runs if r.error is None])
    for a, b in itertools.pairwise(runs):
        floor.pairs += 1
        if (a.exit_status, a.signal) != (b.exit_status, b.signal):
            floor.exit_unstable = True
        ca, cb = _channels(a, normalize), _channels(b, normalize)
        for c in set(ca) & set(cb):
            la, lb = ca[c], cb[c]
            if la is None or lb is None:
                if a.files_after[c[5:]].sha256 != b.files_after[c[5:]].sha256:
                    floor.unstable[c] = "binary content varies between cron runs (compared by presence only)"
                continue
            diffs = _token_diffs(la, lb)
            if diffs is None:
                floor.unstable[c] = "line or token structure varies between cron runs"
                continue
            for ln, t, x, y in diffs:
                if _kind(x) == _kind(y):
                    floor.positions.setdefault(c, set()).add((ln, t, _kind(x)))
                else:
                    floor.unstable[c] = f"line {ln + 1} changes kind between cron runs ({x!r} vs {y!r})"
        for c in set(ca) ^ set(cb):
            floor.unstable[c] = "present in some cron runs only"
    return floor


def _udiff(name: str, a: list[str], b: list[str]) -> str:
    lines = list(difflib.unified_diff(a, b, f"a/{name} (cron)", f"b/{name} (event)", lineterm="", n=2))
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more diff lines"]
    return "\n".join(lines)


def _compare_text(
    channel: str,
    label: str,
    a: list[str],
    b: list[str],
    raw_a: list[str],
    raw_b: list[str],
    floor: NoiseFloor,
) -> list[Difference]:
    if a == b:
        return []
    diff = _udiff(label, raw_a, raw_b)
    tds = _token_diffs(a, b)
    if tds is None:
        return [
            Difference(
                "output" if channel == "output" else "file-content",
                _first_change(label, a, b, floor.positions.get(channel, set())),
                diff,
            )
        ]
    known = floor.positions.get(channel, set())
    real = [(ln, t, x, y) for ln, t, x, y in tds if (ln, t, _kind(x)) not in known or _kind(x) != _kind(y)]
    kind = "output" if channel == "output" else "file-content"
    if real:
        ln, _t, x, y = real[0]
        more = f" (and {len(real) - 1} more)" if len(real) > 1 else ""
        lines = f"in {a[ln]!r} vs {b[ln]!r}"
        return [
            Difference(kind, f"{label} line {ln + 1}: {x!r} (cron) vs {y!r} (event){more}, {lines}", diff)
        ]
    return [
        Difference(
            kind,
            f"{label}: {len(tds)} token(s) differ where cron runs also differ",
            diff,
            explained="A/A calibration noise floor",
        )
    ]


def _explained_line(la: str, lb: str, ln: int, known: set[tuple[int, int, str]]) -> bool:
    ta, tb = _tokens(la), _tokens(lb)
    if len(ta) != len(tb):
        return False
    return all(
        (ln, k, _kind(x)) in known and _kind(x) == _kind(y)
        for k, (x, y) in enumerate(zip(ta, tb, strict=True))
        if x != y
    )


def _first_change(label: str, a: list[str], b: list[str], known: set[tuple[int, int, str]]) -> str:
    """Name the changed lines of a structural difference (up to 3), both versions (normalised), skipping
    line pairs whose only differences sit at calibration noise positions."""
    found: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            old = a[i1 + k] if i1 + k < i2 else None
            new = b[j1 + k] if j1 + k < j2 else None
            if old is not None and new is not None:
                if not _explained_line(old, new, i1 + k, known):
                    found.append(f"line {i1 + k + 1}: {old!r} (cron) vs {new!r} (event)")
            elif old is not None:
                found.append(f"line {i1 + k + 1}: {old!r} printed by cron only")
            else:
                found.append(f"line {j1 + k + 1}: {new!r} printed by the event side only")
    if not found:
        return f"{label}: lines differ"
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return f"{label} " + "; ".join(found[:3]) + more


def duration_outlier(d: float, cron: list[float]) -> str | None:
    """A run much longer OR much shorter than the cron path's: a job that suddenly takes 0.1 s is suspicious.

    Outside [min/3, max*3 + 0.5 s]; the shorter bound only applies when cron runs took 0.5 s or more, since
    a few milliseconds of jitter on a fast job say nothing."""
    if not cron:
        return None
    lo, hi = min(cron), max(cron)
    if d > hi * 3 + 0.5:
        return f"took {d:.3f}s; cron runs took {lo:.3f}s..{hi:.3f}s (much longer)"
    if lo >= 0.5 and d < lo / 3:
        return f"took {d:.3f}s; cron runs took {lo:.3f}s..{hi:.3f}s (much shorter)"
    return None


def compare_pair(
    cron: SideRun, event: SideRun, normalize: Callable[[str], str], floor: NoiseFloor
) -> list[Difference]:
    """Every difference between a cron run and an event run; `explained` set only for calibration noise."""
    out: list[Difference] = []
    for side in (cron, event):
        if side.error:
            out.append(Difference("error", f"{side.side} side did not run: {side.error}"))
    if out:
        return out
    if cron.signal != event.signal:
        out.append(Difference("signal", f"killed by signal {cron.signal} (cron) vs {event.signal} (event)"))
    elif cron.exit_status != event.exit_status:
        out.append(
            Difference("exit", f"exit status {cron.exit_status} (cron) vs {event.exit_status} (event)")
        )
    out += _compare_text(
        "output",
        "output",
        normalize(cron.output).splitlines(),
        normalize(event.output).splitlines(),
        cron.output.splitlines(),
        event.output.splitlines(),
        floor,
    )
    # The runtime returns the last 4 KiB of output (and its length only on success): that tail is what is
    # compared; a longer output's head is not seen (noted with the evidence).
    fa, fb = cron.files_after, event.files_after
    for p in sorted(set(fa) - set(fb)):
        gone = "deleted by the event side" if p in event.files_before else "not written by the event side"
        out.append(Difference("file-missing", f"{p}: written by cron, {gone}"))
    for p in sorted(set(fb) - set(fa)):
        out.append(Difference("file-extra", f"{p}: written by the event side only (cron left no such file)"))
    for p in sorted(set(fa) & set(fb)):
        a, b = fa[p], fb[p]
        if a.mode != b.mode:
            out.append(Difference("file-mode", f"{p}: mode {a.mode:04o} (cron) vs {b.mode:04o} (event)"))
        if (a.uid, a.gid) != (b.uid, b.gid):
            out.append(
                Difference("file-owner", f"{p}: owner {a.uid}:{a.gid} (cron) vs {b.uid}:{b.gid} (event)")
            )
        if a.sha256 == b.sha256:
            continue
        if a.text is None or b.text is None:
            c = "file:" + p
            explained = (
                floor.unstable.get(c) if c in floor.unstable and "binary" in floor.unstable[c] else None
            )
            out.append(
                Difference(
                    "file-content",
                    f"{p}: bytes differ (sha256 {a.sha256[:12]} vs {b.sha256[:12]})",
                    explained=explained,
                )
            )
            continue
        out += _compare_text(
            "file:" + p,
            p,
            normalize(a.text).splitlines(),
            normalize(b.text).splitlines(),
            a.text.splitlines(),
            b.text.splitlines(),
            floor,
        )
        if a.text.splitlines() == b.text.splitlines() and a.text != b.text:
            out.append(Difference("file-content", f"{p}: line endings or final newline differ"))
    why = duration_outlier(event.duration, floor.durations)
    if why:
        out.append(Difference("duration", f"event side {why}"))
    return out
