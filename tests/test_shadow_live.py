"""Live shadow mode: cron-side runs come from the real `cronshift record` executable, event-side runs from the
runtime itself (`run_job` + the runtime's record writer), both into one real SQLite ledger under tmp_path;
instants are synthetic `scheduled_for` values so a week of schedule fits in seconds."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cronshift.cli.shadow_run import shadow_run
from cronshift.discover.lookup import find_job
from cronshift.discover.scan import scan
from cronshift.discover.schedule import parse
from cronshift.edit.retire import shadow_gate
from cronshift.edit.wrap import SHIM_DIR
from cronshift.ledger.store import open_ledger
from cronshift.model import CronJob
from cronshift.runtime.execute import JobFailed, run_job
from cronshift.runtime.records import record_from_result, write_run
from cronshift.shadow import live
from cronshift.shadow.execute import cron_spec
from cronshift.shadow.normalize import build_normalizer

CONSOLE_SCRIPT = Path(sys.executable).parent / "cronshift"
USER = pwd.getpwuid(__import__("os").geteuid()).pw_name
MONDAY = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
JOB_SCRIPT = """#!/bin/sh
echo "report at $(date -u +%Y-%m-%dT%H:%M:%S.%N)Z"
echo "rows: ${LIVE_ROWS:-3}"
echo "batch[${LIVE_BATCH:-41}] digest ${LIVE_DIGEST:-3f9a0c1b7e2d4a65}"
exit ${LIVE_EXIT:-0}
"""
# A poller: copy what arrived in the inbox and is not synced yet (SYNC_BROKEN: a migration that runs but
# does nothing). The probe summarises its effect: what is still not synced.
SYNC_SCRIPT = """#!/bin/sh
[ -n "$SYNC_BROKEN" ] && { echo synced; exit 0; }
for f in @ROOT@/var/inbox/*; do
  [ -e "$f" ] || continue
  b=$(basename "$f")
  [ -e "@ROOT@/var/synced/$b" ] || cp "$f" "@ROOT@/var/synced/$b"
done
echo synced
"""
PROBE = (
    'cd {root}/var/inbox && for f in *; do [ -e "$f" ] || continue; '
    '[ -e "../synced/$f" ] || echo "not synced: $f"; done; echo checked'
)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("shadow-run")(shadow_run)
    app.command("noop")(lambda: None)
    return app


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc/cron.d").mkdir(parents=True)
    (r / "dev").mkdir()
    (r / "etc/timezone").write_text("UTC\n")
    script = r / "usr/local/bin/job.sh"
    script.parent.mkdir(parents=True)
    script.write_text(JOB_SCRIPT)
    script.chmod(0o755)
    (r / "etc/cron.d/live").write_text(
        "SHELL=/bin/sh\n"
        f"*/5 * * * * {USER} {script}\n"
        f"0 9 * * 1,3,5 {USER} {script}\n"
        f"*/5 * * * * {USER} {script} && echo done\n"
        f"*/5 * * * * {USER} {r}/usr/local/bin/sync.sh\n"
    )
    sync = r / "usr/local/bin/sync.sh"
    sync.write_text(SYNC_SCRIPT.replace("@ROOT@", str(r)))
    sync.chmod(0o755)
    (r / "var/inbox").mkdir(parents=True)
    (r / "var/synced").mkdir()
    return r


def job_at(root: Path, line: int) -> CronJob:
    return find_job(scan(root), f"etc/cron.d/live:{line}")


def store(root: Path) -> str:
    return str(root.parent / "ledger.db")


def cron_fire(root: Path, job: CronJob, t: datetime, script: str = "job.sh", **env: str) -> None:
    """One cron-side run: the real wrapper, stdout and stderr on one pipe as cron gives them."""
    argv = [str(CONSOLE_SCRIPT), "record", "--root", str(root), "--store", store(root), "--drain-at", "0"]
    argv += ["--job", job.id, "--scheduled-for", t.isoformat(), "--", str(root / "usr/local/bin" / script)]
    base = {"PATH": "/usr/bin:/bin", "HOME": str(root), "SHELL": "/bin/sh", "LOGNAME": USER}
    subprocess.run(
        argv, env=base | env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
    )


