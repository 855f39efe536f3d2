"""Every user error is one line and a documented exit code (2 usage, 1 failed operation, 4 refused), never a
traceback: a list of bad inputs runs against every command as a user would type them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cronshift.discover.scan import scan

from .conftest import FIXTURES

SYNC = "etc/cron.d/shop-sync:8"


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad")
    root = base / "debian"
    shutil.copytree(FIXTURES / "debian", root, symlinks=True)
    tz = base / "tz"
    shutil.copytree(FIXTURES / "debian", tz, symlinks=True)
    (tz / "etc/timezone").write_text("Mars/Olympus_Mons\n")
    afile = base / "a-file"
    afile.write_text("x\n")
    return {"root": root, "tz": tz, "file": afile, "out": base / "out"}


def cronshift(*args: str | Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "LANG": "C.UTF-8"}
    env |= extra_env or {}
    return subprocess.run(
        [sys.executable, "-m", "cronshift", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd="/",
    )


def job_id(root: Path, where: str = SYNC) -> str:
    return next(j.id for j in scan(root).jobs if str(j.source) == where)


# (args, expected exit code); {root}, {tz}, {file} and {id} are filled in from the trees above.
BAD = [
    (["scan", "--root", "/nonexistent/root"], 1),
    (["scan", "--root", "{file}"], 1),
    (["scan", "--root", "{root}", "--since", "garbage"], 2),
    (["scan", "--json", "--root", "{tz}"], 0),
    (["show", "{id}", "--root", "{root}", "--now", "garbage"], 2),
    (["show", "{id}", "--root", "{root}", "--last", "-1", "--no-history"], 2),
    (["show", "no-such-job", "--root", "{root}"], 2),
    (["status", "--root", "/nonexistent/root"], 1),
    (["status", "--root", "{root}", "--stage", "bogus"], 2),
    (["status", "--root", "{root}", "--project", "/nonexistent/project"], 2),
    (["report", "--root", "{root}", "--no-history", "--html", "/nonexistent/dir/r.html"], 1),
    (["show", "{id}", "--root", "{tz}", "--no-history"], 0),
    (["show", "{id}", "--root", "{tz}", "--json", "--no-history"], 0),
    (["generate", "{id}", "--root", "{root}", "--out", "{file}", "--no-history"], 2),
    (["generate", "{id}", "--root", "{root}", "--out", "/proc/cronshift-out", "--no-history"], 1),
    (["generate", "{id}", "--root", "{root}", "--out", "{file}/sub", "--no-history"], 1),
    (["generate", "{id}", "--root", "{root}", "--now", "garbage", "--out", "{out}", "--no-history"], 2),
    (["generate", "{id}", "--root", "{root}", "--package", "class", "--out", "{out}"], 2),
    (["generate", "{id}", "--root", "{root}", "--package", "a.b-c", "--out", "{out}"], 2),
    (["generate", "{id}", "--root", "{root}", "--broker", "ftp://x", "--out", "{out}"], 2),
    (["generate", "{id}", "--root", "{root}", "--broker", "not a url", "--out", "{out}"], 2),
    (["generate", "--root", "{root}", "--out", "{out}"], 2),
    (["generate", "{id}", "--all", "--root", "{root}", "--out", "{out}"], 2),
    (["shadow-run", "no-such-job", "--root", "{root}"], 2),
    (["shadow-run", "{id}", "--root", "{root}", "--now", "garbage", "--mode", "dry-run"], 2),
    (["retire", "{id}", "--root", "{root}", "--now", "garbage"], 2),
    (["retire", "--undo", "no-such-job", "--root", "{root}"], 4),
    (["retire", "--list", "--undo", "{id}", "--root", "{root}"], 2),
    (["retire", "{id}", "--undo", "--force", "--reason", "x", "--root", "{root}"], 2),
    (["retire", "{id}", "--dry-run", "--undo", "--root", "{root}"], 2),
    (["retire", "--root", "{root}"], 2),
    (["retire", "no-such-job", "--root", "{root}"], 2),
    (["wrap", "no-such-job", "--root", "{root}"], 2),
    (["unwrap", "{id}", "--root", "{root}"], 4),
    (["dead-letters", "--replay", "nope", "--list"], 2),
    (["dead-letters", "--replay", "nope", "--broker", "ftp://x", "--root", "{root}"], 2),
    (["shadow-run", "{id}", "--root", "{root}", "--broker", "ftp://x", "--mode", "dry-run"], 2),
    (["no-such-command"], 2),
]


@pytest.mark.parametrize(("args", "code"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_an_exit_code(trees: dict[str, Path], args: list[str], code: int) -> None:
    fill = {k: str(v) for k, v in trees.items()} | {"id": job_id(trees["root"])}
    proc = cronshift(*(a.format(**fill) for a in args))
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    if code:
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert lines, "an error must say what is wrong"
        assert any(x.startswith(("cronshift: ", "Usage:", "Error", "Try", "│", "╭", "╰")) for x in lines)


def test_an_unknown_zone_is_a_warning_not_a_crash(trees: dict[str, Path]) -> None:
    proc = cronshift("scan", "--root", trees["tz"], "--no-history")
    assert proc.returncode == 0
    assert "Mars/Olympus_Mons" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Path:
    """A copy of the fixture tree on a 1 MiB tmpfs that is then filled up (root only: it mounts)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        root = mnt / "root"
        for rel in ("etc/cron.d", "etc/passwd", "etc/os-release", "etc/timezone"):
            src = FIXTURES / "debian" / rel
            if src.is_dir():
                shutil.copytree(src, root / rel, symlinks=True)
            elif src.exists():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, root / rel)
        (root / "var/lib/cronshift").mkdir(parents=True)
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last block
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield root
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_retire_on_a_full_disk_fails_in_one_line_and_changes_nothing(full_disk: Path) -> None:
    before = (full_disk / "etc/cron.d/shop-sync").read_bytes()
    proc = cronshift("retire", job_id(full_disk), "--root", full_disk, "--force", "--reason", "disk full")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (1, 4), proc.stderr
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1, proc.stderr
    assert (full_disk / "etc/cron.d/shop-sync").read_bytes() == before


