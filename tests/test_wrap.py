"""`cronshift wrap` / `unwrap` on real files: only the wrapper words change; unwrap gives the line back."""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cronshift.discover.scan import scan
from cronshift.edit import crontab as ce
from cronshift.edit.wrap import (
    SHIM_DIR,
    WrapRefused,
    apply_plan,
    not_simple,
    plan_unwrap,
    plan_wrap,
    resolve_wrapper,
)
from cronshift.ledger.store import open_ledger
from cronshift.model import CronJob, Format
from tests.support.install import installed_python, shared_tmp
from tests.support.users import throwaway_user

from .conftest import FIXTURES, copy_tree
from .test_retire import NOW, changed_lines
from .test_retire import cli as _cli
from .test_retire import snapshot as _snapshot

SYNC = "etc/cron.d/shop-sync:8"
__all__ = ["installed_python", "throwaway_user"]
PYTHON: list[str] = []  # the python of a regular install every user can run (set per test)


@pytest.fixture(autouse=True)
def _regular_install(installed_python: str) -> None:
    PYTHON[:] = [installed_python]


def cli(*args: str) -> tuple[int, str, str]:
    """The CLI; `wrap` is pointed at the regular install (this checkout's venv may sit under /root)."""
    if args[0] == "wrap":
        args = (*args, "--python", PYTHON[0])
    return _cli(*args)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """The root's files, without the wrapper `wrap` installs (it stays for the other wrapped lines)."""
    return {k: v for k, v in _snapshot(root).items() if not k.startswith(SHIM_DIR)}


@pytest.fixture
def debian_root() -> Iterator[Path]:
    with shared_tmp("cs-wrap-") as base:
        yield copy_tree(FIXTURES / "debian", base / "debian")


def shim(root: Path) -> str:
    (path,) = Path(root, SHIM_DIR).glob("py-*/cronshift")
    return str(path)


def job_at(root: Path, path: str, line: int) -> CronJob:
    (j,) = [j for j in scan(root).jobs if j.source.path == path and j.source.line == line]
    return j


def test_wrap_inserts_the_wrapper_in_front_of_the_command_and_unwrap_takes_it_off(debian_root: Path) -> None:
    before = snapshot(debian_root)
    path = debian_root / "etc/cron.d/shop-sync"
    old = path.read_bytes()
    job = job_at(debian_root, "etc/cron.d/shop-sync", 8)
    code, out, _ = cli("wrap", SYNC, "--root", str(debian_root))
    words = f"{shim(debian_root)} record --root {debian_root} --job"
    assert code == 0 and f"+*/5 * * * *\twww-data\t{words}" in out
    new = path.read_bytes()
    assert changed_lines(old, new) == [8]
    line = ce.split_lines(new)[7]
    assert line == ce.split_lines(old)[7].replace(
        b"www-data\tflock", f"www-data\t{words} {job.id}".encode() + b" -- flock"
    )
    wrapped = job_at(debian_root, "etc/cron.d/shop-sync", 8)
    assert [w.kind for w in wrapped.wrappers][:2] == ["cronshift-record", "flock"]
    assert dict(wrapped.wrappers[0].args)["job"] == job.id  # runs are recorded under the id it had
    assert wrapped.inner_command == job.inner_command and wrapped.schedule == job.schedule
    code, _, err = cli("wrap", wrapped.id, "--root", str(debian_root))
    assert code == 4 and "already wrapped" in err
    assert path.read_bytes() == new
    assert cli("unwrap", wrapped.id, "--root", str(debian_root))[0] == 0
    assert snapshot(debian_root) == before
    code, _, err = cli("unwrap", job.id, "--root", str(debian_root))
    assert code == 4 and "not wrapped" in err


def test_a_wrapped_job_keeps_its_id(debian_root: Path) -> None:
    job = job_at(debian_root, "etc/cron.d/shop-sync", 8)
    assert cli("wrap", SYNC, "--root", str(debian_root))[0] == 0
    wrapped = job_at(debian_root, "etc/cron.d/shop-sync", 8)
    assert wrapped.id == job.id
    assert cli("unwrap", job.id, "--root", str(debian_root))[0] == 0  # found by the same id
    assert job_at(debian_root, "etc/cron.d/shop-sync", 8).id == job.id


