"""`cronshift record [OPTIONS] -- CMD ARGS...`: run a cron job exactly as it runs bare, and leave a record.

It runs on every cron run of every wrapped job, so it must be invisible and cheap:
- invisible: the job gets the wrapper's original environment (read back from /proc/self/environ, because
  Python itself may have added LC_CTYPE at start-up - PEP 538 - when cron's C locale is in force), the same
  stdin (inherited), its output copied through unchanged as it arrives (or, where the line redirected it
  to a regular file and no --digest is asked for, that file itself: no pipe), the same exit status, and if
  it died of a signal the wrapper kills itself with that signal so cron sees the same wait status.
  CRONSHIFT_STORE and CRONSHIFT_REDIS_URL configure the wrapper but are the user's variables: they reach the
  job unchanged.
- never breaks a job: everything after the spawn is best effort; the record goes to a spool if the store
  will not take it, and complaints go to syslog (<root>/dev/log), never to the job's output.
- cheap: standard library only, and mostly C modules (`_signal` not `signal`, `_socket` not `socket`: their
  Python wrappers import enum, ~4-7 ms each); sqlite3 is imported only when the spool is drained.

Signals: TERM, INT, HUP, QUIT, USR1 and USR2 sent to the wrapper are forwarded to the job's pid. The job
stays in the wrapper's process group, so kills aimed at the group (timeout(1), a terminal, kill -- -PGID)
reach it straight from the kernel exactly as they would bare. The cost: a signal sent to the whole group
reaches the job twice (once directly, once forwarded), except INT/QUIT/HUP from a controlling terminal,
which are not forwarded when the wrapper is in the terminal's foreground group.
"""

import _signal  # signal.py only wraps this in IntEnums; importing it costs ~4 ms
import os
import time

from cronshift import __version__  # already loaded: the package holds this module

USAGE = (
    "usage: cronshift record [--job ID] [--store PATH] [--redis URL | --redis-config FILE] [--root DIR]\n"
    "                        [--scheduled-for ISO|EPOCH] [--drain-at BYTES] [--digest] -- CMD [ARGS...]\n"
)
TAIL = 4096
REDIS_BACKOFF = 60  # after a Redis failure, runs spool at once for this long (seconds), then one retries
TIMEOUT = 0.2  # the longest the wrapper waits on a store (SQLite lock, Redis round trip), in seconds
DRAIN_AT = 64 * 1024  # drain the spool into SQLite once it holds this many bytes (0: on every run)
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
TTY_SIGNALS = ("SIGINT", "SIGQUIT", "SIGHUP")
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")


class Options:
    __slots__ = ("digest", "drain_at", "job", "redis", "root", "scheduled_for", "store", "warnings")

    def __init__(self) -> None:
        self.job: str | None = None
        self.store: str | None = os.environ.get("CRONSHIFT_STORE") or None
        self.redis: str | None = os.environ.get("CRONSHIFT_REDIS_URL") or None
        self.root = "/"
        self.scheduled_for: str | None = None
        self.drain_at = DRAIN_AT
        self.digest = False  # hash output even where the line sends it to a file (costs the job its file)
        self.warnings: list[str] = []


def parse(argv: list[str]) -> tuple[Options, list[str]]:
    """Options up to `--` (or the first non-option word, as env(1) and nice(1) do), then the command.

    A bad option is a syslog complaint, not a failure: a typo in a crontab must not stop the job.
    Raises ValueError only when there is no command to run.
    """
    o = Options()
    names = {"--job": "job", "--store": "store", "--redis": "redis", "--root": "root"}
    names |= {"--scheduled-for": "scheduled_for", "--drain-at": "drain_at", "--redis-config": "redis"}
    dashes = argv.index("--") if "--" in argv else -1
    i = 0
    while i < len(argv):
        a = argv[i]
        if i == dashes:
            i += 1
            break
        if (not a.startswith("-") or a == "-") and dashes < 0:
            break
        name, eq, value = a.partition("=")
        if name in names:
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"option {name} needs a value")
                i += 1
                value = argv[i]
            if name == "--redis-config":
                o.redis = _read_redis_config(value, o.warnings)
            elif name == "--drain-at":
                try:
                    o.drain_at = int(value)
                except ValueError:
                    o.warnings.append(f"--drain-at {value!r} is not a number of bytes; using {DRAIN_AT}")
            else:
                setattr(o, names[name], value)
        elif a == "--digest":
            o.digest = True
        elif a in ("-h", "--help"):
            raise ValueError("help")
        elif a == "--version":  # `wrap` runs `<wrapper> record --version` as cron would, to prove the line
            raise ValueError("version")
        else:
            o.warnings.append(f"unknown {'option' if a.startswith('-') else 'argument'} {a!r} ignored")
        i += 1
    cmd = argv[i:]
    if not cmd:
        raise ValueError("no command given")
    return o, cmd