def event_fire(root: Path, job: CronJob, t: datetime, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """One event-side run, as the generated task does it: run_job, then the runtime's record writer."""
    spec: dict[str, Any] = cron_spec(job)
    spec["command"] = str(root / "usr/local/bin/job.sh")  # the inner command (the line may be wrapped)
    spec["env"] = [*spec["env"], *([k, v] for k, v in env.items())]
    monkeypatch.setenv("CRONSHIFT_LEDGER", store(root))
    monkeypatch.setenv("CRONSHIFT_ROOT", str(root))
    try:
        res = run_job(spec, scheduled_for=t.timestamp())
    except JobFailed as e:
        res = {**e.result, "scheduled_for": t.timestamp()}
    assert write_run(record_from_result(spec, res, {"scheduled_for": repr(t.timestamp())}))


def instants(n: int, start: datetime = MONDAY, step: timedelta = timedelta(minutes=5)) -> list[datetime]:
    return [start + k * step for k in range(n)]


def evaluate(root: Path, job: CronJob, until: datetime, gate: int = 5) -> live.LiveReport:
    with open_ledger(root, store=store(root)) as led:
        runs = list(led.runs(job.id))
    return live.evaluate(
        job.id,
        parse(job.schedule),
        "UTC",
        runs,
        since=MONDAY.timestamp(),
        now=until.timestamp(),
        normalize=build_normalizer(hosts=()),
        gate_pairs=gate,
    )


def generated(root: Path, triggered: str | None = None) -> list[str]:
    """A generated project beside the root (its files are what a live parity verdict is bound to); with
    `triggered` (a job id), its events.py wires that job to a folder (`generate --trigger path:DIR`)."""
    pkg = root.parent / "gen" / "jobs"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("# the generated Celery app\n")
    if triggered:
        cfg = {triggered: {"quiet": 0.25, "max_wait": 5.0, "sources": [{"kind": "path", "dir": "/inbox"}]}}
        (pkg / "events.py").write_text(
            f"import json\nfrom typing import Any\n\nJOBS: dict[str, Any] = json.loads({json.dumps(cfg)!r})\n"
        )
    return ["--project", str(root.parent / "gen"), "--package", "jobs"]


def setup_live(root: Path, line: int, *extra: str) -> Any:
    job = job_at(root, line)
    return CliRunner().invoke(
        _cli(), ["shadow-run", job.id, "--root", str(root), "--store", store(root), "--live", *extra]
    )


def report(root: Path, job: CronJob, until: datetime) -> Any:
    args = ["shadow-run", job.id, "--root", str(root), "--store", store(root), "--report", "--json"]
    args += ["--since", MONDAY.isoformat(), "--now", until.isoformat()]
    return CliRunner().invoke(_cli(), args)


# -- set-up -----------------------------------------------------------------------------------------------


def test_live_refuses_without_an_explicit_side_effect_mode_and_changes_nothing(root: Path) -> None:
    before = (root / "etc/cron.d/live").read_bytes()
    r = setup_live(root, 2)
    assert r.exit_code == 2
    assert "--mode allow" in r.stderr and "twice" in r.stderr
    r = setup_live(root, 2, "--mode", "dry-run")
    assert r.exit_code == 2 and "--dry-run-flag" in r.stderr
    assert (root / "etc/cron.d/live").read_bytes() == before
    with open_ledger(root, store=store(root)) as led:
        assert led.get(live.LIVE_KIND, job_at(root, 2).id) is None


def test_live_wraps_the_cron_line_and_records_the_shadow_live_document(root: Path) -> None:
    job = job_at(root, 2)
    r = setup_live(root, 2, "--mode", "allow", *generated(root))
    assert r.exit_code == 0, r.output
    line = (root / "etc/cron.d/live").read_text().splitlines()[1]
    (wrapper,) = Path(root, SHIM_DIR).glob("py-*/cronshift")  # the same wrapper resolution as `wrap`
    assert line == (
        f"*/5 * * * * {USER} {wrapper} record --root {root} --job {job.id} --digest --store {store(root)} -- "
        + str(root / "usr/local/bin/job.sh")
    )
    # The line runs under cron's minimal environment (no venv on PATH) and writes where --report reads.
    cron = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "HOME": str(root), "LOGNAME": USER}
    ran = subprocess.run(
        ["/bin/sh", "-c", line.split(None, 6)[6]], env=cron, capture_output=True, timeout=60, check=False
    )
    assert ran.returncode == 0 and b"rows: 3" in ran.stdout, ran.stderr
    with open_ledger(root, store=store(root)) as led:
        assert [r.job_id for r in led.runs()] == [job.id]
    assert "+*/5 * * * *" in r.stdout  # the diff was shown
    assert f"CRONSHIFT_LEDGER={store(root)}" in r.stdout and "celery -A jobs.app beat" in r.stdout
    with open_ledger(root, store=store(root)) as led:
        doc = led.get(live.LIVE_KIND, job.id)
    assert doc is not None
    assert doc["mode"] == "allow" and doc["job"] == job.id and doc["command"] == job.command
    assert doc["wrapped_by_setup"] is True
    assert job_at(root, 2).id == job.id, "wrapping keeps the job's id"
    again = setup_live(root, 2, "--mode", "allow")  # already wrapped: no second wrapper
    assert again.exit_code == 0, again.output
    assert (root / "etc/cron.d/live").read_text().count("cronshift record") == 1


