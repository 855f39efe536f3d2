"""Cron schedule expressions: parsed exactly as the cron daemon parses them, then evaluated with cronsim.

Why a hand-written parser: every library we checked (cronsim, croniter, python-crontab, Celery's crontab)
accepts lines cron rejects or rejects lines cron accepts, and scan must report exactly the lines cron
refuses (one bad line makes Debian cron drop the whole file). The two parsers below mirror
`get_list`/`get_range`/`get_number` of Debian cron 3.0pl1-162 (upstream 3.0pl1 plus debian/patches) and of
cronie 1.7 (its `get_range` state machine), quirks included; they were checked against Debian's own
`crontab -n`. Fire times are not computed here: cronsim models Debian's DOM/DOW rule and DST handling,
and is fed a canonical expression rebuilt from the parsed field sets.
"""

from __future__ import annotations

import calendar
import functools
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import ExpressionDescriptor, Options
from cronsim import CronSim, CronSimError

from cronshift.model import Dialect

__all__ = ["CronExpr", "ScheduleError", "describe", "fires_between", "next_fires", "parse"]


class ScheduleError(ValueError):
    """A schedule cron refuses; the message is one short line naming the field and the reason."""


MACROS: dict[str, str] = {
    # Equivalent five-field text: the same bits and the same *_STAR flags cron sets for the macro.
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")  # cron's table: Sun twice
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_MAX_TEMPSTR = 1000  # cron's buffer: a number or name of 999+ characters is an error
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1
_MAX_MDAY = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] | None
    noun: str  # for messages: "'x' is not a <noun> name"


_FIELDS = (
    _Field("minute", 0, 59, None, "minute"),
    _Field("hour", 0, 23, None, "hour"),
    _Field("day-of-month", 1, 31, None, "day"),
    _Field("month", 1, 12, _MONTH_NAMES, "month"),
    _Field("day-of-week", 0, 7, _DOW_NAMES, "weekday"),
)
_FULL = (
    frozenset(range(60)),
    frozenset(range(24)),
    frozenset(range(1, 32)),
    frozenset(range(1, 13)),
    frozenset(range(7)),
)


@dataclass(frozen=True, slots=True)
class CronExpr:
    """One parsed schedule. Field sets hold what cron's bit strings hold (dow 0-6, Sunday 0)."""

    text: str  # as written, blanks collapsed to single spaces
    macro: str | None  # '@daily' etc., None for five fields
    minute: frozenset[int]
    hour: frozenset[int]
    dom: frozenset[int]
    month: frozenset[int]
    dow: frozenset[int]
    dom_star: bool  # field text starts with '*' (so '*/2' counts): decides the DOM/DOW AND/OR rule
    dow_star: bool
    reboot: bool  # @reboot: runs at daemon start, never on the clock
    # Quartz-style extensions. Neither Debian cron nor cronie 1.7 accepts L, W or # (checked in their
    # entry.c), so no parse() result sets these; they stay for callers that name them.
    dom_last: bool = False
    dom_weekday: frozenset[int] = frozenset()
    dow_last: frozenset[int] = frozenset()
    dow_nth: frozenset[tuple[int, int]] = frozenset()
    # Debian cron treats jobs whose minute or hour starts with '*' differently across DST changes.
    minute_star: bool = False
    hour_star: bool = False
    dialect: Dialect = Dialect.DEBIAN
    # cronie '~' ranges: (field, low, high). cron draws one value when it loads the file; we assume `low`.
    random: tuple[tuple[str, int, int], ...] = ()
    # Accepted-but-suspicious details cron silently tolerates (ignored trailing text, empty ranges...).
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dom_last or self.dom_weekday or self.dow_last or self.dow_nth:
            raise ValueError("L, W and # are not cron syntax in Debian cron or cronie 1.7")

    # -- evaluation ---------------------------------------------------------------------------------

    def _day_matches(self, d: date) -> bool:
        dom_ok = d.day in self.dom
        dow_ok = (d.weekday() + 1) % 7 in self.dow
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def matches(self, dt: datetime) -> bool:
        """Does cron's table select this wall-clock minute? (DST shifts are next_fires' business.)"""
        if self.reboot:
            return False
        return (
            dt.minute in self.minute
            and dt.hour in self.hour
            and dt.month in self.month
            and self._day_matches(dt.date())
        )

    def can_fire(self) -> bool:
        """False when no date ever satisfies the table ('0 0 31 2 *'). @reboot counts as firing."""
        return self.never_fires_reason() is None

    def never_fires_reason(self) -> str | None:
        return _never_fires_reason(self)

    def interval_seconds(self) -> float | None:
        """Median gap between consecutive fires (wall clock, reference year 2024); None if none."""
        return _interval_seconds(self)

    def cronsim_expr(self) -> str | None:
        """An expression cronsim evaluates exactly like cron evaluates this one; None if it never fires."""
        return _cronsim_expr(self)

    def field_texts(self) -> tuple[str, str, str, str, str]:
        """The five fields as written (a macro's equivalent for macros)."""
        src = MACROS.get(self.macro, "@reboot") if self.macro else self.text
        parts = src.split()
        if len(parts) != 5:
            return ("", "", "", "", "")
        return (parts[0], parts[1], parts[2], parts[3], parts[4])


