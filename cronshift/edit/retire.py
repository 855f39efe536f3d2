"""`retire`: take a job out of cron once the shadow run proved the new path equivalent, and put it back.

A crontab, cron.d, spool or anacrontab line is commented out behind `#cronshift:retired id=ID date=DATE `
followed by the original bytes, through edit.crontab (backup, lock, atomic rename, verify, journal), so scan
still sees the job under its id and undo gives back the exact line. A run-parts script is retired by clearing
its execute bits: both Debian's run-parts (C) and RHEL's (a shell script testing `-x`) skip a file that is not
executable, the script's bytes stay untouched (a package upgrade sees no local change), and a chmod on the
open inode is atomic, so the temp-file-and-rename path of edit.crontab has nothing to add; the old and new
modes are journaled before and verified after, and undo puts the recorded mode back.

The shadow-run gate reads a verdict document that `cronshift shadow-run` writes (see `shadow_gate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cronshift.discover.crontab_file import RETIRED_MARKER, RETIRED_RE
from cronshift.discover.retired import (
    RETIRE_JOURNAL,
    Retirement,
    mode_retirements,
    retire_events,
    retire_notes,
)
from cronshift.edit import crontab as ce
from cronshift.edit.crontab import SAFE_ID, EditJournal, EditRecord, EditRefused, LineEdit, unified_diff
from cronshift.ledger.state import Journal
from cronshift.ledger.store import DEFAULT_STORE, open_ledger
from cronshift.model import CronJob, Format
from cronshift.shadow.store import SHADOW_DIR, VERDICT_KIND, project_digests, verdict_path
from cronshift.shadow.verdict import ReadVerdict, parse_verdict_doc

_RD = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_EXEC = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


class RetireRefused(EditRefused):
    """Nothing was changed: the job cannot be retired (or restored) this way; the message says why."""


# ---------------------------------------------------------------------------------------------------------
# The gate


@dataclass(frozen=True)
class GateResult:
    ok: bool
    missing: list[str] = field(default_factory=list)
    source: str = ""  # where the verdict was read, when one was found


def read_verdict(
    root: Path, job_id: str, *, store: str | None = None, redis_url: str | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The shadow-run verdict for `job_id`, and where it came from.

    The ledger is asked first, but only if it already exists (a gate must not create a store); then the file
    var/lib/cronshift/shadow/<job-id>.json under the root.
    """
    db = store or os.path.join(str(root), DEFAULT_STORE)
    if redis_url or os.path.exists(db):
        with open_ledger(root, store=store, redis_url=redis_url) as led:
            doc = led.get(VERDICT_KIND, job_id)
        if doc is not None:
            return doc, f"ledger {redis_url or db} ({VERDICT_KIND}/{job_id})"
    if not SAFE_ID.fullmatch(job_id):
        return None, ""
    path = verdict_path(root, job_id)
    rel = "/".join((*SHADOW_DIR, f"{job_id}.json"))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, ""
    try:
        doc = json.loads(data)
    except ValueError:
        return {"verdict": None, "_unreadable": f"{rel} is not JSON"}, rel
    return (
        doc if isinstance(doc, dict) else {"verdict": None, "_unreadable": f"{rel} is not an object"}
    ), rel


