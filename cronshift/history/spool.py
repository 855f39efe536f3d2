"""The run spool: an append-only JSON-lines inbox that `cronshift record` writes and the ledger drains.

Why a spool: the wrapper runs on every cron run, and appending one line costs microseconds where importing
sqlite3 and committing costs milliseconds; and when the store is missing, locked, full or corrupt the record
still has somewhere to go. This module is imported by the wrapper, so it uses only cheap C-backed modules.

Concurrency protocol (many wrappers appending, any number of drainers):
- an appender opens `<dir>/<key>.<uid>.jsonl` with O_APPEND, takes a *shared* flock without blocking,
  checks the path still names the inode it opened, then writes its whole line in one write(2) (local Linux
  filesystems do not interleave O_APPEND writes);
- a drainer renames the live file to `*.draining.<pid>` (new appenders then create a fresh file), takes an
  *exclusive* flock (waiting only for appenders already inside their one write), reads, stores, unlinks.
  A drainer that dies leaves its claimed file behind; the next drainer adopts it once its lock is free.
  Stores insert by record uid, so a file drained twice adds nothing twice.
"""

import os

PRIMARY = "var/lib/cronshift/spool"
# Every record line starts so; JSON strings escape '"', so the mark never occurs inside a string value.
MARK = b'{"cronshift_run":1,'


_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def spool_key(target: str) -> str:
    """File-name prefix for the store a record is meant for (a path or a Redis URL)."""
    from binascii import crc32

    return f"runs-{crc32(target.encode('utf-8', 'surrogateescape')):08x}"


def spool_dirs(root: str) -> list[str]:
    """Where records wait, best first: beside the default store, then a private per-user temp directory."""
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return [os.path.join(root, PRIMARY), os.path.join(tmp, f"cronshift-spool-{os.geteuid()}")]


def all_spool_dirs(root: str) -> list[str]:
    """Every directory a drainer should look in, including other users' temp fallbacks."""
    dirs = [os.path.join(root, PRIMARY)]
    temps = {os.environ.get("TMPDIR") or "/tmp", "/tmp"}
    for tmp in sorted(temps):
        try:
            names = os.listdir(tmp)
        except OSError:
            continue
        dirs += [os.path.join(tmp, n) for n in sorted(names) if n.startswith("cronshift-spool-")]
    return dirs


def _ensure_dir(path: str, shared: bool) -> None:
    """Create the spool directory; the shared one is sticky and world-writable (like /var/tmp) so jobs of
    every user can spool there; the temp fallback is private to its user."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if shared:
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        os.mkdir(path, 0o700)
        if shared:
            os.chmod(path, 0o1777)
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "not a directory", path)
    if not shared and st.st_uid != os.geteuid():
        raise PermissionError(1, "temp spool directory owned by another user", path)


def append(root: str, key: str, line: bytes) -> tuple[str, int, list[OSError]]:
    """Append one record line to the first spool that takes it; return (path, size after the write, errors
    from the spools that refused it before).

    Raises the last OSError when no spool is writable: the caller reports it and carries on.
    """
    import fcntl

    errors: list[OSError] = []
    for i, d in enumerate(spool_dirs(root)):
        path = os.path.join(d, f"{key}.{os.geteuid()}.jsonl")
        try:
            _ensure_dir(d, shared=i == 0)
            for _ in range(5):
                fd = os.open(
                    path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                )
                try:
                    st = os.fstat(fd)
                    if st.st_uid != os.geteuid():  # someone planted it: never write a job's output there
                        raise PermissionError(1, "spool file owned by another user", path)
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


def pending(root: str, key: str) -> list[str]:
    """Live and abandoned spool files for `key` (cheap: one listdir per directory)."""
    out = []
    for d in all_spool_dirs(root):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        out += [os.path.join(d, n) for n in sorted(names) if n.startswith(key + ".")]
    return out


def claim(path: str) -> tuple[str, bytes] | None:
    """Take a spool file away from appenders and return (claimed path, its bytes); None if someone else has
    it. Call `release` once the records are safely stored; until then a crash loses nothing."""
    import fcntl

    if ".draining." in path:
        claimed = path
    else:
        claimed = f"{path}.draining.{os.getpid()}.{os.urandom(3).hex()}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
    try:
        fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if claimed is path:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # abandoned, or another drainer's?
            except BlockingIOError:
                return None
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only for appenders inside their single write
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return claimed, b"".join(chunks)
    finally:
        os.close(fd)  # drops the lock; the name is already ours


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
