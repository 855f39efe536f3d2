"""Compare runs of a job: exit status, the whole output, every file each side created, changed or deleted,
and duration. No I/O beyond reading the evidence files the sides left.

Calibrate, then normalise: the cron path run against itself (A/A) decides what varies.
1. A named noise rule (normalize.py) may mask a span only where the cron runs disagreed at that very span
   (same channel, same line, same rule, same occurrence) - or where the user named the rule (`--ignore`).
   A pid-shaped or hash-shaped value that never varied between cron runs is compared like any other.
2. After masking, a token position that differed between cron runs (same line, same token, same kind) is
   noise. Anything else is real - unless the cron runs were too few to say that a number is stable, or
   the channel's structure varies between cron runs: then the difference is *unjudged*, and the verdict is
   "insufficient evidence" with what to do next. Never parity, never mismatch by default.
Whole outputs and whole files are compared, line by line in lockstep (streamed); binary files by content.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import itertools
import os
import re
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cronshift.shadow.normalize import Masks, Normalizer

__all__ = [
    "MIN_STABLE_RUNS",
    "Difference",
    "NoiseFloor",
    "SideRun",
    "compare_output",
    "compare_pair",
    "duration_outlier",
    "learn_noise",
]

DIFF_LINES = 40  # lines of unified diff kept per difference
DIFF_WINDOW = 400  # lines read around a structural difference to build its diff
MIN_STABLE_RUNS = 5  # cron runs that must agree before a differing number is called real
TIME_RULES = frozenset(
    {"duration", "clock-time", "date-output", "iso-timestamp", "syslog-timestamp", "epoch"}
)  # values that change with the clock: a stable one in quick A/A runs is never proof of stability
MIN_SPAN = 2.0  # seconds cron runs must span before a stable time-or-pid-shaped value is called real
CALIBRATE_MORE = "run more --calibration runs"  # what to do when calibration saw too little (now mode)
_TOKEN = re.compile(r"<[a-z0-9-]+>|\d+(?:\.\d+)?|[A-Za-z_]+|\s+|.", re.DOTALL)


@dataclass(slots=True)
class SideRun:
    """One run of one side: how it ended, its whole output, what it changed in the files, how long it took."""

    side: str  # "cron-aa-N" (calibration), "cron-N", "event-N"
    exit_status: int | None
    signal: int | None
    output: str  # the tail, for documents; the comparison reads output_path when there is one
    output_bytes: int | None
    duration: float  # end to end: for the event side the whole task, not only its command
    changes: list[dict[str, Any]] = field(default_factory=list)  # path, change, type, mode, uid, gid, ...
    error: str | None = None  # the side could not be run, or the generated code failed (named)
    meta: dict[str, Any] = field(default_factory=dict)
    output_path: str | None = None
    notes: list[str] = field(default_factory=list)
    started: float | None = None  # wall clock at the start (how far apart A/A runs were)

    def lines(self) -> Iterator[str]:
        if self.output_path and os.path.exists(self.output_path):
            yield from _file_lines(self.output_path)
        else:
            yield from self.output.splitlines()

    def by_path(self) -> dict[str, dict[str, Any]]:
        return {c["path"]: c for c in self.changes}

    def to_doc(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "exit_status": self.exit_status,
            "signal": self.signal,
            "duration": round(self.duration, 6),
            "output_bytes": self.output_bytes,
            "output_sha256": _sha_path(self.output_path) if self.output_path else _sha(self.output),
            "output_tail": self.output[-2000:],
            "changes": [{k: v for k, v in c.items() if k != "copy"} for c in self.changes],
            "error": self.error,
            "meta": self.meta,
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str  # exit | signal | error | output | file-missing | file-extra | file-content | file-mode | ...
    what: str  # one line naming the cause
    diff: str = ""  # unified diff, git-diff-like
    explained: str | None = None  # why this is noise (a calibration position); None: not noise
    unjudged: str | None = None  # why calibration cannot judge it (then: insufficient, never parity)

    def to_doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "what": self.what,
            "diff": self.diff,
            "explained": self.explained,
            "unjudged": self.unjudged,
        }


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _sha_path(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _file_lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


def is_text(path: str) -> bool:
    """UTF-8 without NUL bytes, judged on the whole file (streamed)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                if b"\0" in chunk:
                    return False
                dec.decode(chunk)
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _tokens(line: str) -> list[str]:
    return _TOKEN.findall(line)