def shadow_gate(
    root: Path, job: CronJob, *, store: str | None = None, redis_url: str | None = None
) -> GateResult:
    """May this job be retired? Only with a shadow-run verdict of parity for this very job and command.

    The verdict document (ledger kind "shadow-verdict", key = job id; or the file
    var/lib/cronshift/shadow/<job-id>.json) is read through the one contract shadow-run writes it by
    (`cronshift.shadow.verdict.VerdictDoc`, versioned; `parse_verdict_doc`): the verdict, the job and its
    command when judged, the runs compared, and for parity the generated files it is bound to.
    """
    raw, where = read_verdict(root, job.id, store=store, redis_url=redis_url)
    if raw is None:
        return GateResult(
            False,
            [
                f"no shadow-run verdict for {job.id}: run `cronshift shadow-run {job.id}` until it reports "
                f"parity (looked for ledger document {VERDICT_KIND}/{job.id} and "
                f"{'/'.join(SHADOW_DIR)}/{job.id}.json)"
            ],
        )
    if raw.get("_unreadable"):
        return GateResult(False, [str(raw["_unreadable"])], where)
    doc = parse_verdict_doc(raw, where)
    missing: list[str] = list(doc.problems)
    if doc.verdict != "parity":
        diffs = doc.differences
        extra = f" ({len(diffs)} differences, first: {diffs[0]})" if diffs else ""
        missing.append(f"shadow-run verdict is {doc.verdict!r}, not 'parity'{extra}")
    if doc.job not in (None, job.id):
        missing.append(f"the verdict in {where} is for job {doc.job!r}, not {job.id}")
    if doc.command is not None and doc.command != job.command:
        missing.append(
            "the verdict was reached for a different command: the job changed since; shadow-run again"
        )
    runs = raw.get("runs_compared")
    if runs is not None and (doc.runs_compared is None or doc.runs_compared < 1):
        missing.append(f"the verdict compared {runs!r} runs; at least one is needed")
    if doc.verdict == "parity" and not doc.problems:
        missing += _binding_refusals(root, job, doc)
    return GateResult(not missing, missing, where)


def _binding_refusals(root: Path, job: CronJob, doc: ReadVerdict) -> list[str]:
    """A parity verdict counts only for what it proved: the generated files it ran (unchanged since), and
    the job's crontab as it was (not edited after the evidence)."""
    out: list[str] = []
    live = doc.live
    # Now and live mode alike: parity counts only for the generated files that ran.
    project, package, digests = doc.project, doc.package, doc.digests
    if not project or not package or not digests:
        how = "--live --project OUT --package PKG" if live else "--project OUT"
        out.append(
            "no generated project was compared (the verdict names no generated files it ran): "
            f"run `cronshift shadow-run {job.id} {how}`"
        )
    else:
        try:
            now = project_digests(Path(project), str(package))
        except OSError as e:
            now = {}
            out.append(f"{project}: cannot read the generated project: {e.strerror}")
        changed = sorted(p for p in set(digests) | set(now) if digests.get(p) != now.get(p))
        if changed:
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            out.append(f"{Path(project, changed[0])} changed since the parity run{more}: shadow-run again")
    if live:
        # Live evidence is cron's own runs of the line as it stands (its wrap is the edit that began it);
        # a changed line is a different job id or command, refused above.
        return out
    last = doc.last
    try:
        proved = datetime.fromisoformat(last).timestamp() if last else None
    except ValueError:
        proved = None
    if proved is None:
        out.append("the verdict does not say when its evidence was taken")
    else:
        try:
            edited = os.stat(Path(root, job.source.path)).st_mtime
        except OSError:
            edited = None
        if edited is not None and edited > proved:
            out.append(
                f"the evidence ({last}) is older than the last edit of {job.source.path} "
                f"({datetime.fromtimestamp(edited).astimezone().isoformat(timespec='seconds')}): "
                "shadow-run again"
            )
    return out


# ---------------------------------------------------------------------------------------------------------
# Planning (reads only)


@dataclass(frozen=True)
class RetirePlan:
    """What retire will change; `diff` is what the user sees first."""

    job_id: str
    kind: str  # "line": a marker in front of the line; "mode": a run-parts script's execute bits cleared
    path: str  # relative to the root
    line: int | None
    before: bytes
    after: bytes
    expected_sha256: str  # the file as read: any change since refuses the edit
    mode_before: int | None
    mode_after: int | None
    date: str
    diff: str


def marker_line(job_id: str, date: str, original: bytes) -> bytes:
    return RETIRED_MARKER + f"id={job_id} date={date} ".encode("ascii") + original


