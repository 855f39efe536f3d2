"""The sandbox helper process: one side of a shadow pair in its own mount and PID namespaces, every write
of it caught in a copy-on-write layer.

Run as `python -m cronshift.shadow.sandbox REQUEST` (a fresh interpreter: unshare(2) of the mount and PID
namespaces needs a single-threaded process, and the caller's namespaces are never changed). It

1. unshares the mount and PID namespaces, mounts a tmpfs over the side's private directory and builds a
   copy-on-write view of the whole host in it: an overlayfs over `/` (and over every other real filesystem),
   whose upper layers live in that tmpfs, plus /dev, a private /dev/shm, a read-only /sys, a fresh /proc and
   the session's channel directory (the one path shared with the host: results and the full output);
2. forks the side's first process (PID 1 of the new namespace), which chroots into that view and does the
   side's action: run the job through the runtime (`job`), apply the generated Celery task in-process with
   Celery's own `apply()` (`task`), or exec a Celery worker (`worker`);
3. waits for it, with the side's timeout, or until told to stop (SIGTERM): when PID 1 of a namespace dies
   the kernel kills every process in it and reaps them before the wait returns, so no process of the side
   can still be writing when its layer is read;
4. reads each upper layer (created, changed and deleted files against the real host files), copies the
   written files' content out to the host, and writes the result.

Why not bubblewrap: Debian 12's bwrap 0.8 has no overlay mounts; the kernel's overlayfs in a private mount
namespace is what gives a copy-on-write layer over every path without declaring them first.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import select
import shutil
import signal
import stat
import sys
import time
import traceback
from typing import Any

CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
PR_SET_PDEATHSIG = 1
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
# Filesystems that are not files a job writes as data: bound through (or mounted fresh), never layered.
PSEUDO = {
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue", "securityfs", "debugfs",
    "tracefs", "pstore", "bpf", "hugetlbfs", "configfs", "fusectl", "binfmt_misc", "autofs", "efivarfs",
    "rpc_pipefs", "nsfs", "selinuxfs",
}  # fmt: skip
SKIP_UNDER = ("/proc", "/sys", "/dev")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None, what: str) -> None:
    _check(
        _libc.mount(
            src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
            data.encode() if data else None,
        ),
        what,
    )  # fmt: skip


def private_namespace(pid: bool = False) -> None:
    _check(_libc.unshare(CLONE_NEWNS | (CLONE_NEWPID if pid else 0)), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None, "mount --make-rprivate /")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def real_mounts() -> list[str]:
    """Mount points of real filesystems (the ones a job's writes land in), `/` first."""
    found: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mp = _unescape(left.split()[4])
            fstype = right.split()[0] if right else ""
            if fstype in PSEUDO or any(mp == p or mp.startswith(p + "/") for p in SKIP_UNDER):
                continue
            if mp not in found:
                found.append(mp)
    found.sort(key=lambda p: (p != "/", p.count("/"), p))
    return found


def _under(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def build_view(req: dict[str, Any]) -> tuple[str, list[tuple[str, str]], list[str]]:
    """Mount the copy-on-write view; return (its root, [(mount point, upper dir)], notes)."""
    base = req["mount"]
    _mount("cronshift-shadow", base, "tmpfs", 0, "mode=0700", f"tmpfs on {base}")
    merged = os.path.join(base, "root")
    os.mkdir(merged)
    layers: list[tuple[str, str]] = []
    notes: list[str] = []
    for k, mp in enumerate(real_mounts()):
        if _under(mp, [base]) or (mp != "/" and _under(mp, [req["channel"]])):
            continue
        upper, work = os.path.join(base, f"upper{k}"), os.path.join(base, f"work{k}")
        os.mkdir(upper)
        os.mkdir(work)
        target = merged if mp == "/" else merged + mp
        opts = f"lowerdir={mp},upperdir={upper},workdir={work}"
        try:
            _mount("overlay", target, "overlay", 0, opts, f"overlay on {mp}")
            layers.append((mp, upper))
        except OSError as e:
            if mp == "/":
                raise
            # A filesystem overlayfs cannot stack on: the side sees it read-only (a write fails the same
            # way on both sides and is never lost), and the report says so.
            _mount(mp, target, None, MS_BIND | MS_REC, None, f"bind {mp}")
            _mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None, f"read-only {mp}")
            notes.append(f"{mp}: read-only in the sandbox (no overlay: {e.strerror})")
    _mount("/dev", merged + "/dev", None, MS_BIND | MS_REC, None, "bind /dev")
    if os.path.isdir(merged + "/dev/shm"):
        _mount("shm", merged + "/dev/shm", "tmpfs", 0, "mode=1777", "tmpfs on /dev/shm")
    _mount("/sys", merged + "/sys", None, MS_BIND | MS_REC, None, "bind /sys")
    try:
        _mount("none", merged + "/sys", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None, "read-only /sys")
    except OSError:
        notes.append("/sys: could not be made read-only")
    chan = req["channel"]
    _mount(chan, merged + chan, None, MS_BIND, None, f"bind {chan}")
    return merged, layers, notes


def _sha_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _entry(path: str, st: os.stat_result) -> dict[str, Any]:
    e: dict[str, Any] = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISLNK(st.st_mode):
        e |= {"type": "symlink", "link": os.readlink(path)}
    elif stat.S_ISREG(st.st_mode):
        e |= {"type": "file", "size": st.st_size, "sha256": _sha_file(path)}
    elif stat.S_ISDIR(st.st_mode):
        e |= {"type": "dir"}
    else:
        e |= {"type": "special", "rdev": st.st_rdev}
    return e


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("type", "mode", "uid", "gid", "link", "sha256", "rdev")
    return all(a.get(k) == b.get(k) for k in keys)


def _real_tree(path: str) -> list[str]:
    """Every path under a real directory (for a directory the side deleted or replaced)."""
    out: list[str] = []
    for dirpath, dirs, files in os.walk(path):
        out += [os.path.join(dirpath, n) for n in sorted(dirs) + sorted(files)]
    return out


def read_layer(mp: str, upper: str, exclude: list[str], out_dir: str) -> list[dict[str, Any]]:
    """What the side changed under mount point `mp`, judged against the real files (unchanged: the side
    never reached them). Written files' content is copied to `out_dir`, keyed by their path."""
    changes: list[dict[str, Any]] = []

    def copy_out(src: str, path: str) -> str:
        rel = path.lstrip("/")
        dest = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(src, dest, follow_symlinks=False)
        return dest

    for dirpath, dirs, files in os.walk(upper):
        dirs.sort()
        for name in sorted(files) + list(dirs):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, upper)
            path = os.path.normpath(os.path.join(mp, rel))
            if _under(path, exclude):
                if name in dirs:
                    dirs.remove(name)
                continue
            st = os.lstat(p)
            real_exists = os.path.lexists(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # an overlayfs whiteout: deleted
                if real_exists:
                    gone = [path] + (
                        _real_tree(path) if os.path.isdir(path) and not os.path.islink(path) else []
                    )
                    changes += [{"path": g, "change": "deleted"} for g in gone]
                continue
            e = _entry(p, st)
            if stat.S_ISDIR(st.st_mode):
                opaque = False
                with contextlib.suppress(OSError):
                    opaque = os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
                if not real_exists:
                    changes.append({"path": path, "change": "created", **e})
                    continue
                real = _entry(path, os.lstat(path))
                if real.get("type") != "dir" or not _same(e, real):
                    changes.append({"path": path, "change": "changed", **e})
                if opaque and real.get("type") == "dir":
                    kept = {os.path.join(path, n) for n in os.listdir(p)}
                    for g in _real_tree(path):
                        if not any(g == k or g.startswith(k + "/") for k in kept):
                            changes.append({"path": g, "change": "deleted"})
                continue
            if real_exists:
                real_st = os.lstat(path)
                real = _entry(path, real_st)
                if _same(e, real) and (e["type"] != "file" or st.st_mtime_ns == real_st.st_mtime_ns):
                    continue  # copied up without a change (opened for writing, never written)
                # Same bytes but written again (a newer mtime: a regenerated file, a touch): the write is the
                # job's effect, so it counts, and the other side must make it too; content compares as usual.
                kind = "changed"
            else:
                kind = "created"
            if e["type"] == "file":
                e["copy"] = copy_out(p, path)
            changes.append({"path": path, "change": kind, **e})
    changes.sort(key=lambda c: c["path"])
    return changes


# -- the side's own process (PID 1 of the namespace, inside the view) --------------------------------------


def _run_action(req: dict[str, Any]) -> dict[str, Any]:
    out = _run_action_inner(req)
    return out


def _run_action_inner(req: dict[str, Any]) -> dict[str, Any]:
    from cronshift.runtime.execute import JobFailed, run_job

    os.environ.update(req.get("env") or {})
    started = time.monotonic()
    if req["action"] == "job":
        try:
            out: dict[str, Any] = {"ok": True, **run_job(req["spec"])}
        except JobFailed as e:
            out = {"ok": False, **e.result, "exit_status": e.exit_status, "signal": e.signal}
        out["duration_end_to_end"] = time.monotonic() - started
        return out
    sys.path.insert(0, req["project"])
    if req["action"] == "streams":
        return _run_streams(req)
    # action "task": the generated module imported, its real task object applied by Celery's own machinery.
    try:
        import importlib

        mod = importlib.import_module(req["module"])
        task = _find_task(mod, req.get("task_name"))
        if req.get("append_flag") and isinstance(getattr(mod, "SPEC", None), dict):
            mod.SPEC["command"] = f"{mod.SPEC['command']} {req['append_flag']}"  # --mode dry-run
    except Exception as e:
        return {"ok": False, "task_error": f"importing {req['module']}: {type(e).__name__}: {e}"}
    spec = _plain(getattr(mod, "SPEC", None))
    started = time.monotonic()
    try:
        res = task.apply(kwargs={"payload": None})
        value = res.result
        state = res.state
    except Exception as e:
        return {"ok": False, "task_error": f"task {task.name} raised {type(e).__name__}: {e}"}
    took = time.monotonic() - started
    return {**_task_result(task, state, value, took), "spec": spec}


def _task_result(task: Any, state: str, value: Any, took: float) -> dict[str, Any]:
    from cronshift.runtime.execute import JobFailed

    if state == "SUCCESS":
        if not isinstance(value, dict) or "exit_status" not in value:
            return {
                "ok": False,
                "task_error": f"task {task.name} returned {_short(value)}, not the runtime's run result",
                "duration_end_to_end": took,
            }
        return {"ok": True, **_plain(value), "duration_end_to_end": took}
    if isinstance(value, JobFailed):
        return {
            "ok": False,
            **_plain(value.result),
            "exit_status": value.exit_status,
            "signal": value.signal,
            "duration_end_to_end": took,
        }
    return {
        "ok": False,
        "task_error": f"task {task.name} ended {state}: {type(value).__name__}: {value}",
        "duration_end_to_end": took,
    }


def _run_streams(req: dict[str, Any]) -> dict[str, Any]:
    """The Redis Streams target: the generated jobs module, an entry enqueued as its trigger would, and one
    step of the runtime's real consumer on the session's scratch Redis."""
    import importlib

    import redis

    from cronshift.runtime import streams

    try:
        mod = importlib.import_module(req["module"])
        jobs, project, url = mod.JOBS, mod.PROJECT, mod.REDIS_URL
        if req.get("append_flag") and req["job_id"] in jobs:
            jobs[req["job_id"]]["command"] = f"{jobs[req['job_id']]['command']} {req['append_flag']}"
    except Exception as e:
        return {"ok": False, "task_error": f"importing {req['module']}: {type(e).__name__}: {e}"}
    spec = _plain(jobs.get(req["job_id"]))
    started = time.monotonic()
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        consumer = streams.Consumer(client, project, jobs, block=1.0)
        consumer.ensure_group()
        streams.enqueue(client, project, req["job_id"])
        outcome = consumer.step()
    except Exception as e:
        return {"ok": False, "task_error": f"streams consumer raised {type(e).__name__}: {e}", "spec": spec}
    took = time.monotonic() - started
    if not isinstance(outcome, dict) or outcome.get("status") not in ("ok", "failed"):
        return {"ok": False, "task_error": f"streams consumer: {_short(outcome)}", "spec": spec}
    out = {k: outcome.get(k) for k in ("exit_status", "signal")}
    return {"ok": outcome["status"] == "ok", **out, "duration_end_to_end": took, "spec": spec}


def _short(v: Any) -> str:
    r = repr(v)
    return f"{type(v).__name__} {r[:80]}{'...' if len(r) > 80 else ''}"


def _plain(d: Any) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str)) if isinstance(d, dict) else {}


