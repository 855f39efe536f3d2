"""`cronshift retire` on real files: the gate, the diff, one changed line, exact undo, run-parts modes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cronshift.cli import retire as retire_cmd
from cronshift.cli import wrap as wrap_cmd
from cronshift.cli.app import app as main_app
from cronshift.discover.retired import retired_scripts
from cronshift.discover.scan import scan
from cronshift.edit import crontab as ce
from cronshift.edit.crontab import EditJournal, EditRefused
from cronshift.edit.retire import (
    RetireRefused,
    apply_retire,
    list_retired,
    plan_retire,
    shadow_gate,
    undo_retire,
)
from cronshift.model import CronJob, Format
from cronshift.shadow.store import verdict_path

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
STATE = "var/lib/cronshift"


def cli_app() -> typer.Typer:
    """The commands as the lead will register them in cli/app.py."""
    app = typer.Typer()
    app.command("retire")(retire_cmd.retire)
    app.command("wrap")(wrap_cmd.wrap)
    app.command("unwrap")(wrap_cmd.unwrap)
    return app


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli_app(), [*args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mode, except cronshift's own state (backups, journals)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(STATE) or p.is_symlink() or not p.is_file():
            continue
        out[rel] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def job_at(root: Path, ref: str) -> CronJob:
    path, _, line = ref.rpartition(":")
    for j in scan(root).jobs:
        if j.source.path == path and j.source.line == int(line):
            return j
    raise AssertionError(f"no job at {ref}")


def by_id(root: Path, job_id: str) -> CronJob:
    hits = [j for j in scan(root).jobs if j.id == job_id]
    assert len(hits) == 1, (job_id, hits)
    return hits[0]


def changed_lines(old: bytes, new: bytes) -> list[int]:
    a, b = ce.split_lines(old), ce.split_lines(new)
    assert len(a) == len(b)
    return [i + 1 for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def write_verdict(root: Path, job_id: str, doc: dict[str, object]) -> None:
    path = verdict_path(root, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


SYNC = "etc/cron.d/shop-sync:8"


def bound_parity(root: Path, job: CronJob) -> dict[str, object]:
    """A parity verdict as shadow-run writes it: bound to a generated project (one file) and taken now."""
    import hashlib
    from datetime import UTC, datetime

    pkg = root.parent / "generated" / "pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "app.py").write_text("app = None\n")
    digests = {"pkg/app.py": hashlib.sha256(b"app = None\n").hexdigest()}
    ev = {"project": str(pkg.parent), "package": "pkg", "project_digests": digests}
    last = datetime.now(UTC).isoformat()
    return {"verdict": "parity", "job": job.id, "command": job.command, "evidence": ev, "last": last}


# ---------------------------------------------------------------------------------------------------------
# The gate


def test_gate_refuses_with_exit_4_and_names_the_missing_evidence(debian_root: Path) -> None:
    before = snapshot(debian_root)
    job = job_at(debian_root, SYNC)
    code, out, err = cli("retire", SYNC, "--root", str(debian_root))
    assert code == 4
    assert "no shadow-run verdict" in err and job.id in err
    assert f"{STATE}/shadow/{job.id}.json" in err  # says where the evidence would be
    assert "--- a/etc/cron.d/shop-sync" in out  # the diff is still shown first
    assert snapshot(debian_root) == before
    assert not (debian_root / STATE / "edits.jsonl").exists()


def test_gate_passes_on_parity_and_names_every_other_gap(debian_root: Path) -> None:
    job = job_at(debian_root, SYNC)
    write_verdict(debian_root, job.id, {"verdict": "differences", "differences": ["exit 1 vs 0 at 03:00"]})
    gate = shadow_gate(debian_root, job)
    assert not gate.ok and "'differences'" in gate.missing[0] and "exit 1 vs 0" in gate.missing[0]
    write_verdict(debian_root, job.id, {"verdict": "parity", "command": "something else", "runs_compared": 0})
    gate = shadow_gate(debian_root, job)
    assert not gate.ok
    assert any("different command" in m for m in gate.missing)
    assert any("0 runs" in m for m in gate.missing)
    write_verdict(debian_root, job.id, {"verdict": "parity", "job": job.id, "command": job.command})
    assert any("no generated project" in m for m in shadow_gate(debian_root, job).missing)
    write_verdict(debian_root, job.id, bound_parity(debian_root, job))
    assert shadow_gate(debian_root, job).ok
    code, out, _ = cli("retire", SYNC, "--root", str(debian_root), "--now", "2026-11-25T10:00")
    assert code == 0, out
    assert by_id(debian_root, job.id).retired


def test_gate_reads_the_verdict_through_its_versioned_contract(debian_root: Path) -> None:
    from cronshift.shadow.verdict import VERDICT_SCHEMA, Verdict, make_verdict_doc

    job = job_at(debian_root, SYNC)
    legacy = bound_parity(debian_root, job)  # schema 1: before the contract had a version
    ev = legacy["evidence"]
    assert isinstance(ev, dict)
    doc = make_verdict_doc(
        Verdict("parity", matched_tail=5), job_id=job.id, command=job.command, runs_compared=5,
        gate={"consecutive_pairs": 5}, evidence=ev, written_by="test", last=str(legacy["last"]),
    )  # fmt: skip
    assert doc["schema"] == VERDICT_SCHEMA and doc["verdict"] == "parity"
    write_verdict(debian_root, job.id, dict(doc))
    assert shadow_gate(debian_root, job).ok
    write_verdict(debian_root, job.id, {**doc, "schema": VERDICT_SCHEMA + 1})
    gate = shadow_gate(debian_root, job)
    assert not gate.ok and "written by a newer cronshift" in gate.missing[0]
    write_verdict(debian_root, job.id, {**doc, "verdict": "yes"})
    gate = shadow_gate(debian_root, job)
    assert not gate.ok and any("is not one of parity, differences, inconclusive" in m for m in gate.missing)
    write_verdict(debian_root, job.id, {**doc, "evidence": "everything"})
    assert not shadow_gate(debian_root, job).ok
    write_verdict(debian_root, job.id, legacy)
    assert shadow_gate(debian_root, job).ok


def test_gate_reads_the_ledger_document(debian_root: Path) -> None:
    ledger = pytest.importorskip("cronshift.ledger.store")
    job = job_at(debian_root, SYNC)
    with ledger.open_ledger(debian_root) as led:
        led.put("shadow-verdict", job.id, bound_parity(debian_root, job))
    gate = shadow_gate(debian_root, job)
    assert gate.ok and "ledger" in gate.source


def test_gate_does_not_create_a_ledger(debian_root: Path) -> None:
    shadow_gate(debian_root, job_at(debian_root, SYNC))
    assert not (debian_root / STATE).exists()


def test_force_requires_a_reason(debian_root: Path) -> None:
    before = snapshot(debian_root)
    code, _, err = cli("retire", SYNC, "--root", str(debian_root), "--force")
    assert code == 2 and "--reason" in err
    code, _, err = cli("retire", SYNC, "--root", str(debian_root), "--force", "--reason", "  ")
    assert code == 2
    assert snapshot(debian_root) == before
    plan = plan_retire(debian_root, job_at(debian_root, SYNC), now=NOW)
    with pytest.raises(RetireRefused, match="--reason"):
        apply_retire(debian_root, plan, now=NOW, forced=True, reason=None)
    assert snapshot(debian_root) == before


def test_forced_reason_is_recorded_in_the_edit_record(debian_root: Path) -> None:
    code, _, _ = cli(
        "retire", SYNC, "--root", str(debian_root), "--force", "--reason", "OPS-512 moved to celery"
    )
    assert code == 0
    (rec,) = EditJournal(debian_root).all()
    assert "forced" in rec.reason and "OPS-512 moved to celery" in rec.reason


# ---------------------------------------------------------------------------------------------------------
# The edit


def test_dry_run_prints_the_diff_and_changes_nothing(debian_root: Path) -> None:
    before = snapshot(debian_root)
    job = job_at(debian_root, SYNC)
    code, out, err = cli("retire", SYNC, "--root", str(debian_root), "--dry-run", "--now", "2026-11-25T10:00")
    assert code == 0
    line = (debian_root / "etc/cron.d/shop-sync").read_bytes().splitlines()[7].decode()
    assert f"-{line}" in out
    assert f"+#cronshift:retired id={job.id} date=2026-11-25 {line}" in out
    assert "gate" in err  # and it says the gate would refuse
    assert snapshot(debian_root) == before
    assert not (debian_root / STATE).exists()


def test_retire_changes_one_line_and_scan_shows_it_retired_under_the_same_id(debian_root: Path) -> None:
    path = debian_root / "etc/cron.d/shop-sync"
    old = path.read_bytes()
    job = job_at(debian_root, SYNC)
    code, _, _ = cli(
        "retire", SYNC, "--root", str(debian_root), "--force", "--reason", "t", "--now", "2026-11-25T10:00"
    )
    assert code == 0
    new = path.read_bytes()
    assert changed_lines(old, new) == [8]
    assert (
        ce.split_lines(new)[7]
        == b"#cronshift:retired id=%s date=2026-11-25 " % job.id.encode() + ce.split_lines(old)[7]
    )
    res = CliRunner().invoke(main_app, ["scan", "--root", str(debian_root), "--json"])
    doc = json.loads(res.stdout)
    (same,) = [j for j in doc["jobs"] if j["id"] == job.id]
    assert same["retired"] is True and same["runs"] is False
    assert same["source"] == {"path": "etc/cron.d/shop-sync", "line": 8}
    code, _, err = cli("retire", job.id, "--root", str(debian_root), "--force", "--reason", "again")
    assert code == 4 and "already retired" in err


def test_undo_restores_the_file_byte_for_byte(debian_root: Path) -> None:
    before = snapshot(debian_root)
    job = job_at(debian_root, SYNC)
    assert cli("retire", SYNC, "--root", str(debian_root), "--force", "--reason", "t")[0] == 0
    code, out, _ = cli("retire", "--undo", job.id, "--root", str(debian_root))
    assert code == 0 and f"restored {job.id}" in out
    assert snapshot(debian_root) == before
    assert list_retired(debian_root) == []
    assert by_id(debian_root, job.id).runs


def test_undo_keeps_changes_made_to_other_lines_since(debian_root: Path) -> None:
    path = debian_root / "etc/cron.d/shop-sync"
    original = path.read_bytes()
    job = job_at(debian_root, SYNC)
    assert cli("retire", SYNC, "--root", str(debian_root), "--force", "--reason", "t")[0] == 0
    lines = ce.split_lines(path.read_bytes())
    lines.insert(0, b"# added by ansible after the retire\n")  # the retired line moves down
    lines[-1] = lines[-1].replace(b"generate-sitemap", b"generate-sitemap --gzip")
    path.write_bytes(b"".join(lines))
    assert cli("retire", "--undo", job.id, "--root", str(debian_root))[0] == 0
    want = ce.split_lines(original)
    want.insert(0, b"# added by ansible after the retire\n")
    want[-1] = want[-1].replace(b"generate-sitemap", b"generate-sitemap --gzip")
    assert path.read_bytes() == b"".join(want)


def test_undo_refuses_when_the_retired_line_was_edited(debian_root: Path) -> None:
    path = debian_root / "etc/cron.d/shop-sync"
    job = job_at(debian_root, SYNC)
    assert cli("retire", SYNC, "--root", str(debian_root), "--force", "--reason", "t")[0] == 0
    edited = path.read_bytes().replace(b"--since 15m", b"--since 30m")
    path.write_bytes(edited)
    code, _, err = cli("retire", "--undo", job.id, "--root", str(debian_root))
    assert code == 4
    assert "edited or removed since; refusing to undo" in err and "etc/cron.d/shop-sync" in err
    assert path.read_bytes() == edited


def test_retire_refuses_a_file_changed_since_scan(debian_root: Path) -> None:
    job = job_at(debian_root, SYNC)
    path = debian_root / job.source.path
    path.write_bytes(path.read_bytes() + b"# someone else\n")
    with pytest.raises(EditRefused, match="changed since it was scanned"):
        plan_retire(debian_root, job, now=NOW)


def test_anacrontab_line_is_retired_and_restored(rhel_root: Path) -> None:
    before = snapshot(rhel_root)
    jobs = [j for j in scan(rhel_root).jobs if j.format is Format.ANACRONTAB]
    assert jobs
    job = jobs[0]
    assert cli("retire", job.id, "--root", str(rhel_root), "--force", "--reason", "t")[0] == 0
    after = by_id(rhel_root, job.id)
    assert after.retired and not after.runs and after.job_id == job.job_id
    assert cli("retire", "--undo", job.id, "--root", str(rhel_root))[0] == 0
    assert snapshot(rhel_root) == before


def test_list_shows_retired_jobs_with_backups(debian_root: Path) -> None:
    job = job_at(debian_root, SYNC)
    script = next(j for j in scan(debian_root).jobs if j.source.path == "etc/cron.daily/man-db")
    for ref, to in ((SYNC, "shop.tasks.sync_orders"), (script.id, "")):
        args = ["retire", ref, "--root", str(debian_root), "--force", "--reason", "t"]
        assert cli(*args, *(["--to", to] if to else []))[0] == 0
    code, out, _ = cli("retire", "--list", "--root", str(debian_root), "--json")
    assert code == 0
    rows = {r["job"]: r for r in json.loads(out)["retired"]}
    assert set(rows) == {job.id, script.id}
    backup = rows[job.id]["backup"]
    assert backup.startswith(f"{STATE}/backups/")
    backup_path = debian_root / backup
    assert (
        backup_path.read_bytes()
        == (Path(__file__).parent.parent / "fixtures/debian/etc/cron.d/shop-sync").read_bytes()
    )
    assert stat.S_IMODE(backup_path.stat().st_mode) == 0o600
    assert rows[job.id]["to"] == "shop.tasks.sync_orders"
    assert rows[script.id]["mode_before"] == "0755" and rows[script.id]["mode_after"] == "0644"
    code, out, _ = cli("retire", "--list", "--root", str(debian_root))
    assert code == 0 and job.id in out and script.id in out and "2 retired" in out


# ---------------------------------------------------------------------------------------------------------
# Run-parts scripts


@pytest.mark.parametrize("mode", [0o755, 0o710, 0o4750])
def test_run_parts_retire_and_undo_restore_the_exact_mode(debian_root: Path, mode: int) -> None:
    path = debian_root / "etc/cron.daily/man-db"
    os.chmod(path, mode)
    content = path.read_bytes()
    job = next(j for j in scan(debian_root).jobs if j.source.path == "etc/cron.daily/man-db")
    code, out, _ = cli("retire", job.id, "--root", str(debian_root), "--force", "--reason", "t")
    assert code == 0, out
    assert stat.S_IMODE(path.stat().st_mode) == mode & ~0o111
    assert path.read_bytes() == content
    later = next(j for j in scan(debian_root).jobs if j.source.path == "etc/cron.daily/man-db")
    assert not later.runs and later.id == job.id
    assert retired_scripts(debian_root)["etc/cron.daily/man-db"].job_id == job.id
    assert cli("retire", "--undo", job.id, "--root", str(debian_root))[0] == 0
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() == content
    assert retired_scripts(debian_root) == {}


def test_run_parts_undo_refuses_when_the_mode_changed_since(debian_root: Path) -> None:
    path = debian_root / "etc/cron.daily/man-db"
    job = next(j for j in scan(debian_root).jobs if j.source.path == "etc/cron.daily/man-db")
    assert cli("retire", job.id, "--root", str(debian_root), "--force", "--reason", "t")[0] == 0
    os.chmod(path, 0o600)
    code, _, err = cli("retire", "--undo", job.id, "--root", str(debian_root))
    assert code == 4 and "0600" in err and "refusing to undo" in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_run_parts_script_that_does_not_run_is_not_retired(debian_root: Path) -> None:
    job = next(j for j in scan(debian_root).jobs if j.source.path == "etc/cron.daily/shop-db-vacuum")
    os.chmod(debian_root / job.source.path, 0o644)
    with pytest.raises(RetireRefused, match="not executable"):
        plan_retire(debian_root, job, now=NOW)


def test_scan_shows_a_retired_run_parts_script_as_retired(debian_root: Path) -> None:
    job = next(j for j in scan(debian_root).jobs if j.source.path == "etc/cron.daily/man-db")
    assert cli("retire", job.id, "--root", str(debian_root), "--force", "--reason", "t")[0] == 0
    assert by_id(debian_root, job.id).retired


def test_retiring_one_of_identical_lines_keeps_every_id(tmp_path: Path) -> None:
    rel = "var/spool/cron/crontabs/alice"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes(b"*/5 * * * * /usr/bin/poll\n" * 3)
    jobs = scan(tmp_path).jobs
    assert len({j.id for j in jobs}) == 3
    apply_retire(tmp_path, plan_retire(tmp_path, jobs[1], now=NOW), now=NOW, forced=True, reason="t")
    after = scan(tmp_path).jobs
    assert [j.id for j in after] == [j.id for j in jobs]
    assert [j.retired for j in after] == [False, True, False]


# ---------------------------------------------------------------------------------------------------------
# The whole fixture server


@pytest.mark.parametrize("server", ["debian_root", "rhel_root"])
def test_retire_every_job_then_undo_every_job_gives_back_every_file(
    server: str, request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(server)
    before = snapshot(root)
    ids = [j.id for j in scan(root).jobs]
    retired, skipped = [], []
    # By place, not id: retiring the line that runs a run-parts folder takes the schedule (and so the
    # id) of the scripts in that folder with it, until it is undone.
    for where in [j.source for j in scan(root).jobs]:
        (job,) = [j for j in scan(root).jobs if j.source == where]  # fresh: each retire changes a digest
        try:
            plan = plan_retire(root, job, now=NOW)
        except RetireRefused as exc:
            assert not job.runs and "cron never runs" in exc.problem
            skipped.append(job.id)
            continue
        apply_retire(root, plan, now=NOW, forced=True, reason="fixture round trip")
        retired.append(job.id)
    assert len(retired) > 10
    assert all(not j.runs for j in scan(root).jobs)
    assert snapshot(root) != before
    assert {r.job_id for r in list_retired(root)} == set(retired)
    for job_id in reversed(retired[::2]):  # undo in an order unlike the retires
        undo_retire(root, job_id, now=NOW)
    for job_id in retired[1::2]:
        undo_retire(root, job_id, now=NOW)
    assert snapshot(root) == before
    assert list_retired(root) == []
    assert [j.id for j in scan(root).jobs] == ids


def test_a_job_cron_never_runs_is_not_retired(debian_root: Path) -> None:
    """Commenting out the newline-less last line of a file Debian ignores would make cron load that file
    and start its other jobs: retire refuses any job cron does not run, and changes nothing."""
    (job,) = [j for j in scan(debian_root).jobs if str(j.source) == "var/spool/cron/crontabs/postgres:13"]
    assert not job.runs
    before = snapshot(debian_root)
    with pytest.raises(RetireRefused, match="cron never runs"):
        plan_retire(debian_root, job, now=NOW)
    assert snapshot(debian_root) == before


# ---------------------------------------------------------------------------------------------------------
# Property: retire then undo is the identity, and retire changes exactly one line


_env = st.sampled_from(
    [b"SHELL=/bin/bash", b'MAILTO=""', b"PATH=/usr/bin:/bin", b"CRON_TZ=UTC", b"  X = 'y z' "]
)
_comment = st.sampled_from([b"# a comment", b"#", b"", b"   ", b"#0 * * * * old job", b"# caf\xe9 \xff"])
_schedule = st.sampled_from(
    [b"*/5 * * * *", b"0 3 * * mon-fri", b"@daily", b"15 2 1 jan,jul *", b"\t0\t1 * *  *"]
)
_cmd = st.one_of(
    st.sampled_from(
        [b"/bin/true", b"echo a%b%c", b"run-one /x >/dev/null 2>&1", b"caf\xe9 \xff\xfe", b"x  y"]
    ),
    st.binary(min_size=1, max_size=40).map(
        lambda b: b"/usr/bin/x " + b.replace(b"\n", b"").replace(b"\r", b"")
    ),
)
_job = st.tuples(_schedule, _cmd).map(lambda t: t[0] + b" " + t[1])


@st.composite
def crontabs(draw: st.DrawFn) -> tuple[bytes, Format]:
    fmt = draw(st.sampled_from([Format.USER, Format.SYSTEM]))
    lines = draw(st.lists(st.one_of(_env, _comment, _job, _job), min_size=1, max_size=12))
    if fmt is Format.SYSTEM:
        lines = [
            ln.replace(b" ", b" root ", 1) if ln[:1] in b"*@0\t1" and b"=" not in ln[:3] else ln
            for ln in lines
        ]
    lines.append(draw(_job).replace(b" ", b" root ", 1) if fmt is Format.SYSTEM else draw(_job))
    draw(st.randoms()).shuffle(lines)
    nl = draw(st.sampled_from([b"\n", b"\r\n"]))
    final = draw(st.booleans())
    return nl.join(lines) + (nl if final else b""), fmt


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crontabs(), st.data())
def test_retire_then_undo_is_the_identity(
    tmp_path: Path, case: tuple[bytes, Format], data: st.DataObject
) -> None:
    content, fmt = case
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    rel = "etc/crontab" if fmt is Format.SYSTEM else "var/spool/cron/crontabs/alice"
    (root / rel).parent.mkdir(parents=True)
    (root / rel).write_bytes(content)
    jobs = [j for j in scan(root).jobs if j.source.path == rel]
    event(f"jobs found: {bool(jobs)}")
    # Identical lines share an id plus a -N suffix that scan gives by position; retiring one of them
    # collides today (see test_retiring_one_of_identical_lines_keeps_every_id).
    assume(len({(j.user, j.schedule, j.command) for j in jobs}) == len(jobs))
    if not jobs:
        return  # every drawn job line happened to be rejected by cron (e.g. bad bytes): nothing to retire
    job = data.draw(st.sampled_from(jobs))
    if not job.runs:  # e.g. the file has no final newline, so Debian cron ignores it whole
        with pytest.raises(RetireRefused, match="cron never runs"):
            plan_retire(root, job, now=NOW)
        assert (root / rel).read_bytes() == content
        return
    plan = plan_retire(root, job, now=NOW)
    apply_retire(root, plan, now=NOW, forced=True, reason="property")
    retired = (root / rel).read_bytes()
    assert changed_lines(content, retired) == [job.source.line]
    again = [j for j in scan(root).jobs if j.id == job.id]
    assert len(again) == 1 and again[0].retired and not again[0].runs
    assert again[0].source == job.source and again[0].command == job.command
    undo_retire(root, job.id, now=NOW)
    assert (root / rel).read_bytes() == content


# ---------------------------------------------------------------------------------------------------------
# Killed half-way: the change is never in force without a record that --list shows and --undo reverses

_KILL = """
import os, sys
from datetime import datetime, timezone
from pathlib import Path
from cronshift.edit import crontab as crontab_edit, retire
from cronshift.discover.retired import retired_scripts
from cronshift.discover.scan import scan