def test_wrap_dry_run_and_store_option(debian_root: Path) -> None:
    before = snapshot(debian_root)
    code, out, _ = cli(
        "wrap", SYNC, "--root", str(debian_root), "--dry-run", "--store", "/var/lib/my ledger.db"
    )
    assert code == 0 and "--store '/var/lib/my ledger.db' -- flock" in out
    assert _snapshot(debian_root) == before  # nothing written, not even the wrapper shim
    assert not (debian_root / SHIM_DIR).exists() and not (debian_root / "var/spool/cronshift").exists()
    code, _, err = cli("wrap", SYNC, "--root", str(debian_root), "--redis", "redis://h/0?x=%41")
    assert code == 4 and "'%'" in err
    assert snapshot(debian_root) == before


def test_wrap_keeps_percent_stdin_and_escapes(debian_root: Path) -> None:
    before = snapshot(debian_root)
    spool = "var/spool/cron/crontabs/deploy"
    for n in (12, 14):  # mail with a %-stdin body; a log name with \%
        job = job_at(debian_root, spool, n)
        assert cli("wrap", f"{spool}:{n}", "--root", str(debian_root))[0] == 0
        wrapped = job_at(debian_root, spool, n)
        assert wrapped.stdin == job.stdin
        words = f"{shim(debian_root)} record --root {debian_root} --job {job.id}"
        assert wrapped.shell_command == f"{words} -- {job.shell_command}"
        assert cli("unwrap", f"{spool}:{n}", "--root", str(debian_root))[0] == 0
    assert snapshot(debian_root) == before


def test_wrap_refuses_what_the_wrapper_cannot_run(debian_root: Path) -> None:
    before = snapshot(debian_root)
    code, _, err = cli("wrap", "etc/crontab:18", "--root", str(debian_root))
    assert code == 4 and "`cd`" in err and "script" in err
    script = next(j for j in scan(debian_root).jobs if j.format is Format.RUN_PARTS)
    code, _, err = cli("wrap", script.id, "--root", str(debian_root))
    assert code == 4 and "run-parts" in err
    assert snapshot(debian_root) == before


def test_an_anacrontab_line_can_be_wrapped(debian_root: Path) -> None:
    before = snapshot(debian_root)
    job = next(j for j in scan(debian_root).jobs if j.format is Format.ANACRONTAB)
    assert cli("wrap", job.id, "--root", str(debian_root))[0] == 0
    wrapped = job_at(debian_root, job.source.path, job.source.line or 0)
    assert wrapped.job_id == job.job_id and wrapped.schedule == job.schedule
    words = f"{shim(debian_root)} record --root {debian_root} --job {job.id}"
    assert wrapped.command.startswith(f"{words} -- run-parts")
    assert cli("unwrap", f"{job.source}", "--root", str(debian_root))[0] == 0
    assert snapshot(debian_root) == before


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("/usr/bin/x --a 'b; c' >> /log 2>&1", None),
        ('/x "$(date +%s; echo)" | tee', "pipeline"),
        ("/x $(a | b) > /dev/null # note; with & and |", None),
        ("/x && /y", "`&`"),
        ("/x; /y", "`;`"),
        ("(cd /tmp; ls)", "subshell"),
        ("cd / && run-parts /etc/cron.daily", "`cd`"),
        ("FOO=bar /x", "assignment"),
        ("/x &> /log", "background"),
        ("/x `a; b`", None),
    ],
)
def test_simple_commands_only(command: str, why: str | None) -> None:
    got = not_simple(command)
    assert (got is None) if why is None else (got is not None and why in got)


