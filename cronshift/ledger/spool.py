"""The run spool: an append-only JSON-lines inbox that `cronshift record` writes and the ledger drains.

Why a spool: the wrapper runs on every cron run, and appending one line costs microseconds where importing
sqlite3 and committing costs milliseconds; and when the store is missing, locked, full or corrupt the record
still has somewhere to go. This module is imported by the wrapper, so it uses only cheap C-backed modules.

Concurrency protocol (many wrappers appending, any number of drainers):
- an appender opens `<dir>/<key>.jsonl` with O_APPEND, takes a *shared* flock without blocking,
  checks the path still names the inode it opened, then writes its whole line in one write(2) (local Linux
  filesystems do not interleave O_APPEND writes);
- a drainer renames the live file to `*.draining.<pid>` (new appenders then create a fresh file), takes an
  *exclusive* flock (waiting only for appenders already inside their one write), reads, stores, unlinks.
  A drainer that dies leaves its claimed file behind; the next drainer adopts it once its lock is free.
  Stores insert by record uid, so a file drained twice adds nothing twice.

Trust (see README, "Threat model"): each user's records wait in `var/spool/cronshift/<uid>/`, a folder
that user owns (0700) inside a root-owned 0755 one, so no other unprivileged user can write, replace or
delete them. The drainer never believes the `user` or `source` a record claims: the user is the owner of
the spool file (fstat of the descriptor it read), and symlinks, hard links and files owned by anyone but
the folder's owner are refused.
"""

import os

BASE = "var/spool/cronshift"  # root-owned 0755; one 0700 folder per uid inside, owned by that uid
LEGACY = "var/lib/cronshift/spool"  # the shared sticky folder of earlier versions: drained, never written
# Every record line starts so; JSON strings escape '"', so the mark never occurs inside a string value.
MARK = b'{"cronshift_run":1,'

_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(OSError):
    """A spool file or folder the drainer will not trust (symlink, foreign owner, hard link)."""


def spool_key(target: str) -> str:
    """File-name prefix for the store a record is meant for (a path or a Redis URL)."""
    from binascii import crc32  # deferred: the wrapper imports this module on every cron run

    return f"runs-{crc32(target.encode('utf-8', 'surrogateescape')):08x}"


def user_dir(root: str, uid: int) -> str:
    return os.path.join(root, BASE, str(uid))


def temp_dir(uid: int) -> str:
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(tmp, f"cronshift-spool-{uid}")


def spool_dirs(root: str) -> list[str]:
    """Where this user's records wait, best first: the per-user spool, then a private temp folder."""
    uid = os.geteuid()
    return [user_dir(root, uid), temp_dir(uid)]


def all_spool_dirs(root: str) -> list[str]:
    """Every folder a drainer looks in: each user's spool, the legacy shared one, temp fallbacks."""
    base = os.path.join(root, BASE)
    try:
        dirs = [os.path.join(base, n) for n in sorted(os.listdir(base)) if n.isdigit()]
    except OSError:
        dirs = []
    dirs.append(os.path.join(root, LEGACY))
    temps = {os.environ.get("TMPDIR") or "/tmp", "/tmp"}
    for tmp in sorted(temps):
        try:
            names = os.listdir(tmp)
        except OSError:
            continue
        dirs += [os.path.join(tmp, n) for n in sorted(names) if n.startswith("cronshift-spool-")]
    return dirs


def _mkdir_private(path: str, mode: int = 0o700) -> None:
    old = os.umask(0o077)  # private from creation, never fixed up later
    try:
        os.mkdir(path, mode)
    finally:
        os.umask(old)


def _check_private_dir(path: str, uid: int) -> None:
    import stat  # deferred: the wrapper imports this module on every cron run

    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(20, "not a directory (or a symbolic link)", path)
    if st.st_uid != uid:
        raise Refused(1, f"owned by uid {st.st_uid}, not {uid}", path)
    if st.st_mode & 0o022:
        raise Refused(1, "writable by others", path)


