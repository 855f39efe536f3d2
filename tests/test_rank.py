"""Metrics and the pain score: hand-built evidence for each metric, then the fixture servers' rankings."""

from __future__ import annotations

import json
from array import array
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronshift.discover.scan import scan
from cronshift.discover.schedule import fires_between, parse
from cronshift.history.events import CMD_ONLY, END, STATUS, History, JobEvidence
from cronshift.history.evidence import Evidence, gather
from cronshift.history.ledger import open_ledger
from cronshift.model import CronJob, Format, RunRecord, SourceRef, Wrapper
from cronshift.rank import count_overlaps, dst_exposure, expected_runs, metrics, percentile, rank, score

BERLIN = ZoneInfo("Europe/Berlin")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def ts(s: str, zone: ZoneInfo = BERLIN) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=zone).timestamp()


def job(schedule: str = "*/5 * * * *", command: str = "/bin/work", **kw: object) -> CronJob:
    base: dict[str, object] = dict(
        id="work-1",
        source=SourceRef("etc/cron.d/work", 3),
        format=Format.SYSTEM,
        user="root",
        schedule=schedule,
        command=command,
        shell_command=command,
    )
    base.update(kw)
    return CronJob(**base)  # type: ignore[arg-type]


def evidence_for(j: CronJob, e: JobEvidence | None, window: tuple[float, float], now: float) -> Evidence:
    h = History(window=window, cron_lines=100)
    if e is not None:
        h.per_job[j.id] = e
    return Evidence(now=now, history=h, log_paths=["syslog"])


def run_evidence(
    starts: list[float], durations: list[float], failed: int = 0, status: bool = True
) -> JobEvidence:
    e = JobEvidence(runs=len(starts), starts=array("d", starts), durations=array("d", durations))
    e.ended_starts = array("d", starts[: len(durations)])
    e.ended = len(durations)
    e.evidence = {CMD_ONLY, END} | ({STATUS} if status else set())
    if status:
        e.status_known = len(durations)
        e.failed = failed
        if failed:
            e.exit_statuses = {1: failed}
        e.last_success = max(s + d for s, d in zip(starts, durations, strict=False))
    e.first_seen, e.last_seen = min(starts), max(starts)
    return e


# -- pure helpers -------------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank_of_observed_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values, 50) == 50.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile([], 95) is None


def test_overlaps_count_runs_started_before_an_earlier_run_ended() -> None:
    runs = [(0.0, 10.0), (5.0, 8.0), (9.0, 12.0), (20.0, 30.0), (25.0, None), (40.0, 41.0)]
    # 5 and 9 start inside 0..10; 25 inside 20..30; 40 after the open run 25 (no end: still running)
    assert count_overlaps(runs) == 4
    assert count_overlaps([(0.0, 5.0), (5.0, 6.0), (10.0, 11.0)]) == 0  # back to back is no overlap
    assert count_overlaps(reversed(runs)) == 4  # order of the input does not matter


def test_expected_runs_only_inside_the_window() -> None:
    expr = parse("*/5 * * * *")
    # 10:00:01 .. 10:59:59: cron logs the 10:00 fire a second late, so it counts; 11:00 is outside
    assert expected_runs(expr, "Europe/Berlin", ts("2026-11-24T10:00:01"), ts("2026-11-24T10:59:59")) == 12
    assert expected_runs(expr, "Europe/Berlin", ts("2026-11-24T10:02:00"), ts("2026-11-24T10:10:00")) == 2
    daily = parse("30 2 * * *")
    # the spring-forward night has no 02:30 in Berlin: Debian cron runs it once anyway (cronsim agrees)
    n = expected_runs(daily, "Europe/Berlin", ts("2026-03-28T00:00:00"), ts("2026-03-30T23:59:00"))
    assert n == 3


@pytest.mark.parametrize(
    "schedule", ["30 2 * * *", "*/7 1-3 * * *", "0 0 1,15 * mon", "* * * * *", "0 1 * * 0"]
)
@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Chicago", "UTC"])
def test_expected_runs_over_long_windows_match_cronsim(schedule: str, zone: str) -> None:
    """The whole-day shortcut gives cronsim's count, across both DST changes of the year."""
    expr = parse(schedule)
    start, end = ts("2026-02-20T13:17:30"), ts("2026-11-03T08:02:10")
    a = datetime.fromtimestamp(start - start % 60, ZoneInfo("UTC"))
    b = datetime.fromtimestamp(end + 1, ZoneInfo("UTC"))
    assert expected_runs(expr, zone, start, end) == sum(1 for _ in fires_between(expr, zone, a, b))