def test_live_refuses_a_line_wrap_cannot_take(root: Path) -> None:
    before = (root / "etc/cron.d/live").read_bytes()
    r = setup_live(root, 4, "--mode", "allow")
    assert r.exit_code == 4, r.output
    assert "shell list" in r.stderr
    assert (root / "etc/cron.d/live").read_bytes() == before


# -- judging ----------------------------------------------------------------------------------------------


def test_faithful_sequence_reaches_parity_and_opens_the_retire_gate(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert setup_live(root, 2, "--mode", "allow", *generated(root)).exit_code == 0
    job = job_at(root, 2)
    ts = instants(6)
    for t in ts:
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch)
    r = report(root, job, ts[-1] + timedelta(minutes=4))
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)["verdict"]
    assert v["verdict"] == "parity", v["missing"] + v["differences"]
    assert v["runs_compared"] == 6 and v["matched_consecutive"] == 6
    assert v["fidelity"]["both"] == 6 and v["patterns"] == {"every run": True}
    # the printed timestamps differ in raw bytes: cleared by a named normaliser, never silently
    first = v["instants"][0]["differences"][0]
    assert first["explained"].startswith("normaliser: ") and "iso" in first["explained"]
    gate = shadow_gate(root, job_at(root, 2), store=store(root))
    assert gate.ok, gate.missing
    text = CliRunner().invoke(
        _cli(),
        [
            *("shadow-run", job.id, "--root", str(root), "--store", store(root), "--report"),
            *("--since", MONDAY.isoformat(), "--now", (ts[-1] + timedelta(minutes=4)).isoformat()),
        ],
    )
    assert text.exit_code == 0 and "parity" in text.stdout and "instant" in text.stdout
    assert "masked (cron): iso-timestamp 6" in text.stdout
    assert "masked (event): iso-timestamp 6" in text.stdout
    assert v["summary"]["masked"]["event"] == {"iso-timestamp": 6}
    assert v["noise_floor_text"] == ["output: iso-timestamp varies at 1 place(s) (masked)"]
    # The verdict holds for the generated files the live worker ran, not for an edited project.
    app = root.parent / "gen/jobs/app.py"
    app.write_text(app.read_text() + "# edited after the parity run\n")
    gate = shadow_gate(root, job_at(root, 2), store=store(root))
    assert not gate.ok and any("changed since the parity run" in m for m in gate.missing), gate.missing


def test_live_parity_without_a_generated_project_never_opens_the_gate(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert setup_live(root, 2, "--mode", "allow").exit_code == 0
    job = job_at(root, 2)
    ts = instants(6)
    for t in ts:
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch)
    r = report(root, job, ts[-1] + timedelta(minutes=4))
    assert r.exit_code == 0 and json.loads(r.stdout)["verdict"]["verdict"] == "parity", r.output
    gate = shadow_gate(root, job_at(root, 2), store=store(root))
    assert not gate.ok and any("no generated project was compared" in m for m in gate.missing)