def test_generate_all_schedules_each_run_parts_script_once(tmp_path: Path) -> None:
    """The script under its own id, and not also the crontab/anacrontab line that runs its folder."""
    root = tmp_path / "r"
    for d in ("etc/cron.hourly", "etc/cron.daily", "etc/cron.d"):
        (root / d).mkdir(parents=True)
    (root / "etc/crontab").write_text(
        "17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
        "25 6 * * * root test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }\n"
    )
    (root / "etc/anacrontab").write_text("1 5 cron.daily run-parts --report /etc/cron.daily\n")
    (root / "etc/cron.d/app").write_text("*/5 * * * * root /usr/bin/true\n")
    for script in ("etc/cron.hourly/rotate", "etc/cron.daily/clean"):
        (root / script).write_text("#!/bin/sh\n")
        (root / script).chmod(0o755)
    proc = cronshift("generate", "--all", "--root", root, "--out", tmp_path / "out", "--no-history", "--json")
    assert proc.returncode in (0, 3), proc.stderr
    ids = {j["id"] for j in json.loads(proc.stdout)["jobs"]}
    jobs = {str(j.source): j.id for j in scan(root).jobs}
    assert ids == {jobs["etc/cron.hourly/rotate"], jobs["etc/cron.daily/clean"], jobs["etc/cron.d/app:1"]}


@pytest.mark.parametrize(
    "args",
    [["scan", "--json"], ["show", "{id}", "--no-history"], ["show", "{id}", "--json", "--no-history"],
     ["generate", "{id}", "--no-history", "--out", "{out}"]],
)  # fmt: skip
def test_a_host_without_a_time_zone_database_is_no_crash(
    trees: dict[str, Path], tmp_path: Path, args: list[str]
) -> None:
    """zoneinfo finds no zone at all (an empty TZPATH and no tzdata package): UTC, with a warning."""
    fill = {k: str(v) for k, v in trees.items()} | {"id": job_id(trees["root"]), "out": str(tmp_path)}
    proc = cronshift(
        *(a.format(**fill) for a in args), "--root", trees["root"], extra_env={"PYTHONTZPATH": str(tmp_path)}
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if args[0] == "generate":  # Celery itself needs a zone, even UTC: one line saying what to install
        assert proc.returncode == 1 and "no time-zone database" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 30  # scan's problem lines, then the error
    else:
        assert proc.returncode == 0, proc.stderr