def _find_task(mod: Any, name: str | None) -> Any:
    from celery import Task

    found = []
    for v in vars(mod).values():
        try:
            obj = v._get_current_object() if hasattr(v, "_get_current_object") else v
        except Exception:
            continue
        if isinstance(obj, Task) and (name is None or obj.name == name):
            found.append(obj)
    if len(found) != 1:
        raise LookupError(f"expected one Celery task{f' named {name}' if name else ''}, found {len(found)}")
    return found[0]


def _random_pids(path: str) -> None:
    """A fresh PID namespace numbers from 2 every time: pids would never vary between runs, unlike under
    cron, and calibration would take them for stable values. Start each side's pids somewhere random."""
    try:
        with open(path, "w") as f:
            f.write(str(1000 + int.from_bytes(os.urandom(2), "big")))
    except OSError:
        pass


def _child(req: dict[str, Any], merged: str | None, w: int) -> None:
    """PID 1 of the side's namespace. Never returns."""
    code = 0
    try:
        if merged is not None:
            try:
                _mount("proc", merged + "/proc", "proc", 0, None, "proc")
            except OSError:
                _mount("/proc", merged + "/proc", None, MS_BIND | MS_REC, None, "bind /proc")
            _random_pids(merged + "/proc/sys/kernel/ns_last_pid")
            os.chroot(merged)
        os.chdir("/")
        sys.dont_write_bytecode = True
        if req["action"] == "worker":
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(w)
            env = {**os.environ, **(req.get("env") or {}), "PYTHONDONTWRITEBYTECODE": "1"}
            os.chdir(req.get("cwd") or "/")
            os.execve(req["argv"][0], req["argv"], env)
        out = _run_action(req)
    except BaseException as e:
        out = {"ok": False, "task_error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        code = 1
    data = json.dumps(out, default=str).encode()
    try:
        while data:
            data = data[os.write(w, data) :]
    finally:
        os._exit(code)


def _wait(pid: int, r: int, timeout: float | None) -> tuple[bytes, bool]:
    """Read the child's result until EOF; kill it at the timeout. Returns (data, timed_out); the child
    (and with it every process of the namespace) is gone when this returns."""
    data = bytearray()
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ready, _, _ = select.select([r], [], [], left)
        except InterruptedError:
            continue
        if not ready:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    return bytes(data), timed_out


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        req = json.load(f)
    result_path = os.path.join(req["channel"], "result.json")
    isolate = req.get("isolate", True)
    notes: list[str] = []
    merged: str | None = None
    layers: list[tuple[str, str]] = []
    try:
        if isolate:
            private_namespace(pid=True)
            merged, layers, notes = build_view(req)
    except OSError as e:
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump({"ok": False, "sandbox_error": str(e)}, f)
        return 0
    r, w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the helper gone (killed): the side goes with it
        _child(req, merged, w)
    os.close(w)

    def stop(_sig: int, _frm: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    data, timed_out = _wait(pid, r, req.get("timeout"))
    elapsed = time.monotonic() - started
    try:
        out = json.loads(data) if data else {"ok": False}
    except ValueError:
        out = {"ok": False, "task_error": "the side's process wrote no readable result"}
    if timed_out:
        out = {
            "ok": False,
            "timed_out": True,
            "error": f"no result within {req['timeout']}s: the side was killed (every process of it) "
            "and waited for before its sandbox was read",
        }
    elif not data and req["action"] != "worker":
        out = {"ok": False, "task_error": "the side's process died without a result"}
    out["elapsed"] = elapsed
    out["notes"] = notes
    if isolate:
        changes: list[dict[str, Any]] = []
        for mp, upper in layers:
            changes += read_layer(mp, upper, req.get("exclude") or [], req["layer_out"])
        out["layer"] = changes
    tmp = result_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, default=str)
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
