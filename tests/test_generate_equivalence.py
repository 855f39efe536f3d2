"""Beat entries fire at cron's instants: proved against a port of cron's own loop over a leap cycle."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronshift.discover.schedule import parse
from cronshift.generate.equivalence import (
    BeatEntry,
    CronModel,
    celery_fires,
    crontab_entries,
    proof_app,
    proof_range,
    prove,
    transitions,
    translate,
    window_for,
)
from cronshift.model import Dialect

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
YEAR = 2026
PROJECT = Path(__file__).resolve().parent.parent

TRICKY = [
    # DOM/DOW: OR when both restricted, AND when either starts with '*'
    "0 0 1 * 1",
    "0 0 1,15 * 1-5",
    "0 0 */2 * 1-5",
    "0 0 1 * */2",
    "0 12 13 * 5",
    "30 6 1-7 * mon",
    "0 0 31 * 0",
    "0 0 29 2 1",
    "0 0 30 2 sun",
    "15 3 1-31 * 1",
    "0 5 * * 0-6",
    "0 5 1 * 0-6",
    "0 0 2-31 * 1",
    "0 0 1 1 1",
    "0 0 1 jan,jul wed",
    "0 0 */10 * 6",
    "0 0 5-2 * 1",
    "0 0 1 * 5-2",
    # Sunday as 7, names, steps
    "0 4 * * 7",
    "0 4 * * 0,7",
    "5 4 * * sun",
    "0 9 * * mon-fri",
    "0 9 * * fri",
    "0 22 * * 1-5/2",
    "0 0 * * */3",
    "0 0 * jan-mar/2 *",
    "0 0 1 */3 *",
    "0 0 15 feb,apr *",
    "0 0 31 1,3,5,7 *",
    "59 23 31 12 *",
    "0 0 29 2 *",
    "1 1 1 1 *",
    # DST-sensitive fixed times (spring gap, autumn repeat) in each zone's transition hour
    "30 2 * * *",
    "0 2 * * *",
    "59 2 * * *",
    "0 3 * * *",
    "30 1 * * *",
    "0 1 * * *",
    "15 2 * * 0",
    "30 2 * 3 *",
    "30 2 8 3 *",
    "30 2 29 3 *",
    "0 2,3 * * *",
    "0 1-3 * * *",
    "45 1 * * sun",
    "0 2 5 4 *",
    "30 2 4 10 *",
    "0 2 25 10 *",
    "0 1 1 11 *",
    "0 0 * * *",
    "0 0 5 4 *",
    # wildcard hours: cron runs them in both passes of a repeated hour
    "0 * * * *",
    "30 * * * *",
    "*/30 * * * *",
    "*/15 * * * *",
    "7,37 * * * *",
    "5-55/10 * * * *",
    "0 */2 * * *",
    "0 */3 * * *",
    "*/20 1-3 * * *",
    "0 * * * 0",
    "0 * 29 3 *",
    "15 * 25 10 *",
    "*/45 * * * *",
    "0,30 * * * *",
    "59 * * * *",
    "0 * 1 * 1",
    # macros
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@midnight",
    "@annually",
    # odd but valid
    "0 0 1-5-7 * *",
    "0 0 * * 1-5-7",
    "00 00 * * *",
    "0 0 1 * mon,wed",
    "0 12 * * sat,sun",
    "0 0 10-20 * 1",
    "0 3 * * 1-5",
    "0 2-4 * * *",
    "30 0-23/6 * * *",
    "0 0 */7 * *",
    "2-59/15 7-22 * * mon-sat",
    "09,39 * * * *",
    "20 */4 * * *",
    "0 8 1 * *",
]


def test_enough_tricky_expressions() -> None:
    assert len(set(TRICKY)) >= 80


@pytest.mark.parametrize("text", TRICKY)
def test_translation_fires_at_crons_instants(text: str) -> None:
    expr = parse(text, Dialect.DEBIAN)
    for zone in ZONES:
        tr = translate(expr, zone, YEAR)
        assert tr.proof is not None, (zone, tr.message)
        assert tr.proof.identical, (zone, tr.proof.differences[:5])
        assert tr.proof.fires > 0  # the range holds a leap year: '0 0 29 2 *' fires too
        assert tr.proof.window[0].startswith("2026-01-01") and tr.proof.window[1].startswith("2031-01-01")
        if zone in ("UTC", "Asia/Kolkata"):  # no offset change: the readable stock crontab is always exact
            assert all(e.kind == "crontab" for e in tr.entries)


def test_or_rule_split_never_overlaps() -> None:
    entries = crontab_entries(parse("0 0 1 * 1"))
    assert [dict(e.fields)["day_of_month"] for e in entries] == ["1", "2-31"]
    assert [dict(e.fields)["day_of_week"] for e in entries] == ["*", "1"]
    start, end = window_for(YEAR, "UTC")
    # 2026-06-01 is a Monday: cron fires once that day, and so do the two entries together
    fires = [t for e in entries for t in celery_fires(e, "UTC", start, end)]
    assert fires.count(datetime(2026, 6, 1, tzinfo=UTC)) == 1


def test_overlapping_split_is_caught_by_the_proof() -> None:
    expr = parse("0 0 1 * 1")
    naive = crontab_entries(parse("0 0 1 * *")) + crontab_entries(parse("0 0 * * 1"))
    proof = prove(expr, naive, "UTC", YEAR)
    assert not proof.identical
    assert {"instant": "2026-06-01T00:00:00+00:00", "cron": 1, "celery": 2} in proof.differences


def test_stock_crontab_misses_dst_gap_and_repeat_and_class_fixes_it() -> None:
    gap = parse("30 2 * * *")
    stock = prove(gap, crontab_entries(gap), "Europe/Berlin", YEAR)
    assert list(stock.differences[:2]) == [
        {"instant": "2026-03-29T03:00:00+02:00", "cron": 1, "celery": 0},
        {"instant": "2026-03-29T03:30:00+02:00", "cron": 0, "celery": 1},
    ]
    assert len(stock.differences) == 10  # every spring of 2026-2030
    tr = translate(gap, "Europe/Berlin", YEAR)
    assert [e.kind for e in tr.entries] == ["cronsim"] and tr.proof is not None and tr.proof.identical
    rep = parse("0 * * * *")
    stock = prove(rep, crontab_entries(rep), "America/New_York", YEAR)
    assert stock.differences[0] == {"instant": "2026-11-01T01:00:00-05:00", "cron": 1, "celery": 0}
    assert len(stock.differences) == 5


def test_leap_day_job_is_proved_on_the_leap_day() -> None:
    leap = parse("0 0 29 2 *")
    tr = translate(leap, "Europe/Berlin", YEAR)
    assert tr.proof is not None and tr.proof.identical and tr.proof.fires == 1  # 2028-02-29 only
    # An entry that fires on 1 March instead is caught, though it matches cron on every other day.
    wrong = (BeatEntry("crontab", (("minute", "0"), ("hour", "0"), ("day_of_month", "1"),
                                   ("month_of_year", "3"), ("day_of_week", "*"))),)  # fmt: skip
    proof = prove(leap, wrong, "Europe/Berlin", YEAR)
    assert not proof.identical
    assert {"instant": "2028-02-29T00:00:00+01:00", "cron": 1, "celery": 0} in proof.differences


def _runs(text: str, zone: str, day: str) -> list[str]:
    """Cron's runs on one local day, per the reference model, as local ISO times."""
    start, end = proof_range(zone, YEAR)
    model = CronModel(parse(text), zone, start, end)
    tz = ZoneInfo(zone)
    lo = datetime.fromisoformat(day).replace(tzinfo=tz).astimezone(UTC)
    return [t.astimezone(tz).isoformat() for t in model.fires(lo, lo + timedelta(days=1))]


