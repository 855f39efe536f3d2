"""Advice per job (cronshift/advice.py): which jobs to move to an event, to a consumer, or keep on cron, each
with the evidence it used and what would change it; seen through the real `cronshift scan` and `show`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cronshift.advice import advise, suggest_trigger
from cronshift.ledger.store import open_ledger
from cronshift.model import CronJob, Format, RunRecord, Score, SourceRef
from cronshift.rank import Metrics

PROJECT = Path(__file__).resolve().parent.parent
CRONSHIFT = str(Path(sys.executable).parent / "cronshift")
NOW = "2026-11-24T10:10:00"


def _job(schedule: str, command: str) -> CronJob:
    return CronJob("j-1", SourceRef("etc/cron.d/x", 1), Format.SYSTEM, "root", schedule, command)


def _runs(n: int, quiet: int, start: float = 1_700_000_000.0) -> list[RunRecord]:
    out = []
    for i in range(n):
        busy = i >= quiet
        t = start + 300 * i
        out.append(
            RunRecord("j-1", "record", t, t + (30.0 if busy else 0.2), 0, stdout_bytes=100 if busy else 0,
                      stderr_bytes=0)
        )  # fmt: skip
    return out


def test_quiet_short_runs_make_a_poller_without_any_word_in_the_command() -> None:
    job = _job("*/5 * * * *", "/opt/shop/bin/fetch-orders")
    a = advise(job, Metrics(interval=300.0, sources=("ledger",)), Score(5.0), _runs(20, quiet=18))
    assert (a.kind, a.action) == ("poller", "event-source")
    assert any("18 of 20 runs printed nothing" in e for e in a.evidence)
    assert any("batch" in c for c in a.would_change)


def test_busy_runs_at_the_same_interval_make_a_batch_for_a_streams_consumer() -> None:
    job = _job("*/5 * * * *", "/opt/shop/bin/fetch-orders")
    a = advise(job, Metrics(interval=300.0, sources=("ledger",)), Score(5.0), _runs(20, quiet=2))
    assert (a.kind, a.action) == ("batch", "streams-consumer")
    assert any("18 of 20 runs printed output" in e for e in a.evidence)


def test_too_few_runs_say_so_instead_of_guessing() -> None:
    job = _job("*/5 * * * *", "/opt/shop/bin/fetch-orders")
    a = advise(job, Metrics(interval=300.0), Score(5.0), _runs(3, quiet=3))
    assert a.action == "rank-by-pain"
    assert any("too few runs" in e for e in a.evidence)


def test_a_poll_shape_is_a_poller_and_names_the_words() -> None:
    job = _job("*/5 * * * *", "/opt/shop/bin/sync-orders --since 15m")
    a = advise(job, Metrics(interval=300.0), Score(18.6))
    assert a.kind == "poller"
    assert "command has a poll shape: '--since', 'sync'" in a.evidence


def test_a_low_frequency_report_with_no_pain_stays_on_cron_and_pain_moves_it() -> None:
    job = _job("0 6 * * mon", "/usr/local/bin/weekly-report")
    calm = advise(job, Metrics(interval=7 * 86400.0), Score(0.0))
    assert (calm.kind, calm.action) == ("report", "keep-on-cron")
    assert any("pain 20 or more" in c for c in calm.would_change)
    hurting = advise(job, Metrics(interval=7 * 86400.0), Score(40.0))
    assert hurting.action == "rank-by-pain"


def test_options_of_the_wrapper_are_not_the_jobs_words() -> None:
    job = _job("17 * * * *", "cd / && run-parts --report /etc/cron.hourly")
    a = advise(job, Metrics(interval=3600.0), Score(0.0))
    assert not any("shape" in e for e in a.evidence)


def test_samplers_run_for_the_clock_and_stay() -> None:
    job = _job("5-55/10 * * * *", "command -v debian-sa1 > /dev/null && debian-sa1 1 1")
    a = advise(job, Metrics(interval=600.0), Score(5.0))
    assert (a.kind, a.action) == ("sampler", "keep-on-cron")


def test_trigger_suggestions() -> None:
    assert suggest_trigger('psql -c "INSERT INTO synced SELECT id FROM orders WHERE x"') == "postgres:orders"
    assert suggest_trigger("/usr/local/bin/import-batch /srv/shop/incoming/") == "path:/srv/shop/incoming"
    assert suggest_trigger("/usr/bin/true") is None


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRONSHIFT, *args], capture_output=True, text=True, timeout=120, check=False)


def test_scan_and_show_give_the_advice_with_its_evidence(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(PROJECT / "fixtures" / "poller", root)
    p = _run("scan", "--root", str(root), "--json", "--now", NOW, "--no-history")
    assert p.returncode == 0, p.stderr
    jobs = {j["source"]["line"]: j for j in json.loads(p.stdout)["jobs"]}
    sync, report, batch = jobs[5]["advice"], jobs[7]["advice"], jobs[9]["advice"]
    assert (sync["kind"], sync["action"], sync["trigger"]) == ("poller", "event-source", "postgres:orders")
    assert report["action"] == "keep-on-cron" and report["evidence"] and report["would_change"]
    assert batch["action"] == "streams-consumer"

    table = _run("scan", "--root", str(root), "--now", NOW, "--no-history")
    assert f"move to an event source: {jobs[5]['id']} (postgres:orders)" in table.stdout

    shown = _run("show", jobs[5]["id"], "--root", str(root), "--now", NOW, "--no-history")
    assert shown.returncode == 0, shown.stderr
    assert "advice: poller -> event-source" in shown.stdout
    assert "would change it" in shown.stdout
    sj = json.loads(_run("show", jobs[5]["id"], "--root", str(root), "--json", "--no-history").stdout)
    assert sj["job"]["advice"]["kind"] == "poller"


def test_ledger_history_turns_an_unnamed_poll_into_a_poller(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/cron.d/x").write_text("*/5 * * * * root /opt/bin/fetch-orders\n")
    first = json.loads(_run("scan", "--root", str(root), "--json", "--no-history").stdout)["jobs"][0]
    assert first["advice"]["action"] == "rank-by-pain"
    store = tmp_path / "ledger.db"
    now = time.time()
    with open_ledger(root, store=str(store)) as led:
        for r in _runs(12, quiet=11, start=now - 3600):
            led.add_run(RunRecord(first["id"], "record", r.start, r.end, 0, stdout_bytes=r.stdout_bytes,
                                  stderr_bytes=0))  # fmt: skip
    p = _run("scan", "--root", str(root), "--json", "--no-history", "--store", str(store))
    adv = json.loads(p.stdout)["jobs"][0]["advice"]
    assert adv["kind"] == "poller", adv
    assert "ledger: 11 of 12 runs printed nothing and took under 2 s" in adv["evidence"]