# -- parsing ------------------------------------------------------------------------------------------


def parse(text: str, dialect: Dialect = Dialect.DEBIAN) -> CronExpr:
    """Parse the schedule part of a crontab line (five fields or one @macro) the way `dialect` does."""
    result = _parse_cached(text, Dialect(dialect))  # keyed on the raw text: repeats are verbatim
    if isinstance(result, str):
        raise ScheduleError(result)
    return result


@functools.lru_cache(maxsize=8192)
def _parse_cached(text: str, dialect: Dialect) -> CronExpr | str:
    # Errors are cached as their message: a big scan repeats the same bad line too.
    try:
        return _parse(text.replace("\t", " "), dialect)
    except ScheduleError as e:
        return str(e)


def _parse(raw: str, dialect: Dialect) -> CronExpr:
    tokens = [t for t in raw.split(" ") if t]
    text = " ".join(tokens)
    if "\n" in text or "\r" in text:
        raise ScheduleError("a schedule cannot contain a line break")
    if not tokens:
        raise ScheduleError("empty schedule")
    if tokens[0].startswith("@"):
        if len(tokens) != 1:
            raise ScheduleError(f"'{tokens[0]}' takes no further schedule fields")
        macro = tokens[0]
        if macro == "@reboot":
            empty: frozenset[int] = frozenset()
            return CronExpr(
                text, macro, empty, empty, empty, empty, empty, False, False, True, dialect=dialect
            )
        if macro not in MACROS:
            hint = " (cron only knows lower-case macros)" if macro.lower() in MACROS else ""
            raise ScheduleError(f"unknown macro '{macro}'{hint}")
        base = _parse(MACROS[macro], dialect)
        return CronExpr(
            text,
            macro,
            base.minute,
            base.hour,
            base.dom,
            base.month,
            base.dow,
            base.dom_star,
            base.dow_star,
            False,
            minute_star=base.minute_star,
            hour_star=base.hour_star,
            dialect=dialect,
        )
    if len(tokens) != 5:
        raise ScheduleError(f"expected 5 fields, got {len(tokens)}")
    sets: list[frozenset[int]] = []
    notes: list[str] = []
    randoms: list[tuple[str, int, int]] = []
    field_parser = _debian_field if dialect is Dialect.DEBIAN else _cronie_field
    for spec, tok in zip(_FIELDS, tokens, strict=True):
        values = field_parser(tok, spec, notes, randoms)
        sets.append(frozenset(values))
    dow = frozenset(v % 7 for v in sets[4])  # "make sundays equivalent"
    return CronExpr(
        text,
        None,
        sets[0],
        sets[1],
        sets[2],
        sets[3],
        dow,
        tokens[2].startswith("*"),
        tokens[4].startswith("*"),
        False,
        minute_star=tokens[0].startswith("*"),
        hour_star=tokens[1].startswith("*"),
        dialect=dialect,
        random=tuple(randoms),
        notes=tuple(notes),
    )


def _c_int(digits: str) -> int:
    """What (int) strtol(digits) gives on Linux/amd64: saturate at LONG_MAX, keep the low 32 bits."""
    v = min(int(digits), _LONG_MAX) & 0xFFFFFFFF
    return v - 2**32 if v > _INT_MAX else v


def _err(spec: _Field, tok: str, what: str) -> ScheduleError:
    return ScheduleError(f"{spec.name} field '{tok}': {what}")