def test_reference_follows_crons_loop_across_dst() -> None:
    """What Debian's cron.c does at each change, as documented there (not what any library computes)."""
    # Spring, Berlin 02:00 -> 03:00: a fixed-time job of each skipped minute runs at the change, one run
    # per skipped match, 10 s apart; a wildcard job of a skipped minute does not run.
    assert _runs("30 2 * * *", "Europe/Berlin", "2027-03-28") == ["2027-03-28T03:00:00+02:00"]
    assert _runs("0 2,3 * * *", "Europe/Berlin", "2027-03-28") == [
        "2027-03-28T03:00:00+02:00",
        "2027-03-28T03:00:10+02:00",
    ]
    assert _runs("*/30 2 * * *", "Europe/Berlin", "2027-03-28") == []
    # Autumn, New York 02:00 EDT -> 01:00 EST: wildcard jobs run in both passes, fixed-time jobs once.
    assert _runs("*/30 1 * * *", "America/New_York", "2027-11-07") == [
        "2027-11-07T01:00:00-04:00",
        "2027-11-07T01:30:00-04:00",
        "2027-11-07T01:00:00-05:00",
        "2027-11-07T01:30:00-05:00",
    ]
    assert _runs("30 1 * * *", "America/New_York", "2027-11-07") == ["2027-11-07T01:30:00-04:00"]
    # Lord Howe moves by 30 minutes: 02:00 -> 02:30 in spring, 02:00 -> 01:30 in autumn.
    assert _runs("15 2 * * *", "Australia/Lord_Howe", "2027-10-03") == ["2027-10-03T02:30:00+11:00"]
    assert "2027-10-03T02:00:00+11:00" not in _runs("0 * * * *", "Australia/Lord_Howe", "2027-10-03")
    assert _runs("45 1 * * *", "Australia/Lord_Howe", "2027-04-04") == ["2027-04-04T01:45:00+11:00"]
    assert _runs("*/45 1 * * *", "Australia/Lord_Howe", "2027-04-04") == [
        "2027-04-04T01:00:00+11:00",
        "2027-04-04T01:45:00+11:00",
        "2027-04-04T01:45:00+10:30",
    ]


