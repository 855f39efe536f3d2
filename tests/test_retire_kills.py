"""Retire, undo, wrap and unwrap killed at any point: old-or-new bytes, no leftovers after the next command,
undo always possible, and a torn journal never crashes `--list` or `--undo`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cronshift.cli.app import app
from cronshift.discover.scan import scan
from cronshift.edit import crontab as ce
from cronshift.edit.retire import apply_retire, list_retired, plan_retire, undo_retire
from cronshift.ledger import state

from .test_retire import SYNC, snapshot

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
STATE = Path("var/lib/cronshift")
PACKAGE_DIR = str(Path(ce.__file__).resolve().parents[2])


def temps(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob(f"{ce.TMP_PREFIX}*")
        if not str(p.relative_to(root)).startswith(str(STATE))
    )


def retire_now(root: Path, where: str) -> str:
    (job,) = [j for j in scan(root).jobs if str(j.source) == where]
    apply_retire(root, plan_retire(root, job, now=NOW), now=NOW, forced=True, reason="test")
    return job.id


_CHILD = """
import os, signal, sys
from datetime import datetime, timezone
from pathlib import Path
from cronshift.edit import crontab as crontab_edit
from cronshift.edit import retire, wrap
from cronshift.discover.scan import scan

WRAPPER = "/usr/local/bin/cronshift"  # the writer is under test here, not the wrapper's resolution
root, action, ref, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
now = datetime(2026, 11, 25, 11, tzinfo=timezone.utc)
real_append = retire._append

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def append(r, event):
    if event["event"] == step:
        die()
    real_append(r, event)

retire._append = append
crontab_edit._after_step.append(lambda name: die() if name == step else None)
if action == "retire":
    job = next(j for j in scan(root).jobs if str(j.source) == ref)
    retire.apply_retire(root, retire.plan_retire(root, job, now=now), now=now, forced=True, reason="killed")
elif action == "undo":
    retire.undo_retire(root, ref, now=now)
elif action == "wrap":
    job = next(j for j in scan(root).jobs if str(j.source) == ref)
    wrap.apply_plan(root, wrap.plan_wrap(root, job, wrapper=WRAPPER), now=now)
elif action == "unwrap":
    job = next(j for j in scan(root).jobs if str(j.source) == ref)
    wrap.apply_plan(root, wrap.plan_unwrap(root, job), now=now)
