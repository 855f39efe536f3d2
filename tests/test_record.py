"""`cronshift record` is invisible to the job and never breaks it: each property checked against bare."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import select
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cronshift.ledger.store import argv_bytes, open_ledger
from tests.support.redis_server import RedisServer, free_port, redis_server, start_redis

PROJECT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "cronshift"  # the console script a user runs
__all__ = ["redis_server"]


def wrapper_argv() -> list[str]:
    """The real entry point, as cron would run it."""
    assert CONSOLE_SCRIPT.exists(), f"install the project first: no {CONSOLE_SCRIPT}"
    return [str(CONSOLE_SCRIPT), "record"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "r"
    (r / "dev").mkdir(parents=True)
    (tmp_path / "tmp").mkdir()
    return r


def cron_env(root: Path) -> dict[str, str]:
    """Like cron's: minimal, and no LANG, so Python's C-locale coercion (PEP 538) would show if it leaked."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "SHELL": "/bin/sh",
        "LOGNAME": "root",
        "PYTHONPATH": str(PROJECT),
        "TMPDIR": str(root.parent / "tmp"),
    }


def run(
    cmd: list[str], root: Path, *opts: str, bare: bool = False, **kw
) -> subprocess.CompletedProcess[bytes]:
    argv = cmd if bare else [*wrapper_argv(), "--root", str(root), *opts, "--", *cmd]
    kw.setdefault("env", cron_env(root))
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, cwd=root, timeout=60, **kw)


def both(cmd: list[str], root: Path, *opts: str, **kw):
    return run(cmd, root, bare=True, **kw), run(cmd, root, *opts, **kw)


def stored(root: Path, store: Path | None = None) -> list:
    with open_ledger(root, store=str(store) if store else None) as led:
        return list(led.runs())


def spooled(root: Path) -> list[dict]:
    out = []
    for d in (
        root / "var/spool/cronshift" / str(os.geteuid()),
        root.parent / "tmp" / f"cronshift-spool-{os.geteuid()}",
    ):
        for f in sorted(d.glob("runs-*")) if d.is_dir() else []:
            out += [json.loads(line) for line in f.read_bytes().splitlines() if line]
    return out


@contextlib.contextmanager
def syslog(root: Path) -> Iterator[list[str]]:
    """A stand-in for /dev/log under the root, collecting what the wrapper says."""
    path = root / "dev" / "log"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.setblocking(False)
    lines: list[str] = []
    try:
        yield lines
    finally:
        with contextlib.suppress(BlockingIOError):
            while True:
                lines.append(s.recv(65536).decode())
        s.close()
        path.unlink()


PY_OUT = "import sys,os; os.write(1, b'out'); os.write(2, b'err'); sys.exit(int(sys.argv[1]))"


# -- transparency --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_status_is_the_jobs(root: Path, code: int) -> None:
    bare, wrapped = both(["sh", "-c", f"echo hi; exit {code}"], root, "--job", "j")
    assert wrapped.returncode == bare.returncode == code
    assert wrapped.stdout == bare.stdout == b"hi\n"
    (rec,) = spooled(root)
    assert (rec["exit_status"], rec["signal"], rec["job_id"]) == (code, None, "j")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_signal_death_is_the_jobs(root: Path, sig: signal.Signals) -> None:
    bare, wrapped = both(["sh", "-c", f"kill -{sig.name[3:]} $$"], root)
    assert bare.returncode == wrapped.returncode == -sig
    (rec,) = spooled(root)
    assert rec["signal"] == sig and rec["exit_status"] is None


def test_output_bytes_pass_through_unchanged(root: Path) -> None:
    script = root / "noisy.py"
    script.write_text(
        "import os, random\n"
        "r = random.Random(7)\n"
        "os.write(1, bytes(range(256)))\n"
        "for i in range(600):\n"
        "    os.write(1 if i % 3 else 2, r.randbytes(r.randrange(1, 9000)))\n"
        "os.write(2, b'no newline at the end')\n"
    )
    bare, wrapped = both([sys.executable, str(script)], root)
    assert len(bare.stdout) > 1 << 20
    assert wrapped.stdout == bare.stdout and wrapped.stderr == bare.stderr
    (rec,) = spooled(root)
    assert rec["stdout_bytes"] == len(bare.stdout)
    assert rec["stdout_sha256"] == hashlib.sha256(bare.stdout).hexdigest()
    assert rec["stderr_sha256"] == hashlib.sha256(bare.stderr).hexdigest()
    assert rec["stderr_tail"].endswith("no newline at the end")
    assert len(rec["stdout_tail"].encode()) <= 4096 * 3  # replacement characters may widen binary bytes