def _read_redis_config(path: str, warnings: list[str]) -> str | None:
    """The Redis URL (password included) from a file only its owner can read: ours or root's, not a
    symlink, no group/other access. Anything else is a syslog complaint and the run is spooled."""
    from cronshift.ledger.resp import NotPrivate, read_private  # deferred: only a Redis ledger needs it

    try:
        url = read_private(path).decode("utf-8", "surrogateescape").strip()
    except NotPrivate:
        warnings.append(f"--redis-config {path}: not a private file of root or this user; ignored")
        return None
    except OSError as e:
        warnings.append(f"--redis-config {path}: {e.strerror}; runs are spooled")
        return None
    return url or None


def _environ() -> dict[bytes, bytes]:
    """The environment this process was started with, in its order, before Python touched it."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    env: dict[bytes, bytes] = {}
    for item in raw.split(b"\0"):
        k, eq, v = item.partition(b"=")
        if eq and k and k not in env:  # getenv(3) sees the first of duplicates
            env[k] = v
    return env


def _quote(a: str) -> str:
    if a and all(c in _SAFE for c in a):
        return a
    try:
        a.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8: bash's $'...' says exactly which
        raw = a.encode("utf-8", "surrogateescape")
        out = []
        for ch in raw.decode("utf-8", "surrogateescape"):
            o = ord(ch)
            if 0xDC80 <= o <= 0xDCFF:
                out.append(f"\\x{o - 0xDC00:02x}")
            elif ch in "\\'":
                out.append("\\" + ch)
            else:
                out.append(ch)
        return "$'" + "".join(out) + "'"
    return "'" + a.replace("'", "'\"'\"'") + "'"


def _b64(data: bytes) -> str:
    from binascii import b2a_base64  # deferred: start-up is the cost every cron run pays

    return b2a_base64(data, newline=False).decode("ascii")


class Stream:
    """One captured output stream: copied through at once, counted, hashed, its tail kept."""

    __slots__ = ("closed_early", "digest", "fd", "n", "out", "tail")

    def __init__(self, fd: int, out: int) -> None:
        self.fd = fd  # our read end
        self.out = out  # where the bytes go: the wrapper's own stdout or stderr
        self.n = 0
        self.digest = None
        self.tail = b""
        self.closed_early = False

    def feed(self, data: bytes) -> None:
        self.n += len(data)
        if self.digest is None:  # lazily: most cron jobs print nothing
            self.digest = _hasher(big=len(data) >= 4096)
        self.digest.update(data)
        self.tail = (self.tail + data)[-TAIL:]
        if self.out >= 0:
            _write_all(self, data)

    def sha256(self) -> str:
        if self.digest is None:
            return "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        return self.digest.hexdigest()

    def tail_b64(self) -> str | None:
        """The raw tail, when its text form would lose bytes (a NUL, which SQLite's JSON functions cut
        at, or bytes that are not UTF-8)."""
        t = self.tail
        if b"\0" in t:
            return _b64(t)
        try:
            t.decode("utf-8")
        except UnicodeDecodeError:
            if len(t) < TAIL or not _only_cut_at_start(t):
                return _b64(t)
        return None

    def tail_text(self) -> str:
        t = self.tail
        if len(t) == TAIL:  # the cut may have split a UTF-8 character: start at the next one
            for _ in range(3):
                if t[:1] and 0x80 <= t[0] < 0xC0:
                    t = t[1:]
        return t.decode("utf-8", "replace")


def _only_cut_at_start(t: bytes) -> bool:
    """A full tail whose only bad bytes are a character split by the cut at its start."""
    for k in range(1, 4):
        try:
            t[k:].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _hasher(big: bool):  # -> a hashlib-like sha256 object
    """The builtin _sha256 costs ~0.6 ms to import but hashes at ~270 MB/s; OpenSSL's (hashlib) costs
    ~2.5 ms but runs at ~1.7 GB/s. A first read of 4 KiB or more suggests a lot of output: take OpenSSL's."""
    if not big:
        try:
            from _sha256 import sha256  # deferred: start-up is the cost every cron run pays

            return sha256()
        except ImportError:  # renamed _sha2 in 3.12
            pass
    from hashlib import sha256  # deferred: start-up is the cost every cron run pays

    return sha256()