_schedule = st.sampled_from([b"*/5 * * * *", b"@daily", b"\t0\t1 * *  mon", b"-0 3 * * *"])
_cmd = st.one_of(
    st.sampled_from(
        [b"/bin/true", b"/x a%b%c", b"/x >/dev/null 2>&1", b"caf\xe9 \xff\xfe", b"  /x  y", b"/x \\%Y"]
    ),
    st.text("abc/ -_.=\\%'\"", min_size=1, max_size=30).map(lambda t: b"/usr/bin/x " + t.encode()),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from([b"SHELL=/bin/sh", b"# c", b"", b"0 1 * * * /bin/other"]), max_size=5),
    _schedule,
    _cmd,
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
    st.sampled_from([Format.USER, Format.SYSTEM]),
)
def test_wrap_then_unwrap_is_the_identity(
    tmp_path: Path, others: list[bytes], sched: bytes, cmd: bytes, nl: bytes, final: bool, fmt: Format
) -> None:
    line = sched + (b"\troot  " if fmt is Format.SYSTEM else b" ") + cmd
    content = nl.join([*others, line]) + (nl if final else b"")
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    rel = "etc/crontab" if fmt is Format.SYSTEM else "var/spool/cron/crontabs/alice"
    (root / rel).parent.mkdir(parents=True)
    (root / rel).write_bytes(content)
    if sched.startswith(b"-"):  # cronie syntax: make the root a cronie one
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/redhat-release").write_bytes(b"Rocky Linux release 9.4\n")
    n = len(others) + 1
    jobs = [j for j in scan(root).jobs if j.source.path == rel and j.source.line == n]
    event(f"job parsed: {bool(jobs)}")
    if not jobs:
        return
    (job,) = jobs
    try:
        plan = plan_wrap(root, job, wrapper="/opt/cronshift/bin/cronshift")  # proved elsewhere
    except WrapRefused as exc:
        event("refused")
        assert not_simple(job.shell_command) is not None, exc
        return
    apply_plan(root, plan, now=NOW)
    wrapped = (root / rel).read_bytes()
    assert changed_lines(content, wrapped) == [n]
    assert ce.split_lines(wrapped)[n - 1].endswith(ce.split_lines(content)[n - 1][-2:])  # CR/LF kept
    again = job_at(root, rel, n)
    assert again.wrappers[0].kind == "cronshift-record" and dict(again.wrappers[0].args)["job"] == job.id
    assert again.id == job.id
    assert again.stdin == job.stdin and again.schedule == job.schedule and again.user == job.user
    apply_plan(root, plan_unwrap(root, again), now=NOW)
    assert (root / rel).read_bytes() == content


JOB_SH = """#!/bin/sh
echo "out $1 $(id -un)"
env | grep '^PYTHON' | sort
echo "err" >&2
exit 3
"""


def cron_run(
    command: str, env: dict[str, str], user: pwd.struct_passwd
) -> subprocess.CompletedProcess[bytes]:
    """Run a crontab command as cron does: `env -i` plus cron's variables and the line's, /bin/sh -c, the
    job's user, no terminal, stdout and stderr on one pipe."""
    base = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "HOME": user.pw_dir, "LOGNAME": user.pw_name}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=base | env,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd=user.pw_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        timeout=60,
        check=False,
    )


def test_a_wrapped_line_runs_as_cron_runs_it(throwaway_user: pwd.struct_passwd) -> None:
    """Cron's PATH has no venv, pipx or /usr/local/bin in it, and the job's environment may hold PYTHON*
    variables meant for the job: the wrapped line must still run the job, byte for byte as bare."""
    user = throwaway_user
    with shared_tmp("cs-cron-") as base:
        root = base / "root"
        app = base / "app"  # an app whose module would shadow the wrapper's `select`
        app.mkdir()
        (app / "select.py").write_text("raise SystemExit('the wrong select')\n")
        job = base / "job.sh"
        job.write_text(JOB_SH)
        job.chmod(0o755)
        assigns = {
            "PYTHONHOME": "/nonexistent",
            "PYTHONPATH": str(app),
            "PYTHONINSPECT": "1",
            "PYTHONVERBOSE": "1",
        }
        crontab = "".join(f"{k}={v}\n" for k, v in assigns.items())
        crontab += f"* * * * * {user.pw_name} {job} arg\n"
        (root / "etc/cron.d").mkdir(parents=True)
        (root / "etc/cron.d/job").write_text(crontab)
        bare = cron_run(f"{job} arg", assigns, user)
        assert bare.returncode == 3 and b"out arg " + user.pw_name.encode() in bare.stdout

        # What wrap wrote before: a bare `cronshift`, not on cron's PATH.
        old = cron_run(f"cronshift record --root {root} -- {job} arg", assigns, user)
        assert old.returncode == 127

        code, _, err = cli("wrap", "etc/cron.d/job:5", "--root", str(root))
        assert code == 0, err
        (wrapped,) = scan(root).jobs
        assert wrapped.shell_command.startswith("/") and f"--root {root}" in wrapped.shell_command
        got = cron_run(wrapped.shell_command, assigns, user)
        assert (got.returncode, got.stdout) == (bare.returncode, bare.stdout)


