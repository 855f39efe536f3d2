"""Recognise the guards and monitors people put in front of a cron command, and the command inside them.

These are the protections a job already has (a `flock` is an overlap guard, a `timeout` a time limit, a
`cronitor exec` a monitor); later stages keep their meaning, so they must be found, not guessed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import lru_cache

from cronshift.model import WRAPPER_KIND, Wrapper

# A quick test before any tokenising: a wrapper stands at the start of the command (perhaps after a
# `test -x X &&` guard), a ping at its end. Most commands have neither.
_HINT = re.compile(
    r"\s*(?:(?:test\s+-[xfe]|\[\s+-[xfe])\s+\S+(?:\s+\])?\s*&&\s*)?"
    r"(?:\S*/)?(?:flock|timeout|nice|ionice|chronic|run-one|cronitor|runitor|sentry-cli|cronshift)\s"
    r"|\s*(?:test|\[)\s"
)
_PING_HINT = re.compile(r"(?:&&|;)\s*(?:curl|wget)\b")
_PING_RE = re.compile(r"\s*(?:&&|;)\s*((?:curl|wget)\b[^;&|]*)$")
_PING_HOSTS = (
    "hc-ping.com",
    "healthchecks",
    "cronitor.link",
    "cronitor.io",
    "/ping",
    "uptime",
    "betteruptime",
    "deadmanssnitch",
    "nosnch.in",
    "cronhub",
    "sentry",
)
_GUARD_RE = re.compile(r"\s*(?:test\s+-[xfe]\s+(\S+)|\[\s+-[xfe]\s+(\S+)\s+\])\s*&&\s*")
# One shell word: unquoted runs, '...' and "..." (with backslash escapes), and backslash-escaped characters.
_WORD_RE = re.compile(r"""(?:[^\s'"\\;&|<>()#]+|'[^']*'|"(?:[^"\\]|\\.)*"|\\.|#)+""")
_UNQUOTE_RE = re.compile(r"""'([^']*)'|"((?:[^"\\]|\\.)*)"|\\(.)""")


def _unquote(word: str) -> str:
    if "'" not in word and '"' not in word and "\\" not in word:
        return word
    return _UNQUOTE_RE.sub(
        lambda m: (
            m.group(1)
            if m.group(1) is not None
            else re.sub(r"\\(.)", r"\1", m.group(2))
            if m.group(2) is not None
            else m.group(3)
        ),
        word,
    )


def _tokens(s: str) -> Iterator[tuple[str, int, int]]:
    """Shell words with their spans. shlex gives no offsets, and we must cut the original text, not rejoin
    words (rejoining changes quoting); stops at the first operator, since a wrapper only takes one command."""
    pos, n = 0, len(s)
    while pos < n:
        while pos < n and s[pos] in " \t":
            pos += 1
        if pos >= n or s[pos] in ";&|<>()\n#":
            return
        m = _WORD_RE.match(s, pos)
        if not m or m.end() == pos:
            return
        yield _unquote(m.group()), m.start(), m.end()
        pos = m.end()