def _kind(tok: str) -> str:
    if tok[:1].isdigit():
        return "number"
    if tok[:1].isalpha() or tok[:1] == "_":
        return "word"
    return "other:" + tok


# -- channels: the output, and each file a side wrote ---------------------------------------------------


def _channel_lines(run: SideRun, channel: str) -> Iterable[str] | None:
    """Lines of a text channel; None for a binary file (compared by content)."""
    if channel == "output":
        return run.lines()
    c = run.by_path().get(channel[5:])
    if c is None or c.get("type") != "file" or not c.get("copy"):
        return []
    return _file_lines(c["copy"]) if is_text(c["copy"]) else None


def _written(run: SideRun) -> dict[str, dict[str, Any]]:
    return {p: c for p, c in run.by_path().items() if c["change"] != "deleted" and c.get("type") == "file"}


@dataclass
class NoiseFloor:
    """What differed between cron runs of the same job: learned from A/A runs, then frozen for judging."""

    masks: Masks = field(default_factory=Masks)
    positions: dict[str, set[tuple[int, int, str]]] = field(
        default_factory=dict
    )  # channel -> (ln, tok, kind)
    unstable: dict[str, str] = field(default_factory=dict)  # channel -> why it cannot be judged token-wise
    exit_unstable: bool = False
    changes_unstable: dict[str, str] = field(default_factory=dict)  # path -> how its change varies
    durations: list[float] = field(default_factory=list)  # cron-path durations (end to end)
    runs: int = 0  # cron runs the floor was learned from
    span: float = 0.0  # seconds from the first cron run's start to the last one's
    pairs: int = 0

    def to_doc(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "span_seconds": round(self.span, 3),
            "pairs": self.pairs,
            "masks": self.masks.to_doc(),
            "positions": {c: sorted([list(p) for p in s]) for c, s in sorted(self.positions.items())},
            "unstable": dict(sorted(self.unstable.items())),
            "changes_unstable": dict(sorted(self.changes_unstable.items())),
            "exit_unstable": self.exit_unstable,
            "durations": [round(d, 6) for d in self.durations],
        }

    def describe(self) -> list[str]:
        out = self.masks.describe()
        out += [
            f"{c}: line {ln + 1} token {t + 1} ({k}) varies"
            for c, s in sorted(self.positions.items())
            for ln, t, k in sorted(s)
        ]
        out += [f"{c}: {why}" for c, why in sorted(self.unstable.items())]
        out += [f"{p}: {why}" for p, why in sorted(self.changes_unstable.items())]
        if self.exit_unstable:
            out.append("exit status varies between cron runs")
        return out


def learn_noise(cron_runs: Iterable[SideRun], normalize: Normalizer) -> NoiseFloor:
    """A/A calibration: which rule spans and which token positions vary between cron runs."""
    runs = [r for r in cron_runs if r.error is None]
    starts = [r.started for r in runs if r.started is not None]
    span = max(starts) - min(starts) if starts else 0.0
    floor = NoiseFloor(durations=[r.duration for r in runs], runs=len(runs), span=span)
    channels: set[str] = {"output"}
    for r in runs:
        channels |= {"file:" + p for p in _written(r)}
    # 1. which rule spans varied (only those may be masked)
    for c in sorted(channels):
        per_run = []
        for r in runs:
            lines = _channel_lines(r, c)
            per_run.append(None if lines is None else normalize.spans(lines))
        if all(p is not None for p in per_run):
            floor.masks.learn(c, [p for p in per_run if p is not None])
    # 2. which token positions vary once the learned masks are applied
    for a, b in itertools.pairwise(runs):
        floor.pairs += 1
        if (a.exit_status, a.signal) != (b.exit_status, b.signal):
            floor.exit_unstable = True
        ca, cb = a.by_path(), b.by_path()
        for p in sorted(set(ca) | set(cb)):
            x, y = ca.get(p), cb.get(p)
            if x is None or y is None:
                floor.changes_unstable[p] = "changed by some cron runs only"
            elif (x["change"], x.get("type")) != (y["change"], y.get("type")):
                floor.changes_unstable[p] = f"{x['change']} by one cron run, {y['change']} by another"
        for c in sorted(channels):
            if c in floor.unstable:
                continue
            la, lb = _channel_lines(a, c), _channel_lines(b, c)
            if la is None or lb is None:
                pa, pb = ca.get(c[5:], {}), cb.get(c[5:], {})
                if pa.get("sha256") != pb.get("sha256"):
                    floor.unstable[c] = "binary content varies between cron runs"
                continue
            for ln, ta, tb in _lockstep(floor, c, la, lb, normalize):
                if ta is None or tb is None or len(ta) != len(tb):
                    floor.unstable[c] = f"line {ln + 1}: line or token structure varies between cron runs"
                    break
                for t, (x, y) in enumerate(zip(ta, tb, strict=True)):
                    if x == y:
                        continue
                    if _kind(x) == _kind(y):
                        floor.positions.setdefault(c, set()).add((ln, t, _kind(x)))
                    else:
                        floor.unstable[c] = f"line {ln + 1} changes kind between cron runs ({x!r} vs {y!r})"
    return floor