def test_dst_exposure_needs_a_fixed_hour_inside_the_change() -> None:
    now = ts("2026-11-24T10:10:00")
    assert "Europe/Berlin" in (dst_exposure(parse("30 2 * * *"), "Europe/Berlin", now) or "")
    assert dst_exposure(parse("30 2 * * *"), "UTC", now) is None
    assert dst_exposure(parse("30 4 * * *"), "Europe/Berlin", now) is None
    assert dst_exposure(parse("*/5 * * * *"), "Europe/Berlin", now) is None
    assert "repeated" in (dst_exposure(parse("0 1 * * 0"), "America/Chicago", now) or "")


# -- metrics and score on hand-built evidence ---------------------------------------------------------------


def test_failures_durations_and_overlaps_from_logs() -> None:
    j = job()
    start = ts("2026-11-24T00:00:01")
    starts = [start + 300 * i for i in range(12)]
    durations = [30.0] * 9 + [400.0, 500.0, 20.0]  # two runs longer than the 5-min interval
    e = run_evidence(starts, durations, failed=3)
    ev = evidence_for(j, e, (start, start + 3590), start + 3700)  # 00:00:01 .. 00:59:51
    m, unknown = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
    assert (m.runs_seen, m.runs_expected, m.missed) == (12, 12, 0)
    assert (m.failures, m.status_known) == (3, 12)
    assert m.failure_rate == pytest.approx(0.25)
    assert m.overlaps == 2 and m.overlap_basis == "start/end pairs"
    assert (m.duration_p50, m.duration_p95, m.duration_max) == (30.0, 500.0, 500.0)
    assert m.p95_over_interval == pytest.approx(500 / 300)
    assert unknown == []
    s = score(j, m, unknown, start + 3600)
    texts = [r.text for r in s.reasons]
    assert any(t.startswith("failed 3 of 12 runs (25.0%; exit 1 x3") for t in texts)
    assert "started while the previous run was still going 2x, no lock: +6" in texts
    assert s.value == pytest.approx(sum(r.points for r in s.reasons))


def test_missed_runs_counted_in_the_window_only() -> None:
    j = job(schedule="0 * * * *")
    start = ts("2026-11-24T00:00:01")
    starts = [start + 3600 * i for i in range(10) if i not in (4, 5, 6)]  # 7 of 10 hourly runs
    e = run_evidence(starts, [5.0] * len(starts))
    ev = evidence_for(j, e, (start, start + 9 * 3600 + 60), start + 10 * 3600)
    m, _ = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
    assert (m.runs_seen, m.runs_expected, m.missed) == (7, 10, 3)
    s = score(j, m)
    assert m.missed_at == (ts("2026-11-24T04:00"), ts("2026-11-24T05:00"), ts("2026-11-24T06:00"))
    assert any(
        r.text == "missed 3 of 10 runs the schedule expected while cron ran "
        "(UTC 2026-11-24 03:00, 2026-11-24 04:00, 2026-11-24 05:00): +9"
        for r in s.reasons
    )


def test_no_expected_runs_for_reboot_or_anacron() -> None:
    start = ts("2026-11-24T00:00:01")
    for j in (job(schedule="@reboot"), job(schedule="1 5", format=Format.ANACRONTAB)):
        e = run_evidence([start], [1.0])
        ev = evidence_for(j, e, (start, start + 86400), start + 86400)
        m, unknown = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
        assert m.runs_expected is None and m.missed is None
        assert any("expected runs not computed" in u for u in unknown)


def test_missing_exit_statuses_are_said_not_scored() -> None:
    j = job()
    start = ts("2026-11-24T00:00:01")
    e = run_evidence([start + 300 * i for i in range(12)], [10.0] * 12, status=False)
    ev = evidence_for(j, e, (start, start + 3600), start + 3600)
    m, unknown = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
    assert m.failures is None and m.failure_rate is None
    s = score(j, m, unknown)
    assert not any("failed" in r.text for r in s.reasons)
    assert any(u.startswith("no exit statuses in the logs: failures unknown") for u in s.unknown)