def _write_all(s: Stream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(s.out, view) :]
        except BlockingIOError:  # our stdout was handed to us non-blocking: wait until it drains
            import select  # deferred: start-up is the cost every cron run pays

            select.select([], [s.out], [])
        except BrokenPipeError:
            # The reader went away. Bare, the job's next write would fail with EPIPE/SIGPIPE: close our
            # read end so that it does.
            s.out = -1
            s.closed_early = True
            return
        except OSError:
            s.out = -1
            return


class FileOut(Stream):
    """An output stream the line sent to a regular file: handed to the job as it is (no pipe), so the job
    sees its file (fstat, lseek, O_APPEND) as bare. What can still be known honestly: how much the file
    grew while the job ran (approximate: another writer to the file counts too, a job that rewrites in
    place counts less) and its last bytes, read back through /proc/self/fd when we may read the file."""

    __slots__ = ("size",)

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(fd, -1)
        self.size = size

    def sha256(self) -> str | None:  # type: ignore[override]
        return None  # the bytes went past us: no digest (record --digest keeps the pipe for one)

    def finish(self) -> None:
        try:
            st = os.fstat(self.fd)
        except OSError:
            return
        self.n = max(st.st_size - self.size, 0)
        want = min(self.n, TAIL)
        if not want:
            return
        try:  # `>>` opened it write-only: reopen the same file for reading, by its /proc link
            r = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError:
            return  # not readable by us: no tail, never a guess
        try:
            rs = os.fstat(r)
            if (rs.st_dev, rs.st_ino) == (st.st_dev, st.st_ino):
                self.tail = os.pread(r, want, st.st_size - want)
        except OSError:
            pass
        finally:
            os.close(r)


class Run:
    """State shared with the signal handlers."""

    pid = 0
    tty_fg = False  # in a terminal's foreground group: the job stays in ours, as the terminal expects
    pending: list[int] = []  # noqa: RUF012 - signals that arrived before the job existed

    @classmethod
    def forward(cls, signum: int, frame: object) -> None:
        if cls.pid:
            try:  # noqa: SIM105 - contextlib costs an import on the wrapper's path
                os.kill(cls.pid, signum)
            except ProcessLookupError:
                pass
        else:
            cls.pending.append(signum)


def _install_forwarders() -> list[tuple[int, object]]:
    tty_fg = False
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                tty_fg = True
        except OSError:
            pass
    saved = []
    for name in FORWARDED:
        sig = getattr(_signal, name)
        old = _signal.getsignal(sig)
        if old == _signal.SIG_IGN:  # ignored by whoever started us: the job inherits that, as bare
            continue
        # From the terminal, ^C and ^\ reach the job straight from the kernel (same foreground group):
        # the wrapper only lives through them (no KeyboardInterrupt) to copy the job's last output and
        # return its status. A caught signal is back at its default in the job after exec.
        _signal.signal(sig, _noop if tty_fg and name in TTY_SIGNALS else Run.forward)
        saved.append((sig, old))
    Run.tty_fg = tty_fg
    return saved


def _noop(signum: int, frame: object) -> None:
    pass


_SHELLS = frozenset(("sh", "dash", "bash", "ash", "busybox", "zsh", "ksh", "mksh", "cron", "crond"))