def _duration_seconds(text: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _peel_one(cmd: str) -> tuple[Wrapper, str] | None:
    """Take one wrapper off the front of `cmd`; None when the command starts with none we know."""
    g = _GUARD_RE.match(cmd)
    if g:
        path = g.group(1) or g.group(2)
        return Wrapper(
            "test-x", cmd[: g.end()].strip(), f"runs only if {path} exists", (("path", path),)
        ), cmd[g.end() :]
    toks = list(_tokens(cmd))
    if not toks:
        return None
    name = os.path.basename(toks[0][0])
    words = [t[0] for t in toks]

    def cut(k: int, kind: str, meaning: str, args: tuple[tuple[str, str], ...] = ()) -> tuple[Wrapper, str]:
        end = toks[k - 1][2] if k > 0 else 0
        rest = cmd[toks[k][1] :] if k < len(toks) else cmd[end:].lstrip()
        return Wrapper(kind, cmd[:end].strip(), meaning, args), rest

    if name == "flock":
        k, opts = 1, {}
        while k < len(words) and words[k].startswith("-"):
            w = words[k]
            if w in ("-w", "--timeout", "-E", "--conflict-exit-code") and k + 1 < len(words):
                opts[w] = words[k + 1]
                k += 2
                continue
            opts[w] = ""
            k += 1
        if k >= len(words):
            return None
        lock = words[k]
        k += 1
        blocking = not ({"-n", "--nonblock", "-nx", "-xn"} & opts.keys())
        meaning = (
            f"overlap guard: waits for lock {lock}"
            if blocking
            else f"overlap guard: skips a run while {lock} is held"
        )
        args = (("lock", lock), ("mode", "wait" if blocking else "skip"))
        if k < len(words) and words[k] in ("-c", "--command") and k + 1 < len(words):
            w = Wrapper("flock", cmd[: toks[k][2]].strip(), meaning, args)
            return w, words[k + 1]
        return cut(k, "flock", meaning, args)
    if name == "timeout":
        k = 1
        while k < len(words) and words[k].startswith("-"):
            k += 2 if words[k] in ("-s", "--signal", "-k", "--kill-after") else 1
        secs = _duration_seconds(words[k]) if k < len(words) else None
        if secs is None:
            return None
        return cut(k + 1, "timeout", f"time limit: killed after {words[k]}", (("seconds", f"{secs:g}"),))
    if name == "nice":
        k = 1
        if k < len(words) and words[k] in ("-n", "--adjustment") and k + 1 < len(words):
            k += 2
        elif k < len(words) and re.fullmatch(r"-\d+|--adjustment=.*", words[k]):
            k += 1
        return cut(k, "nice", "runs at lower CPU priority")
    if name == "ionice":
        k = 1
        while k < len(words) and words[k].startswith("-"):
            k += 1 if len(words[k]) > 2 and not words[k].startswith("--") else 2
        return cut(k, "ionice", "runs at lower I/O priority")
    if name == "chronic":
        return cut(1, "chronic", "monitoring: output only when the command fails (mailed by cron)")
    if name == "run-one":
        return cut(1, "run-one", "overlap guard: skips a run while another copy runs")
    if name == "cronitor" and len(words) >= 3 and words[1] == "exec":
        return cut(3, "cronitor", f"monitoring: cronitor monitor {words[2]}", (("monitor", words[2]),))
    if name == "runitor":
        if "--" in words:
            k = words.index("--")
            return Wrapper(
                "runitor", cmd[: toks[k][2]].strip(), "monitoring: healthchecks.io via runitor"
            ), cmd[toks[k + 1][1] :] if k + 1 < len(toks) else ""
        return None
    if name == "sentry-cli" and words[1:3] == ["monitors", "run"] and "--" in words:
        k = words.index("--")
        slug = words[3] if len(words) > 3 else ""
        if k + 1 >= len(toks):
            return None
        return Wrapper(
            "sentry-cli",
            cmd[: toks[k][2]].strip(),
            f"monitoring: Sentry cron monitor {slug}",
            (("monitor", slug),),
        ), cmd[toks[k + 1][1] :]
    if name == "cronshift" and len(words) > 1 and words[1] == "record" and "--" in words:
        k = words.index("--")
        job = words[words.index("--job") + 1] if "--job" in words[:k] else ""
        if k + 1 >= len(toks):
            return None
        return Wrapper(
            WRAPPER_KIND,
            cmd[: toks[k][2]].strip(),
            "history: runs recorded by cronshift",
            (("job", job),),
        ), cmd[toks[k + 1][1] :]
    return None


def peel(command: str) -> tuple[tuple[Wrapper, ...], str]:
    """All recognised wrappers, outermost first, and the command they run."""
    if not _HINT.match(command) and not _PING_HINT.search(command):
        return (), command
    return _peel(command)


@lru_cache(maxsize=16384)
def _peel(command: str) -> tuple[tuple[Wrapper, ...], str]:
    found: list[Wrapper] = []
    rest = command
    ping = _PING_RE.search(rest)
    if ping and any(h in ping.group(1) for h in _PING_HOSTS):
        found_ping = Wrapper(
            "healthcheck-ping", ping.group(1).strip(), "monitoring: pings a dead-man's switch on success"
        )
        rest = rest[: ping.start()]
    else:
        found_ping = None
    for _ in range(8):  # wrappers nest; eight deep is far beyond any real line
        if not _HINT.match(rest):
            break
        step = _peel_one(rest)
        if step is None:
            break
        w, rest = step
        found.append(w)
    if found_ping:
        found.append(found_ping)
    return tuple(found), rest.strip(" \t")
