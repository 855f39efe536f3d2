"""Named noise rules: what differs between any two runs of the same job and says nothing about behaviour.

Each rule replaces a match with a placeholder naming the rule, so a normalised text still shows *where* the
noise was. Rules are deliberately narrow (a number is only a timestamp, a PID or a duration in an obvious
context): a rule that swallows a real value would let a real difference pass as noise. Every rule can be
turned off by name (`--no-rule NAME`); users add their own regexes (`--ignore REGEX`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RULES", "Masks", "Normalizer", "Rule", "RuleError", "build_normalizer"]

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_UNIT = r"(?:ms|us|µs|ns|s|sec|secs|seconds?|m|mins?|minutes?|h|hours?)"


class RuleError(ValueError):
    """A user rule that does not compile, or an unknown rule name."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    what: str  # shown in reports and --help

    @property
    def placeholder(self) -> str:
        return f"<{self.name}>"

    def replace(self, m: re.Match[str]) -> str:
        """The match with only its value group (`v` or `w`, when the rule has one) replaced: context stays."""
        for g in ("v", "w"):
            if g in self.pattern.groupindex and m.group(g) is not None:
                a, b = m.span(g)
                s = m.start()
                return m.group(0)[: a - s] + self.placeholder + m.group(0)[b - s :]
        return self.placeholder


def _r(name: str, pattern: str, what: str, flags: int = 0) -> Rule:
    return Rule(name, re.compile(pattern, flags), what)