root, where, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
job = next(j for j in scan(root).jobs if str(j.source) == where)
real_append = retire._append

def append(r, event):
    if event["event"] == step:
        os._exit(9)
    real_append(r, event)

retire._append = append
crontab_edit._after_step.append(lambda name: os._exit(9) if name == step else None)
now = datetime(2026, 11, 25, tzinfo=timezone.utc)
plan = retire.plan_retire(root, job, now=now)
retire.apply_retire(root, plan, now=now, forced=True, reason="killed")
"""


@pytest.mark.parametrize(("where", "step"), [(SYNC, "rename"), ("etc/cron.daily/man-db", "done")])
def test_a_retire_killed_after_the_change_is_listed_and_undone(
    debian_root: Path, where: str, step: str
) -> None:
    before = snapshot(debian_root)
    proc = subprocess.run([sys.executable, "-c", _KILL, str(debian_root), where, step], check=False)
    assert proc.returncode == 9
    assert snapshot(debian_root) != before  # the change happened, its "done" never got written
    (r,) = list_retired(debian_root)
    assert r.present and r.path == where.split(":")[0]
    undo_retire(debian_root, r.job_id, now=NOW)
    assert snapshot(debian_root) == before


def test_a_failed_mode_journal_puts_the_mode_back(debian_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cronshift.edit.retire as retire_mod

    path = debian_root / "etc/cron.daily/man-db"
    job = next(j for j in scan(debian_root).jobs if j.source.path == "etc/cron.daily/man-db")
    real = retire_mod._append

    def append(root: Path, event: dict[str, object]) -> None:
        if event["event"] == "done":
            raise OSError(28, "No space left on device")
        real(root, event)

    monkeypatch.setattr(retire_mod, "_append", append)
    with pytest.raises(EditRefused, match="No space left"):
        apply_retire(debian_root, plan_retire(debian_root, job, now=NOW), now=NOW, forced=True, reason="t")
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert list_retired(debian_root) == []


def test_retire_json_output(debian_root: Path) -> None:
    job = job_at(debian_root, SYNC)
    code, out, _ = cli(
        "retire", SYNC, "--root", str(debian_root), "--json", "--force", "--reason", "r", "--to", "t.x"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["job"] == job.id and doc["applied"] and doc["forced"] and doc["kind"] == "line"
    assert doc["gate"]["ok"] is False and doc["gate"]["missing"]
    assert doc["retirement"]["to"] == "t.x" and doc["retirement"]["backup"].startswith(STATE)
    assert doc["diff"].startswith("--- a/etc/cron.d/shop-sync")


def test_a_retired_job_is_not_ranked_as_pain(debian_root: Path) -> None:
    """A job moved off cron on purpose scores 0 and shows no next runs, though it keeps its id."""
    exe = Path(sys.executable).parent / "cronshift"

    def scan_json() -> dict:
        out = subprocess.run([exe, "scan", "--root", debian_root, "--json"], capture_output=True, check=True)
        return json.loads(out.stdout)

    top = scan_json()["jobs"][0]
    assert top["score"] > 0 and top["next"]
    subprocess.run(
        [exe, "retire", top["id"], "--root", debian_root, "--force", "--reason", "test"],
        capture_output=True,
        check=True,
    )
    (gone,) = [j for j in scan_json()["jobs"] if j["id"] == top["id"]]
    assert gone["retired"] and not gone["runs"]
    assert gone["score"] == 0 and gone["next"] == []