def _ignored_on_entry() -> int:
    """The signal mask (SigIgn bits) we were most likely started with, for SIGPIPE and SIGXFSZ.

    Python ignores both at start-up, so our own dispositions say nothing. A shell (or cron) cannot
    un-ignore a signal that was ignored when it started, and passes that on: when our parent is one and
    ignores them, so did we on entry, and so must the job (cron's child ignoring SIGPIPE makes a job's
    write to a closed pipe fail with EPIPE instead of killing it). Other parents (Python's subprocess
    resets SIGPIPE for its children) say nothing: the job gets the defaults."""
    try:
        ppid = os.getppid()
        with open(f"/proc/{ppid}/comm", "rb") as f:
            if f.read().strip().decode("ascii", "replace") not in _SHELLS:
                return 0
        with open(f"/proc/{ppid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigIgn:"):
                    return int(line[7:].strip(), 16)
    except (OSError, ValueError):
        pass
    return 0


def _spawn(cmd: list[str], env: dict[bytes, bytes], actions: list, own_group: bool) -> int:
    # Python ignores SIGPIPE and SIGXFSZ at start-up; the job gets them back as we got them.
    ignored = _ignored_on_entry()
    reset = tuple(sig for sig in (_signal.SIGPIPE, _signal.SIGXFSZ) if not ignored >> (sig - 1) & 1)
    kw: dict = {"file_actions": actions, "setsigdef": reset}
    if own_group:
        kw["setpgroup"] = 0
    try:
        return os.posix_spawnp(cmd[0], cmd, env, **kw)
    except OSError as e:
        if e.errno != 8:  # ENOEXEC: a script without #!, which execvp(3) and every shell run with sh
            raise
        path = cmd[0]
        if "/" not in path:
            import shutil  # deferred: start-up is the cost every cron run pays

            path = shutil.which(path) or path
        # The line's shell runs it, as bare: bash runs a #!-less script itself, dash with /bin/sh.
        shell = os.fsdecode(env.get(b"SHELL") or b"/bin/sh")
        if os.path.basename(os.path.realpath(shell)) != "bash":
            shell = "/bin/sh"
        return os.posix_spawn(shell, [shell, path, *cmd[1:]], env, **kw)


def _guard(pid: int) -> tuple[int, int] | None:
    """A watcher in the job's process group that kills that group if this wrapper dies first (SIGKILL,
    the OOM killer): it waits on a pipe only we hold, and a line from us (`_release`) lets it go. Why a
    /bin/sh and not prctl(PR_SET_PDEATHSIG): that needs code between fork and exec (ctypes: ~3 ms a run),
    and it would also kill the job when only the wrapper's thread exits."""
    try:
        r, w = os.pipe()
    except OSError:
        return None
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, r, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        script = "read _ || kill -s KILL 0"  # its own group: the job's (dash reads -PGID as an option)
        watcher = os.posix_spawn(
            "/bin/sh", ["/bin/sh", "-c", script], {"PATH": "/usr/bin:/bin"},
            file_actions=actions, setpgroup=pid, setsigdef=(_signal.SIGPIPE, _signal.SIGINT),
        )  # fmt: skip
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
    return watcher, w


def _release(guard: tuple[int, int] | None) -> None:
    """Let the watcher go, and reap it (its time is the wrapper's cost, not the job's)."""
    if guard is not None:
        watcher, w = guard
        try:
            os.write(w, b"\n")
            os.close(w)
            os.waitpid(watcher, 0)
        except OSError:
            pass


def _not_run(name: str, e: OSError, shell: bytes) -> tuple[int, bytes]:
    """Exit status and message for a command that could not start, worded as the line's shell words it
    bare (dash: `/bin/sh: 1: x: not found`; bash: `/bin/bash: line 1: x: command not found`)."""
    missing = e.errno == 2
    code = 127 if missing else 126
    flavour = os.path.basename(os.path.realpath(shell))
    word = name.encode("utf-8", "surrogateescape")
    if flavour == b"bash":
        why = b"command not found" if missing and b"/" not in word else os.fsencode(e.strerror or "")
        return code, shell + b": line 1: " + word + b": " + why + b"\n"
    why = b"not found" if missing else os.fsencode(e.strerror or "")
    return code, shell + b": 1: " + word + b": " + why + b"\n"