def test_order_across_stdout_and_stderr_kept_when_they_share_a_pipe(root: Path) -> None:
    """Cron gives a job one pipe for both streams; a wrapper with two pipes would shuffle the lines."""
    code = "import os\nfor i in range(3000): os.write(1 if i % 2 else 2, b'%d\\n' % i)"
    bare, wrapped = both([sys.executable, "-c", code], root, stderr=subprocess.STDOUT)
    assert wrapped.stdout == bare.stdout
    (rec,) = spooled(root)
    assert rec["extra"] == {"output": "merged"} and rec["stdout_bytes"] == len(bare.stdout)


FILE_JOB = """
import os, stat, sys
st = os.fstat(1)
kind = "file" if stat.S_ISREG(st.st_mode) else "pipe" if stat.S_ISFIFO(st.st_mode) else "other"
log = os.stat(sys.argv[1])
try:
    where = "seekable at %d" % os.lseek(1, 0, os.SEEK_END)
except OSError:
    where = "unseekable"
same = (st.st_dev, st.st_ino) == (log.st_dev, log.st_ino)
os.write(1, ("stdout is a %s, same inode %s, %s\\n" % (kind, same, where)).encode())
os.write(2, b"err\\n")
sys.exit(3)
"""


def _to_file(root: Path, *opts: str, bare: bool = False, stderr: str = "same") -> tuple[int, bytes, Path]:
    """Run FILE_JOB with stdout appending to a fresh log file, as `>> log 2>&1` would hand it over."""
    log = root / "out.log"
    log.write_bytes(b"before\n")
    job = [sys.executable, "-c", FILE_JOB, str(log)]
    with open(log, "ab") as f:
        err = f if stderr == "same" else subprocess.PIPE
        p = run(job, root, *opts, bare=bare, stdout=f, stderr=err)
    return p.returncode, log.read_bytes(), log


def test_a_line_redirected_to_a_file_hands_the_job_its_file_not_a_pipe(root: Path) -> None:
    """`job >> log 2>&1`: bare, the job's stdout is the log (fstat, lseek work); the wrapper must not put
    a pipe in between unless a digest is asked for."""
    bare_code, bare_log, _ = _to_file(root, bare=True)
    code, log, path = _to_file(root, "--job", "j")
    assert b"stdout is a file, same inode True, seekable at " in bare_log
    assert (code, log) == (bare_code, bare_log) == (3, bare_log)
    (rec,) = spooled(root)
    written = bare_log[len(b"before\n") :]
    assert rec["extra"] == {"output": "merged", "stdout_file": "1"}
    assert rec["stdout_bytes"] == len(written) and rec["stdout_sha256"] is None
    assert rec["stdout_tail"] == written.decode()
    path.chmod(0o200)  # only the wrapper's own fd may write it: no tail read back, never a guess
    if os.geteuid() != 0:
        _to_file(root, "--job", "j")
        assert spooled(root)[-1]["stdout_tail"] == ""


def test_only_the_stream_sent_to_a_file_bypasses_the_pipe(root: Path) -> None:
    code, log, _ = _to_file(root, "--job", "j", stderr="pipe")
    assert code == 3 and b"stdout is a file, same inode True" in log
    (rec,) = spooled(root)
    assert rec["extra"] == {"stdout_file": "1"}
    assert rec["stderr_bytes"] == 4 and rec["stderr_sha256"] == hashlib.sha256(b"err\n").hexdigest()


def test_digest_keeps_the_pipe_and_hashes_what_reached_the_file(root: Path) -> None:
    code, log, _ = _to_file(root, "--job", "j", "--digest")
    written = log[len(b"before\n") :]
    assert code == 3 and written == b"stdout is a pipe, same inode False, unseekable\nerr\n"
    (rec,) = spooled(root)
    assert rec["extra"] == {"output": "merged"}
    assert rec["stdout_sha256"] == hashlib.sha256(written).hexdigest() and rec["stdout_bytes"] == len(written)