def test_no_logs_at_all_is_unknown_not_zero_pain() -> None:
    j = job()
    ev = Evidence(now=ts("2026-11-24T10:00:00"))
    m, unknown = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
    assert m.runs_seen is None and m.failures is None
    assert any("no cron logs or ledger runs" in u for u in unknown)


def test_silent_failure_needs_lost_output_and_no_monitor() -> None:
    start = ts("2026-11-24T00:00:01")
    e = run_evidence([start], [1.0], failed=1)
    e.output_discarded = 1
    bare = job()
    ev = evidence_for(bare, e, (start, start + 300), start + 300)
    m, _ = metrics(bare, ev.for_job(bare.id), ev, "Europe/Berlin")
    assert m.silent_risk is not None and "no MAILTO" in m.silent_risk
    assert any(r.text.startswith("fails silently") and r.points == 15 for r in score(bare, m).reasons)
    cronitor = Wrapper("cronitor", "cronitor exec abc", "pings cronitor")
    watched = job(wrappers=(cronitor,))
    m2, _ = metrics(watched, ev.for_job(watched.id), ev, "Europe/Berlin")
    assert m2.silent_risk is None
    devnull = job(command="/bin/work 2>/dev/null", env=(("MAILTO", "ops@example.com"),))
    ev3 = evidence_for(devnull, run_evidence([start], [1.0]), (start, start + 300), start + 300)
    m3, _ = metrics(devnull, ev3.for_job(devnull.id), ev3, "Europe/Berlin")
    assert m3.silent_risk is not None and "stderr goes to /dev/null" in m3.silent_risk


def test_never_runs_is_its_own_severe_reason() -> None:
    j = job(runs=False, why_not=("the schedule can never fire",))
    ev = Evidence(now=ts("2026-11-24T10:00:00"))
    m, unknown = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
    s = score(j, m, unknown)
    assert s.reasons[0].text == "cron never runs it (the schedule can never fire): +35"


def test_polling_and_score_cap() -> None:
    j = job(schedule="* * * * *", runs=False, why_not=("x",))
    start = ts("2026-11-24T00:00:01")
    e = run_evidence([start + 60 * i for i in range(60)], [600.0] * 60, failed=60)
    e.last_success = None
    e.output_discarded = 60
    ev = evidence_for(j, e, (start, start + 3600), start + 3600)
    m, unknown = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
    s = score(j, m, unknown, start + 3600)
    assert s.value == 100.0  # 35 + 35 + 15 + 15 + 15 + 10 + 5 = 130, capped
    assert sum(r.points for r in s.reasons) > 100


# -- the ledger ---------------------------------------------------------------------------------------------


def test_ledger_runs_give_exact_failures_and_overlaps(tmp_path: Path) -> None:
    j = job(id="ledgered-1")
    t0 = ts("2026-11-24T09:00:00")
    with open_ledger(tmp_path) as led:
        for i, (dur, status) in enumerate([(10, 0), (400, 0), (10, 2), (10, 0), (10, 0)]):
            st = t0 + 300 * i
            led.add_run(
                RunRecord(
                    job_id=j.id,
                    source="record",
                    start=st,
                    end=st + dur,
                    exit_status=status,
                    stdout_bytes=100,
                    stderr_bytes=5,
                )
            )
        led.add_run(RunRecord(job_id="someone-else", source="record", start=t0, end=t0 + 1, exit_status=0))
        # A run the overlap policy skipped is evidence of a policy, not a run: no status, no duration.
        led.add_run(
            RunRecord(job_id=j.id, source="celery", start=t0 + 301, end=t0 + 301, extra={"skipped": "forbid"})
        )
    now = datetime(2026, 11, 24, 10, 0, tzinfo=BERLIN)
    ev = gather(tmp_path, [j], now, logs=False)
    assert ev.ledger_where is not None and ev.ledger_unmatched == 1
    assert any("policy skipped" in n for n in ev.notes)
    m, unknown = metrics(j, ev.for_job(j.id), ev, "Europe/Berlin")
    assert m.sources == ("ledger",)
    assert (m.runs_seen, m.failures, m.status_known) == (5, 1, 5)
    assert m.exit_statuses == {2: 1}
    assert m.overlaps == 1 and m.overlap_basis == "start/end pairs"  # run 2 ran 400 s, run 3 started at 300
    assert m.output_bytes == 5 * 105
    assert not any("failures unknown" in u for u in unknown)
    s = score(j, m, unknown)
    assert any(r.text.startswith("failed 1 of 5 runs (20.0%; exit 2 x1") for r in s.reasons)
    assert any(r.text.startswith("started while the previous run was still going 1x") for r in s.reasons)