def test_live_refuses_a_project_without_its_package(root: Path) -> None:
    r = setup_live(root, 2, "--mode", "allow", "--project", str(root.parent / "nowhere"), "--package", "jobs")
    assert r.exit_code == 2 and "no generated package" in r.stderr


def test_a_missing_event_fire_is_a_mismatch_with_exit_3(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert setup_live(root, 2, "--mode", "allow").exit_code == 0
    job = job_at(root, 2)
    ts = instants(7)
    for k, t in enumerate(ts):
        cron_fire(root, job, t)
        if k != 2:
            event_fire(root, job, t, monkeypatch)
    r = report(root, job, ts[-1] + timedelta(minutes=4))
    assert r.exit_code == 3, r.output
    v = json.loads(r.stdout)["verdict"]
    assert v["verdict"] == "differences"
    assert v["differences"] == ["Mon 2024-01-01 00:10: only cron fired; the event side did not run"]
    assert not shadow_gate(root, job_at(root, 2), store=store(root)).ok


def test_a_duplicate_fire_and_an_off_schedule_fire_are_named(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_at(root, 2)
    ts = instants(6)
    for t in ts:
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch)
    event_fire(root, job, ts[1], monkeypatch)
    event_fire(root, job, ts[3] + timedelta(minutes=2), monkeypatch)
    rep = evaluate(root, job, ts[-1] + timedelta(minutes=4))
    assert rep.verdict.label == "mismatch"
    assert rep.instants[1].status == "duplicate"
    assert "Mon 2024-01-01 00:05: cron side ran 1 time(s), event side 2 time(s)" in rep.verdict.differences
    off = "event side fired at Mon 2024-01-01 00:17 (1 run(s)), not a cron instant"
    assert off in rep.verdict.differences


def test_a_changed_exit_status_is_caught(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_at(root, 2)
    ts = instants(6)
    for k, t in enumerate(ts):
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch, **({"LIVE_EXIT": "2"} if k == 4 else {}))
    rep = evaluate(root, job, ts[-1] + timedelta(minutes=4))
    assert rep.verdict.label == "mismatch"
    assert rep.verdict.differences == [f"{rep.instants[4].local}: exit status 0 (cron) vs 2 (event)"]
    assert rep.verdict.matched_tail == 1


def test_changed_output_is_caught_even_with_every_normaliser_on(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_at(root, 2)
    ts = instants(6)
    for k, t in enumerate(ts):
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch, **({"LIVE_ROWS": "4"} if k == 3 else {}))
    rep = evaluate(root, job, ts[-1] + timedelta(minutes=4))
    assert rep.verdict.label == "mismatch"
    (diff,) = rep.instants[3].real
    assert diff.what == "output line 2: '3' (cron) vs '4' (event), in 'rows: 3' vs 'rows: 4'"
    assert "-rows: 3" in diff.diff and "+rows: 4" in diff.diff


def test_every_schedule_pattern_must_be_seen_then_a_week_reaches_parity(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_at(root, 3)  # 0 9 * * 1,3,5
    assert live.schedule_patterns(parse(job.schedule)) == ["Monday 09:00", "Wednesday 09:00", "Friday 09:00"]
    mon, wed, fri = (MONDAY + timedelta(days=d, hours=9) for d in (0, 2, 4))
    for t in (mon, wed):
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch)
    rep = evaluate(root, job, wed + timedelta(hours=1), gate=2)
    assert rep.verdict.label == "insufficient evidence"
    assert rep.verdict.missing == ["Friday 09:00 not yet seen"]
    for t in (fri, mon + timedelta(days=7), wed + timedelta(days=7)):
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch)
    rep = evaluate(root, job, wed + timedelta(days=7, hours=1))
    assert rep.verdict.label == "parity", rep.verdict.missing + rep.verdict.differences
    assert len(rep.instants) == 5 and all(rep.patterns.values())