def test_show_says_output_went_to_a_file(root: Path) -> None:
    from cronshift.cli.show import _size  # the runs table's output column, rendered from the record

    _to_file(root, "--job", "j", "--drain-at", "0")
    (r,) = stored(root)
    assert _size(r) == f"≈{r.stdout_bytes}+0 B, stdout to a file (not captured)"


def test_stdin_is_the_jobs(root: Path) -> None:
    data = os.urandom(300_000)
    bare, wrapped = both(["sh", "-c", "head -c 1000 >/dev/null; cat"], root, input=data, stdin=None)
    assert wrapped.stdout == bare.stdout == data[1000:]


def test_environment_is_unchanged(root: Path) -> None:
    env = cron_env(root) | {"CRONSHIFT_STORE": str(root / "store.db"), "ODD": "a=b\nc"}
    bare, wrapped = both(["env", "-0"], root, env=env)
    assert wrapped.stdout == bare.stdout
    assert b"LC_CTYPE" not in wrapped.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_to_the_wrapper_reach_the_job(root: Path, sig: signal.Signals) -> None:
    job = [
        "sh",
        "-c",
        f"trap 'echo got {sig.name}; exit 7' {sig.name[3:]}; echo ready; while :; do sleep 0.02; done",
    ]
    results = []
    for argv in (job, [*wrapper_argv(), "--root", str(root), "--", *job]):
        p = subprocess.Popen(argv, env=cron_env(root), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            assert p.stdout is not None
            assert p.stdout.readline() == b"ready\n"
            p.send_signal(sig)
            out, _ = p.communicate(timeout=30)  # a job that never got the signal fails here, not hangs
            results.append((out, p.returncode))
        finally:
            p.kill()
            p.wait()
    assert results[0] == results[1] == (f"got {sig.name}\n".encode(), 7)


def test_reader_going_away_gives_the_job_sigpipe(root: Path) -> None:
    wrapped = shlex.join([*wrapper_argv(), "--root", str(root), "--"])
    script = "yes | head -c 10 >/dev/null; a=${PIPESTATUS[0]}; {W} yes | head -c 10 >/dev/null"
    script += "; echo $a ${PIPESTATUS[0]}"
    out = subprocess.run(
        ["bash", "-c", script.replace("{W}", wrapped)], env=cron_env(root), capture_output=True
    )
    assert out.stdout == b"141 141\n"


def test_wrapper_exits_with_the_job_even_if_a_background_child_keeps_the_output(root: Path) -> None:
    flag = root / "flag"
    job = ["sh", "-c", f"(while [ ! -e {flag} ]; do sleep 0.02; done; echo late) & echo early"]
    p = subprocess.Popen(
        [*wrapper_argv(), "--root", str(root), "--", *job], env=cron_env(root), stdout=subprocess.PIPE
    )
    assert p.wait(timeout=30) == 0  # a wrapper that waited for EOF would hang here until the flag
    flag.touch()
    assert p.stdout is not None and p.stdout.read() == b"early\nlate\n"
    (rec,) = spooled(root)
    assert rec["extra"]["output_open_after_exit"] == "1"


def test_missing_command_fails_as_the_shell_would(root: Path) -> None:
    bare = run(["sh", "-c", "no-such-command-xyz"], root, bare=True)
    wrapped = run(["no-such-command-xyz"], root)
    assert wrapped.returncode == bare.returncode == 127
    assert b"no-such-command-xyz" in wrapped.stderr
    (rec,) = spooled(root)
    assert rec["exit_status"] == 127


# -- failure isolation ---------------------------------------------------------------------------------


def _assert_job_unaffected(root: Path, *opts: str, job: str = "bad") -> None:
    cmd = [sys.executable, "-c", PY_OUT, "3"]
    bare, wrapped = both(cmd, root, "--drain-at", "0", "--job", job, *opts)
    assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (bare.returncode, b"out", b"err")
    assert bare.returncode == 3


def _good_run_drains(root: Path, store: Path, *opts: str) -> None:
    good = run(["true"], root, "--drain-at", "0", "--job", "good", "--store", str(store), *opts)
    assert good.returncode == 0
    assert spooled(root) == []
    conn = sqlite3.connect(store)
    assert sorted(r[0] for r in conn.execute("SELECT job_id FROM runs")) == ["bad", "good"]
    conn.close()


def test_store_missing(root: Path) -> None:
    (root / "notadir").write_text("")
    store = root / "notadir" / "ledger.db"
    with syslog(root) as said:
        _assert_job_unaffected(root, "--store", str(store))
    assert [r["job_id"] for r in spooled(root)] == ["bad"]
    assert any("notadir" in line for line in said)
    (root / "notadir").unlink()
    (root / "notadir").mkdir()
    _good_run_drains(root, store)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_store_unwritable(root: Path) -> None:
    with tmpfs(root.parent / "ro", "1m") as ro:
        store = ro / "ledger.db"
        open_ledger(root, store=str(store)).close()
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        with syslog(root) as said:
            _assert_job_unaffected(root, "--store", str(store))
        assert [r["job_id"] for r in spooled(root)] == ["bad"]
        assert any("ledger.db" in line or "read-only" in line for line in said), said
        subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True)
        _good_run_drains(root, store)