def test_wrap_refuses_a_wrapper_the_jobs_user_cannot_run(throwaway_user: pwd.struct_passwd) -> None:
    """A cronshift only root can reach (pipx in /root, a venv in a private home) would make the line exit
    127 for another user: wrap says how to install instead, and writes nothing."""
    user = throwaway_user
    with shared_tmp("cs-cron-") as base, tempfile.TemporaryDirectory() as private:
        os.chmod(private, 0o700)
        hidden = Path(private, "python3")
        hidden.symlink_to(sys.executable)
        root = base / "root"
        (root / "etc/cron.d").mkdir(parents=True)
        (root / "etc/cron.d/job").write_text(f"* * * * * {user.pw_name} /bin/true\n")
        (job,) = scan(root).jobs
        with pytest.raises(WrapRefused) as exc:
            resolve_wrapper(root, job, interpreters=[str(hidden)])
        msg = str(exc.value)
        assert "pipx install" in msg and "/usr/local/bin" in msg and user.pw_name in msg
        assert "\n" not in msg
        assert (root / "etc/cron.d/job").read_text() == f"* * * * * {user.pw_name} /bin/true\n"


FILE_JOB_SH = """#!/bin/sh
# what the job sees on stdout: its type and inode (the shell's own fd 1), and whether that fd can seek
echo "stdout: $(stat -L -c '%F %i' /proc/$$/fd/1); log: $(stat -c %i "$1")"
/usr/bin/python3 -c 'import os; os.lseek(1, 0, 2)' 2>/dev/null && echo seekable || echo unseekable
tr '\\0' '\\n' < /proc/$$/environ | sort
echo "err" >&2
exit 3
"""


@pytest.mark.parametrize("digest", [False, True])
def test_a_wrapped_line_that_redirects_to_a_file_gives_the_job_its_file(
    throwaway_user: pwd.struct_passwd, digest: bool
) -> None:
    """`job >> log 2>&1` run by cron: bare, the job writes to its log (a regular file it can fstat and
    seek). Wrapped, it must still, byte for byte, unless the line asks for a digest (live shadow-run)."""
    user = throwaway_user
    with shared_tmp("cs-cron-") as base:
        root = base / "root"
        job = base / "job.sh"
        job.write_text(FILE_JOB_SH)
        job.chmod(0o755)
        logs = base / "logs"
        logs.mkdir()
        os.chown(logs, user.pw_uid, user.pw_gid)
        log = logs / "x.log"
        line = f"{job} {log} >> {log} 2>&1"
        (root / "etc/cron.d").mkdir(parents=True)
        (root / "etc/cron.d/job").write_text(f"* * * * * {user.pw_name} {line}\n")

        bare = cron_run(line, {}, user)
        bare_log = log.read_bytes()
        ino = log.stat().st_ino
        assert bare.returncode == 3 and bare.stdout == b""
        assert bare_log.startswith(f"stdout: regular empty file {ino}; log: {ino}\nseekable\n".encode())
        log.write_bytes(b"")  # the same file (inode) again, empty

        code, _, err = cli("wrap", "etc/cron.d/job:1", "--root", str(root), *(["--digest"] if digest else []))
        assert code == 0, err
        (wrapped,) = scan(root).jobs
        assert ("--digest" in wrapped.shell_command) is digest
        got = cron_run(wrapped.shell_command, {}, user)
        got_log = log.read_bytes()
        with open_ledger(root) as led:
            (rec,) = list(led.runs())
        assert (got.returncode, got.stdout, rec.exit_status, rec.user) == (3, b"", 3, user.pw_name)
        if not digest:
            assert got_log == bare_log  # the job's view, its environment and every byte: as bare
            assert rec.extra.get("stdout_file") == "1" and rec.stdout_sha256 is None
            assert rec.stdout_bytes == len(got_log) and rec.stdout_tail == got_log.decode()
        else:
            assert got_log.startswith(b"stdout: fifo ") and b"\nunseekable\n" in got_log
            assert got_log.split(b"\n", 2)[2] == bare_log.split(b"\n", 2)[2]  # environment, err: as bare
            assert rec.stdout_sha256 == hashlib.sha256(got_log).hexdigest() and "stdout_file" not in rec.extra