def _copy(streams: list[Stream], pidfd: int | None) -> bool:
    """Copy output until the job has exited and its output is drained; return True when some descendant
    still holds the output open after the job exited."""
    import select  # deferred: start-up is the cost every cron run pays

    p = select.poll()
    by_fd = {s.fd: s for s in streams}
    for fd in by_fd:
        p.register(fd, select.POLLIN)
    if pidfd is not None:
        p.register(pidfd, select.POLLIN)
    exited = False
    while by_fd and not exited:
        for fd, _ in p.poll():
            if fd == pidfd:
                exited = True
                continue
            s = by_fd.get(fd)
            if s is None:
                continue
            data = os.read(fd, 65536)
            if data:
                s.feed(data)
            if not data or s.closed_early:
                p.unregister(fd)
                del by_fd[fd]
                if s.closed_early:
                    os.close(fd)
                    s.fd = -1
    # The job has gone: everything it wrote is already in the pipes.
    for fd, s in list(by_fd.items()):
        os.set_blocking(fd, False)
        try:
            while data := os.read(fd, 65536):
                s.feed(data)
            del by_fd[fd]  # EOF: nobody else holds it
        except BlockingIOError:
            pass  # a background child of the job still has it open
    return bool(by_fd)


def _linger(streams: list[Stream]) -> None:
    """A background process of the job still holds its output. Bare, it would write straight to cron's
    pipe for as long as it lives; keep copying from a detached process so it still can, while the wrapper
    exits when the job did."""
    if os.fork() != 0:
        return
    try:
        for name in FORWARDED:
            _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
        import select  # deferred: start-up is the cost every cron run pays

        live = [s for s in streams if s.fd >= 0]
        for s in live:
            os.set_blocking(s.fd, True)
        while live:
            ready, _, _ = select.select([s.fd for s in live], [], [])
            for s in [s for s in live if s.fd in ready]:
                data = os.read(s.fd, 65536)
                if data and s.out >= 0:
                    _write_all(s, data)
                if not data or s.closed_early:
                    live.remove(s)
                    os.close(s.fd)
    finally:
        os._exit(0)


def complain(root: str, message: str) -> None:
    """One line to syslog (<root>/dev/log); dropped silently if there is no syslog to hear it."""
    try:
        import _socket  # deferred: start-up is the cost every cron run pays

        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.connect(os.path.join(root, "dev/log"))
            stamp = time.strftime("%b %d %H:%M:%S")
            s.send(f"<12>{stamp} cronshift[{os.getpid()}]: {message}".encode("utf-8", "backslashreplace"))
        finally:
            s.close()
    except OSError:
        pass


def _scheduled(value: str | None, start: float) -> float:
    if value is None:
        return start - start % 60
    try:
        return float(value)
    except ValueError:
        from datetime import datetime  # deferred: start-up is the cost every cron run pays

        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _clean(v: str) -> str:
    """Text SQLite and every reader can hold: a lone surrogate (an undecodable byte of an argument, by
    surrogateescape) becomes a visible \\xNN escape instead of poisoning the ledger."""
    try:
        v.encode("utf-8")
        return v
    except UnicodeEncodeError:
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _dumps(d: dict) -> bytes:
    """One JSON line. json.dumps would cost ~7 ms to import; values here are str, int, float, None, dict."""
    from _json import encode_basestring_ascii as _q  # deferred: start-up is the cost every cron run pays

    def q(v: str) -> str:
        return _q(_clean(v))

    parts = []
    for k, v in d.items():
        if v is None:
            js = "null"
        elif isinstance(v, str):
            js = q(v)
        elif isinstance(v, dict):
            js = "{" + ",".join(f"{q(a)}:{q(str(b))}" for a, b in v.items()) + "}"
        else:
            js = repr(v)
        parts.append(f"{q(k)}:{js}")
    return ("{" + ",".join(parts) + "}\n").encode("ascii")