def _make_base(root: str) -> str:
    """var/spool/cronshift: root's, 0755 (every user reaches their own folder in it, no one else's)."""
    base = os.path.join(root, BASE)
    old = os.umask(0o022)
    try:
        os.makedirs(os.path.dirname(base), 0o755, exist_ok=True)
        try:  # noqa: SIM105 - contextlib costs an import on the wrapper's path
            os.mkdir(base, 0o755)
        except FileExistsError:
            pass
    finally:
        os.umask(old)
    _check_private_dir(base, 0)
    return base


def prepare_user_spool(root: str, uid: int, gid: int) -> str:
    """Create (as root, for `wrap`) the spool folder of `uid`, owned by it and 0700; return it.

    A folder in its place that `uid` does not own (planted before root got there) is moved aside, not
    used. Also takes the legacy shared folder's write bit away from others."""
    base = _make_base(root)
    d = user_dir(root, uid)
    try:
        _check_private_dir(d, uid)
        return d
    except FileNotFoundError:
        pass
    except Refused:
        os.rename(d, os.path.join(base, f".refused-{uid}-{os.urandom(4).hex()}"))
    _mkdir_private(d)
    os.chown(d, uid, gid)
    return d


def _ensure_own_dir(root: str, path: str, primary: bool) -> None:
    """The per-user spool (made here only when we are root: otherwise `wrap` made it) or the temp
    fallback (made here, private to this user)."""
    uid = os.geteuid()
    try:
        _check_private_dir(path, uid)
        return
    except FileNotFoundError:
        pass
    if primary:
        if uid != 0:
            raise FileNotFoundError(2, "no spool folder for this user (run `cronshift wrap` as root)", path)
        _make_base(root)
    try:  # noqa: SIM105 - contextlib costs an import on the wrapper's path
        _mkdir_private(path)
    except FileExistsError:
        pass  # a concurrent first run made it: checked just below like any other
    _check_private_dir(path, uid)


def append(root: str, key: str, line: bytes) -> tuple[str, int, list[OSError]]:
    """Append one record line to the first spool that takes it; return (path, size after the write, errors
    from the spools that refused it before).  # deferred: the wrapper imports this module on every cron run

    Raises the last OSError when no spool is writable: the caller reports it and carries on.
    """
    # deferred: the wrapper imports this module on every cron run
    import fcntl
    import stat

    errors: list[OSError] = []
    for i, d in enumerate(spool_dirs(root)):
        path = os.path.join(d, f"{key}.jsonl")
        try:
            _ensure_own_dir(root, d, primary=i == 0)
            for _ in range(5):
                old = os.umask(0o077)
                try:
                    fd = os.open(path, _APPEND_FLAGS, 0o600)
                finally:
                    os.umask(old)
                try:
                    st = os.fstat(fd)
                    if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                        raise Refused(1, "spool file not this user's own plain file", path)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a drainer holds it: it has been renamed, open the new one
                    cur = os.stat(path)
                    if (cur.st_dev, cur.st_ino) != (st.st_dev, st.st_ino):
                        continue
                    n = os.write(fd, line)
                    if n != len(line):
                        raise OSError(28, "short write (disk full?)", path)
                    return path, os.fstat(fd).st_size, errors
                finally:
                    os.close(fd)
            raise BlockingIOError(11, "spool kept being drained", path)
        except OSError as e:
            errors.append(e)
    raise errors[-1]