def test_instants_before_the_event_path_started_are_warm_up_and_young_ones_pending(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_at(root, 2)
    ts = instants(8)
    for k, t in enumerate(ts):
        cron_fire(root, job, t)
        if k >= 2:
            event_fire(root, job, t, monkeypatch)
    rep = evaluate(root, job, ts[-1] + timedelta(seconds=30))
    assert rep.warmup == 2 and rep.pending == 1
    assert rep.verdict.label == "parity", rep.verdict.missing + rep.verdict.differences
    assert len(rep.instants) == 5


# -- the noise floor is learned from the cron side's own runs ----------------------------------------------


def fire_pairs(
    root: Path, job: CronJob, ts: list[datetime], monkeypatch: pytest.MonkeyPatch, **event_env: str
) -> None:
    """Cron and event side at each instant; a pause between instants, as real runs are minutes apart (a
    second-granular value must get the chance to tick between cron runs)."""
    for t in ts:
        cron_fire(root, job, t)
        event_fire(root, job, t, monkeypatch, **event_env)
        time.sleep(0.45)


def test_a_pid_shaped_number_constant_across_cron_runs_is_compared_not_masked(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken migration first: cron always prints batch[41]; the event side batch[42]. It looks like a
    # pid (`x[NNN]`), but it never varied between cron runs, so no rule may mask it.
    job = job_at(root, 2)
    ts = instants(6)
    fire_pairs(root, job, ts, monkeypatch, LIVE_BATCH="42")
    rep = evaluate(root, job, ts[-1] + timedelta(minutes=4))
    assert rep.verdict.label == "mismatch", rep.verdict.missing
    (only,) = rep.verdict.differences  # once, not once per instant
    assert only.startswith(f"6 of 6 instants from {rep.instants[0].local}: "), only
    assert rep.verdict.differences[0].endswith(
        "output line 3: '41' (cron) vs '42' (event), in 'batch[41] digest 3f9a0c1b7e2d4a65' vs "
        "'batch[42] digest 3f9a0c1b7e2d4a65'"
    ), rep.verdict.differences


def test_a_digest_constant_across_cron_runs_is_compared_not_masked(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_at(root, 2)
    ts = instants(6)
    fire_pairs(root, job, ts, monkeypatch, LIVE_DIGEST="3f9a0c1b7e2d4a66")
    rep = evaluate(root, job, ts[-1] + timedelta(minutes=4))
    assert rep.verdict.label == "mismatch", rep.verdict.missing
    assert rep.verdict.differences[0].endswith(
        "output line 3: '65' (cron) vs '66' (event), in 'batch[41] digest 3f9a0c1b7e2d4a65' vs "
        "'batch[41] digest 3f9a0c1b7e2d4a66'"
    ), rep.verdict.differences


def test_a_timestamp_that_varies_across_cron_runs_is_masked_counted_and_shown(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_at(root, 2)
    ts = instants(6)
    fire_pairs(root, job, ts, monkeypatch)
    rep = evaluate(root, job, ts[-1] + timedelta(minutes=4))
    assert rep.verdict.label == "parity", rep.verdict.missing + rep.verdict.differences
    # only what varied among the cron runs was masked: the timestamp, on both sides, once per run
    assert rep.masked == {"cron": {"iso-timestamp": 6}, "event": {"iso-timestamp": 6}}
    assert rep.floor_text == ["output: iso-timestamp varies at 1 place(s) (masked)"]
    assert all("iso-timestamp" in (d.explained or "") for i in rep.instants for d in i.differences)


def test_too_few_cron_runs_to_judge_a_value_is_insufficient_and_says_how_many_more(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_at(root, 2)
    ts = instants(2)
    fire_pairs(root, job, ts, monkeypatch, LIVE_BATCH="42")
    rep = evaluate(root, job, ts[-1] + timedelta(minutes=4), gate=2)
    assert rep.verdict.label == "insufficient evidence", rep.verdict.differences
    assert any("wait for 3 more cron-side run(s)" in m for m in rep.verdict.missing), rep.verdict.missing


# -- an event-triggered event path: intervals and effects -------------------------------------------------


def event_trigger(root: Path, job: CronJob, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """One event-triggered run (no scheduled time), as the events process's coalesced task does it."""
    spec: dict[str, Any] = cron_spec(job)
    spec["command"] = str(root / "usr/local/bin/sync.sh")
    spec["env"] = [*spec["env"], *([k, v] for k, v in env.items())]
    monkeypatch.setenv("CRONSHIFT_LEDGER", store(root))
    monkeypatch.setenv("CRONSHIFT_ROOT", str(root))
    try:
        res = run_job(spec)
    except JobFailed as e:
        res = e.result
    assert write_run(record_from_result(spec, res, {"payload_id": "trigger-1"}))


def cli(root: Path, job: CronJob, *args: str) -> Any:
    return CliRunner().invoke(
        _cli(), ["shadow-run", job.id, "--root", str(root), "--store", store(root), *args]
    )


def triggered(root: Path) -> CronJob:
    job = job_at(root, 5)
    r = setup_live(
        root, 5, "--mode", "allow", *generated(root, triggered=job.id), "--probe", PROBE.format(root=root)
    )
    assert r.exit_code == 0, r.output
    assert "event-triggered" in r.stdout and "--probe-now --side event" in r.stdout
    return job_at(root, 5)


def interval(
    root: Path,
    job: CronJob,
    monkeypatch: pytest.MonkeyPatch,
    arrives: str | None,
    event: dict[str, str] | None,
) -> None:
    """One cron interval: cron runs the job (and its effect is probed); then something arrives, the event
    side runs (unless `event` is None) and its effect is probed before the next cron run."""
    cron_fire(root, job, datetime.now(UTC), script="sync.sh")
    assert cli(root, job, "--probe-now", "--side", "cron").exit_code == 0
    if arrives:
        (root / "var/inbox" / arrives).write_text(arrives)
    if event is not None:
        event_trigger(root, job, monkeypatch, **event)
    assert cli(root, job, "--probe-now", "--side", "event").exit_code == 0


def triggered_report(root: Path, job: CronJob, *extra: str) -> tuple[int, dict[str, Any]]:
    r = cli(root, job, "--report", "--json", "--gate-pairs", "2", *extra)
    return r.exit_code, json.loads(r.stdout)["verdict"]


def test_triggered_event_path_that_never_runs_is_a_mismatch(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = triggered(root)
    for k in range(3):
        interval(root, job, monkeypatch, f"order-{k}", None)
    code, v = triggered_report(root, job)
    assert code == 3 and v["verdict"] == "differences", v
    assert "not synced: order-0" in v["differences"][0] and "0 event run(s)" in v["differences"][0]
    assert not shadow_gate(root, job_at(root, 5), store=store(root)).ok


def test_triggered_event_path_that_runs_without_the_effect_is_a_mismatch(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = triggered(root)
    for k in range(3):
        interval(root, job, monkeypatch, f"order-{k}", {"SYNC_BROKEN": "1"})
    code, v = triggered_report(root, job)
    assert code == 3 and v["verdict"] == "differences", v
    assert "not synced: order-0" in v["differences"][0] and "1 event run(s)" in v["differences"][0]


def test_triggered_event_path_never_exercised_is_insufficient(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = triggered(root)
    for _ in range(3):
        interval(root, job, monkeypatch, None, None)
    code, v = triggered_report(root, job)
    assert code == 0 and v["verdict"] == "inconclusive", v
    assert any("in which an event ran the job" in m for m in v["missing"]), v["missing"]


def test_an_interval_without_its_event_probe_is_not_judged_parity(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = triggered(root)
    for k in range(2):
        interval(root, job, monkeypatch, f"order-{k}", {})
    cron_fire(root, job, datetime.now(UTC), script="sync.sh")
    assert cli(root, job, "--probe-now", "--side", "cron").exit_code == 0
    (root / "var/inbox/order-2").write_text("2")
    event_trigger(root, job, monkeypatch)  # ... but nobody probed the event side's effect
    interval(root, job, monkeypatch, "order-3", {})
    cron_fire(root, job, datetime.now(UTC), script="sync.sh")  # a new interval, not probed yet: pending
    code, v = triggered_report(root, job)
    assert code == 0 and v["verdict"] == "inconclusive", v
    assert any("no event-side probe" in m for m in v["missing"]), v["missing"]
    assert v["fidelity"]["pending"] == 1 and v["matched_consecutive"] == 1


def test_faithful_triggered_event_path_reaches_parity_bound_to_the_project(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = triggered(root)
    for k in range(3):
        interval(root, job, monkeypatch, f"order-{k}", {})
    code, v = triggered_report(root, job)
    assert code == 0 and v["verdict"] == "parity", v["missing"] + v["differences"]
    assert v["gate"]["mode"] == "live" and v["gate"]["event_path"] == "triggered"
    assert v["runs_compared"] == 3 and [i["event_runs"] for i in v["intervals"]] == [1, 1, 1]
    assert shadow_gate(root, job_at(root, 5), store=store(root)).ok
    text = cli(root, job, "--report", "--gate-pairs", "2")
    assert text.exit_code == 0 and "parity" in text.stdout and "interval" in text.stdout
    (root.parent / "gen/jobs/events.py").write_text("# edited\n")
    gate = shadow_gate(root, job_at(root, 5), store=store(root))
    assert not gate.ok and any("changed since the parity run" in m for m in gate.missing)


def test_a_triggered_project_needs_an_effect_probe(root: Path) -> None:
    job = job_at(root, 5)
    r = setup_live(root, 5, "--mode", "allow", *generated(root, triggered=job.id))
    assert r.exit_code == 2 and "--probe" in r.stderr
    r = setup_live(root, 2, "--mode", "allow", *generated(root), "--probe", "true")
    assert r.exit_code == 2 and "--probe" in r.stderr


def test_the_probe_watcher_probes_the_cron_side_after_its_run(root: Path) -> None:
    from cronshift.shadow.effects import EFFECT_KIND

    job = triggered(root)
    argv = [str(CONSOLE_SCRIPT), "shadow-run", job.id, "--root", str(root), "--store", store(root)]
    watcher = subprocess.Popen([*argv, "--probe-watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cron_fire(root, job, datetime.now(UTC), script="sync.sh")
        deadline = time.monotonic() + 30
        got: list[Any] = []
        while time.monotonic() < deadline and not got:
            time.sleep(0.2)
            with open_ledger(root, store=store(root)) as led:
                got = led.list(EFFECT_KIND, prefix=f"{job.id}/")
        # the cron side first; the event side's probe follows only near the next */5 instant
        assert got[0]["side"] == "cron" and got[0]["output"] == "checked\n", got
    finally:
        watcher.terminate()
        watcher.wait(timeout=15)


def test_the_probe_watcher_probes_after_each_cron_run_and_before_the_next_instant() -> None:
    from cronshift.model import RunRecord
    from cronshift.shadow.effects import due_probe

    run = RunRecord("j", "record", start=100.0, end=103.0, exit_status=0)
    nxt = 400.0
    assert due_probe([], [], nxt, 101.0, 15) is None  # no cron run yet
    assert due_probe([RunRecord("j", "record", start=100.0)], [], nxt, 101.0, 15) is None  # still running
    assert due_probe([run], [], nxt, 104.0, 15) == "cron"
    old = [{"side": "cron", "started": 50.0}, {"side": "event", "started": 60.0}]
    assert due_probe([run], old, nxt, 104.0, 15) == "cron"  # probes of the previous interval do not count
    probed = [{"side": "cron", "started": 104.0}]
    assert due_probe([run], probed, nxt, 200.0, 15) is None  # mid-interval: the event side still has time
    assert due_probe([run], probed, nxt, 386.0, 15) == "event"
    assert due_probe([run], [*probed, {"side": "event", "started": 386.0}], nxt, 390.0, 15) is None


def test_or_branches_are_patterns() -> None:
    expr = parse("30 6 1 * 1")
    assert live.schedule_patterns(expr) == ["day-of-month branch 06:30", "day-of-week branch 06:30"]
    assert live.pattern_of(expr, datetime(2024, 1, 1, 6, 30)) == [
        "day-of-month branch 06:30",
        "day-of-week branch 06:30",
    ]
    assert live.schedule_patterns(parse("*/5 9-17 * * *")) == ["every run"]