def _user() -> str:
    try:
        import pwd  # deferred: start-up is the cost every cron run pays

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def _target_key(o: Options) -> str:
    from cronshift.ledger.spool import spool_key  # deferred: start-up is the cost every cron run pays

    if o.redis:
        return spool_key(o.redis)
    return spool_key(os.path.abspath(o.store or os.path.join(o.root, "var/lib/cronshift/ledger.db")))


def _mark_inflight(o: Options, uid: str, pid: int, start: float, cmd: list[str]) -> str | None:
    """The run as the next drain records it if this wrapper dies first (see spool.write_inflight)."""
    try:
        from cronshift.ledger import spool  # deferred: start-up is the cost every cron run pays

        try:
            scheduled = _scheduled(o.scheduled_for, start)
        except ValueError:
            scheduled = _scheduled(None, start)
        rec = _run_doc(o, uid, pid, cmd, scheduled, start) | {
            "end": None,
            "exit_status": None,
            "signal": None,
            "extra": {"lost": "1", "why": "the wrapper died before the job ended; the job was not watched"},
        }
        return spool.write_inflight(o.root, _target_key(o), _dumps(rec))
    except Exception:  # never let the wrapper's own trouble reach the job
        return None


def _run_doc(o: Options, uid: str, pid: int | None, cmd: list[str], scheduled: float, start: float) -> dict:
    """The fields a run's record has from its start on: the in-flight record and the final one share them.

    With the final record's they are model.RunRecord's (tests/test_record.py holds them to it: importing
    the model would cost every cron run ~13 ms)."""
    return {
        "cronshift_run": 1,
        "uid": uid,
        "job_id": o.job,
        "source": "record",
        "host": os.uname().nodename,
        "user": _user(),
        "pid": pid,
        "command": " ".join(_quote(a) for a in cmd),
        "scheduled_for": scheduled,
        "start": start,
    }


def record_run(o: Options, rec: dict) -> None:
    """Deliver the record: Redis stream, or spool then (past the threshold) SQLite. Raises on failure."""
    from cronshift.ledger import spool  # deferred: start-up is the cost every cron run pays

    root = o.root
    line = _dumps(rec)
    if o.redis:
        target = o.redis
        key = spool.spool_key(target)
        waiting = spool.pending(root, key)
        down = _down_since(spool, root, key)
        if down is not None and time.time() - down < REDIS_BACKOFF:
            _spool(root, spool, key, line)  # it failed a moment ago: do not make this run wait too
            return
        try:
            from cronshift.ledger.resp import xadd_all  # deferred: start-up is the cost every cron run pays

            xadd_all(target, [line.rstrip(b"\n")], TIMEOUT)
        except (OSError, RuntimeError, ValueError) as e:
            path = _spool(root, spool, key, line)
            _mark_down(os.path.dirname(path), key)
            complain(root, f"{_safe_url(target)}: {e}; run spooled to {path} (next try in {REDIS_BACKOFF}s)")
            return
        if down is not None:
            _mark_up(spool, root, key)
        if waiting:
            _drain_to_redis(o, spool, key, waiting)
        return
    store = o.store or os.path.join(root, "var/lib/cronshift/ledger.db")
    key = spool.spool_key(os.path.abspath(store))
    path = _spool(root, spool, key, line)
    if os.stat(path).st_size >= o.drain_at and _writable(store):
        from cronshift.ledger.drain import drain_to_sqlite  # only past the threshold: sqlite3 costs ~10 ms

        try:
            drain_to_sqlite(root, store, busy_ms=int(TIMEOUT * 1000), complain=complain)
        except Exception as e:  # sqlite3.Error, OSError, a newer schema: the runs wait in the spool
            complain(root, f"{store}: {e}; runs wait in the spool ({path})")


def _writable(store: str) -> bool:
    """Only root (or the owner of a private --store) drains: another user's job leaves its records in its
    own spool for root's next drain, instead of failing on the root-only ledger every run."""
    if os.geteuid() == 0:
        return True  # and if the store refuses, syslog hears why
    if os.path.exists(store):
        return os.access(store, os.W_OK)
    return os.access(os.path.dirname(store) or ".", os.W_OK | os.X_OK)