# Order matters: longer, more specific shapes first (a `date` line contains a time that the ISO rule
# would otherwise half-eat).
RULES: tuple[Rule, ...] = (
    _r(
        "uuid",
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
        "UUIDs (8-4-4-4-12 hex)",
    ),
    _r(
        "date-output",
        rf"\b{_DAY},? +(?:\d{{1,2}} +{_MON}|{_MON} +\d{{1,2}})\.? +(?:\d{{4}} +)?\d{{1,2}}:\d{{2}}:\d{{2}}"
        rf"(?: *[AP]M)?(?: +[A-Z]{{2,5}}|[+-]\d{{4}})?(?: +\d{{4}})?",
        "`date` default output: 'Mon Nov 24 10:05:01 UTC 2025'",
    ),
    _r(
        "iso-timestamp",
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
        "ISO 8601 dates and times: 2025-11-24, 2025-11-24T10:05:01.123+01:00",
    ),
    _r("syslog-timestamp", rf"\b{_MON} +\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}\b", "syslog: 'Nov 24 10:05:01'"),
    _r("clock-time", r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b", "a bare time of day: 10:05:01.123"),
    _r(
        "epoch",
        r"(?:\b(?:epoch|ts|time|timestamp|started|ended|created|now|at|since)[=: ]|@)"
        r"(?P<v>\d{10}(?:\d{3})?(?:\.\d+)?)\b",
        "epoch seconds/ms after 'epoch=', 'ts=', 'time=', '@'...",
        re.IGNORECASE,
    ),
    _r(
        "pid",
        r"(?:\b(?:pid|process)[=: ] ?|\w\[)(?P<v>\d+)\b",
        "process ids: 'pid=1234', 'PID 1234', 'cron[1234]'",
        re.IGNORECASE,
    ),
    _r(
        "tmp-path",
        r"(?:/var)?/tmp/(?:tmp[._-]?[A-Za-z0-9_]{4,}|[\w.-]*?[._-][A-Za-z0-9]{6,}(?=[/\s'\":]|$))",
        "temporary names: /tmp/tmp.Xk3J9aQ, /tmp/tmpa8x_2k, /tmp/job.3f9aQ1",
    ),
    _r(
        "hex-id",
        r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{8,}\b|\b(?=[0-9A-F]*[A-F])(?=[0-9A-F]*[0-9])[0-9A-F]{8,}\b"
        # A random 16-hex-digit id is all digits once in ~1,800 draws: still the same id, masked only
        # where calibration saw it vary, like every rule.
        r"|\b\d{16,}\b",
        "hex ids of 8+ digits with both letters and digits (request ids, short hashes), or 16+ digits",
    ),
    _r(
        "duration",
        rf"\b(?:took|in|elapsed|duration|after|real|user|sys):?[= \t]+"
        rf"(?P<v>\d+(?:m\d+)?(?:[.,]\d+)? ?{_UNIT})\b"
        rf"|\b(?P<w>\d+(?:[.,]\d+)? ?{_UNIT}) elapsed\b",
        "durations the job prints: 'took 1.23s', 'elapsed: 850 ms', 'real 0m0.003s'",
        re.IGNORECASE,
    ),
)
RULE_NAMES = tuple(r.name for r in RULES)


def _host_rule(hosts: Iterable[str]) -> Rule | None:
    names = sorted({h for h in hosts if h and h != "localhost"}, key=len, reverse=True)
    if not names:
        return None
    return Rule(
        "hostname", re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b"), "this host's names"
    )


@dataclass(frozen=True, slots=True)
class Normalizer:
    rules: tuple[Rule, ...]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def __call__(self, text: str) -> str:
        for rule in self.rules:
            text = rule.pattern.sub(rule.replace, text)
        return text

    def describe(self) -> list[dict[str, str]]:
        return [{"name": r.name, "pattern": r.pattern.pattern, "what": r.what} for r in self.rules]

    def line_spans(self, text: str, allow: Any = None) -> tuple[str, list[tuple[str, int, str]]]:
        """Apply the rules in order to one line; (result, [(rule, occurrence, matched text)]). With `allow`
        (a predicate on (rule, occurrence)), only the spans it allows are replaced."""
        found: list[tuple[str, int, str]] = []
        for rule in self.rules:
            k = 0

            def sub(m: re.Match[str], rule: Rule = rule) -> str:
                nonlocal k
                key = (rule.name, k)
                k += 1
                found.append((rule.name, key[1], m.group(0)))
                if allow is None or allow(*key):
                    return rule.replace(m)
                return m.group(0)

            text = rule.pattern.sub(sub, text)
        return text, found

    def spans(self, lines: Iterable[str]) -> list[list[tuple[str, int, str]]]:
        return [self.line_spans(line)[1] for line in lines]


USER_PREFIX = "ignore-"


@dataclass
class Masks:
    """Which rule spans calibration saw vary: (channel, line, rule, occurrence). Only those are masked (user
    rules always are), so a value shaped like noise that never varied between cron runs stays compared."""

    allowed: dict[str, set[tuple[int, str, int]]] = field(default_factory=dict)

    def learn(self, channel: str, per_run: list[list[list[tuple[str, int, str]]]]) -> None:
        values: dict[tuple[int, str, int], set[str]] = {}
        seen: dict[tuple[int, str, int], int] = {}
        for run in per_run:
            for ln, spans in enumerate(run):
                for rule, k, v in spans:
                    values.setdefault((ln, rule, k), set()).add(v)
                    seen[(ln, rule, k)] = seen.get((ln, rule, k), 0) + 1
        for key, vals in values.items():
            if len(vals) > 1 or seen[key] < len(per_run):
                self.allowed.setdefault(channel, set()).add(key)

    def apply(
        self, channel: str, ln: int, text: str, normalize: Normalizer, counts: dict[str, int] | None = None
    ) -> str:
        ok = self.allowed.get(channel, set())

        def allow(rule: str, k: int) -> bool:
            return rule.startswith(USER_PREFIX) or (ln, rule, k) in ok

        out, found = normalize.line_spans(text, allow)
        if counts is not None:
            for rule, k, _v in found:
                if allow(rule, k):
                    counts[rule] = counts.get(rule, 0) + 1
        return out

    def to_doc(self) -> dict[str, Any]:
        return {c: sorted([list(k) for k in s]) for c, s in sorted(self.allowed.items())}

    def describe(self) -> list[str]:
        by: dict[tuple[str, str], int] = {}
        for c, keys in self.allowed.items():
            for _ln, rule, _k in keys:
                by[(c, rule)] = by.get((c, rule), 0) + 1
        return [f"{c}: {rule} varies at {n} place(s) (masked)" for (c, rule), n in sorted(by.items())]


def build_normalizer(
    disabled: Iterable[str] = (), ignore: Iterable[str] = (), hosts: Iterable[str] | None = None
) -> Normalizer:
    """The built-in rules minus `disabled`, plus the host's names, plus each `ignore` regex (ignore-N)."""
    off = set(disabled)
    known = {*RULE_NAMES, "hostname"}
    unknown = sorted(off - known)
    if unknown:
        raise RuleError(f"no rule named {', '.join(unknown)} (rules: {', '.join(sorted(known))})")
    rules = [r for r in RULES if r.name not in off]
    if "hostname" not in off:
        if hosts is None:
            hosts = (socket.gethostname(), socket.getfqdn())
        h = _host_rule(hosts)
        if h is not None:
            rules.append(h)
    for k, rx in enumerate(ignore, 1):
        try:
            rules.append(Rule(f"{USER_PREFIX}{k}", re.compile(rx), f"user rule {rx!r}"))
        except re.error as e:
            raise RuleError(f"--ignore {rx!r}: not a regular expression: {e}") from None
    return Normalizer(tuple(rules))