def test_store_full(root: Path) -> None:
    """The store and the primary spool on one full filesystem: the record falls back to $TMPDIR."""
    with tmpfs(root / "var", "256k") as var:
        store = var / "lib/cronshift/ledger.db"
        open_ledger(root).close()
        (var / "lib/cronshift/spool").mkdir()
        fd = os.open(var / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        with syslog(root) as said:
            _assert_job_unaffected(root)
        fallback = root.parent / "tmp" / f"cronshift-spool-{os.geteuid()}"
        assert [r["job_id"] for r in spooled(root)] == ["bad"] and any(fallback.iterdir())
        assert said  # both the store and the primary spool refused
        (var / "filler").unlink()
        _good_run_drains(root, store)


def test_store_locked(root: Path) -> None:
    store = root / "ledger.db"
    open_ledger(root, store=str(store)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sqlite3,sys; c=sqlite3.connect({str(store)!r}, isolation_level=None);"
         " c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with syslog(root) as said:
            start = time.monotonic()
            _assert_job_unaffected(root, "--store", str(store))
            assert time.monotonic() - start < 10  # generous: it gave up on the lock, it did not wait for it
        assert [r["job_id"] for r in spooled(root)] == ["bad"]
        assert any("locked" in line for line in said), said
    finally:
        holder.communicate(b"")
    _good_run_drains(root, store)


def test_store_corrupt(root: Path) -> None:
    store = root / "ledger.db"
    store.write_bytes(os.urandom(8192))
    with syslog(root) as said:
        _assert_job_unaffected(root, "--store", str(store))
    assert [r["job_id"] for r in spooled(root)] == ["bad"]
    assert any("not a database" in line for line in said), said
    store.unlink()
    _good_run_drains(root, store)


def test_bad_options_and_nowhere_to_write_still_run_the_job(root: Path) -> None:
    (root / "var").write_text("")  # the primary spool and default store cannot exist
    env = cron_env(root) | {"TMPDIR": str(root / "var")}  # nor the fallback
    with syslog(root) as said:
        bare = run([sys.executable, "-c", PY_OUT, "5"], root, bare=True, env=env)
        wrapped = run(
            [sys.executable, "-c", PY_OUT, "5"], root, "--jbo", "x", "--scheduled-for", "soon", env=env
        )
    assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    assert any("--jbo" in line for line in said) and any("soon" in line for line in said)
    assert any("var" in line for line in said)  # the record itself was lost, and syslog says so


# -- Redis ---------------------------------------------------------------------------------------------


def test_redis_refused_spools_without_delay(root: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with syslog(root) as said:
        start = time.monotonic()
        _assert_job_unaffected(root, "--redis", url)
        assert time.monotonic() - start < 10
    assert [r["job_id"] for r in spooled(root)] == ["bad"]
    assert any("127.0.0.1" in line for line in said)


def test_redis_hanging_spools_then_drains(root: Path) -> None:
    server = start_redis(root.parent / "redis")
    try:
        # The same run against a port that refuses at once, in another root: what the two start-ups cost
        # on this machine now (under parallel tests they alone can take seconds), not waiting on a store.
        # A retry loop would cost seconds every time; one slow start-up on a loaded host costs them once, so
        # the best of up to three tries (each in a fresh root: the first run leaves a "Redis is down" mark).
        server.pause()
        extra: list[tuple[float, float]] = []
        for attempt in range(3):
            (other := root.parent / f"other{attempt}").mkdir()
            start = time.monotonic()
            run([sys.executable, "-c", PY_OUT, "3"], other, "--redis", f"redis://127.0.0.1:{free_port()}/0")
            startup = time.monotonic() - start
            target = root if attempt == 0 else root.parent / f"again{attempt}"
            target.mkdir(exist_ok=True)
            start = time.monotonic()
            wrapped = run([sys.executable, "-c", PY_OUT, "3"], target, "--redis", server.url, "--job", "bad")
            extra.append((time.monotonic() - start, startup))
            assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (3, b"out", b"err")
            if extra[-1][0] - startup < 1.5:
                break
        assert min(took - startup for took, startup in extra) < 1.5, extra  # no retry loop: one short timeout
        assert [r["job_id"] for r in spooled(root)] == ["bad"]
        server.resume()
        for marker in (root / "var/spool/cronshift").rglob("down-*"):  # a minute later
            os.utime(marker, (time.time() - 61, time.time() - 61))
        assert run(["true"], root, "--redis", server.url, "--job", "good").returncode == 0
        assert spooled(root) == []
        with open_ledger(root, redis_url=server.url) as led:
            assert sorted(r.job_id for r in led.runs()) == ["bad", "good"]
    finally:
        server.stop()


def test_redis_stream_backend(root: Path, redis_server: RedisServer) -> None:
    job = f"stream-{os.getpid()}-{time.time_ns()}"
    env = cron_env(root) | {"CRONSHIFT_REDIS_URL": redis_server.url}
    assert run(["sh", "-c", "echo hello; exit 4"], root, "--job", job, env=env).returncode == 4
    assert spooled(root) == []
    with open_ledger(root, redis_url=redis_server.url) as led:
        (rec,) = led.runs(job_id=job)
    assert (rec.exit_status, rec.stdout_tail, rec.source) == (4, "hello\n", "record")
    assert rec.stdout_sha256 == hashlib.sha256(b"hello\n").hexdigest()


# -- concurrency ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("drain_at", ["0", "65536"])
def test_fifty_concurrent_wrappers_lose_nothing(root: Path, drain_at: str) -> None:
    def one(i: int) -> int:
        return run(
            ["sh", "-c", f"echo {i}; exit {i % 7}"], root, "--job", f"j{i}", "--drain-at", drain_at
        ).returncode

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(one, range(50)))
    assert codes == [i % 7 for i in range(50)]
    runs = stored(root)
    assert sorted(r.job_id for r in runs) == sorted(f"j{i}" for i in range(50))
    assert len({r.extra["uid"] for r in runs}) == 50
    assert spooled(root) == []


# -- every byte survives ---------------------------------------------------------------------------------


def test_an_argument_that_is_not_utf8_keeps_the_ledger_readable(root: Path) -> None:
    """Before: the record's command held a lone surrogate, SQLite stored invalid UTF-8, and every later
    read of the ledger failed ("ledger unreadable", 0 runs for every job)."""
    odd = b"caf\xe9 \xff"
    for job in ("odd", "plain"):
        argv = ["/bin/echo", os.fsdecode(odd)] if job == "odd" else ["/bin/true"]
        r = run(argv, root, "--job", job, "--drain-at", "0", "--store", str(root / "ledger.db"))
        assert r.returncode == 0
    assert run(["/bin/echo", os.fsdecode(odd)], root, bare=True).stdout == odd + b"\n"
    with open_ledger(root, store=str(root / "ledger.db")) as led:
        runs = {r.job_id: r for r in led.runs()}
        assert led.skipped == []
    assert set(runs) == {"odd", "plain"}
    assert runs["odd"].command == "/bin/echo $'caf\\xe9 \\xff'"
    assert argv_bytes(runs["odd"]) == [b"/bin/echo", odd]  # the exact bytes
    assert argv_bytes(runs["plain"]) is None


def test_output_tails_keep_nul_and_odd_bytes(root: Path) -> None:
    out = b"before\0after \xff\xfe end\n"
    script = f"import os; os.write(1, {out!r}); os.write(2, b'e\\0rr')"
    r = run([sys.executable, "-c", script], root, "--job", "nul", "--drain-at", "0")
    assert r.stdout == out and r.stderr == b"e\0rr"
    (rec,) = stored(root)
    assert rec.stdout_tail == out.decode("utf-8", "replace") and "\0after" in rec.stdout_tail
    assert rec.stderr_tail == "e\0rr"
    assert base64.b64decode(rec.extra["stdout_tail_b64"]) == out


def test_a_damaged_row_is_skipped_and_named_the_rest_are_read(root: Path) -> None:
    store = root / "ledger.db"
    for job in ("a", "b", "c"):
        assert (
            run(["/bin/true"], root, "--job", job, "--drain-at", "0", "--store", str(store)).returncode == 0
        )
    conn = sqlite3.connect(store)
    (uid,) = conn.execute("SELECT uid FROM runs WHERE job_id = 'b'").fetchone()
    conn.execute("UPDATE runs SET extra = 'not json' WHERE uid = ?", (uid,))
    conn.execute("UPDATE runs SET command = CAST(x'ff2f78' AS TEXT) WHERE job_id = 'c'")  # invalid UTF-8
    conn.commit()
    conn.close()
    with open_ledger(root, store=str(store)) as led:
        runs = list(led.runs())
        assert [r.job_id for r in runs] == ["a", "c"]
        assert runs[1].command == "\ufffd/x"
        assert len(led.skipped) == 1 and uid in led.skipped[0]


def test_spooled_runs_count_before_the_first_drain_creates_the_ledger(root: Path) -> None:
    from datetime import UTC, datetime

    from cronshift.discover.scan import scan
    from cronshift.history.evidence import Evidence, _read_ledger

    (root / "etc").mkdir()
    (root / "etc/crontab").write_text("* * * * * root /bin/true\n")
    (job,) = scan(root).jobs
    assert run(["/bin/true"], root, "--job", job.id).returncode == 0  # default threshold: spooled only
    assert not (root / "var/lib/cronshift/ledger.db").exists()
    ev = Evidence(now=datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    _read_ledger(ev, root, scan(root).jobs, None, None)
    assert len(ev.ledger_runs.get(job.id, [])) == 1, ev.notes


# -- signals as cron's child would see them ------------------------------------------------------------


@pytest.mark.parametrize("ignore", [True, False])
def test_the_sigpipe_disposition_is_passed_through(root: Path, ignore: bool) -> None:
    """Cron's child may ignore SIGPIPE: the job then inherits it ignored (a write to a closed pipe fails
    with EPIPE instead of killing it). Python ignores SIGPIPE for itself; the job must not see that."""
    wrapped = shlex.join([*wrapper_argv(), "--root", str(root), "--"])
    trap = "trap '' PIPE; " if ignore else ""
    probe = "grep -E '^SigIgn' /proc/self/status"
    out = subprocess.run(
        ["/bin/sh", "-c", f"{trap}{probe}; {wrapped} {probe}; true"], env=cron_env(root), capture_output=True
    )
    bare, wrap = (int(line.split()[1], 16) for line in out.stdout.splitlines())
    bit = 1 << (signal.SIGPIPE - 1)
    assert bare & bit == wrap & bit == (bit if ignore else 0)


def _read_pty(fd: int, pid: int, deadline: float) -> bytes:
    """The next output on a pty, or the child killed and a failure once the deadline passed."""
    if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"pid {pid}: no end before the deadline")
    return os.read(fd, 1024)


def test_ctrl_c_on_a_terminal_reaches_the_job_and_returns_its_status(root: Path) -> None:
    """^C on a terminal: the job runs its cleanup, its output and exit status come back, and the wrapper
    prints no KeyboardInterrupt traceback."""
    import pty

    job = "trap 'echo cleanup; exit 130' INT; echo ready; while :; do sleep 0.05; done"
    results = []
    for argv in (["sh", "-c", job], [*wrapper_argv(), "--root", str(root), "--", "sh", "-c", job]):
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session leader with the pty as its terminal, in its foreground
            os.execve(argv[0] if "/" in argv[0] else "/bin/sh", argv, cron_env(root))
        got = b""
        deadline = time.monotonic() + 30  # a job that never got the ^C fails the test, never hangs it
        try:
            while b"ready" not in got:
                got += _read_pty(fd, pid, deadline)
            os.write(fd, b"\x03")  # the terminal's ^C: SIGINT to the foreground process group
            with contextlib.suppress(OSError):
                while chunk := _read_pty(fd, pid, deadline):
                    got += chunk
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        results.append((b"cleanup" in got, b"Traceback" in got, os.waitstatus_to_exitcode(status)))
    assert results[0] == results[1] == (True, False, 130)


def test_a_silent_redis_port_costs_one_run_a_wait_not_every_run(root: Path) -> None:
    """A port that accepts but never answers (a hung Redis, a firewall) made every run wait the full
    timeout; after one failure the next runs spool at once, and one retries after REDIS_BACKOFF."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        for i in range(3):
            r = run([sys.executable, "-c", PY_OUT, "3"], root, "--redis", url, "--job", f"j{i}")
            assert (r.returncode, r.stdout, r.stderr) == (3, b"out", b"err")
        silent.setblocking(False)
        tries = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                silent.accept()[0].close()
                tries += 1
    assert tries == 1
    assert sorted(r["job_id"] for r in spooled(root)) == ["j0", "j1", "j2"]


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
@pytest.mark.parametrize("cmd", ["no-such-command-x", "/no/such/file", "{root}/plain", "{root}/noshebang"])
def test_a_command_that_cannot_start_is_reported_as_the_shell_would(root: Path, shell: str, cmd: str) -> None:
    (root / "plain").write_text("not a program\n")  # not executable: 126
    (root / "noshebang").write_text("echo ran by $0 $BASH_VERSION-x\nnot-a-command-y\n")
    (root / "noshebang").chmod(0o755)
    cmd = cmd.format(root=root)
    wrapped = shlex.join([*wrapper_argv(), "--root", str(root), "--"])
    env = cron_env(root) | {"SHELL": shell}
    bare = subprocess.run([shell, "-c", f"{cmd} arg"], env=env, capture_output=True)
    wrap = subprocess.run([shell, "-c", f"{wrapped} {cmd} arg"], env=env, capture_output=True)
    assert (wrap.returncode, wrap.stdout, wrap.stderr) == (bare.returncode, bare.stdout, bare.stderr)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"  # a zombie waiting for init
    except FileNotFoundError:
        return True


def test_a_run_whose_wrapper_is_killed_is_recorded_as_lost_and_its_job_killed(root: Path) -> None:
    """SIGKILL (the OOM killer, a careless kill -9) of the wrapper alone: the job, in its own process
    group, is killed with it instead of running on unobserved, and the next drain records the run as lost
    instead of never hearing of it."""
    p = subprocess.Popen(
        [*wrapper_argv(), "--root", str(root), "--job", "doomed", "--", "sh", "-c", "echo started; sleep 60"],
        env=cron_env(root),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert p.stdout is not None
    try:
        assert p.stdout.readline() == b"started\n"
        assert stored(root) == []  # the wrapper is alive: nothing is lost yet
        p.kill()
        p.wait(timeout=30)
        (run_,) = stored(root)
        assert (run_.job_id, run_.exit_status, run_.end, run_.extra.get("lost")) == (
            "doomed",
            None,
            None,
            "1",
        )
        assert run_.pid is not None and run_.user == "root"
        assert os.getpgid(run_.pid) == run_.pid if not _gone(run_.pid) else True
        for _ in range(300):  # bounded: the watcher acts as soon as the wrapper is gone
            if _gone(run_.pid):
                break
            time.sleep(0.05)
        assert _gone(run_.pid), "the job outlived its wrapper"
        assert p.stdout.read() == b""  # and nothing holds cron's pipe open any more
    finally:
        with contextlib.suppress(ProcessLookupError, UnboundLocalError, TypeError):
            os.killpg(run_.pid, signal.SIGKILL)
        p.stdout.close()
    assert stored(root) == [run_]  # recorded once


def test_the_run_record_has_one_shape(root: Path) -> None:
    """model.RunRecord defines the run record; the SQLite columns and the wrapper's JSON (which cannot
    import the model: dataclasses cost the wrapper ~13 ms a run) are held to it field for field."""
    import dataclasses
    import re

    from cronshift.ledger import schema
    from cronshift.model import RunRecord

    fields = tuple(f.name for f in dataclasses.fields(RunRecord))
    assert ("uid", *fields) == schema.RUN_COLUMNS
    table = schema.SCHEMA.split("CREATE TABLE IF NOT EXISTS runs (")[1].split(");")[0]
    assert tuple(re.findall(r'^\s*"?(\w+)"? [A-Z]', table, re.M)) == schema.RUN_COLUMNS
    run(["true"], root, "--job", "j")
    (rec,) = spooled(root)
    assert set(rec) == {"cronshift_run", *schema.RUN_COLUMNS}