def _check_job(job: CronJob) -> None:
    where = job.source.path
    if job.retired:
        raise RetireRefused(where, job.source.line, f"{job.id} is already retired")
    if job.disabled:
        raise RetireRefused(where, job.source.line, f"{job.id} is commented out already; nothing to retire")
    if not job.runs:
        # Not a formality: in a file Debian ignores for its missing final newline, commenting out that last
        # line can make cron load the file, and start every other job in it.
        raise RetireRefused(
            where,
            job.source.line,
            f"cron never runs {job.id} today ({'; '.join(job.why_not)}): retiring it changes nothing it "
            "does, and editing the file could change whether cron loads its other jobs; fix it by hand",
        )
    if not SAFE_ID.fullmatch(job.id):
        raise RetireRefused(
            where, job.source.line, f"job id {job.id!r} is not a plain id; refusing to use it"
        )


def plan_retire(root: Path, job: CronJob, *, now: datetime) -> RetirePlan:
    """Build the change without writing anything; refuses if the file no longer matches the scan."""
    _check_job(job)
    date = now.strftime("%Y-%m-%d")
    path = job.source.path
    try:
        data = Path(root, path).read_bytes()
    except OSError as exc:
        raise RetireRefused(path, job.source.line, f"cannot read it: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if job.format is Format.RUN_PARTS:
        mode = stat.S_IMODE(os.lstat(Path(root, path)).st_mode)
        if not mode & _EXEC:
            raise RetireRefused(
                path, None, "is not executable: run-parts already skips it; nothing to retire"
            )
        after = mode & ~_EXEC
        diff = f"--- a/{path}\n+++ b/{path}\nmode {mode:04o} -> {after:04o} (run-parts skips it)\n"
        return RetirePlan(job.id, "mode", path, None, b"", b"", digest, mode, after, date, diff)
    if job.source.line is None:
        raise RetireRefused(path, None, "the job has no line to retire")
    if job.digest and digest != job.digest:
        raise RetireRefused(path, job.source.line, "the file changed since it was scanned; scan again")
    lines = ce.split_lines(data)
    if not 1 <= job.source.line <= len(lines):
        raise RetireRefused(path, job.source.line, f"no such line (the file has {len(lines)})")
    before = lines[job.source.line - 1]
    after = marker_line(job.id, date, before)
    new = b"".join(lines[: job.source.line - 1]) + after + b"".join(lines[job.source.line :])
    return RetirePlan(
        job.id,
        "line",
        path,
        job.source.line,
        before,
        after,
        digest,
        None,
        None,
        date,
        unified_diff(path, data, new),
    )


# ---------------------------------------------------------------------------------------------------------
# The retire journal: run-parts mode changes (intent/done/abort/undo) and notes on line retires


def _append(root: Path, event: dict[str, Any]) -> None:
    Journal(Path(root), RETIRE_JOURNAL).append(event)


def _recover_modes(root: Path) -> None:
    """Roll a run-parts retire or undo killed half-way forward or back by the script's mode now, so the
    journal never counts as done what is not on disk (and never leaves in force what is no longer)."""
    events = retire_events(root)
    closed = {e["edit_id"] for e in events if e.get("event") in ("done", "abort")}
    undone = {e.get("edit_id") for e in events if e.get("event") == "undo"}
    intents = {e["edit_id"]: e for e in events if e.get("event") == "intent"}
    for edit_id, i in intents.items():
        try:
            mode = stat.S_IMODE(os.lstat(Path(root, i["path"])).st_mode)
        except OSError:
            continue
        if edit_id not in closed:
            if mode == i["mode_after"]:
                _append(root, {"event": "done", "edit_id": edit_id})
            elif mode == i["mode_before"]:
                _append(root, {"event": "abort", "edit_id": edit_id})
    for e in events:
        if e.get("event") != "undo-intent" or e["edit_id"] in undone:
            continue
        i = intents.get(e["edit_id"])
        if i is None:
            continue
        try:
            mode = stat.S_IMODE(os.lstat(Path(root, i["path"])).st_mode)
        except OSError:
            continue
        if mode == i["mode_before"]:
            _append(root, {"event": "undo", "job": e["job"], "edit_id": e["edit_id"], "time": e.get("time")})
            undone.add(e["edit_id"])


def _line_retirements(
    root: Path, journal: EditJournal, notes: dict[str, dict[str, Any]]
) -> dict[str, Retirement]:
    """Line retirements in force, by job id, read from edit.crontab's journal (the record of every edit).

    A pending record (a retire killed between its journal intent and done) counts when its marker line is in
    the file: edit.crontab guarantees the file holds either the old or the new content."""
    active: dict[str, tuple[EditRecord, str, str]] = {}
    undone: set[str] = set()
    maybe_undone: set[str] = set()  # by an undo killed half-way: undone only if the marker left the file
    pending = {rec.id for rec in journal.pending()}
    for rec in [*journal.all(), *journal.pending()]:
        if rec.reason.startswith("undo of "):
            of = rec.reason[len("undo of ") :].split(":", 1)[0]
            (maybe_undone if rec.id in pending else undone).add(of)
            continue
        m = RETIRED_RE.fullmatch(rec.after)
        if m and m.group(3) == rec.before:
            job_id, date = (g.decode("ascii", "replace") for g in m.group(1, 2))
            active[rec.id] = (rec, job_id, date)
    out: dict[str, Retirement] = {}
    for edit_id, (rec, job_id, date) in active.items():
        if edit_id in undone:
            continue
        try:
            present = rec.after in Path(root, rec.path).read_bytes()
        except OSError:
            present = False
        if (edit_id in pending or edit_id in maybe_undone) and not present:
            continue
        note = notes.get(edit_id, {})
        out[job_id] = Retirement(
            job_id, "line", rec.path, rec.line, date, rec.reason, rec.time, rec.id, rec.backup_path,
            to=note.get("to"), present=present,
        )  # fmt: skip
    return out


def list_retired(root: Path, *, journal: EditJournal | None = None, recover: bool = True) -> list[Retirement]:
    """Every retirement in force, oldest first; first finishes what a killed edit left (`recover`), when the
    state folder exists and may be written (a reader without write access reads the journal as it stands)."""
    if recover and Path(root).joinpath(*ce.STATE_DIR).is_dir():
        with suppress(OSError, EditRefused):
            ce.recover(Path(root), journal=journal, lock_timeout=2.0)
            _recover_modes(root)
    events = retire_events(root)
    found = _line_retirements(root, journal or EditJournal(Path(root)), retire_notes(events))
    found |= mode_retirements(events, root)
    return sorted(found.values(), key=lambda r: (r.time, r.job_id))


def retirement(root: Path, job_id: str) -> Retirement | None:
    """Where a retired job went (for `show`): None when it is not retired."""
    return next((r for r in list_retired(root, recover=False) if r.job_id == job_id), None)


def trace_id(root: Path, job_id: str) -> str | None:
    """Where a job went that no scan finds under `job_id` now, from what cronshift's journals recorded of it
    (its retirement, wrap, undo); None when they never saw it. For `show` and `retire` to say more than
    "no job"."""
    if not SAFE_ID.fullmatch(job_id):
        return None
    marks = (f"id={job_id} ".encode(), f"--job {job_id} ".encode())
    last: EditRecord | None = None
    for rec in EditJournal(Path(root)).all():
        if any(m in rec.before or m in rec.after for m in marks):
            last = rec
    modes = [
        e for e in retire_events(root) if e.get("job") == job_id and e.get("event") in ("intent", "undo")
    ]
    when = time.strftime("%Y-%m-%d", time.gmtime(last.time)) if last else ""
    if last is not None:
        what = (
            "undone"
            if last.reason.startswith("undo of ")
            else "retired"
            if RETIRED_RE.fullmatch(last.after)
            else "edited (wrap/unwrap)"
        )
        return (
            f"cronshift last {what} it at {last.path}:{last.line} on {when} (edit {last.id}); no line in "
            "the files carries that job now: the line was changed or removed since (by hand, or by a "
            f"package); the text before that edit is in {last.backup_path}"
        )
    if modes:
        e = modes[-1]
        return (
            f"cronshift retired the run-parts script {e['path']} as {job_id}; that script is no longer "
            "there (renamed or removed since)"
        )
    return None


# ---------------------------------------------------------------------------------------------------------
# Doing it


def _record_reason(job_id: str, reason: str | None, forced: bool) -> str:
    if forced:
        return f"retire {job_id}: forced without shadow-run parity: {reason}"
    return f"retire {job_id}: shadow-run parity" + (f": {reason}" if reason else "")


def apply_retire(
    root: Path,
    plan: RetirePlan,
    *,
    now: datetime,
    reason: str | None = None,
    forced: bool = False,
    to: str | None = None,
    journal: EditJournal | None = None,
    lock_timeout: float = 10.0,
) -> Retirement:
    """Make the planned change (the caller has passed the gate or forced it); raises EditRefused otherwise."""
    if forced and not (reason or "").strip():
        raise RetireRefused(plan.path, plan.line, "--force needs --reason: say why the gate is overruled")
    why = _record_reason(plan.job_id, reason, forced)
    if plan.kind == "mode":
        return _retire_mode(root, plan, now=now, reason=why, to=to, lock_timeout=lock_timeout)
    assert plan.line is not None
    edit = LineEdit(plan.path, plan.line, plan.before, plan.after, plan.expected_sha256, why)
    rec = ce.apply_edit(Path(root), edit, now=now.timestamp(), journal=journal, lock_timeout=lock_timeout)
    if to:
        _append(root, {"event": "note", "edit_id": rec.id, "job": plan.job_id, "to": to})
    return Retirement(
        plan.job_id, "line", rec.path, rec.line, plan.date, why, rec.time, rec.id, rec.backup_path, to=to
    )


def undo_retire(
    root: Path,
    job_id: str,
    *,
    now: datetime,
    journal: EditJournal | None = None,
    lock_timeout: float = 10.0,
) -> Retirement:
    """Put a retired job back exactly as it was; other changes made to the file since are kept."""
    journal = journal or EditJournal(Path(root))
    ce.recover(Path(root), journal=journal, lock_timeout=lock_timeout)
    _recover_modes(root)
    events = retire_events(root)
    line = _line_retirements(root, journal, retire_notes(events)).get(job_id)
    mode = mode_retirements(events, root).get(job_id)
    if line is None and mode is None:
        raise RetireRefused(
            job_id, None, "no retirement of this job in the journal (see `cronshift retire --list`)"
        )
    if mode is not None and (line is None or mode.time >= line.time):
        _restore_mode(root, mode, now=now, lock_timeout=lock_timeout)
        return mode
    assert line is not None
    rec = journal.get(line.edit_id)
    assert rec is not None
    ce.undo_edit(
        Path(root),
        rec,
        now=now.timestamp(),
        journal=journal,
        lock_timeout=lock_timeout,
        reason=f"undo of {rec.id}",
    )
    return line


# ---------------------------------------------------------------------------------------------------------
# Run-parts scripts: the execute bits, on the open inode, journaled and verified


def _open_script(root: Path, path: str, lock_timeout: float) -> tuple[ce.Target, int, int]:
    """(target, lock fd, file fd): the script pinned and the edit lock held."""
    target = ce.resolve_target(Path(root), path)
    try:
        state_fd = ce.open_state_dir(Path(root))
        try:
            lock_fd = ce.acquire_lock(state_fd, path, time.monotonic() + lock_timeout, lock_timeout)
        finally:
            os.close(state_fd)
        try:
            fd = os.open(target.name, _RD, dir_fd=target.dir_fd)
        except OSError as exc:
            os.close(lock_fd)
            raise RetireRefused(path, None, f"cannot open it: {exc.strerror}") from exc
    except BaseException:
        os.close(target.dir_fd)
        raise
    return target, lock_fd, fd


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _set_mode(target: ce.Target, fd: int, mode: int) -> None:
    """chmod the pinned inode, flush it, and check the path still names that inode with that mode."""
    os.fchmod(fd, mode)
    os.fsync(fd)
    st, now = os.fstat(fd), os.lstat(target.name, dir_fd=target.dir_fd)
    if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino) or stat.S_IMODE(now.st_mode) != mode:
        raise ce.EditFailed(target.path, None, "verify: the mode on disk is not the intended one")


