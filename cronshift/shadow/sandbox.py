"""The sandbox helper process: a private mount namespace in which scratch copies cover the declared paths.

Run as `python -m cronshift.shadow.sandbox run REQUEST RESULT` (unshare, bind, run the job through the
runtime, write the result) or `... enter PID REQUEST` / `... leave PID REQUEST` (add or remove the same binds
inside a running worker's own namespace). A fresh interpreter is used because unshare(2)/setns(2) on the
mount namespace need a single-threaded process, and so the caller's namespace is never changed.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def private_namespace() -> None:
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")


def bind(src: str, target: str) -> None:
    _check(
        _libc.mount(src.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind {src} on {target}"
    )


def unbind(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def apply(req: dict[str, Any]) -> None:
    """Declared paths first, the private /tmp last (it hides any target below /tmp; callers avoid that)."""
    for src, target in req["binds"]:
        bind(src, target)


def main(argv: list[str]) -> int:
    op = argv[0]
    if op == "run":
        with open(argv[1], encoding="utf-8") as f:
            req = json.load(f)
        private_namespace()
        apply(req)
        from cronshift.runtime.execute import JobFailed, run_job

        try:
            out: dict[str, Any] = {"ok": True, **run_job(req["spec"])}
        except JobFailed as e:
            out = {"ok": False, "exit_status": e.exit_status, "signal": e.signal, "output_tail": e.tail}
            out["duration"] = e.duration
        with open(argv[2], "w", encoding="utf-8") as f:
            json.dump(out, f)
        return 0
    pid, path = int(argv[1]), argv[2]
    with open(path, encoding="utf-8") as f:
        req = json.load(f)
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNS), f"setns into the mount namespace of pid {pid}")
    finally:
        os.close(fd)
    if op == "enter":
        apply(req)
    elif op == "leave":
        for _src, target in reversed(req["binds"]):
            unbind(target)
    else:
        raise SystemExit(f"unknown operation {op!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