def _get_number(s: str, i: int, spec: _Field, tok: str, names: tuple[str, ...] | None) -> tuple[int, int]:
    """Shared by both dialects: an alphanumeric run is a name from `names` or an all-digit number."""
    j = i
    while s[j] in _ALNUM:
        j += 1
    word = s[i:j]
    if not word:
        shown = "the end of the field" if s[i] == " " else f"'{s[i]}'"
        raise _err(spec, tok, f"expected a number, found {shown}")
    if len(word) >= _MAX_TEMPSTR:
        raise _err(spec, tok, "number too long")
    if word.isdigit():
        return _c_int(word), j
    if names is not None:
        low = spec.low
        for k, name in enumerate(names):
            if word.lower() == name:
                return k + low, j
        raise _err(spec, tok, f"'{word}' is not a {spec.noun} name (names are the first three letters)")
    raise _err(spec, tok, f"'{word}' is not a number")


def _set_range(
    spec: _Field, tok: str, values: set[int], first: int, last: int, step: int, notes: list[str], what: str
) -> None:
    """cron's `for (i = num1; i <= num2; i += num3) set_element(...)`, int overflow included."""
    if first > last:
        notes.append(f"{spec.name} field '{tok}': range {what} runs backwards; cron accepts it as empty")
        return
    i = first
    while i <= last:
        if not spec.low <= i <= spec.high:
            raise _err(spec, tok, f"{i} is out of range {spec.low}-{spec.high}")
        values.add(i)
        i += step
        if i > _INT_MAX:  # C signed overflow wraps negative, and set_element then fails
            raise _err(spec, tok, f"step {step} overflows")


def _debian_field(tok: str, spec: _Field, notes: list[str], randoms: list[tuple[str, int, int]]) -> set[int]:
    """Debian cron 3.0pl1-162 get_list(): elements until the first non-',' terminator; the rest of the
    field up to the next blank is skipped unread (so '1-5-7' is 1-5 and '*x' is '*')."""
    s = tok + " "
    values: set[int] = set()
    i = 0
    while True:
        i = _debian_range(s, i, spec, tok, values, notes)
        if s[i] != ",":
            break
        i += 1
    tail = s[i:].rstrip(" ")
    if tail:
        notes.append(f"{spec.name} field '{tok}': cron ignores the trailing '{tail}'")
    return values


def _debian_range(s: str, i: int, spec: _Field, tok: str, values: set[int], notes: list[str]) -> int:
    names = spec.names
    if s[i] == "*":
        num1, num2 = spec.low, spec.high
        i += 1
    else:
        num1, i = _get_number(s, i, spec, tok, names)
        if s[i] != "-":
            if s[i] == "/":
                raise _err(spec, tok, "a step needs a range or '*' (Debian cron rejects 'n/step')")
            if not spec.low <= num1 <= spec.high:
                raise _err(spec, tok, f"{num1} is out of range {spec.low}-{spec.high}")
            values.add(num1)
            return i
        num2, i = _get_number(s, i + 1, spec, tok, names)
    step = 1
    if s[i] == "/":
        step, i = _get_number(s, i + 1, spec, tok, None)
        if step <= 0:
            raise _err(spec, tok, f"step {step} is not allowed")
    # Debian's "Entry-time-range-check" patch: both ends must be in range, whatever the step.
    for n in (num1, num2):
        if not spec.low <= n <= spec.high:
            raise _err(spec, tok, f"{n} is out of range {spec.low}-{spec.high}")
    _set_range(spec, tok, values, num1, num2, step, notes, f"{num1}-{num2}")
    return i


_SEPARATORS = frozenset(" ,")


def _cronie_field(tok: str, spec: _Field, notes: list[str], randoms: list[tuple[str, int, int]]) -> set[int]:
    """cronie 1.7 get_list()/get_range(): a strict state machine; every element must end at ',' or blank."""
    s = tok + " "
    values: set[int] = set()
    i = 0
    while True:
        i = _cronie_range(s, i, spec, tok, values, notes, randoms)
        if s[i] != ",":
            return values
        i += 1