print("survived")
"""


def run_killed(root: Path, action: str, ref: str, step: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": PACKAGE_DIR}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), action, ref, step],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


UNDO_STEPS = ["clean", "backup", "temp", "journal", "recheck", "rename", "dirsync", "verify", "done"]


@pytest.mark.parametrize("step", UNDO_STEPS)
def test_a_killed_undo_leaves_undo_possible(debian_root: Path, step: str) -> None:
    original = snapshot(debian_root)
    job_id = retire_now(debian_root, SYNC)
    retired = snapshot(debian_root)
    proc = run_killed(debian_root, "undo", job_id, step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    now = {k: v for k, v in snapshot(debian_root).items() if ce.TMP_PREFIX not in k}
    assert now in (original, retired)  # old or new bytes, never anything else
    listed = {r.job_id for r in list_retired(debian_root)}  # the next command ...
    assert temps(debian_root) == []  # ... leaves no temp file behind
    if now == retired:  # the undo did not happen: the job is still listed, and undo works
        assert listed == {job_id}
        undo_retire(debian_root, job_id, now=NOW)
    else:  # it happened: counted as done, nothing left to undo
        assert listed == set()
    assert snapshot(debian_root) == original
    assert list_retired(debian_root) == []


def test_a_killed_mode_undo_leaves_undo_possible(debian_root: Path) -> None:
    original = snapshot(debian_root)
    job_id = retire_now(debian_root, "etc/cron.daily/man-db")
    proc = run_killed(debian_root, "undo", job_id, "undo")  # killed after the chmod, before its record
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert snapshot(debian_root) == original
    assert list_retired(debian_root) == []  # the next command rolls the killed undo forward
    events = [json.loads(x) for x in (debian_root / STATE / "retire.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-2:] == ["undo-intent", "undo"]
    assert snapshot(debian_root) == original


@pytest.mark.parametrize("journal", [ce.JOURNAL_NAME, "retire.jsonl"])
def test_a_torn_last_journal_line_never_crashes_list_or_undo(debian_root: Path, journal: str) -> None:
    original = snapshot(debian_root)
    line_id = retire_now(debian_root, SYNC)
    mode_id = retire_now(debian_root, "etc/cron.daily/man-db")
    with open(debian_root / STATE / journal, "ab") as fh:
        fh.write(b'{"event": "done", "record": {"id": "abc')  # a kill in the middle of a write
    res = CliRunner().invoke(app, ["retire", "--list", "--root", str(debian_root), "--json"])
    assert res.exit_code == 0, res.output
    assert {r["job"] for r in json.loads(res.stdout)["retired"]} == {line_id, mode_id}
    for job_id in (line_id, mode_id):
        res = CliRunner().invoke(app, ["retire", "--undo", job_id, "--root", str(debian_root)])
        assert res.exit_code == 0, res.output
    assert snapshot(debian_root) == original
    # the record written after the torn line starts on a line of its own and is read back
    assert list_retired(debian_root) == []


def test_a_record_whose_checksum_fails_is_not_taken_as_written(tmp_path: Path) -> None:
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        state.append_record(dir_fd, "j.jsonl", {"event": "done", "id": "a"})
        state.append_record(dir_fd, "j.jsonl", {"event": "done", "id": "b"})
    finally:
        os.close(dir_fd)
    data = (tmp_path / "j.jsonl").read_bytes().replace(b'"id": "b"', b'"id": "c"')
    events, bad = state.parse_records(data)
    assert [e["id"] for e in events] == ["a"] and bad == 1


def test_a_killed_retire_leaves_no_temp_file_after_the_next_command(debian_root: Path) -> None:
    original = snapshot(debian_root)
    proc = run_killed(debian_root, "retire", SYNC, "temp")
    assert proc.returncode == -signal.SIGKILL
    assert len(temps(debian_root)) == 1
    assert {k: v for k, v in snapshot(debian_root).items() if ce.TMP_PREFIX not in k} == original
    # scan never takes it for a crontab: same ids, nothing retired
    assert all(not j.retired for j in scan(debian_root).jobs)
    res = CliRunner().invoke(app, ["retire", "--list", "--root", str(debian_root)])
    assert res.exit_code == 0, res.output
    assert temps(debian_root) == []


# ---------------------------------------------------------------------------------------------------------
# The SIGKILL loop: every action killed after every step of the writer


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {k: v for k, v in snapshot(root).items() if ce.TMP_PREFIX not in k}


WRAP_REF = "etc/cron.d/shop-sync:8"
WRAPPER = "/usr/local/bin/cronshift"  # the writer is under test here, not the wrapper's resolution
KILL_CASES = [(a, s) for a in ("retire", "undo", "wrap", "unwrap") for s in ce.STEPS]


@pytest.mark.parametrize(("action", "step"), KILL_CASES, ids=[f"{a}-{s}" for a, s in KILL_CASES])
def test_sigkill_loop_old_or_new_bytes_no_leftovers_undo_possible(
    debian_root: Path, action: str, step: str
) -> None:
    from cronshift.edit import wrap

    ref = WRAP_REF
    if action == "undo":
        ref = retire_now(debian_root, WRAP_REF)
    elif action == "unwrap":
        (job,) = [j for j in scan(debian_root).jobs if str(j.source) == WRAP_REF]
        wrap.apply_plan(debian_root, wrap.plan_wrap(debian_root, job, wrapper=WRAPPER), now=NOW)
    old = _files(debian_root)
    done_before = len(ce.EditJournal(debian_root).all())
    proc = run_killed(debian_root, action, ref, step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    now = _files(debian_root)
    changed = [k for k in old if old[k] != now.get(k)]
    assert len(changed) <= 1 and set(now) == set(old)  # old bytes, or one file's new bytes, whole
    list_retired(debian_root)  # the next command
    assert temps(debian_root) == []
    journal = ce.EditJournal(debian_root)
    assert journal.pending() == []  # rolled forward or back, none left undecided
    done = journal.all()
    if not changed:
        assert len(done) == done_before  # not counted as done
        return
    assert len(done) == done_before + 1  # a change on disk is always on record ...
    ce.undo_edit(debian_root, done[-1], now=NOW.timestamp())  # ... and can always be undone
    assert _files(debian_root) == old


@pytest.mark.slow  # a whole server, edit by edit, each fsynced: tens of seconds
@pytest.mark.parametrize("server", ["debian_root", "rhel_root", "corpus_root"])
def test_retire_every_job_by_the_ids_of_the_first_scan_and_undo_all(
    server: str, request: pytest.FixtureRequest
) -> None:
    """Ids do not move while the jobs of a real tree are retired one by one (the lines that run run-parts
    folders included), and undoing all gives back every file byte for byte, modes included."""
    root: Path = request.getfixturevalue(server)
    original = snapshot(root)
    first = scan(root).jobs
    # Scripts first: once the line that runs its folder is retired, cron never runs a script, and retire
    # refuses a job cron does not run.
    ids = [j.id for j in sorted(first, key=lambda j: j.source.line is not None) if j.runs]
    for job_id in ids:
        (job,) = [j for j in scan(root).jobs if j.id == job_id]  # the first scan's id still names it
        apply_retire(root, plan_retire(root, job, now=NOW), now=NOW, forced=True, reason="all")
    assert len(ids) > 10
    assert {r.job_id for r in list_retired(root)} == set(ids)
    assert not any(j.runs for j in scan(root).jobs)
    for job_id in ids[::2] + ids[1::2]:
        undo_retire(root, job_id, now=NOW)
    assert snapshot(root) == original
    assert [j.id for j in scan(root).jobs] == [j.id for j in first]


MODE_CASES = [("retire", "intent"), ("retire", "done"), ("undo", "undo")]


@pytest.mark.parametrize(("action", "step"), MODE_CASES, ids=[f"{a}-{s}" for a, s in MODE_CASES])
def test_sigkill_of_a_run_parts_retire_or_undo_leaves_old_or_new_mode_and_undo_possible(
    debian_root: Path, action: str, step: str
) -> None:
    script = "etc/cron.daily/man-db"
    original = snapshot(debian_root)
    ref = retire_now(debian_root, script) if action == "undo" else script
    old = snapshot(debian_root)
    proc = run_killed(debian_root, action, ref, step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    now = snapshot(debian_root)
    assert {k for k in old if old[k] != now[k]} <= {script}
    listed = {r.job_id: r for r in list_retired(debian_root)}
    if now[script][1] & 0o111:  # executable: not retired (or back)
        assert listed == {}
    else:  # retired: listed, and undo gives back the exact mode
        (r,) = listed.values()
        undo_retire(debian_root, r.job_id, now=NOW)
    assert snapshot(debian_root) == original


_RANDOM_CHILD = """
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from cronshift.edit import retire
from cronshift.discover.scan import scan

