"""Scan reads the bundled fixture servers exactly as their hand-checked readings say, including every job
cron will never run and why."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cronshift.discover.scan import RootUnreadable, scan
from cronshift.model import Format

from .conftest import FIXTURES


def expected(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.expected.json").read_text())


@pytest.mark.parametrize("name", ["debian", "rhel"])
def test_fixture_jobs_match_the_hand_checked_reading(name: str, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root, symlinks=True)
    exp = expected(name)["files"]
    result = scan(root)
    got = {(j.source.path, j.source.line): j for j in result.jobs}
    want = {(p, j["line"]): j for p, f in exp.items() for j in f.get("jobs", [])}
    assert sorted(want.keys() - got.keys(), key=str) == []
    assert sorted({k for k, j in got.items() if j.runs} - want.keys(), key=str) == []
    for key, w in want.items():
        j = got[key]
        assert j.schedule == w["schedule"], key
        if w.get("user"):
            assert j.user == w["user"], key
        if "runs" in w:
            assert j.runs == w["runs"], (key, j.why_not, w.get("why_not"))
    bad = {(p, n) for p, f in exp.items() for n in f.get("malformed_lines", [])}
    said = {(p.path, p.line) for p in result.problems}
    assert sorted(bad - said, key=str) == []
    disabled = {(p, n) for p, f in exp.items() for n in f.get("disabled_lines", [])}
    assert {(j.source.path, j.source.line) for j in result.disabled} == disabled


def test_never_runs_reasons_are_said(debian_root: Path) -> None:
    result = scan(debian_root)
    by = {str(j.source): j for j in result.jobs}
    assert any("name 'backup.sh'" in w for w in by["etc/cron.d/backup.sh:2"].why_not)
    never = [j for j in result.jobs if any("can never fire" in w for w in j.why_not)]
    assert never and all("February" in " ".join(j.why_not) for j in never)
    assert "not executable" in " ".join(by["etc/cron.daily/shop-db-vacuum"].why_not)


def test_group_writable_cron_d_file_is_refused(debian_root: Path) -> None:
    target = debian_root / "etc/cron.d/certbot"
    before = {j.id for j in scan(debian_root).jobs if j.source.path == "etc/cron.d/certbot" and j.runs}
    assert before
    os.chmod(target, 0o664)
    after = [j for j in scan(debian_root).jobs if j.source.path == "etc/cron.d/certbot"]
    assert after and not any(j.runs for j in after)
    assert "writable" in after[0].why_not[0]


def test_unreadable_file_is_a_problem_and_the_scan_goes_on(debian_root: Path) -> None:
    victim = debian_root / "etc/cron.d/php"
    victim.unlink()
    victim.mkdir()  # a directory where a file was: reading fails, scanning continues
    (debian_root / "etc/cron.d/zz-broken").symlink_to("/nonexistent/target")
    result = scan(debian_root)
    assert any(p.path == "etc/cron.d/zz-broken" and "cannot read" in p.message for p in result.problems)
    assert any(j.source.path == "etc/cron.d/shop-sync" for j in result.jobs)


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(RootUnreadable):
        scan(tmp_path / "nope")


def test_ids_are_stable_and_unique(debian_root: Path) -> None:
    a, b = scan(debian_root), scan(debian_root)
    assert [j.id for j in a.jobs] == [j.id for j in b.jobs]
    assert len({j.id for j in a.jobs}) == len(a.jobs)


def test_rhel_cronie_semantics(rhel_root: Path) -> None:
    result = scan(rhel_root)
    assert result.dialect == "cronie"
    assert result.system_timezone == "America/Chicago"
    tz_jobs = [j for j in result.jobs if j.timezone]
    assert tz_jobs and all(j.timezone == "America/New_York" for j in tz_jobs)
    assert any(j.no_log for j in result.jobs)
    ana = [j for j in result.jobs if j.format is Format.ANACRONTAB]
    assert ana and all(j.job_id for j in ana)


def test_spool_of_a_user_missing_from_passwd_never_runs(debian_root: Path) -> None:
    spool = debian_root / "var/spool/cron/crontabs/ghost"
    spool.write_bytes(b"*/10 * * * * /usr/bin/true\n")
    result = scan(debian_root)
    (job,) = [j for j in result.jobs if j.source.path == "var/spool/cron/crontabs/ghost"]
    assert not job.runs and "user 'ghost' does not exist" in job.why_not[0]
    assert any(p.path == "var/spool/cron/crontabs/ghost" and p.line is None for p in result.problems)


def test_without_passwd_users_are_not_judged(debian_root: Path) -> None:
    """A copied tree without etc/passwd says nothing about users rather than guessing they are missing."""
    (debian_root / "etc/passwd").unlink()
    result = scan(debian_root)
    assert not any("does not exist in etc/passwd" in p.message for p in result.problems)
    assert any(j.source.path == "etc/cron.d/shop-reports" for j in result.jobs)