def _cronie_range(
    s: str,
    i: int,
    spec: _Field,
    tok: str,
    values: set[int],
    notes: list[str],
    randoms: list[tuple[str, int, int]],
) -> int:
    names = spec.names
    step = 1

    def expect_end(j: int) -> int:
        if s[j] not in _SEPARATORS:
            raise _err(spec, tok, f"unexpected '{s[j:].rstrip()}'")
        return j

    if s[i] == "*":
        lo, hi = spec.low, spec.high
        i += 1
        if s[i] != "/":
            expect_end(i)
    elif s[i] == "~":
        return _cronie_random(s, i + 1, spec.low, spec, tok, values, randoms)
    else:
        lo, i = _get_number(s, i, spec, tok, names)
        if s[i] == "~":
            return _cronie_random(s, i + 1, lo, spec, tok, values, randoms)
        if s[i] == "/":
            raise _err(spec, tok, "a step needs a range or '*' (cronie rejects 'n/step')")
        if s[i] != "-":
            expect_end(i)
            if not spec.low <= lo <= spec.high:
                raise _err(spec, tok, f"{lo} is out of range {spec.low}-{spec.high}")
            values.add(lo)
            return i
        hi, i = _get_number(s, i + 1, spec, tok, names)
        if s[i] != "/":
            if lo > hi and hi == 0:
                hi = 7  # cronie's fix for 'fri-sun' (5-0); it applies to every field, not only dow
            expect_end(i)
    if s[i] == "/":
        step, i = _get_number(s, i + 1, spec, tok, None)
        if step == 0:
            raise _err(spec, tok, "step 0 is not allowed")
        expect_end(i)
    if step < 0:  # (int) strtol wrap-around of a huge step
        raise _err(spec, tok, f"step {step} is not allowed")
    _set_range(spec, tok, values, lo, hi, step, notes, f"{lo}-{hi}")
    return i


def _cronie_random(
    s: str,
    i: int,
    lo: int,
    spec: _Field,
    tok: str,
    values: set[int],
    randoms: list[tuple[str, int, int]],
) -> int:
    if s[i] in _SEPARATORS:
        hi = spec.high
    else:
        hi, i = _get_number(s, i, spec, tok, spec.names)
        if s[i] not in _SEPARATORS:
            raise _err(spec, tok, f"unexpected '{s[i:].rstrip()}'")
    if lo > hi:
        raise _err(spec, tok, f"random range {lo}~{hi} is empty")
    if lo < spec.low or hi > spec.high:
        raise _err(
            spec, tok, f"random range {lo}~{hi} reaches outside {spec.low}-{spec.high} (cronie may draw it)"
        )
    randoms.append((spec.name, lo, hi))
    values.add(lo)
    return i


# -- can it fire? -------------------------------------------------------------------------------------

_MONTH_TITLES = tuple(calendar.month_name)


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _valid_days(expr: CronExpr) -> bool:
    return any(d <= _MAX_MDAY[m] for m in expr.month for d in expr.dom)


def _never_fires_reason(expr: CronExpr) -> str | None:
    if expr.reboot:
        return None
    texts = expr.field_texts()
    for k, label, values in ((0, "minute", expr.minute), (1, "hour", expr.hour), (3, "month", expr.month)):
        if not values:
            return f"{_FIELDS[k].name} field '{texts[k]}' selects no {label}"
    dow_none = f"day-of-week field '{texts[4]}' selects no day"
    dom_none = f"day-of-month field '{texts[2]}' selects no day"
    if expr.dom_star or expr.dow_star:  # AND: both sides must match the same date
        if not expr.dow:
            return dow_none
        if not expr.dom:
            return dom_none
    else:  # OR: any weekday occurs in every month
        if expr.dow:
            return None
        if not expr.dom:
            return f"{dow_none} and {dom_none.replace('selects no day', 'selects none either')}"
    if _valid_days(expr):
        return None
    days = sorted(expr.dom)
    day_txt = (
        f"day {days[0]} never occurs"
        if len(days) == 1
        else ("days " + ", ".join(map(str, days[:-1])) + f" and {days[-1]} never occur")
    )
    months = [_MONTH_TITLES[m] for m in sorted(expr.month)]
    return f"{day_txt} in {_join_or(months)}"


# -- canonical text for cronsim and cron-descriptor ----------------------------------------------------


