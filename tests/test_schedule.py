"""The cron expression model: parsing exactly as Debian cron / cronie do, evaluation agreeing with cronsim."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from itertools import takewhile
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronshift.discover.schedule import CronExpr, ScheduleError, describe, fires_between, next_fires, parse
from cronshift.model import Dialect

DEB, CRONIE = Dialect.DEBIAN, Dialect.CRONIE


def S(spec: str) -> frozenset[int]:
    """Test-side set notation, independent of the parser: '1-5', '0-59/15', '1,3,7'."""
    out: set[int] = set()
    for part in spec.split(","):
        if not part:
            continue
        rng, _, step = part.partition("/")
        a, _, b = rng.partition("-")
        out.update(range(int(a), int(b or a) + 1, int(step or 1)))
    return frozenset(out)


ALL = ("0-59", "0-23", "1-31", "1-12", "0-6")

# expression -> (minute, hour, dom, month, dow) in S() notation, or an error fragment.
DEBIAN_TABLE: list[tuple[str, tuple[str, ...] | str]] = [
    ("* * * * *", ALL),
    ("*/5 * * * *", ("0-59/5", *ALL[1:])),
    ("0 */2 * * *", ("0", "0-23/2", *ALL[2:])),
    ("* */1 * * *", ALL),
    ("0-59/30 * * * *", ("0,30", *ALL[1:])),
    ("5-10/2 * * * *", ("5,7,9", *ALL[1:])),
    ("*/100 * * * *", ("0", *ALL[1:])),  # a step past the end is fine: only the start
    ("0,15,30,45 * * * *", ("0,15,30,45", *ALL[1:])),
    ("05 * * * *", ("5", *ALL[1:])),
    ("0 0 1 */2 *", ("0", "0", "1", "1-12/2", "0-6")),
    ("0 8 * * 1-5", ("0", "8", "1-31", "1-12", "1-5")),
    ("0 8 * * mon-fri", ("0", "8", "1-31", "1-12", "1-5")),
    ("0 8 * * MON-Fri", ("0", "8", "1-31", "1-12", "1-5")),
    ("0 0 * jan,JUL,dec *", ("0", "0", "1-31", "1,7,12", "0-6")),
    ("0 0 * jan-mar/2 *", ("0", "0", "1-31", "1,3", "0-6")),
    ("0 0 * * 7", ("0", "0", "1-31", "1-12", "0")),
    ("0 0 * * 1-7", ("0", "0", "1-31", "1-12", "0-6")),
    ("0 0 * * 0-7", ("0", "0", "1-31", "1-12", "0-6")),
    ("0 0 * * sun", ("0", "0", "1-31", "1-12", "0")),
    ("0 0 * * 5-7", ("0", "0", "1-31", "1-12", "0,5,6")),
    ("0 0 * * */2", ("0", "0", "1-31", "1-12", "0,2,4,6")),
    ("0 0 * * */3", ("0", "0", "1-31", "1-12", "0,3,6")),
    ("1 2 3 4 5", ("1", "2", "3", "4", "5")),
    ("59 23 31 12 6", ("59", "23", "31", "12", "6")),
    ("1,2-4,10-20/5 * * * *", ("1,2,3,4,10,15,20", *ALL[1:])),
    ("4294967301 * * * *", ("5", *ALL[1:])),  # (int) atoi() keeps the low 32 bits
    # Quirks Debian's get_list() has: the rest of a field after a finished element is skipped.
    ("1-5-7 * * * *", ("1-5", *ALL[1:])),
    ("*x * * * *", ALL),
    ("*-5 * * * *", ALL),
    ("5;x * * * *", ("5", *ALL[1:])),
    ("5.5 * * * *", ("5", *ALL[1:])),
    # Backwards ranges: accepted, select nothing (the job silently never runs).
    ("5-2 * * * *", ("", *ALL[1:])),
    ("0 0 * * fri-mon", ("0", "0", "1-31", "1-12", "")),
    ("0 0 * * mon-sun", ("0", "0", "1-31", "1-12", "")),  # sun is 0 here, not 7
    # Errors.
    ("", "empty schedule"),
    ("* * * *", "expected 5 fields, got 4"),
    ("* * * * * *", "expected 5 fields, got 6"),
    ("60 * * * *", "minute field '60': 60 is out of range 0-59"),
    ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
    ("* * 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
    ("* * 32 * *", "32 is out of range 1-31"),
    ("* * * 0 *", "month field '0': 0 is out of range 1-12"),
    ("* * * 13 *", "13 is out of range 1-12"),
    ("* * * * 8", "day-of-week field '8': 8 is out of range 0-7"),
    ("0-61/7 * * * *", "61 is out of range 0-59"),  # Debian checks both ends whatever the step
    ("5-64/30 * * * *", "64 is out of range"),
    ("1/20 * * * *", "a step needs a range or '*'"),
    ("* * * * thu/2", "a step needs a range or '*'"),
    ("*/0 * * * *", "step 0 is not allowed"),
    ("1-5/0 * * * *", "step 0 is not allowed"),
    ("*/4294967296 * * * *", "step 0 is not allowed"),
    ("*/ * * * *", "expected a number"),
    ("1, * * * *", "expected a number"),
    (",1 * * * *", "expected a number"),
    ("1,,2 * * * *", "expected a number"),
    ("1- * * * *", "expected a number"),
    ("-1 * * * *", "expected a number"),
    ("mon * * * *", "'mon' is not a number"),
    ("* * * * jan", "'jan' is not a weekday name"),
    ("* * * mon *", "'mon' is not a month name"),
    ("* * * * sunday", "'sunday' is not a weekday name"),
    ("* * * january *", "'january' is not a month name"),
    ("* * L * *", "'L' is not a number"),
    ("* * 15W * *", "'15W' is not a number"),
    ("* * * * 5L", "'5L' is not a weekday name"),
    ("* * * * 1#2", ("0-59", "0-23", "1-31", "1-12", "1")),  # Debian skips the "#2"
    ("0~30 * * * *", ("0", *ALL[1:])),  # '~30' is skipped like any other trailing text
    ("@daily", ("0", "0", *ALL[2:])),
    ("@Daily", "unknown macro '@Daily'"),
    ("@weekdays", "unknown macro '@weekdays'"),
    ("@daily *", "takes no further schedule fields"),
]

CRONIE_TABLE: list[tuple[str, tuple[str, ...] | str]] = [
    ("*/5 * * * *", ("0-59/5", *ALL[1:])),
    ("0 8 * * mon-fri", ("0", "8", "1-31", "1-12", "1-5")),
    ("0-61/7 * * * *", ("0-56/7", *ALL[1:])),  # cronie only checks the values it actually sets
    ("5-0 * * * *", ("5-7", *ALL[1:])),  # cronie's 'fri-sun' fix applies to every field
    ("0 0 * * fri-sun", ("0", "0", "1-31", "1-12", "0,5,6")),
    ("0 0 * * mon-sun", ("0", "0", "1-31", "1-12", "0-6")),
    ("10-0 * * * *", ("", *ALL[1:])),  # ... and only reaches 7
    ("5-2 * * * *", ("", *ALL[1:])),
    ("5-0/2 * * * *", ("", *ALL[1:])),  # no fix when a step follows
    ("0~30 * * * *", ("0", *ALL[1:])),  # random: the lowest value stands in for cron's draw
    ("1-5-7 * * * *", "unexpected '-7'"),
    ("*x * * * *", "unexpected 'x'"),
    ("5;x * * * *", "unexpected ';x'"),
    ("1/20 * * * *", "a step needs a range or '*'"),
    ("*/0 * * * *", "step 0 is not allowed"),
    ("0~70 * * * *", "reaches outside 0-59"),
    ("30~10 * * * *", "random range 30~10 is empty"),
    ("* * L * *", "'L' is not a number"),
    ("* * * * 5#2", "unexpected '#2'"),
    ("60 * * * *", "60 is out of range 0-59"),
]


def _check_row(text: str, expected: tuple[str, ...] | str, dialect: Dialect) -> None:
    if isinstance(expected, str):
        with pytest.raises(ScheduleError) as info:
            parse(text, dialect)
        assert expected in str(info.value)
        assert "\n" not in str(info.value)
        return
    e = parse(text, dialect)
    assert (e.minute, e.hour, e.dom, e.month, e.dow) == tuple(S(x) for x in expected), text


@pytest.mark.parametrize(("text", "expected"), DEBIAN_TABLE, ids=[r[0] or "<empty>" for r in DEBIAN_TABLE])
def test_debian_table(text: str, expected: tuple[str, ...] | str) -> None:
    _check_row(text, expected, DEB)


@pytest.mark.parametrize(("text", "expected"), CRONIE_TABLE, ids=[r[0] for r in CRONIE_TABLE])
def test_cronie_table(text: str, expected: tuple[str, ...] | str) -> None:
    _check_row(text, expected, CRONIE)


def test_step_that_wraps_to_one_is_every_minute() -> None:
    # 4294967297 == 2**32 + 1: atoi() gives 1, so Debian reads '*/1'.
    assert parse("*/4294967297 * * * *").minute == S("0-59")


def test_star_flags_follow_the_first_character() -> None:
    e = parse("0 0 */2 * 1-5")
    assert (e.dom_star, e.dow_star) == (True, False)
    e = parse("0 0 1 * 1")
    assert (e.dom_star, e.dow_star) == (False, False)
    assert parse("0 0 1-31 * 1").dom_star is False


def test_day_rule_or_and() -> None:
    # '0 0 1 * 1' is day 1 OR Monday; '0 0 */2 * 1-5' is odd days AND weekdays.
    or_expr, and_expr = parse("0 0 1 * 1"), parse("0 0 */2 * 1-5")
    assert or_expr.matches(datetime(2025, 1, 1))  # a Wednesday, day 1
    assert or_expr.matches(datetime(2025, 1, 6))  # a Monday
    assert not or_expr.matches(datetime(2025, 1, 7))
    assert and_expr.matches(datetime(2025, 1, 3))  # Friday, odd
    assert not and_expr.matches(datetime(2025, 1, 4))  # Saturday, even
    assert not and_expr.matches(datetime(2025, 1, 11))  # Saturday, odd


def test_whitespace_and_macros() -> None:
    e = parse("\t*/5   *\t* *  * ")
    assert e.text == "*/5 * * * *"
    weekly = parse("@weekly")
    assert weekly.macro == "@weekly" and weekly.dow == {0} and weekly.dom_star
    assert parse("@annually").month == {1} and parse("@yearly").dom == {1}
    assert parse("@midnight").hour == {0}
    assert parse("@hourly").hour_star and not parse("@daily").hour_star
    reboot = parse("@reboot")
    assert reboot.reboot and reboot.can_fire() and reboot.interval_seconds() is None
    assert next_fires(reboot, None, datetime(2025, 1, 1)) == []
    assert parse("*/5 * * * *") == parse("*/5  *  * * *")


def test_cronie_random_is_flagged() -> None:
    e = parse("~ 3~5 * * *", CRONIE)
    assert e.random == (("minute", 0, 59), ("hour", 3, 5))
    assert "random" in describe(e)


def test_no_dialect_accepts_quartz_extensions() -> None:
    with pytest.raises(ValueError):
        CronExpr("x", None, S("0"), S("0"), S("1"), S("1"), S("0"), False, False, False, dom_last=True)


# -- never firing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0 0 31 2 *", "day 31 never occurs in February"),
        ("0 0 30 2 *", "day 30 never occurs in February"),
        ("0 0 30,31 2 *", "days 30 and 31 never occur in February"),
        ("0 0 31 4,6 *", "day 31 never occurs in April or June"),
        ("0 0 31 2 */7", "day 31 never occurs in February"),  # AND: dow starts with '*'
        ("5-2 * * * *", "minute field '5-2' selects no minute"),
        ("0 0 * * fri-mon", "day-of-week field 'fri-mon' selects no day"),
        (
            "0 0 5-1 * 3-2",
            "day-of-week field '3-2' selects no day and day-of-month field '5-1' selects none either",
        ),
        ("0 0 5-1 * */2", "day-of-month field '5-1' selects no day"),
    ],
)
def test_never_fires(text: str, reason: str) -> None:
    e = parse(text)
    assert not e.can_fire()
    assert e.never_fires_reason() == reason
    assert next_fires(e, "UTC", datetime(2025, 1, 1)) == []
    assert describe(e).startswith("Never runs")


@pytest.mark.parametrize("text", ["0 0 29 2 *", "0 0 31 2 1", "0 0 30 2,3 *", "0 0 1 * 5-2", "0 0 5-1 * 3"])
def test_can_fire(text: str) -> None:
    e = parse(text)
    assert e.can_fire() and e.never_fires_reason() is None
    assert next_fires(e, "UTC", datetime(2025, 1, 1))


def test_leap_day_fires_every_four_years() -> None:
    fires = next_fires(parse("0 0 29 2 *"), "UTC", datetime(2025, 1, 1), 2)
    assert [f.date() for f in fires] == [date(2028, 2, 29), date(2032, 2, 29)]


# -- describe / interval --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("* * * * *", "Every minute"),
        ("* */1 * * *", "Every minute"),
        ("*/5 * * * *", "Every 5 minutes"),
        ("0 * * * *", "Every hour"),
        ("30 2 * * *", "At 02:30"),
        ("0 22 * * 1-5", "At 22:00, Monday through Friday"),
        ("0 0 1 * 1", "At 00:00, on day 1 of the month, or on Monday"),
        ("0 0 1 * 1-5", "At 00:00, on day 1 of the month, or on Monday through Friday"),
        ("0 0 */2 * 1-5", "At 00:00, every 2 days, if that day is also Monday through Friday"),
        ("0 0 1 * 0-7", "At 00:00"),  # OR with every weekday is every day
        ("0 0 * * 0-6", "At 00:00"),
        ("0 0 1 1 *", "At 00:00, on day 1 of the month, only in January"),
        ("15 14 1 * *", "At 14:15, on day 1 of the month"),
        ("@daily", "At 00:00 every day (@daily)"),
        ("@reboot", "At system start-up (@reboot)"),
        ("@weekly", "At 00:00 every Sunday (@weekly)"),
    ],
)
def test_describe(text: str, words: str) -> None:
    assert describe(parse(text)) == words


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("* * * * *", 60),
        ("*/5 * * * *", 300),
        ("0 * * * *", 3600),
        ("0 9 * * 1-5", 86400),
        ("0 0,12 * * *", 43200),
        ("@weekly", 7 * 86400),
        ("0 0 29 2 *", 4 * 365.25 * 86400),
    ],
)
def test_interval(text: str, seconds: float) -> None:
    assert parse(text).interval_seconds() == seconds


# -- fire times and DST --------------------------------------------------------------------------------

BERLIN = "Europe/Berlin"


def test_spring_gap_fixed_time_job_runs_at_the_change() -> None:
    fires = next_fires(parse("30 2 * * *"), BERLIN, datetime(2025, 3, 29, 12, 0), 2)
    assert [f.isoformat() for f in fires] == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]


@pytest.mark.parametrize("text", ["0 * * * *", "@hourly", "*/15 2 * * *"])
def test_repeated_hour_wildcard_jobs_run_in_both_passes(text: str) -> None:
    tz = ZoneInfo(BERLIN)
    start, end = datetime(2025, 10, 25, 23, 59, tzinfo=UTC), datetime(2025, 10, 26, 1, 59, tzinfo=UTC)
    fires = list(fires_between(parse(text), BERLIN, start, end))
    local_twos = [f for f in fires if f.astimezone(tz).hour == 2]
    assert {f.astimezone(tz).fold for f in local_twos} == {0, 1}


def test_fixed_time_job_runs_once_in_the_repeated_hour() -> None:
    fires = list(fires_between(parse("30 2 * * *"), BERLIN, datetime(2025, 10, 26), datetime(2025, 10, 27)))
    assert len(fires) == 1


def test_fires_between_is_half_open_and_aware() -> None:
    e = parse("*/15 * * * *")
    fires = list(fires_between(e, None, datetime(2025, 1, 1, 0, 0), datetime(2025, 1, 1, 1, 0)))
    assert [f.minute for f in fires] == [0, 15, 30, 45]
    assert all(f.tzinfo is not None for f in fires)
    assert next_fires(e, None, datetime(2025, 1, 1, 0, 0))[0].minute == 15  # strictly after now


def test_unknown_zone() -> None:
    with pytest.raises(ScheduleError):
        next_fires(parse("* * * * *"), "Mars/Olympus", datetime(2025, 1, 1))


# -- properties -------------------------------------------------------------------------------------------

CRON_CHARS = "0123456789*/-,~#LW@ \tabcdefhijlmnorstuvwy\n%"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=40), st.text(alphabet=CRON_CHARS, max_size=40)), st.sampled_from([DEB, CRONIE])
)
def test_parse_raises_only_schedule_error(text: str, dialect: Dialect) -> None:
    try:
        e = parse(text, dialect)
    except ScheduleError as err:
        assert "\n" not in str(err)
        return
    describe(e)
    e.can_fire()


_NAMES = {3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 4: []}
_DOW = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


@st.composite
def _element(draw: st.DrawFn, k: int) -> str:
    lo, hi = _BOUNDS[k]

    def num() -> str:
        v = draw(st.integers(lo, hi))
        if k == 3 and draw(st.booleans()):
            return draw(st.sampled_from([n, n.upper(), n.title()])) if (n := _NAMES[3][v - 1]) else str(v)
        if k == 4 and v < 7 and draw(st.booleans()):
            return _DOW[v].upper() if draw(st.booleans()) else _DOW[v]
        return str(v)

    def value(t: str) -> int:
        low = t.lower()
        if k == 3 and low in _NAMES[3]:
            return _NAMES[3].index(low) + 1
        if k == 4 and low in _DOW:
            return _DOW.index(low)
        return int(t)

    kind = draw(st.sampled_from(["star", "step", "num", "range", "rangestep"]))
    if kind == "star":
        return "*"
    if kind == "step":
        return f"*/{draw(st.integers(1, hi + 2))}"
    a = num()
    if kind == "num":
        return a
    b = num()
    if value(a) > value(b):
        a, b = b, a
    rng = f"{a}-{b}"
    if kind == "range" or value(a) == value(b):
        # cronsim reads 'n-n/s' like 'n/s' (n to the end); cron reads it as just n. Keep the reference honest.
        return rng
    return f"{rng}/{draw(st.integers(1, 10))}"


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = []
    for k in range(5):
        if k in (2, 3) and draw(st.integers(0, 4)) == 0:
            # Bias towards the end of months so impossible dates ('31 2') turn up.
            fields.append(
                str(draw(st.integers(28, 31))) if k == 2 else draw(st.sampled_from(["2", "4", "2,4"]))
            )
            continue
        n = draw(st.integers(1, 3 if k != 0 else 2))
        fields.append(",".join(draw(_element(k)) for _ in range(n)))
    return " ".join(fields)


def _brute_next(e: CronExpr, t: datetime, limit: datetime) -> datetime | None:
    """Smallest matching minute after t, found with matches() alone."""
    times = sorted((h, m) for h in e.hour for m in e.minute)
    d = t.date()
    while True:
        first = datetime(d.year, d.month, d.day, *times[0], tzinfo=UTC)
        if first > limit:
            return None
        if e.matches(first):
            for h, m in times:
                cand = datetime(d.year, d.month, d.day, h, m, tzinfo=UTC)
                if cand > t:
                    return cand
        d += timedelta(days=1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)))
def test_matches_agrees_with_cronsim(text: str, start: datetime) -> None:
    e = parse(text)
    start = start.replace(second=0, microsecond=0, tzinfo=UTC)
    # Reference: cronsim reading the expression as written (its own parser, not our canonical form).
    try:
        reference = CronSim(text, start)
        expected = [next(reference) for _ in range(12)]
    except (CronSimError, StopIteration):
        expected = []
    assert e.can_fire() == bool(expected), text
    if not expected:
        assert next_fires(e, None, start) == []
        return
    assert next_fires(e, None, start, 12) == expected
    t, chain = start, []
    for _ in range(12):
        nxt = _brute_next(e, t, expected[-1])
        assert nxt is not None
        chain.append(nxt)
        t = nxt
    assert chain == expected
    # Minute by minute over two hours from the start.
    end = start + timedelta(minutes=120)
    hits = [m for m in (start + timedelta(minutes=i) for i in range(1, 121)) if e.matches(m)]
    assert hits == list(takewhile(lambda f: f <= end, CronSim(text, start)))


# -- differential test against the real Debian crontab(1) ------------------------------------------------


def _debian_crontab_available() -> bool:
    if os.geteuid() != 0 or shutil.which("crontab") is None or shutil.which("unshare") is None:
        return False
    try:
        out = subprocess.run(["crontab", "-h"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "dry run" in out.stderr + out.stdout


_CHECK_SCRIPT = r"""
mount -t tmpfs tmpfs /var/spool/cron || exit 97
d=/var/spool/cron/crontabs
mkdir -p $d && chgrp crontab $d && chmod 1730 $d
while IFS= read -r f; do
  if crontab -n "$f" >/dev/null 2>&1; then echo OK; else echo BAD; fi