def _retire_mode(
    root: Path, plan: RetirePlan, *, now: datetime, reason: str, to: str | None, lock_timeout: float
) -> Retirement:
    assert plan.mode_before is not None and plan.mode_after is not None
    target, lock_fd, fd = _open_script(root, plan.path, lock_timeout)
    edit_id = uuid.uuid4().hex[:12]
    changed = False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RetireRefused(plan.path, None, "is not a regular file")
        if stat.S_IMODE(st.st_mode) != plan.mode_before:
            raise RetireRefused(plan.path, None, "its mode changed since it was read; nothing was changed")
        if hashlib.sha256(_read_all(fd)).hexdigest() != plan.expected_sha256:
            raise RetireRefused(plan.path, None, "it changed since it was read; nothing was changed")
        event = {
            "job": plan.job_id,
            "path": plan.path,
            "date": plan.date,
            "reason": reason,
            "to": to,
            "time": now.timestamp(),
            "edit_id": edit_id,
            "mode_before": plan.mode_before,
            "mode_after": plan.mode_after,
            "sha256": plan.expected_sha256,
            "owner": st.st_uid,
            "group": st.st_gid,
        }
        _append(root, {"event": "intent", **event})
        changed = True
        _set_mode(target, fd, plan.mode_after)
        _append(root, {"event": "done", "edit_id": edit_id})
    except BaseException as exc:
        if changed:
            try:
                os.fchmod(fd, plan.mode_before)
                os.fsync(fd)
            finally:
                _append(root, {"event": "abort", "edit_id": edit_id})
        if isinstance(exc, EditRefused) or not isinstance(exc, OSError):
            raise
        raise ce.EditFailed(plan.path, None, f"{exc.strerror}; the mode was left as it was") from exc
    finally:
        os.close(fd)
        os.close(lock_fd)
        os.close(target.dir_fd)
    return Retirement(
        plan.job_id,
        "mode",
        plan.path,
        None,
        plan.date,
        reason,
        now.timestamp(),
        edit_id,
        None,
        plan.mode_before,
        plan.mode_after,
        to,
    )


def _restore_mode(root: Path, r: Retirement, *, now: datetime, lock_timeout: float) -> None:
    assert r.mode_before is not None and r.mode_after is not None
    target, lock_fd, fd = _open_script(root, r.path, lock_timeout)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode == r.mode_before:  # an undo killed after its chmod: record it as done
            _append(root, {"event": "undo", "job": r.job_id, "edit_id": r.edit_id, "time": now.timestamp()})
            return
        if mode != r.mode_after:
            raise RetireRefused(
                r.path,
                None,
                f"its mode is {mode:04o}, not the {r.mode_after:04o} retire left: it was changed "
                "since; refusing to undo",
            )
        undo = {"job": r.job_id, "edit_id": r.edit_id, "time": now.timestamp()}
        _append(root, {"event": "undo-intent", **undo})  # so a kill after the chmod is rolled forward
        _set_mode(target, fd, r.mode_before)
        _append(root, {"event": "undo", **undo})
    except OSError as exc:
        raise ce.EditFailed(r.path, None, f"{exc.strerror}") from exc
    finally:
        os.close(fd)
        os.close(lock_fd)
        os.close(target.dir_fd)