def _starttime(pid: int) -> str:
    """The process's start time in clock ticks since boot (with the pid, names it uniquely)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[19].decode()
    except (OSError, IndexError):
        return ""


def write_inflight(root: str, key: str, line: bytes) -> str | None:
    """Leave the record of a run that has started (marked lost) where the drainer finds it should this
    wrapper die before the run ends (SIGKILL, OOM); `release` it once the real record is spooled. Named
    by our pid and start time, so a drainer can tell a dead wrapper from a live one. None if no spool
    folder takes it (the run is then simply not known to be lost)."""
    name = f"inflight-{key}-{os.getpid()}-{_starttime(os.getpid())}.jsonl"
    for i, d in enumerate(spool_dirs(root)):
        try:
            _ensure_own_dir(root, d, primary=i == 0)
            path = os.path.join(d, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            return path
        except OSError:
            continue
    return None


def _listings(root: str) -> list[tuple[str, list[str]]]:
    """Each spool folder a drainer reads, with its names sorted; one that cannot be listed is passed over."""
    out = []
    for d in all_spool_dirs(root):
        try:
            out.append((d, sorted(os.listdir(d))))
        except OSError:
            continue
    return out


def lost(root: str, key: str) -> list[str]:
    """In-flight records of wrappers that are gone: their runs ended unobserved."""
    prefix = f"inflight-{key}-"
    out = []
    for d, names in _listings(root):
        for n in names:
            if not n.startswith(prefix) or not n.endswith(".jsonl"):
                continue
            pid, _, start = n[len(prefix) : -len(".jsonl")].partition("-")
            if pid.isdigit() and _starttime(int(pid)) == start:
                continue  # that wrapper is still watching its run
            out.append(os.path.join(d, n))
    return out


def pending(root: str, key: str) -> list[str]:
    """Live and abandoned spool files for `key` (cheap: one listdir per directory)."""
    out = []
    for d, names in _listings(root):
        out += [os.path.join(d, n) for n in names if n.startswith(key + ".")]
    return out


def _trusted_dir(d: str) -> int | None:
    """The uid whose records folder `d` may hold, -1 for the legacy shared (sticky, root-owned) folder;
    raises Refused for a symbolic link, a non-folder or a folder others could write into."""
    import stat  # deferred: the wrapper imports this module on every cron run

    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(20, "spool folder is a symbolic link or not a folder", d)
    if st.st_mode & 0o022:
        if st.st_uid == 0 and st.st_mode & stat.S_ISVTX and d.endswith(LEGACY):
            return -1
        raise Refused(1, "spool folder writable by others", d)
    return st.st_uid


def read_trusted(path: str, lock: int = 0) -> tuple[bytes, int]:
    """The bytes of one spool file and the uid that wrote it (its owner, from fstat of the descriptor
    read): never the user a record claims. Refuses symlinks, hard links and foreign-owned files."""
    # deferred: the wrapper imports this module on every cron run
    import fcntl
    import stat

    want = _trusted_dir(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == 40:  # ELOOP: a symbolic link
            raise Refused(40, "spool file is a symbolic link", path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise Refused(1, "spool file is not a plain file with one link", path)
        if want not in (-1, st.st_uid):
            raise Refused(1, f"spool file owned by uid {st.st_uid}, its folder by uid {want}", path)
        if lock:
            fcntl.flock(fd, lock)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), st.st_uid
    finally:
        os.close(fd)  # drops the lock


def claim(path: str) -> tuple[str, bytes, int] | None:
    """Take a spool file away from appenders and return (claimed path, its bytes, owner uid); None if
    someone else has it. Raises Refused for a file that is not to be trusted (left where it is). Call
    `release` once the records are safely stored; until then a crash loses nothing."""
    # deferred: the wrapper imports this module on every cron run
    import fcntl
    import stat

    if ".draining." in path:
        claimed = path
    else:
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                raise Refused(40, "spool file is a symbolic link or not a plain file", path)
        except FileNotFoundError:
            return None
        claimed = f"{path}.draining.{os.getpid()}.{os.urandom(3).hex()}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
    try:
        # A claimed file of our own: wait for appenders inside their single write; an abandoned one (or
        # another drainer's): only if its lock is free.
        lock = fcntl.LOCK_EX if claimed is not path else fcntl.LOCK_EX | fcntl.LOCK_NB
        data, uid = read_trusted(claimed, lock)
    except FileNotFoundError:
        return None
    except BlockingIOError:
        return None
    return claimed, data, uid


def user_name(uid: int) -> str:
    try:
        import pwd  # deferred: the wrapper imports this module on every cron run

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def release(claimed: str) -> None:
    try:  # noqa: SIM105 - contextlib costs an import on the wrapper's path
        os.unlink(claimed)
    except FileNotFoundError:
        pass


def split_records(data: bytes) -> list[bytes]:
    """Record lines from spool bytes. A line cut short by a full disk, and anything glued to it by a later
    append, is recovered from the next record start; the broken fragment is dropped."""
    out = []
    for line in data.split(b"\n"):
        if not line:
            continue
        parts = line.split(MARK)
        out += [MARK + p for p in parts[1:]]
    return out