def test_gather_does_not_create_a_ledger(tmp_path: Path) -> None:
    now = datetime(2026, 11, 24, 10, 0, tzinfo=BERLIN)
    ev = gather(tmp_path, [job()], now)
    assert ev.ledger_where is None
    assert not (tmp_path / "var").exists()
    assert any("no cron logs found" in n for n in ev.notes)
    ev2 = gather(tmp_path, [job()], now, store=str(tmp_path / "nope.db"))
    assert any("no ledger at" in n for n in ev2.notes)
    assert not (tmp_path / "nope.db").exists()


# -- the fixture servers ------------------------------------------------------------------------------------


def _ranked(root: Path, zone: str) -> list:
    r = scan(root)
    ev = gather(root, r.jobs, datetime(2026, 11, 24, 10, 10, tzinfo=ZoneInfo(zone)))
    return rank(r.jobs, ev, r.system_timezone, r.dialect)


def _most_painful(name: str) -> str:
    return json.loads((FIXTURES / f"{name}.expected.json").read_text())["most_painful"]


def test_debian_most_painful_job_first_with_checkable_reasons(debian_root: Path) -> None:
    ranked = _ranked(debian_root, "Europe/Berlin")
    top, m, s = ranked[0]
    assert str(top.source) == _most_painful("debian")  # www-data:8, reindex-search
    # fixtures/README.md: 78 failures (68x exit 1, 8x exit 255, 2x signal 9), overran its interval 66 times,
    # no MAILTO and no MTA. One of its 698 runs was still going when the logs end, so 697 have a status.
    assert (m.failures, m.status_known, m.runs_seen) == (78, 697, 698)
    assert m.exit_statuses == {1: 68, 255: 8} and m.signals == {9: 2}
    texts = [r.text for r in s.reasons]
    assert texts[0].startswith("failed 78 of 697 runs (11.2%; exit 1 x68, exit 255 x8, signal 9 x2")
    # It overran its interval 66 times; 65 of those runs had a later run start before they ended (the
    # last overrun was the log's last run): overlaps come from start/end pairs, not from overruns.
    assert m.overlaps == 65 and m.overlap_basis == "start/end pairs"
    assert any(t.startswith("started while the previous run was still going 65x, no lock") for t in texts)
    assert any(t.startswith("fails silently: output discarded 78x (no MTA); no MAILTO") for t in texts)
    assert s.value > ranked[1][2].value
    by_src = {str(j.source): (mm, ss) for j, mm, ss in ranked}
    sync_m, sync_s = by_src["etc/cron.d/shop-sync:8"]
    assert (sync_m.failures, sync_m.runs_seen) == (25, 698)  # README: 25 of 698 exited 1
    assert not any("overlapped" in r.text and r.points for r in sync_s.reasons)  # flock -n guards it
    backup_m, _ = by_src["etc/cron.d/shop-backup:5"]
    assert backup_m.exit_statuses == {124: 1}  # README: the Nov 22 run was killed by the timeout
    assert by_src["var/spool/cron/crontabs/deploy:20"][0].exit_statuses == {7: 2}  # cache-stats
    assert by_src["etc/cron.d/shop-maintenance:9"][1].reasons[0].text.startswith("cron never runs it")


def test_rhel_most_painful_job_first_and_failures_unknown(rhel_root: Path) -> None:
    ranked = _ranked(rhel_root, "America/Chicago")
    top, m, s = ranked[0]
    assert str(top.source) == _most_painful("rhel")  # oracle:6, load_trades.sh
    assert m.runs_seen == m.runs_expected  # every 10-minute run in the text logs was seen
    assert m.failures is None  # cronie logs no exit status: said, not scored
    assert any("failures unknown" in u for u in s.unknown)
    assert m.overlaps is not None and m.overlaps >= 70  # README: overran its interval 79 times
    assert m.mail_failures > 0 and m.silent_risk is not None and "MAILTO=oracle" in m.silent_risk
    assert s.value > ranked[1][2].value
