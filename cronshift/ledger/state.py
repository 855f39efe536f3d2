"""cronshift's own state under var/lib/cronshift: the folder, and append-only checksummed JSON-lines journals.

The bottom of the edit layer's storage: the crontab writer's journal, retire's journal and scan (which reads
what retire left) all use it, so it lives below all of them. Every step refuses a link, so an unprivileged
user who can write somewhere under the root cannot steer a root-run cronshift into writing elsewhere.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from contextlib import suppress
from pathlib import Path
from typing import Any

__all__ = [
    "STATE_DIR",
    "EditRefused",
    "Journal",
    "append_record",
    "open_state_dir",
    "parse_records",
    "read_all",
    "read_at",
    "read_records",
    "walk_beneath",
    "write_all",
]

STATE_DIR = ("var", "lib", "cronshift")
RD = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class EditRefused(Exception):
    """Nothing was changed; the message is one line naming PATH:LINE and what is wrong."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = path, line, problem
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_at(dir_fd: int, name: str) -> tuple[bytes, os.stat_result]:
    fd = os.open(name, RD, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return read_all(fd), st
    finally:
        os.close(fd)


def walk_beneath(base_fd: int, parts: list[str], *, create_mode: int | None = None) -> int:
    """Open base/parts... one component at a time with O_NOFOLLOW, so a link swapped in later is refused."""
    fd = os.dup(base_fd)
    try:
        for part in parts:
            if create_mode is not None:
                with suppress(FileExistsError):
                    os.mkdir(part, create_mode, dir_fd=fd)
            nfd = os.open(part, DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_state_dir(state_root: Path, *sub: str) -> int:
    """`state_root/var/lib/cronshift[/sub]`, created 0700; refused if any part of it is a symbolic link."""
    where = "/".join((*STATE_DIR, *sub))
    base = os.open(os.path.realpath(state_root), DIR & ~os.O_NOFOLLOW)
    try:
        top = walk_beneath(base, list(STATE_DIR[:-1]), create_mode=0o755)
        try:
            fd = walk_beneath(top, [STATE_DIR[-1], *sub], create_mode=0o700)
        finally:
            os.close(top)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise EditRefused(
                where, None, "is a symbolic link or not a directory; refusing to use it"
            ) from exc
        raise
    finally:
        os.close(base)
    os.fchmod(fd, 0o700)
    return fd


def _record_sum(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k != "sum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def append_record(dir_fd: int, name: str, event: dict[str, Any]) -> None:
    """Append one JSON line carrying a checksum of itself, fsynced, to an append-only journal.

    A SIGKILL mid-write leaves a torn last line; the next record starts on a line of its own, and readers
    skip the torn one (its checksum cannot match), so a half-written record is never taken as written."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        line = json.dumps({**event, "sum": _record_sum(event)}, sort_keys=True).encode()
        write_all(fd, lead + line + b"\n")  # one write: O_APPEND keeps concurrent lines whole
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The intact records of a journal, and how many lines were torn or corrupt (skipped)."""
    events: list[dict[str, Any]] = []
    bad = 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            bad += 1
            continue
        if not isinstance(event, dict) or ("sum" in event and event["sum"] != _record_sum(event)):
            bad += 1
            continue
        event.pop("sum", None)  # records written before checksums existed have none: they are kept
        events.append(event)
    return events, bad


def read_records(state_root: Path, name: str) -> list[dict[str, Any]]:
    """Every intact record of journal `name` under var/lib/cronshift ([] when there is none yet)."""
    path = os.path.join(os.path.realpath(state_root), *STATE_DIR, name)
    if not os.path.lexists(path):
        return []
    dir_fd = open_state_dir(state_root)
    try:
        data, _ = read_at(dir_fd, name)
    finally:
        os.close(dir_fd)
    return parse_records(data)[0]


class Journal:
    """One append-only journal under the state folder. Both edit journals store through it (the crontab
    writer's edits.jsonl, retire's retire.jsonl for run-parts modes); each folds its own events."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = Path(root), name

    def append(self, event: dict[str, Any]) -> None:
        dir_fd = open_state_dir(self.root)
        try:
            append_record(dir_fd, self.name, event)
        finally:
            os.close(dir_fd)

    def events(self) -> list[dict[str, Any]]:
        """Every intact record, oldest first ([] when the journal does not exist yet)."""
        return read_records(self.root, self.name)