done
"""


def _fuzz(n: int) -> list[str]:
    """Mostly-valid expressions with one small mutation now and then: the edges where parsers differ."""
    rnd = random.Random(20250520)
    names = {3: _NAMES[3], 4: _DOW}

    def number(k: int) -> str:
        lo, hi = _BOUNDS[k]
        if k in names and rnd.random() < 0.3:
            return rnd.choice(names[k])
        return str(rnd.randint(lo, hi + 1))  # hi + 1: sometimes out of range

    def element(k: int) -> str:
        kind = rnd.randrange(5)
        if kind == 0:
            return "*"
        if kind == 1:
            return f"*/{rnd.randint(0, 30)}"
        if kind == 2:
            return number(k)
        rng = f"{number(k)}-{number(k)}"
        return rng if kind == 3 else f"{rng}/{rnd.randint(0, 12)}"

    out = []
    for _ in range(n):
        fields = [",".join(element(k) for _ in range(rnd.randint(1, 2))) for k in range(5)]
        if rnd.random() < 0.5:
            k = rnd.randrange(5)
            f = fields[k]
            pos = rnd.randint(0, len(f))
            junk = rnd.choice(["-", "/", ",", "*", "~", "#", "L", ".", ";", "x", "0", "7", "W", "-5", "/2"])
            fields[k] = f[:pos] + junk + f[pos:] if rnd.random() < 0.7 else f[:pos] + f[pos + 1 :]
        text = " ".join(f or "*" for f in fields)
        out.append(text if not text.startswith("#") else text[1:])  # a leading '#' makes a comment
    return out


@pytest.mark.skipif(not _debian_crontab_available(), reason="needs root, unshare and Debian's crontab -n")
def test_accepts_exactly_what_debian_crontab_accepts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    exprs = [t for t, _ in DEBIAN_TABLE if t and t.strip()] + _fuzz(600)
    files = []
    for i, text in enumerate(exprs):
        f = tmp_path / f"c{i}"
        f.write_text(f"{text} true\n")
        files.append(str(f))
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", _CHECK_SCRIPT],
        input="\n".join(files) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == 97:
        pytest.skip("cannot mount a private spool")
    verdicts = proc.stdout.split()
    assert len(verdicts) == len(exprs)
    disagree = []
    for text, verdict in zip(exprs, verdicts, strict=True):
        try:
            parse(text)
            ours = "OK"
        except ScheduleError:
            ours = "BAD"
        if ours != verdict:
            disagree.append((text, verdict, ours))
    assert disagree == [], "\n".join(map(repr, disagree))
