"""Scan under a hostile /etc: pipes, devices, sockets, link loops, links out of --root, odd names and modes.

It must finish, never open what is not a regular file, never read outside the root, and account for every
entry of every cron folder: each is either a source or a problem line."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronshift.discover.scan import scan

FOLDERS = ("etc/cron.d", "var/spool/cron/crontabs", "etc/cron.daily")
JOB = b"*/5 * * * * root /usr/local/bin/job\n"


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: a blocking open() of a FIFO is interrupted by the alarm."""

    def boom(signum: int, frame: object) -> None:
        raise TimeoutError(f"scan did not finish within {seconds}s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _tree(root: Path) -> Path:
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/cron.d/good").write_bytes(JOB)
    return root


def test_a_named_pipe_in_cron_d_is_reported_not_opened(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r")
    os.mkfifo(root / "etc/cron.d/pipe")
    with deadline(20):
        result = scan(root)
    assert [j.source.path for j in result.jobs] == ["etc/cron.d/good"]
    assert any(p.path == "etc/cron.d/pipe" and "named pipe" in p.message for p in result.problems)


def test_a_socket_and_a_directory_in_cron_d_are_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r")
    (root / "etc/cron.d/sub").mkdir()
    # AF_UNIX paths are limited to ~108 bytes: bind in a short temp dir, then move the socket into the tree.
    short = Path(tempfile.mkdtemp(prefix="cs"))
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(short / "s"))
            os.rename(short / "s", root / "etc/cron.d/sock")
    finally:
        shutil.rmtree(short)
    result = scan(root)
    msgs = {p.path: p.message for p in result.problems}
    assert "socket" in msgs["etc/cron.d/sock"]
    assert "directory" in msgs["etc/cron.d/sub"]


def test_a_symlink_loop_in_cron_d_hides_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r")
    os.symlink("loop-b", root / "etc/cron.d/loop-a")
    os.symlink("loop-a", root / "etc/cron.d/loop-b")
    result = scan(root)
    assert [j.source.path for j in result.jobs] == ["etc/cron.d/good"]
    loops = [p for p in result.problems if p.path.startswith("etc/cron.d/loop-")]
    assert len(loops) == 2 and all("loop" in p.message for p in loops)


def test_cron_d_itself_a_symlink_loop_is_a_problem_not_an_empty_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r")
    shutil.rmtree(root / "etc/cron.d")
    os.symlink("cron.d", root / "etc/cron.d")
    result = scan(root)
    assert any(p.path == "etc/cron.d" and "loop" in p.message for p in result.problems)


def test_an_unlistable_folder_is_a_problem(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root reads a 000 folder anyway; a file where the folder should be fails for everyone
        root = _tree(tmp_path / "r")
        (root / "var/spool/cron").mkdir(parents=True)
        (root / "var/spool/cron/crontabs").write_text("not a folder\n")
        result = scan(root)
        assert any(p.path == "var/spool/cron/crontabs" for p in result.problems)
        return
    root = _tree(tmp_path / "r")
    (root / "etc/cron.d").chmod(0)
    try:
        result = scan(root)
    finally:
        (root / "etc/cron.d").chmod(0o755)
    assert any(p.path == "etc/cron.d" and "cannot list" in p.message for p in result.problems)


def test_links_out_of_the_root_are_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "crontab").write_bytes(JOB)
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nmallory:x:7:7::/:/bin/sh\n")
    root = _tree(tmp_path / "r")
    os.symlink(outside / "crontab", root / "etc/cron.d/evil")
    os.symlink(outside / "crontab", root / "etc/crontab")
    (root / "var/spool/cron/crontabs").mkdir(parents=True)
    os.symlink("../../../../../outside/crontab", root / "var/spool/cron/crontabs/root")
    (root / "etc/passwd").unlink()
    os.symlink(outside / "passwd", root / "etc/passwd")
    result = scan(root)
    assert [j.source.path for j in result.jobs] == ["etc/cron.d/good"]
    out = {p.path: p.message for p in result.problems}
    for rel in ("etc/cron.d/evil", "etc/crontab", "var/spool/cron/crontabs/root", "etc/passwd"):
        assert "outside --root" in out[rel], (rel, out)


def test_links_inside_the_root_are_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r")
    (root / "opt").mkdir()
    (root / "opt/app.cron").write_bytes(JOB)
    os.symlink("../../opt/app.cron", root / "etc/cron.d/app")
    result = scan(root)
    assert sorted(j.source.path for j in result.jobs) == ["etc/cron.d/app", "etc/cron.d/good"]


def test_a_writer_temp_file_is_never_a_crontab(tmp_path: Path) -> None:
    """A temp file left by a killed edit must not become a job, nor take the real job's id."""
    root = _tree(tmp_path / "r")
    first = {j.source.path: j.id for j in scan(root).jobs}
    (root / "etc/cron.d/.cronshift-tmp-0123456789ab").write_bytes(JOB)
    result = scan(root)
    assert {j.source.path: j.id for j in result.jobs} == first
    assert any(".cronshift-tmp-" in p.path for p in result.problems)


NAMES = st.one_of(
    st.sampled_from(["a", "job", "x.sh", ".hidden", "b~", "c.dpkg-old", "with space", "nl\nname", "ü", "-"]),
    st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
)
KINDS = st.sampled_from(["file", "file", "fifo", "dir", "link-sib", "link-self", "link-out", "dangling"])
ENTRY = st.tuples(st.sampled_from(FOLDERS), NAMES, KINDS, st.sampled_from([0o644, 0o000, 0o777, 0o600]))


def _odd_name(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    return raw if raw not in (".", "..") else raw + "_"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(ENTRY, max_size=10), content=st.binary(max_size=80))
def test_random_hostile_trees_finish_and_hide_nothing(tmp_path: Path, entries: list, content: bytes) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    root = base / "root"
    for f in FOLDERS:
        (root / f).mkdir(parents=True, exist_ok=True)
    (base / "outside").write_bytes(JOB)
    made: dict[str, set[str]] = {f: set() for f in FOLDERS}
    for folder, raw, kind, mode in entries:
        name = _odd_name(raw)
        p = root / folder / name
        if os.path.lexists(p):
            continue
        if kind == "file":
            p.write_bytes(content)
            p.chmod(mode)
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
        elif kind == "link-sib":
            os.symlink(next(iter(made[folder]), "missing"), p)
        elif kind == "link-self":
            os.symlink(name, p)
        elif kind == "link-out":
            os.symlink(base / "outside", p)
        else:
            os.symlink("/nonexistent/x", p)
        made[folder].add(name)
    try:
        with deadline(30):
            result = scan(root)
    finally:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
    files = set(result.files)
    problems = {p.path for p in result.problems}
    for folder, names in made.items():
        for name in names:
            rel = f"{folder}/{name}"
            if name == ".placeholder":
                continue
            assert rel in files or rel in problems, (rel, result.problems)
    for j in result.jobs:
        assert j.source.path in files


def test_etc_crontab_a_named_pipe_is_reported_not_opened(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r")
    os.mkfifo(root / "etc/crontab")
    with deadline(20):
        result = scan(root)
    assert "etc/crontab" not in result.files
    assert any(p.path == "etc/crontab" and "named pipe" in p.message for p in result.problems)


def test_debians_spool_folders_are_not_reported_as_odd_entries(debian_root: Path) -> None:
    """var/spool/cron holds Debian's crontabs/ (and atjobs/) folders: expected there, not a problem."""
    assert not [p for p in scan(debian_root).problems if p.path == "var/spool/cron/crontabs"]