def compress(values: frozenset[int]) -> str:
    """Sorted values as cron list text with runs folded into ranges: {1,2,3,7} -> '1-3,7'."""
    vals = sorted(values)
    out: list[str] = []
    start = prev = vals[0]
    for v in [*vals[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(out)


def _step_of(values: frozenset[int], low: int, high: int) -> int | None:
    """s when values == {low, low+s, ...} up to high (what '*/s' selects), else None."""
    vals = sorted(values)
    if not vals or vals[0] != low:
        return None
    if len(vals) == 1:
        return high - low + 1 if high > low else None
    s = vals[1] - vals[0]
    return s if vals == list(range(low, high + 1, s)) else None


def _cronsim_field(k: int, values: frozenset[int], star: bool) -> str:
    low, high = _FIELDS[k].low, (6 if k == 4 else _FIELDS[k].high)
    if values == _FULL[k]:
        return "*" if star or k == 3 else f"{low}-{high}"  # month's '*' changes nothing in cron
    if star:
        step = _step_of(values, low, high)
        if step is not None:
            return f"*/{step}"
        # Keep the leading '*' (it decides cron's day rule and DST handling): '*/N' selects only `low`.
        rest = values - {low}
        span = 8 if k == 4 else high - low + 1
        return f"*/{span}" + (f",{compress(rest)}" if rest else "")
    return compress(values)


def _cronsim_expr(expr: CronExpr) -> str | None:
    if expr.reboot or not expr.can_fire():
        return None
    dom_star, dow_star, dom, dow = expr.dom_star, expr.dow_star, expr.dom, expr.dow
    if not (dom_star or dow_star):
        # OR rule with one side empty (a backwards range): only the other side selects days. cronsim
        # cannot express an empty field, but '*' on the empty side turns OR into the same AND.
        if not dom:
            dom, dom_star = _FULL[2], True
        elif not dow:
            dow, dow_star = _FULL[4], True
    return " ".join(
        (
            _cronsim_field(0, expr.minute, expr.minute_star),
            _cronsim_field(1, expr.hour, expr.hour_star),
            _cronsim_field(2, dom, dom_star),
            _cronsim_field(3, expr.month, False),
            _cronsim_field(4, dow, dow_star),
        )
    )


# -- fire times ---------------------------------------------------------------------------------------


def _zone(tz: str | None) -> tzinfo:
    if not tz or tz == "UTC":
        return UTC  # cronsim skips its DST logic only for this very object (datetime.timezone.utc)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ScheduleError(f"unknown time zone '{tz}'") from e


def _localize(dt: datetime, zone: tzinfo) -> datetime:
    return dt.replace(tzinfo=zone) if dt.tzinfo is None else dt.astimezone(zone)


def _iterate(expr: CronExpr, zone: tzinfo, after: datetime) -> Iterator[datetime]:
    """cronsim's fires strictly after `after` (already in `zone`)."""
    text = expr.cronsim_expr()
    if text is None:
        return
    try:
        yield from CronSim(text, after)
    except CronSimError:  # pragma: no cover - can_fire() rules these out
        return


def next_fires(expr: CronExpr, tz: str | None, now: datetime, n: int = 3) -> list[datetime]:
    """The next `n` fire times strictly after `now`, aware in `tz` (None: UTC). [] for @reboot/never."""
    zone = _zone(tz)
    out: list[datetime] = []
    for dt in _iterate(expr, zone, _localize(now, zone)):
        if len(out) >= n:
            break
        out.append(dt)
    return out


def fires_between(expr: CronExpr, tz: str | None, start: datetime, end: datetime) -> Iterator[datetime]:
    """Fire times t with start <= t < end, aware in `tz` (None: UTC), as cronsim (= Debian cron) has them."""
    zone = _zone(tz)
    start_z, end_z = _localize(start, zone), _localize(end, zone)
    # cronsim yields strictly after its start (to the second): step back so `start` itself can fire.
    after = start_z - timedelta(seconds=1) if start_z.microsecond == 0 else start_z
    for dt in _iterate(expr, zone, after):
        if dt >= end_z:
            return
        if dt >= start_z:
            yield dt


# -- interval -----------------------------------------------------------------------------------------

_REFERENCE_START = date(2024, 1, 1)  # a leap year starting on a Monday; fixed so results are repeatable
_WINDOWS_DAYS = (366, 8 * 366, 28 * 366, 400 * 366)


@functools.lru_cache(maxsize=4096)
def _interval_seconds(expr: CronExpr) -> float | None:
    if expr.reboot or not expr.can_fire():
        return None
    times = sorted(h * 3600 + m * 60 for h in expr.hour for m in expr.minute)
    for window in _WINDOWS_DAYS:
        days = [
            d
            for d in (_REFERENCE_START + timedelta(days=k) for k in range(window))
            if d.month in expr.month and expr._day_matches(d)
        ]
        if len(days) * len(times) >= 2:
            break
    else:  # pragma: no cover - a schedule that can fire fires at least twice in 400 years
        return None
    gaps: Counter[int] = Counter()
    for a, b in itertools.pairwise(times):
        gaps[b - a] += len(days)
    for a, b in itertools.pairwise(days):
        gaps[(b - a).days * 86400 - times[-1] + times[0]] += 1
    total = sum(gaps.values())
    lo_idx, hi_idx = (total - 1) // 2, total // 2
    seen, lo_val, hi_val = 0, None, None
    for gap in sorted(gaps):
        seen += gaps[gap]
        if lo_val is None and seen > lo_idx:
            lo_val = gap
        if seen > hi_idx:
            hi_val = gap
            break
    assert lo_val is not None and hi_val is not None
    return (lo_val + hi_val) / 2


# -- description --------------------------------------------------------------------------------------

_MACRO_WORDS = {
    "@reboot": "At system start-up (@reboot)",
    "@yearly": "At 00:00 on 1 January (@yearly)",
    "@annually": "At 00:00 on 1 January (@annually)",
    "@monthly": "At 00:00 on day 1 of every month (@monthly)",
    "@weekly": "At 00:00 every Sunday (@weekly)",
    "@daily": "At 00:00 every day (@daily)",
    "@midnight": "At 00:00 every day (@midnight)",
    "@hourly": "Every hour, at minute 0 (@hourly)",
}


def _describe_field(k: int, values: frozenset[int]) -> str:
    low, high = _FIELDS[k].low, (6 if k == 4 else _FIELDS[k].high)
    if values == _FULL[k]:
        return "*"
    step = _step_of(values, low, high)
    if step is not None and len(values) > 1 and k != 4:
        return f"*/{step}"
    vals = sorted(values)
    if k != 4 and len(vals) >= 3:
        s = vals[1] - vals[0]
        if s > 1 and vals == list(range(vals[0], vals[-1] + 1, s)):
            return f"{vals[0]}-{vals[-1]}/{s}"
    return compress(values)


@functools.lru_cache(maxsize=4096)
def describe(expr: CronExpr) -> str:
    """Plain English for people; the day rule (AND/OR) is worded by us because cron-descriptor guesses it."""
    if expr.macro in _MACRO_WORDS:
        text = _MACRO_WORDS[expr.macro]
    else:
        reason = expr.never_fires_reason()
        if reason is not None:
            return f"Never runs: {reason}"
        text = _describe_fields(expr)
    if expr.random:
        picks = ", ".join(f"{f} {lo}-{hi}" for f, lo, hi in expr.random)
        text += f" (cronie picks one random value per load in {picks}; shown as the lowest)"
    return text


def _describe_fields(expr: CronExpr) -> str:
    opts = Options()
    opts.use_24hour_time_format = True
    m, h, mo = _describe_field(0, expr.minute), _describe_field(1, expr.hour), _describe_field(3, expr.month)
    dom_full = expr.dom == _FULL[2] or not expr.dom
    dow_full = expr.dow == _FULL[4] or not expr.dow
    and_rule = expr.dom_star or expr.dow_star
    if not and_rule and (expr.dom == _FULL[2] or expr.dow == _FULL[4]):
        dom_full = dow_full = True  # OR with an unrestricted side: every day
    d = "*" if dom_full else _describe_field(2, expr.dom)
    w = "*" if dow_full else _describe_field(4, expr.dow)
    base = ExpressionDescriptor(f"{m} {h} {d} {mo} *", opts)
    time_part = base.get_time_of_day_description()
    dom_part = base.get_day_of_month_description() if d != "*" else ""
    month_part = base.get_month_description()
    dow_part = ""
    if w != "*":
        raw = ExpressionDescriptor(f"{m} {h} * {mo} {w}", opts).get_day_of_week_description()
        bare = raw.removeprefix(", ").removeprefix("only on ")
        if d == "*":
            dow_part = raw
        elif and_rule:
            dow_part = f", if that day is also {bare.removeprefix('on ')}"
        else:
            dow_part = f", or on {bare.removeprefix('on ')}"
    text = base.transform_verbosity(f"{time_part}{dom_part}{dow_part}{month_part}", use_verbose_format=False)
    return text[:1].upper() + text[1:]
