"""Retire, undo, wrap and unwrap killed at any point: old-or-new bytes, no leftovers after the next command,
undo always possible, and a torn journal never crashes `--list` or `--undo`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cronshift import crontab_edit as ce
from cronshift.cli.app import app
from cronshift.discover.scan import scan
from cronshift.retire import apply_retire, list_retired, plan_retire, undo_retire

from .test_retire import SYNC, snapshot

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
STATE = Path("var/lib/cronshift")
PACKAGE_DIR = str(Path(ce.__file__).resolve().parents[1])


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
from cronshift import crontab_edit, retire, wrap
from cronshift.discover.scan import scan

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
    wrap.apply_wrap(root, wrap.plan_wrap(root, job), now=now)
elif action == "unwrap":
    job = next(j for j in scan(root).jobs if str(j.source) == ref)
    wrap.apply_unwrap(root, wrap.plan_unwrap(root, job), now=now)
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
    undo_retire(debian_root, job_id, now=NOW)  # records what the killed undo did instead of refusing
    assert list_retired(debian_root) == []
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
        ce.append_record(dir_fd, "j.jsonl", {"event": "done", "id": "a"})
        ce.append_record(dir_fd, "j.jsonl", {"event": "done", "id": "b"})
    finally:
        os.close(dir_fd)
    data = (tmp_path / "j.jsonl").read_bytes().replace(b'"id": "b"', b'"id": "c"')
    events, bad = ce.parse_records(data)
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