def _lockstep(
    floor: NoiseFloor,
    channel: str,
    a: Iterable[str],
    b: Iterable[str],
    normalize: Normalizer,
    counts: tuple[dict[str, int], dict[str, int]] | None = None,
) -> Iterator[tuple[int, list[str] | None, list[str] | None]]:
    """(line, tokens a, tokens b) for every line whose masked text differs; None for a missing line."""
    for ln, (x, y) in enumerate(itertools.zip_longest(a, b)):
        mx = (
            None if x is None else floor.masks.apply(channel, ln, x, normalize, counts[0] if counts else None)
        )
        my = (
            None if y is None else floor.masks.apply(channel, ln, y, normalize, counts[1] if counts else None)
        )
        if mx != my:
            yield ln, None if mx is None else _tokens(mx), None if my is None else _tokens(my)


def _window(lines: Iterable[str], start: int) -> list[str]:
    return list(itertools.islice(lines, max(0, start - 3), start + DIFF_WINDOW))


def _udiff(name: str, a: list[str], b: list[str], offset: int) -> str:
    lines = list(difflib.unified_diff(a, b, f"a/{name} (cron)", f"b/{name} (event)", lineterm="", n=2))
    lines = [_shift(x, offset) for x in lines]
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more diff lines"]
    return "\n".join(lines)