def _brute_force(text: str, zone: str, lo: datetime, hi: datetime) -> Counter[datetime]:
    """cron.c's loop over every minute of [lo, hi) with the zone's offset at each minute (slow, small)."""
    expr, tz = parse(text), ZoneInfo(zone)
    wild = expr.minute_star or expr.hour_star
    epoch = datetime(1970, 1, 1)

    def local(u: datetime) -> int:
        return int(((u.astimezone(tz).replace(tzinfo=None)) - epoch).total_seconds() // 60)

    def match(v: int) -> bool:
        return expr.matches(epoch + timedelta(minutes=v))

    out: Counter[datetime] = Counter()
    vt = local(lo - timedelta(minutes=1))
    u = lo
    while u < hi:
        lt = local(u)
        diff = lt - vt
        if 0 < diff <= 5 or (5 < diff <= 180 and not wild):
            n = sum(match(v) for v in range(vt + 1, lt + 1))
            vt = lt
        elif 5 < diff <= 180:
            n, vt = int(match(lt)), lt
        elif -180 < diff <= 0:
            n = int(wild and match(lt))
        else:
            n, vt = int(match(lt)), lt
        if n:
            out[u] += n
        u += timedelta(minutes=1)
    return out


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("text", ["*/7 * * * *", "0,30 1-3 * * *", "30 2 * * 0", "*/20 2 * * *"])
def test_structural_shortcut_equals_the_loop_over_whole_days(text: str, zone: str) -> None:
    """The model runs cron's loop only near offset changes; over the days around each change it must give
    exactly what the loop run on every minute gives."""
    start, end = proof_range(zone, YEAR)
    model = CronModel(parse(text), zone, start, end)
    for tr in transitions(zone, start.astimezone(UTC), end.astimezone(UTC))[2:4]:
        lo, hi = tr.at - timedelta(days=1), tr.at + timedelta(days=1)
        got = Counter(t.replace(second=0) for t in model.fires(lo, hi))
        assert got == _brute_force(text, zone, lo, hi), (text, zone, tr.at)


def test_every_offset_change_in_the_range_is_found() -> None:
    start, end = proof_range("Europe/Berlin", YEAR)
    found = transitions("Europe/Berlin", start.astimezone(UTC), end.astimezone(UTC))
    assert len(found) == 10 and found[0].at == datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert {(t.before, t.after) for t in found} == {(60, 120), (120, 60)}
    start, end = proof_range("Australia/Lord_Howe", YEAR)
    lh = transitions("Australia/Lord_Howe", start.astimezone(UTC), end.astimezone(UTC))
    assert {(t.before, t.after) for t in lh} == {(660, 630), (630, 660)}
    assert transitions("Asia/Kolkata", start.astimezone(UTC), end.astimezone(UTC)) == ()


def test_cronsim_alone_is_not_the_reference() -> None:
    """cronsim runs '0 2,3' once at a spring change where cron runs it twice: the proof, which never asks
    cronsim what cron does, says so (the old cronsim-against-cronsim proof could not)."""
    from cronsim import CronSim

    tz = ZoneInfo("Europe/Berlin")
    it = CronSim("0 2,3 * * *", datetime(2027, 3, 28, 0, 0, tzinfo=tz))
    assert [next(it).isoformat() for _ in range(2)] == [
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:00:00+02:00",
    ]
    tr = translate(parse("0 2,3 * * *"), "Europe/Berlin", YEAR)
    assert tr.proof is not None and tr.proof.identical  # cronshift's class runs both, as cron does


WRONG_CLASS = textwrap.dedent(
    """
    import sys
    from datetime import timedelta

    import cronshift.generate.equivalence as eq
    from cronshift.runtime.schedules import cronsim_schedule

    class LateByAMinute(cronsim_schedule):
        # Deliberately wrong: every run one minute late.
        def next_after(self, when):
            return super().next_after(when - timedelta(minutes=1)) + timedelta(minutes=1)

    eq.cronsim_schedule = LateByAMinute
    from cronshift.__main__ import main

    main(sys.argv[1:])
    """
)


def test_a_wrong_schedule_class_makes_generate_exit_3(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/timezone").write_text("Europe/Berlin\n")
    (root / "etc/cron.d/gap").write_text("30 2 * * * root /usr/local/bin/nightly\n")
    r = _generate(root, tmp_path / "out", "--json", patched=WRONG_CLASS)
    assert r.returncode == 3, r.stderr
    job = json.loads(r.stdout)["jobs"][0]
    assert job["beat_entries"][0]["kind"] == "cronsim"
    proof = job["schedule_proof"]
    assert not proof["identical"]
    assert {"instant": "2027-03-28T03:00:00+02:00", "cron": 1, "celery": 0} in proof["differences"]
    # The same run with the real class proves identical and exits 0.
    ok = _generate(root, tmp_path / "out", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["jobs"][0]["schedule_proof"]["identical"]


def test_reboot_and_never_firing_have_no_entry() -> None:
    assert translate(parse("@reboot"), "UTC", YEAR).entries == ()
    never = translate(parse("0 0 31 2 *"), "UTC", YEAR)
    assert never.entries == () and "never fires" in never.message


# -- schedules that do not follow the wall clock: stock crontabs written in UTC ---------------------------

DST_ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
OFFSET_FREE = ["*/15 * * * *", "0 * * * *", "@hourly", "* * * * *", "*/30 * * * *", "7,37 * * * *"]
# UTC minutes of each, per zone; None: the schedule follows the wall clock there (Lord Howe's +10:30 and
# +11:00 put a local ':00' at ':30' and at ':00' UTC) and keeps cronshift's class.
UTC_MINUTE = {
    "*/15 * * * *": {"Australia/Lord_Howe": "*/15", "Asia/Kolkata": "*/15"},
    "0 * * * *": {"Australia/Lord_Howe": None, "Asia/Kolkata": "30"},
    "@hourly": {"Australia/Lord_Howe": None, "Asia/Kolkata": "30"},
    "* * * * *": {"Australia/Lord_Howe": "*", "Asia/Kolkata": "*"},
    "*/30 * * * *": {"Australia/Lord_Howe": "*/30", "Asia/Kolkata": "*/30"},
    "7,37 * * * *": {"Australia/Lord_Howe": "7,37", "Asia/Kolkata": "7,37"},
}


@pytest.mark.parametrize("text", OFFSET_FREE)
def test_offset_free_schedules_are_stock_crontabs_in_a_utc_app(text: str) -> None:
    expr = parse(text, Dialect.DEBIAN)
    for zone in DST_ZONES:
        tr = translate(expr, zone, YEAR, app_zone="UTC")
        assert tr.proof is not None and tr.proof.identical, (zone, tr.proof and tr.proof.differences[:3])
        start, end = proof_range(zone, YEAR)
        assert tr.proof.window == (start.isoformat(), end.isoformat()) and tr.proof.fires > 0
        if zone in ("Europe/Berlin", "America/New_York"):  # whole-hour offsets: the same minutes in UTC
            want = {"@hourly": "0"}.get(text, text.split()[0])
        else:
            want = UTC_MINUTE[text][zone]
        if want is None:
            assert [e.kind for e in tr.entries] == ["cronsim"], zone
            continue
        (entry,) = tr.entries
        assert entry.kind == "crontab" and entry.zone == "UTC", zone
        assert dict(entry.fields) == {"minute": want, "hour": "*", "day_of_month": "*",
                                      "month_of_year": "*", "day_of_week": "*"}, zone  # fmt: skip
        assert "UTC" in entry.why and zone in entry.why


# Kolkata's wall clock is UTC+5:30 all through the window: a schedule that follows it is a crontab in UTC
# where its shifted table is a cron set (see the fixed-offset tests below), and keeps the class where not.
KOLKATA_IN_UTC = {
    "0 3 * * *": "crontab",  # 21:30 UTC every day
    "30 2 * * *": "crontab",
    "5 */2 * * *": "crontab",  # :35 at even hours UTC
    "*/15 * * * 1": "crontab",  # Sunday 18:30 .. Monday 18:15 UTC: four entries (see below)
    "0 * 1 * *": "cronsim",  # the 1st's first hours are the last day of the month before in UTC
    "*/15 0-23 * * *": "crontab",
}


def test_wall_clock_schedules_are_written_in_utc_only_where_the_zone_keeps_one_offset() -> None:
    for text, kolkata in KOLKATA_IN_UTC.items():
        for zone in DST_ZONES:
            tr = translate(parse(text), zone, YEAR, app_zone="UTC")
            want = kolkata if zone == "Asia/Kolkata" else "cronsim"
            assert {e.kind for e in tr.entries} == {want}, (text, zone)
            assert tr.proof is not None and tr.proof.identical, (text, zone)


def test_a_utc_entry_that_ignores_the_offset_is_caught() -> None:
    """Kolkata is +5:30 all year: a ':00' job is at ':30' UTC. An entry that keeps ':00' differs every hour;
    in Lord Howe ':00' UTC is right only while the zone is on +11:00."""
    hourly = parse("0 * * * *")
    naive = (BeatEntry("crontab", (("minute", "0"), ("hour", "*"), ("day_of_month", "*"),
                                   ("month_of_year", "*"), ("day_of_week", "*")), zone="UTC"),)  # fmt: skip
    kolkata = prove(hourly, naive, "Asia/Kolkata", YEAR, app_zone="UTC")
    assert not kolkata.identical
    assert kolkata.differences[0] == {"instant": "2026-01-01T00:00:00+05:30", "cron": 1, "celery": 0}
    lord_howe = prove(hourly, naive, "Australia/Lord_Howe", YEAR, app_zone="UTC")
    assert not lord_howe.identical
    assert {"instant": "2026-04-05T02:00:00+10:30", "cron": 1, "celery": 0} in lord_howe.differences
    # The same naive entry read in Berlin's own zone is exactly what the local proof rejects.
    assert not prove(hourly, naive, "Europe/Berlin", YEAR).identical


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("text", ["*/15 * * * *", "* * * * *", "0 * * * *"])
def test_utc_entries_match_crons_loop_around_every_change(text: str, zone: str) -> None:
    """Independently of prove(): Celery's own crontab code in a UTC app, driven over the days around each
    offset change of 2027-2030, against cron.c's loop run on every minute."""
    tr = translate(parse(text), zone, YEAR, app_zone="UTC")
    if tr.entries[0].kind != "crontab":
        assert zone == "Australia/Lord_Howe" and text == "0 * * * *"
        return
    start, end = proof_range(zone, YEAR)
    for t in transitions(zone, start.astimezone(UTC), end.astimezone(UTC)):
        if t.at.year < 2027:
            continue
        lo, hi = t.at - timedelta(hours=6), t.at + timedelta(hours=6)
        got = Counter(x.replace(second=0) for e in tr.entries for x in celery_fires(e, "UTC", lo, hi))
        assert got == _brute_force(text, zone, lo, hi), (text, zone, t.at)


def _zone_root(tmp_path: Path, zone: str, lines: list[str]) -> Path:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/timezone").write_text(zone + "\n")
    (root / "etc/cron.d/jobs").write_text(
        "".join(f"{x} root /usr/local/bin/job{k}\n" for k, x in enumerate(lines))
    )
    return root


def _generate(
    root: Path, out: Path, *extra: str, patched: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`cronshift generate --all` of `root` as cron's minimal PATH would run it; `patched`: a script that
    breaks a piece of cronshift on purpose, then runs the same command line."""
    argv = [
        "generate",
        "--all",
        "--out",
        str(out),
        "--root",
        str(root),
        "--no-history",
        "--now",
        "2026-03-01T00:00",
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out.parent)}
    how = ["-c", patched] if patched else ["-m", "cronshift"]
    return subprocess.run([sys.executable, *how, *argv, *extra], capture_output=True, text=True,
                          env=env, cwd=PROJECT)  # fmt: skip


def test_an_app_of_offset_free_jobs_runs_in_utc_with_stock_crontabs(tmp_path: Path) -> None:
    """Berlin: `*/15`, `0 *`, `@hourly`, `* * * * *` used the class (17 of 76 cases); in a UTC app all four
    are stock crontabs, which django-celery-beat stores with their zone. A wall-clock job keeps the class."""
    root = _zone_root(
        tmp_path, "Europe/Berlin", ["*/15 * * * *", "0 * * * *", "@hourly", "* * * * *", "30 2 * * *"]
    )
    r = _generate(root, tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["beat"]["timezone"] == "UTC" and "Europe/Berlin" in doc["beat"]["why"]
    every = 'hour="*", day_of_month="*", month_of_year="*", day_of_week="*")'
    assert sorted(j["beat_entries"][0]["schedule"] for j in doc["jobs"]) == [
        'cronsim_schedule("30 2 * * *", "Europe/Berlin")',
        'crontab(minute="*", ' + every,
        'crontab(minute="*/15", ' + every,
        'crontab(minute="0", ' + every,
        'crontab(minute="0", ' + every,
    ]
    assert all(j["schedule_proof"]["identical"] for j in doc["jobs"])
    (wall,) = [j for j in doc["jobs"] if j["beat_entries"][0]["kind"] == "cronsim"]
    assert doc["beat"]["custom_class_jobs"] == [wall["id"]]
    assert "django-celery-beat" in doc["beat"]["custom_class_note"]
    # The app really is in UTC with those entries (imported, as beat would).
    script = (
        "import json\nfrom cronjobs.app import app\nfrom celery.schedules import crontab\n"
        "print(json.dumps([str(app.conf.timezone), sorted(type(e['schedule']).__name__"
        " for e in app.conf.beat_schedule.values())]))\n"
    )
    path = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path / 'out'}:{PROJECT}"}
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path / "out", env=path
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == ["UTC", ["cronsim_schedule"] + ["crontab"] * 4]
    console = _generate(root, tmp_path / "out2")
    assert "beat timezone UTC: cron runs in Europe/Berlin" in console.stdout
    assert f"1 job(s) ({wall['id']}): " in console.stdout and "cannot store them" in console.stdout


def test_a_mostly_wall_clock_app_keeps_its_zone_and_says_why(tmp_path: Path) -> None:
    root = _zone_root(tmp_path, "America/New_York", ["*/15 * * * *", "30 2 * * *", "30 1 * * *", "0 3 * * *"])
    r = _generate(root, tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["beat"]["timezone"] == "America/New_York"
    assert "no fewer, so the app keeps cron's zone" in doc["beat"]["why"]
    (quarter,) = [j for j in doc["jobs"] if "*/15" in j["beat_entries"][0]["schedule"]]
    assert quarter["beat_entries"][0]["kind"] == "cronsim"
    assert "A stock crontab in UTC would be exact" in quarter["beat_entries"][0]["why"]
    assert set(doc["beat"]["custom_class_jobs"]) >= {quarter["id"]}
    assert all(j["schedule_proof"]["identical"] for j in doc["jobs"])


WRONG_UTC = textwrap.dedent(
    """
    import sys

    import cronshift.generate.equivalence as eq

    real = eq.utc_minutes

    def off_by_one(expr, zone, year):
        # Deliberately wrong: the UTC minutes one minute late.
        got = real(expr, zone, year)
        return None if got is None else frozenset((m + 1) % 60 for m in got)

    eq.utc_minutes = off_by_one  # utc_tables (generate's only way to UTC minutes) reads it from here
    from cronshift.__main__ import main

    main(sys.argv[1:])
    """
)


def test_a_wrong_utc_translation_is_refused_by_its_proof(tmp_path: Path) -> None:
    """UTC minutes off by one: the proof rejects each stock entry, and the class (proved) takes its place."""
    root = _zone_root(tmp_path, "Europe/Berlin", ["*/15 * * * *", "0 * * * *"])
    r = _generate(root, tmp_path / "out", "--json", patched=WRONG_UTC)
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)["jobs"]
    assert [j["beat_entries"][0]["kind"] for j in jobs] == ["cronsim", "cronsim"]
    assert all(j["schedule_proof"]["identical"] for j in jobs)
    right = _generate(root, tmp_path / "right", "--json")
    assert [j["beat_entries"][0]["kind"] for j in json.loads(right.stdout)["jobs"]] == ["crontab", "crontab"]


def test_a_wrong_class_in_a_utc_app_makes_generate_exit_3(tmp_path: Path) -> None:
    """The exit-3 path in a UTC app: the wall-clock job's class, proved in that app, is deliberately late."""
    root = _zone_root(tmp_path, "Europe/Berlin", ["*/15 * * * *", "0 * * * *", "30 2 * * *"])
    r = _generate(root, tmp_path / "out", "--json", patched=WRONG_CLASS)
    assert r.returncode == 3, r.stderr
    doc = json.loads(r.stdout)
    assert doc["beat"]["timezone"] == "UTC"
    (bad,) = [j for j in doc["jobs"] if not j["schedule_proof"]["identical"]]
    assert bad["beat_entries"][0]["kind"] == "cronsim"
    assert {"instant": "2027-03-28T03:00:00+02:00", "cron": 1, "celery": 0} in bad["schedule_proof"][
        "differences"
    ]


# -- zones with one UTC offset over the proof window: fixed-time jobs shifted into a UTC crontab ----------

EVERY_DAY = {"day_of_month": "*", "month_of_year": "*"}
# (zone, schedule) -> the UTC crontab fields of each entry. Kolkata is +5:30 and Phoenix -7:00 all through
# the window: 02:30 in Kolkata is 21:00 UTC the day before (weekdays move back one), 20:30 in Phoenix is
# 03:30 UTC the day after (forward one); 08:30 in Kolkata stays on its day, so its day fields stay too.
SHIFTED = {
    ("Asia/Kolkata", "30 2 * * *"): [{"minute": "0", "hour": "21", **EVERY_DAY, "day_of_week": "*"}],
    ("Asia/Kolkata", "30 2 * * 1-5"): [{"minute": "0", "hour": "21", **EVERY_DAY, "day_of_week": "0-4"}],
    ("America/Phoenix", "30 20 * * 1-5"): [{"minute": "30", "hour": "3", **EVERY_DAY, "day_of_week": "2-6"}],
    ("Asia/Kolkata", "30 8 1 * *"): [
        {"minute": "0", "hour": "3", "day_of_month": "1", "month_of_year": "*", "day_of_week": "*"}
    ],
    # 03:00 and 03:45 are 21:30 and 22:15 UTC: one entry per minute set.
    ("Asia/Kolkata", "0,45 3 * * *"): [
        {"minute": "30", "hour": "21", **EVERY_DAY, "day_of_week": "*"},
        {"minute": "15", "hour": "22", **EVERY_DAY, "day_of_week": "*"},
    ],
    # 03:00-06:00 at :00: three on the day before in UTC, one on the day itself: two entries, never both.
    ("Asia/Kolkata", "0 3-6 * * 1-5"): [
        {"minute": "30", "hour": "21-23", **EVERY_DAY, "day_of_week": "0-4"},
        {"minute": "30", "hour": "0", **EVERY_DAY, "day_of_week": "1-5"},
    ],
}


@pytest.mark.parametrize(("zone", "text"), list(SHIFTED))
def test_fixed_time_jobs_in_a_zone_without_offset_changes_are_stock_crontabs_in_utc(
    zone: str, text: str
) -> None:
    tr = translate(parse(text), zone, YEAR, app_zone="UTC")
    assert [e.kind for e in tr.entries] == ["crontab"] * len(SHIFTED[(zone, text)]), tr.notes
    assert [dict(e.fields) for e in tr.entries] == SHIFTED[(zone, text)]
    assert all(e.zone == "UTC" and zone in e.why and "one UTC offset" in e.why for e in tr.entries)
    assert tr.proof is not None and tr.proof.identical and tr.proof.fires > 0
    start, end = proof_range(zone, YEAR)
    assert tr.proof.window == (start.isoformat(), end.isoformat())


@pytest.mark.parametrize(
    ("zone", "text"),
    [
        ("Asia/Kolkata", "30 2 1 * *"),  # the 1st at 02:30 is the last day of the month before in UTC
        ("Asia/Kolkata", "30 2 * 1 *"),  # January's days in Kolkata start on 31 December in UTC
        ("Asia/Kolkata", "30 2 1 * 1"),  # dom OR dow, shifted a day: no crontab says it
        ("Europe/Berlin", "30 2 * * *"),  # two offsets over the window: the wall clock moves in UTC
        ("America/New_York", "30 20 * * 1-5"),
    ],
)
def test_shifts_no_crontab_says_keep_the_class(zone: str, text: str) -> None:
    tr = translate(parse(text), zone, YEAR, app_zone="UTC")
    assert [e.kind for e in tr.entries] == ["cronsim"], (zone, text)
    assert tr.entries[0].zone == zone
    assert tr.proof is not None and tr.proof.identical


@pytest.mark.parametrize(("zone", "text"), list(SHIFTED))
def test_shifted_utc_crontabs_fire_at_crons_instants_over_the_window_by_celerys_own_code(
    zone: str, text: str
) -> None:
    """Independently of prove(): in a zone whose offset never changes cron fires at each local minute its
    table selects (discover.schedule's `matches`), one run each; Celery's crontab in a UTC app, driven
    through the whole window by its remaining_estimate, and asked is_due just before and at each instant,
    sends at exactly those instants."""
    expr, tz = parse(text), ZoneInfo(zone)
    start, end = proof_range(zone, YEAR)
    assert transitions(zone, start.astimezone(UTC), end.astimezone(UTC)) == ()
    want: list[datetime] = []
    day = start.date()
    while day < end.date():
        for h in sorted(expr.hour):
            for m in sorted(expr.minute):
                local = datetime(day.year, day.month, day.day, h, m)
                if expr.matches(local):
                    want.append(local.replace(tzinfo=tz).astimezone(UTC))
        day += timedelta(days=1)
    tr = translate(expr, zone, YEAR, app_zone="UTC")
    assert tr.entries and all(e.kind == "crontab" for e in tr.entries)
    got = sorted(t for e in tr.entries for t in celery_fires(e, "UTC", start, end))
    assert got == sorted(want) and len(got) >= 60  # 5 years: 60 monthly fires, ~1300 weekday ones
    scheds = [e.schedule(proof_app("UTC")) for e in tr.entries]
    prev = start.astimezone(UTC) - timedelta(seconds=1)
    clock = [prev]
    for s in scheds:
        s.nowfun = lambda: clock[0]
    for t in got[:400]:
        clock[0] = t - timedelta(seconds=1)
        assert not any(s.is_due(prev).is_due for s in scheds), t
        clock[0] = t
        assert sum(s.is_due(prev).is_due for s in scheds) == 1, t
        prev = t


def test_a_utc_app_puts_fixed_offset_jobs_on_stock_crontabs(tmp_path: Path) -> None:
    """A Berlin root whose app goes UTC, with cronie's CRON_TZ=Asia/Kolkata jobs: the ones whose shift is a
    cron set leave the list of jobs on cronshift's class, on the console, in --json and in app.py."""
    root = _zone_root(tmp_path, "Europe/Berlin", ["*/15 * * * *", "0 * * * *", "30 2 * * *"])
    with (root / "etc/cron.d/jobs").open("a") as f:
        f.write("CRON_TZ=Asia/Kolkata\n")
        f.writelines(
            f"{x} root /usr/local/bin/kolkata{k}\n"
            for k, x in enumerate(["30 2 * * *", "30 2 * * 1-5", "30 2 1 * *"])
        )
    r = _generate(root, tmp_path / "out", "--dialect", "cronie", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["beat"]["timezone"] == "UTC"
    assert all(j["schedule_proof"]["identical"] for j in doc["jobs"])
    by_cmd = {j["id"]: j for j in doc["jobs"]}
    kinds = {jid: [e["kind"] for e in j["beat_entries"]] for jid, j in by_cmd.items()}
    schedules = sorted(j["beat_entries"][0]["schedule"] for j in doc["jobs"])
    every = 'day_of_month="*", month_of_year="*"'
    assert f'crontab(minute="0", hour="21", {every}, day_of_week="*")' in schedules
    assert f'crontab(minute="0", hour="21", {every}, day_of_week="0-4")' in schedules
    assert 'cronsim_schedule("30 2 1 * *", "Asia/Kolkata")' in schedules
    assert 'cronsim_schedule("30 2 * * *", "Europe/Berlin")' in schedules
    custom = [jid for jid, k in kinds.items() if k == ["cronsim"]]
    assert len(custom) == 2 and sorted(doc["beat"]["custom_class_jobs"]) == sorted(custom)
    (monthly,) = [j for j in doc["jobs"] if "Asia/Kolkata" in j["beat_entries"][0]["schedule"]]
    assert "day-of-month" in monthly["beat_entries"][0]["why"]
    console = _generate(root, tmp_path / "out2", "--dialect", "cronie")
    assert console.returncode == 0, console.stderr
    assert f"2 job(s) ({', '.join(sorted(custom))}): " in console.stdout
    app_py = (tmp_path / "out2/cronjobs/app.py").read_text()
    assert 'timezone="UTC"' in app_py and app_py.count('cronsim_schedule("') == 2
    assert "only for a schedule that selects every hour and day" not in app_py


def test_a_shifted_utc_entry_that_is_wrong_is_caught() -> None:
    """The UTC day-by-day structure and the simulation catch a shift that forgets the weekdays' move or the
    half hour, and name the first instants."""
    expr = parse("30 2 * * 1-5")

    def entry(minute: str, hour: str, dow: str) -> tuple[BeatEntry, ...]:
        fields = (("minute", minute), ("hour", hour), ("day_of_month", "*"), ("month_of_year", "*"),
                  ("day_of_week", dow))  # fmt: skip
        return (BeatEntry("crontab", fields, zone="UTC"),)

    assert prove(expr, entry("0", "21", "0-4"), "Asia/Kolkata", YEAR, app_zone="UTC").identical
    unmoved = prove(expr, entry("0", "21", "1-5"), "Asia/Kolkata", YEAR, app_zone="UTC")
    assert not unmoved.identical
    assert unmoved.differences[:2] == (
        {"instant": "2026-01-03T02:30:00+05:30", "cron": 0, "celery": 1},  # Saturday in Kolkata
        {"instant": "2026-01-05T02:30:00+05:30", "cron": 1, "celery": 0},  # Monday
    )
    whole_hour = prove(expr, entry("30", "21", "0-4"), "Asia/Kolkata", YEAR, app_zone="UTC")
    assert whole_hour.differences[0] == {"instant": "2026-01-01T02:30:00+05:30", "cron": 1, "celery": 0}


def test_a_utc_server_puts_a_fixed_offset_cron_tz_job_on_a_stock_crontab() -> None:
    """A UTC server (the app is UTC already): CRON_TZ=Asia/Kolkata jobs get their shifted crontab, and the one
    that cannot keeps the class with the reason."""
    from cronshift.generate.celery import BeatZone

    daily, monthly = parse("30 2 * * *"), parse("30 2 1 * *")
    bz = BeatZone.choose([(daily, "Asia/Kolkata"), (monthly, "Asia/Kolkata")], "UTC", YEAR)
    assert bz.zone == "UTC"
    (entry,) = bz.translations[(daily, "Asia/Kolkata")].entries
    assert entry.source() == (
        'crontab(minute="0", hour="21", day_of_month="*", month_of_year="*", day_of_week="*")'
    )
    (kept,) = bz.translations[(monthly, "Asia/Kolkata")].entries
    assert kept.kind == "cronsim" and "day-of-month is restricted" in kept.why