def _down_since(spool, root: str, key: str) -> float | None:
    """When the Redis ledger last failed (a marker beside the spool), or None."""
    for d in spool.spool_dirs(root):
        try:
            return os.stat(os.path.join(d, f"down-{key}")).st_mtime
        except OSError:
            continue
    return None


def _mark_down(folder: str, key: str) -> None:
    try:
        fd = os.open(os.path.join(folder, f"down-{key}"), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        os.utime(os.path.join(folder, f"down-{key}"))
    except OSError:
        pass


def _mark_up(spool, root: str, key: str) -> None:
    for d in spool.spool_dirs(root):
        try:  # noqa: SIM105 - contextlib costs an import on the wrapper's path
            os.unlink(os.path.join(d, f"down-{key}"))
        except OSError:
            pass


def _spool(root: str, spool, key: str, line: bytes) -> str:
    try:
        path, _, refused = spool.append(root, key, line)
    except OSError as e:
        raise OSError(e.errno, f"no spool would take the run record: {e}") from None
    for e in refused:
        complain(root, f"{e.filename}: {e.strerror}; run spooled to {path} instead")
    return path


def _safe_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def _drain_to_redis(o: Options, spool, key: str, paths: list[str]) -> None:
    from cronshift.ledger.resp import xadd_all  # deferred: start-up is the cost every cron run pays

    for path in paths:
        try:
            got = spool.claim(path)
        except OSError as e:
            complain(o.root, f"{e.filename}: {e.strerror}; not sent")
            continue
        if got is None:
            continue
        claimed, data, _uid = got  # our own spool: the Redis credential speaks for these records
        lines = spool.split_records(data)
        try:
            for i in range(0, len(lines), 500):
                xadd_all(o.redis, lines[i : i + 500], TIMEOUT)
        except (OSError, RuntimeError) as e:
            complain(o.root, f"{_safe_url(o.redis)}: {e}; spool {claimed} left for the next run")
            return  # a stream consumer dedupes by uid, so a partly sent file may be sent again
        spool.release(claimed)


def main(argv: list[str]) -> int:
    try:
        o, cmd = parse(argv)
    except ValueError as e:
        if str(e) == "help":
            os.write(1, USAGE.encode())
            return 0
        if str(e) == "version":
            os.write(1, f"cronshift {__version__}\n".encode())
            return 0
        os.write(2, f"cronshift record: {e}\n{USAGE}".encode())
        return 2

    # Fill closed 0/1/2 with close-on-exec placeholders so our pipes cannot land there (the job then
    # sees them closed, as it would bare).
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    # One pipe when stdout and stderr are the same file (cron hands jobs one pipe for both): that keeps
    # the order of the job's writes across the two streams, which two pipes cannot.
    stats = {fd: os.fstat(fd) for fd in (1, 2) if fd not in closed}
    merged = len(stats) == 2 and (stats[1].st_dev, stats[1].st_ino) == (stats[2].st_dev, stats[2].st_ino)
    streams: list[Stream] = []
    by_fd: dict[int, Stream | FileOut] = {}
    actions = []
    write_ends = []
    for fd in (1,) if merged else (1, 2):
        if fd in closed:
            continue
        if not o.digest and stats[fd].st_mode & 0o170000 == 0o100000:
            # The line redirected it to a regular file: the job keeps that file, no pipe in between.
            by_fd[fd] = FileOut(fd, stats[fd].st_size)
            continue
        r, w = os.pipe()
        streams.append(Stream(r, fd))
        by_fd[fd] = streams[-1]
        actions.append((os.POSIX_SPAWN_DUP2, w, fd))
        if merged:
            actions.append((os.POSIX_SPAWN_DUP2, w, 2))
        actions.append((os.POSIX_SPAWN_CLOSE, w))
        write_ends.append(w)

    env = _environ()
    saved = _install_forwarders()
    start = time.time()
    t0 = time.monotonic()
    pid = None
    spawn_error = None
    inflight = None
    run_uid = os.urandom(16).hex()
    guard = None
    try:
        # Off a terminal the job gets its own process group, so that a watcher can kill it should the
        # wrapper be SIGKILLed (signals to the wrapper still reach it: they are forwarded).
        pid = Run.pid = _spawn(cmd, env, actions, own_group=not Run.tty_fg)
        if not Run.tty_fg:
            guard = _guard(pid)
    except OSError as e:
        spawn_error = e
    for w in write_ends:
        os.close(w)
    for sig in Run.pending:
        Run.forward(sig, None)

    status = None
    lingering = False
    if pid is None:
        assert spawn_error is not None
        code, message = _not_run(cmd[0], spawn_error, env.get(b"SHELL") or b"/bin/sh")
        os.write(2, message)
        for s in streams:
            os.close(s.fd)
        exit_status, signum, core = code, None, False
    else:
        inflight = _mark_inflight(o, run_uid, pid, start, cmd)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None  # no pidfd: copy to EOF, then reap
        lingering = _copy(streams, pidfd)
        if lingering:
            _linger(streams)
        for s in streams:
            if s.fd >= 0:
                os.close(s.fd)
        _, status = os.waitpid(pid, 0)
        _release(guard)
        Run.pid = 0
        if pidfd is not None:
            os.close(pidfd)
        exit_status = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        core = bool(signum and os.WCOREDUMP(status))
    elapsed = time.monotonic() - t0

    try:
        try:
            scheduled = _scheduled(o.scheduled_for, start)
        except ValueError:
            o.warnings.append(f"--scheduled-for {o.scheduled_for!r} is not ISO 8601 or epoch seconds")
            scheduled = _scheduled(None, start)
        for w in o.warnings:
            complain(o.root, f"record: {w}")
        extra: dict[str, str] = {}
        if merged:
            extra["output"] = "merged"  # stdout and stderr were one file: stdout_* cover both
        if core:
            extra["core_dumped"] = "1"
        if lingering:
            extra["output_open_after_exit"] = "1"  # counts cover what arrived before the job exited
        out = by_fd.get(1)
        err = None if merged else by_fd.get(2)
        for s, name in ((out, "stdout"), (err, "stderr")):
            if isinstance(s, FileOut):
                s.finish()
                # Not captured: straight to the file the line named; bytes = the file's growth, no digest.
                extra[f"{name}_file"] = "1"
            elif s is not None and s.closed_early:
                extra[f"{name}_reader_closed"] = "1"
            raw = s.tail_b64() if s else None
            if raw:
                extra[f"{name}_tail_b64"] = raw
        argv = [os.fsencode(a) for a in cmd]
        if any(_clean(a) is not a for a in cmd):
            extra["argv_b64"] = _b64(b"\0".join(argv))  # the exact bytes, NUL-separated
        rec = _run_doc(o, run_uid, pid, cmd, scheduled, start) | {
            "end": start + elapsed,
            "exit_status": exit_status,
            "signal": signum,
            "stdout_bytes": out.n if out else None,
            "stderr_bytes": err.n if err else None,
            "stdout_sha256": out.sha256() if out else None,
            "stderr_sha256": err.sha256() if err else None,
            "stdout_tail": out.tail_text() if out else "",
            "stderr_tail": err.tail_text() if err else "",
            "extra": extra,
        }
        record_run(o, rec)
        if inflight:
            os.unlink(inflight)  # only once the real record is spooled: until then the run reads "lost"
    except BaseException as e:  # never let the wrapper's own trouble change the job's outcome
        complain(o.root, f"record: {type(e).__name__}: {e}")

    for sig, old in saved:
        _signal.signal(sig, old)
    if signum is not None:
        _die_like(signum)
    return exit_status if exit_status is not None else 1


def _die_like(signum: int) -> None:
    """End with the job's signal so our parent's wait status matches. No core of the wrapper itself: it
    would be useless and, in the job's working directory, could overwrite the job's own core file."""
    try:
        import resource  # deferred: start-up is the cost every cron run pays

        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, OSError, ValueError):
        pass
    try:
        _signal.signal(signum, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [signum])
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signum)
    # Still alive: a signal whose default is not to terminate. Report it the way shells do.
    os._exit(128 + signum)