def _shift(line: str, offset: int) -> str:
    """Hunk headers of a diff of a window renumbered to the file's own lines."""
    m = re.match(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@", line)
    if not m or not offset:
        return line
    return f"@@ -{int(m[1]) + offset}{m[2] or ''} +{int(m[3]) + offset}{m[4] or ''} @@" + line[m.end() :]


def _compare_text(
    channel: str,
    label: str,
    cron: SideRun,
    event: SideRun,
    floor: NoiseFloor,
    normalize: Normalizer,
    counts: tuple[dict[str, int], dict[str, int]],
    advice: str = CALIBRATE_MORE,
) -> list[Difference]:
    kind = "output" if channel == "output" else "file-content"
    more = advice.format(more=max(1, MIN_STABLE_RUNS - floor.runs))
    la, lb = _channel_lines(cron, channel), _channel_lines(event, channel)
    assert la is not None and lb is not None
    real: list[str] = []
    first_real: int | None = None
    unjudged: list[str] = []
    whys: list[str] = []
    noise = 0
    known = floor.positions.get(channel, set())
    for ln, ta, tb in _lockstep(floor, channel, la, lb, normalize, counts):
        if ta is None or tb is None or len(ta) != len(tb):
            start = max(0, ln - 3)
            wa = _window(_channel_lines(cron, channel) or [], ln)
            wb = _window(_channel_lines(event, channel) or [], ln)
            diff = _udiff(label, wa, wb, start)
            what = _structural(label, ln, ta, tb)
            if channel in floor.unstable:
                return [
                    Difference(
                        kind, what, diff, unjudged=floor.unstable[channel] + "; name a rule (--ignore)"
                    )
                ]
            return [Difference(kind, what, diff)]
        for t, (x, y) in enumerate(zip(ta, tb, strict=True)):
            if x == y:
                continue
            where = (
                f"{label} line {ln + 1}: {x!r} (cron) vs {y!r} (event), in {''.join(ta)!r} vs {''.join(tb)!r}"
            )
            if (ln, t, _kind(x)) in known and _kind(x) == _kind(y):
                noise += 1
                continue
            shaped = _rule_at(normalize, "".join(ta), sum(len(k) for k in ta[:t]))
            enough = floor.runs >= MIN_STABLE_RUNS
            if channel in floor.unstable:
                unjudged.append(where)
                whys.append(floor.unstable[channel])
            elif shaped in TIME_RULES:
                unjudged.append(where)
                whys.append(
                    f"it looks like {shaped} (a clock reading) and stayed the same in {floor.runs} cron "
                    "run(s): clocks tick, so that proves nothing either way; name it with --ignore "
                    "if it is noise"
                )
            elif shaped and not (enough and floor.span >= MIN_SPAN):
                unjudged.append(where)
                whys.append(
                    f"it looks like {shaped} noise, but {floor.runs} cron run(s) over {floor.span:.1f}s "
                    f"never varied there ({MIN_STABLE_RUNS} runs over {MIN_SPAN:.0f}s are needed to call it "
                    f"stable): {more}, or name it with --ignore"
                )
            elif _kind(x) == _kind(y) == "number" and not enough:
                unjudged.append(where)
                whys.append(
                    f"a number that {floor.runs} cron run(s) agreed on; {MIN_STABLE_RUNS} are needed to call "
                    f"it stable: {more}, or name it with --ignore"
                )
            else:
                real.append(where)
                first_real = ln if first_real is None else first_real
    if real:
        assert first_real is not None
        more = f" (and {len(real) - 1} more)" if len(real) > 1 else ""
        start = max(0, first_real - 3)
        wa = _window(_channel_lines(cron, channel) or [], first_real)
        wb = _window(_channel_lines(event, channel) or [], first_real)
        return [Difference(kind, real[0] + more, _udiff(label, wa, wb, start))]
    if unjudged:
        why = whys[0]
        more = f" (and {len(unjudged) - 1} more)" if len(unjudged) > 1 else ""
        return [Difference(kind, unjudged[0] + more, unjudged=why)]
    if noise:
        return [
            Difference(
                kind,
                f"{label}: {noise} token(s) differ where cron runs also differ",
                explained="A/A calibration noise floor",
            )
        ]
    return []


def compare_output(
    cron: SideRun,
    event: SideRun,
    normalize: Normalizer,
    floor: NoiseFloor,
    masked: tuple[dict[str, int], dict[str, int]],
    *,
    label: str = "output",
    advice: str = CALIBRATE_MORE,
) -> list[Difference]:
    """The whole output of a cron run and an event run, judged against a noise floor learned from cron runs
    (live mode judges each instant's pair this way). `advice` ({more}: runs still needed) says how to get
    the evidence an unjudged value lacks."""
    return _compare_text("output", label, cron, event, floor, normalize, masked, advice)


def _rule_at(normalize: Normalizer, line: str, offset: int) -> str | None:
    """The built-in rule whose match covers this character of the line, if any (noise-shaped value)."""
    for rule in normalize.rules:
        for m in rule.pattern.finditer(line):
            if m.start() <= offset < m.end():
                return rule.name
    return None


def _structural(label: str, ln: int, ta: list[str] | None, tb: list[str] | None) -> str:
    if ta is None and tb is not None:
        return f"{label} line {ln + 1}: {''.join(tb)!r} printed by the event side only"
    if tb is None and ta is not None:
        return f"{label} line {ln + 1}: {''.join(ta)!r} printed by cron only"
    return f"{label} line {ln + 1}: {''.join(ta or [])!r} (cron) vs {''.join(tb or [])!r} (event)"


def duration_outlier(d: float, cron: list[float], allowance: float = 0.0) -> str | None:
    """A run much longer or much shorter than the cron path's, end to end.

    Longer: beyond 3x the slowest cron run plus 0.5 s, or, for a fast job, 10x its median when that is at
    least 0.1 s more than the slowest cron run (a wrapper that sleeps, a slow import). Shorter: below a third
    of the fastest cron run when cron runs took 0.5 s or more. `allowance`: seconds of the event path's own
    transport (a broker round trip) that say nothing about the job. Jitter of a fast job says nothing."""
    if not cron:
        return None
    lo, hi, med = min(cron), max(cron), statistics.median(cron)
    if d > hi * 3 + 0.5 + allowance:
        return f"took {d:.3f}s; cron runs took {lo:.3f}s..{hi:.3f}s (much longer)"
    if med > 0 and d >= 10 * med and d - hi >= 0.1 + allowance:
        return f"took {d:.3f}s; cron runs took {lo:.3f}s..{hi:.3f}s ({d / med:.0f}x slower)"
    if lo >= 0.5 and d < lo / 3:
        return f"took {d:.3f}s; cron runs took {lo:.3f}s..{hi:.3f}s (much shorter)"
    return None


_CHANGE_WORD = {"created": "created", "changed": "changed", "deleted": "deleted", "appended": "appended to"}


def _compare_changes(
    cron: SideRun,
    event: SideRun,
    normalize: Normalizer,
    floor: NoiseFloor,
    counts: tuple[dict[str, int], dict[str, int]],
) -> list[Difference]:
    out: list[Difference] = []
    ca, cb = cron.by_path(), event.by_path()
    for p in sorted(set(ca) | set(cb)):
        a, b = ca.get(p), cb.get(p)
        unj = floor.changes_unstable.get(p)
        if a is None or b is None:
            one = a or b
            assert one is not None
            who = "cron" if a is not None else "the event side"
            other = "the event side" if a is not None else "cron"
            what = f"{p}: {_CHANGE_WORD[one['change']]} by {who} only ({other} left it as it was)"
            kind = "file-missing" if a is not None else "file-extra"
            out.append(Difference(kind, what, unjudged=unj and f"{unj}; name it (--ignore) or run more"))
            continue
        if (a["change"], a.get("type")) != (b["change"], b.get("type")):
            out.append(
                Difference(
                    "file-change",
                    f"{p}: {a['change']} {a.get('type') or ''} by cron vs "
                    f"{b['change']} {b.get('type') or ''} "
                    "by the event side",
                    unjudged=unj,
                )
            )
            continue
        if a["change"] == "deleted":
            continue
        if a.get("mode") != b.get("mode"):
            out.append(
                Difference("file-mode", f"{p}: mode {a['mode']:04o} (cron) vs {b['mode']:04o} (event)")
            )
        if (a.get("uid"), a.get("gid")) != (b.get("uid"), b.get("gid")):
            out.append(
                Difference(
                    "file-owner", f"{p}: owner {a['uid']}:{a['gid']} (cron) vs {b['uid']}:{b['gid']} (event)"
                )
            )
        if a.get("type") == "symlink":
            if a.get("link") != b.get("link"):
                out.append(
                    Difference("file-content", f"{p}: symlink to {a['link']!r} (cron) vs {b['link']!r}")
                )
            continue
        if a.get("type") != "file" or a.get("sha256") == b.get("sha256"):
            continue
        c = "file:" + p
        if _channel_lines(cron, c) is None or _channel_lines(event, c) is None:
            why = floor.unstable.get(c)
            out.append(
                Difference(
                    "file-content",
                    f"{p}: bytes differ (binary; sha256 {str(a['sha256'])[:12]} vs {str(b['sha256'])[:12]})",
                    unjudged=why and f"{why}: a binary file that varies cannot be compared",
                )
            )
            continue
        found = _compare_text(c, p, cron, event, floor, normalize, counts)
        if not found and all(
            x == y
            for x, y in itertools.zip_longest(_channel_lines(cron, c) or [], _channel_lines(event, c) or [])
        ):
            found = [Difference("file-content", f"{p}: line endings or final newline differ")]
        out += found
    return out


def compare_pair(
    cron: SideRun,
    event: SideRun,
    normalize: Normalizer,
    floor: NoiseFloor,
    masked: tuple[dict[str, int], dict[str, int]] | None = None,
) -> list[Difference]:
    """Every difference between a cron run and an event run; `masked` counts the spans masked per rule."""
    counts = masked or ({}, {})
    out: list[Difference] = []
    for side in (cron, event):
        if side.error and (side is cron or side.meta.get("infra")):
            who = "cron" if side is cron else "event"
            out.append(Difference("error", f"{who} side: {side.error}"))
    if cron.error:
        return out
    if event.error and event.meta.get("infra"):
        return out
    if event.error:
        # The generated code failing (an exception, a result that is not a run) is a real difference.
        return [Difference("event-error", f"event side: {event.error}")]
    if cron.signal != event.signal:
        out.append(Difference("signal", f"killed by signal {cron.signal} (cron) vs {event.signal} (event)"))
    elif cron.exit_status != event.exit_status:
        out.append(
            Difference("exit", f"exit status {cron.exit_status} (cron) vs {event.exit_status} (event)")
        )
    if event.meta.get("ran_command") is False:
        out.append(
            Difference("event-error", "event side: the task returned without running the job's command")
        )
    out += _compare_text("output", "output", cron, event, floor, normalize, counts)
    out += _compare_changes(cron, event, normalize, floor, counts)
    why = duration_outlier(event.duration, floor.durations, float(event.meta.get("latency_allowance") or 0))
    if why:
        out.append(Difference("duration", f"event side {why} (end to end)"))
    return out