root, where = Path(sys.argv[1]), sys.argv[2]
now = datetime(2026, 11, 25, 11, tzinfo=timezone.utc)
job = next(j for j in scan(root).jobs if str(j.source) == where)
print("ready", flush=True)
sys.stdin.readline()
if job.retired:
    retire.undo_retire(root, job.id, now=now)
else:
    retire.apply_retire(root, retire.plan_retire(root, job, now=now), now=now, forced=True, reason="k")
print("survived", flush=True)
"""


def test_sigkill_at_random_moments_of_retire_and_undo(debian_root: Path) -> None:
    """Kills that land anywhere, mid-write included (bounded: 24 kills, a fixed seed)."""
    import random

    rng = random.Random(11)
    original = snapshot(debian_root)
    job_id = retire_now(debian_root, SYNC)
    retired = snapshot(debian_root)
    undo_retire(debian_root, job_id, now=NOW)
    env = {**os.environ, "PYTHONPATH": PACKAGE_DIR}
    for _ in range(24):
        child = subprocess.Popen(
            [sys.executable, "-c", _RANDOM_CHILD, str(debian_root), SYNC],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        time.sleep(rng.uniform(0, 0.02))
        child.kill()
        child.wait(timeout=60)
        child.stdin.close()
        child.stdout.close()
        now = {k: v for k, v in snapshot(debian_root).items() if ce.TMP_PREFIX not in k}
        assert now in (original, retired)
        listed = {r.job_id for r in list_retired(debian_root)}  # the next command
        assert temps(debian_root) == [] and ce.EditJournal(debian_root).pending() == []
        assert listed == ({job_id} if now == retired else set())
    if snapshot(debian_root) == retired:
        undo_retire(debian_root, job_id, now=NOW)
    assert snapshot(debian_root) == original
