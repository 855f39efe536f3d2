"""Beat entries fire at cron's instants: proved by driving Celery's own schedule code for a year."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cronshift.discover.schedule import Dialect, parse
from cronshift.generate.equivalence import celery_fires, crontab_entries, prove, translate, window_for

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
YEAR = 2026

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
        assert tr.proof.fires > 0 or text == "0 0 29 2 *"  # no 29 February in 2026
        if zone == "UTC":  # no DST: the readable stock crontab is always exact
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
    assert list(stock.differences) == [
        {"instant": "2026-03-29T03:00:00+02:00", "cron": 1, "celery": 0},
        {"instant": "2026-03-29T03:30:00+02:00", "cron": 0, "celery": 1},
    ]
    tr = translate(gap, "Europe/Berlin", YEAR)
    assert [e.kind for e in tr.entries] == ["cronsim"] and tr.proof is not None and tr.proof.identical
    rep = parse("0 * * * *")
    stock = prove(rep, crontab_entries(rep), "America/New_York", YEAR)
    assert list(stock.differences) == [{"instant": "2026-11-01T01:00:00-05:00", "cron": 1, "celery": 0}]


def test_reboot_and_never_firing_have_no_entry() -> None:
    assert translate(parse("@reboot"), "UTC", YEAR).entries == ()
    never = translate(parse("0 0 31 2 *"), "UTC", YEAR)
    assert never.entries == () and "never fires" in never.message
