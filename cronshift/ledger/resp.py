"""A deliberately tiny Redis client for the wrapper's one job: XADD a few records within one deadline.

Why not redis-py here: importing it costs about 100 ms, and its default retry policy adds seconds per run
while Redis is down. The wrapper needs one pipelined round trip with a hard total deadline and no retries,
which is thirty lines of RESP over `_socket` (the `socket` module costs ~7 ms to import because of enum).
The app's readers use redis-py (see ledger.py); both speak to the same stream.
"""

import os
import time

STREAM = "cronshift:runs"  # wrappers' records (and drained spools)
# The Celery/Streams runtime's records: a stream of their own, so a Redis ACL can let only the runtime's
# user write it, and a reader knows the writer from the key instead of trusting the record's `source`.
RUNTIME_STREAM = "cronshift:runs:runtime"


class NotPrivate(ValueError):
    """A file meant to hold a Redis password that another user could read or replace."""


def read_private(path: str) -> bytes:
    """The bytes of `path` (its first 64 KiB), a file that holds a Redis password: a regular file, not a
    symlink, owned by root or this user, with no group or other access. Raises OSError when it cannot be
    opened, NotPrivate when anyone else could read or swap it. The one rule for the wrapper's
    `--redis-config` and the runtime's CRONSHIFT_LEDGER_REDIS_CONFIG."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o077 or (st.st_mode & 0o170000) != 0o100000:
            raise NotPrivate(path)
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _unquote(s: str) -> str:
    if "%" not in s:
        return s
    parts = s.split("%")
    out = bytearray(parts[0].encode())
    for p in parts[1:]:
        out += bytes.fromhex(p[:2]) + p[2:].encode()
    return out.decode("utf-8", "surrogateescape")


def parse_url(url: str) -> tuple[str, int | str, str | None, str | None, int]:
    """redis://[user[:password]@]host[:port][/db] or unix://[user:pw@]/path[?db=N]
    -> (host, port or socket path, user, password, db). Hand-parsed: urllib.parse imports re (~6 ms)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "unix"):
        raise ValueError(f"unsupported Redis URL {url!r} (use redis://host:port/db or unix:///path)")
    rest, _, query = rest.partition("?")
    db = 0
    for part in query.split("&"):
        if part.startswith("db="):
            db = int(part[3:])
    if scheme == "unix":
        cred, _, path = rest.rpartition("@") if "@" in rest.split("/", 1)[0] else ("", "", rest)
        hostport, port_or_path = "", path
    else:
        netloc, _, path = rest.partition("/")
        if path.strip("/"):
            db = int(path.strip("/"))
        cred, _, hostport = netloc.rpartition("@")
        port_or_path = 6379
    user = password = None
    if cred:
        u, colon, p = cred.partition(":")
        user = _unquote(u) or None
        password = _unquote(p) if colon else None
        if not colon:  # redis://password@host is a common shorthand
            user, password = None, _unquote(u)
    if scheme == "unix":
        return "", port_or_path, user, password, db
    host = hostport
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        if tail.startswith(":"):
            port_or_path = int(tail[1:])
    elif ":" in hostport:
        host, _, p = hostport.rpartition(":")
        port_or_path = int(p)
    return host or "127.0.0.1", port_or_path, user, password, db


def _cmd(*args: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else a.encode("utf-8", "surrogateescape")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def xadd_all(url: str, fields: list[bytes], timeout: float, stream: str = STREAM) -> None:
    """XADD each payload as `record` to the stream, all in one pipelined request.

    Raises OSError (refused, timeout, reset) or RuntimeError (a Redis error reply); never retries.
    """
    import _socket  # deferred: the wrapper imports this module; only a Redis ledger needs a socket

    deadline = time.monotonic() + timeout
    host, port, user, password, db = parse_url(url)
    cmds = []
    if password is not None:
        cmds.append(_cmd("AUTH", user, password) if user else _cmd("AUTH", password))
    if db:
        cmds.append(_cmd("SELECT", str(db)))
    cmds += [_cmd("XADD", stream, "*", "record", f) for f in fields]
    if isinstance(port, str):
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        addr: object = port
    else:
        family, _, _, _, addr = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)[0]
        s = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(addr)
        s.settimeout(max(deadline - time.monotonic(), 0.001))
        s.sendall(b"".join(cmds))
        buf = b""
        replies = 0
        while replies < len(cmds):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(110, "Redis did not answer in time")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionResetError(104, "Redis closed the connection")
            buf += chunk
            # Replies here are simple strings, errors or bulk strings (stream ids): each ends its line.
            while True:
                nl = buf.find(b"\r\n")
                if nl < 0:
                    break
                line, rest = buf[:nl], buf[nl + 2 :]
                if line[:1] == b"$":
                    n = int(line[1:])
                    if n >= 0:
                        if len(rest) < n + 2:
                            break
                        rest = rest[n + 2 :]
                elif line[:1] == b"-":
                    raise RuntimeError(line[1:].decode("utf-8", "replace"))
                buf = rest
                replies += 1
    finally:
        s.close()
