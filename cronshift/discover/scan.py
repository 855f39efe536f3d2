"""Find every cron job under a root and say, for each, whether cron will really run it and why not.

The rules here are cron's own, not a linter's: Debian cron drops a whole file for one bad line, a missing
final newline or an unknown user, while cronie skips only the bad line; both ignore cron.d files by name.
"""

from __future__ import annotations

import gc
import hashlib
import operator
import os
import pickle
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from cronshift.discover.crontab_file import CrontabFile, Kind, check_schedule, parse_file
from cronshift.discover.retired import retired_scripts
from cronshift.discover.sources import (
    Source,
    SourceUnreadable,
    System,
    find_sources,
    name_ignored,
    read_source,
    read_system,
    under,
    writable_by_others,
)
from cronshift.discover.wrappers import peel
from cronshift.model import WRAPPER_KIND, CronJob, Dialect, Format, Problem, ScanResult, SourceRef, Wrapper

_SLUG_RE = re.compile(r"[^a-z0-9]+")
_INLINE_COMMENT_RE = re.compile(r"\s#")


class RootUnreadable(OSError):
    """The root itself cannot be read: the scan could not do its job."""


def scan(
    root: Path,
    *,
    dialect: Dialect | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Read every source under `root`; problems are collected, never raised (except for the root itself)."""
    root = Path(root)
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise RootUnreadable(f"{root}: not a readable directory")
    system = read_system(root, dialect)
    listing: list[Problem] = list(system.problems)
    sources = find_sources(root, listing)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a scan builds many small objects and no cycles; collections only cost time here
    try:
        out = _scan_files(root, sources, system, progress)
        scripts = [s for s in sources if s.format is Format.RUN_PARTS]
        out.jobs.extend(_run_parts_jobs(root, scripts, out.triggers, system))
        return ScanResult(
            root=str(root),
            jobs=tuple(_unique_ids(out.jobs)),
            problems=tuple(listing + out.problems),
            files=tuple(s.path for s in sources),
            disabled=tuple(_unique_ids(out.disabled)),
            system_timezone=system.timezone,
            dialect=system.dialect,
        )
    finally:
        if gc_was_enabled:
            gc.enable()


class Trigger(NamedTuple):
    """A crontab or anacrontab line that runs a run-parts folder."""

    folder: str  # 'cron.daily'
    path: str
    number: int
    schedule: str
    user: str | None
    command: str
    anacron: bool  # from etc/anacrontab
    retired: str | None = None  # the date, when cronshift retired this line (it runs nothing now)


@dataclass(slots=True)
class _Found:
    jobs: list[CronJob] = field(default_factory=list)
    disabled: list[CronJob] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)

    def extend(self, other: _Found) -> None:
        self.jobs.extend(other.jobs)
        self.disabled.extend(other.disabled)
        self.problems.extend(other.problems)
        self.triggers.extend(other.triggers)


# Below this many files one process is faster than starting a second one.
_PARALLEL_MIN_FILES = 2000


def _scan_files(
    root: Path, sources: list[Source], system: System, progress: Callable[[int, int], None] | None
) -> _Found:
    """Read and parse every crontab. A large tree is split in two and the second half parsed in a forked
    process: the work is pure CPU in Python, and this machine class has two cores. The child sends back
    plain tuples (pickling the dataclasses themselves cost more than the parsing saved)."""
    files = [s for s in sources if s.format is not Format.RUN_PARTS]
    if len(files) < _PARALLEL_MIN_FILES or not _can_fork():
        return _scan_many(root, files, system, progress, len(files))
    # The child's share also pays for packing, pickling and unpickling: give it a little less.
    half = len(files) * 11 // 20
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse the second half, send it, and leave without running any cleanup
        status = 1
        try:
            os.close(rfd)
            payload = pickle.dumps(_pack(_scan_many(root, files[half:], system, None, 0)), protocol=5)
            with os.fdopen(wfd, "wb") as fh:
                fh.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(wfd)
    found = _scan_many(root, files[:half], system, progress, len(files))
    with os.fdopen(rfd, "rb") as fh:
        payload = fh.read()
    _, status = os.waitpid(pid, 0)
    if status == 0 and payload:
        found.extend(_unpack(pickle.loads(payload)))
    else:  # the child failed: do its half here rather than lose it
        found.extend(_scan_many(root, files[half:], system, None, 0))
    if progress:
        progress(len(files), len(files))
    return found


def _can_fork() -> bool:
    # Forking a process that runs other threads can deadlock the child on a lock one of them held.
    return hasattr(os, "fork") and threading.active_count() == 1


def _scan_many(
    root: Path,
    files: list[Source],
    system: System,
    progress: Callable[[int, int], None] | None,
    total: int,
) -> _Found:
    found = _Found()
    step = max(1, len(files) // 200)
    for i, src in enumerate(files):
        if progress and i % step == 0:
            progress(i, total)
        try:
            data = read_source(root, src.path, src.real or src.path, listed_regular=src.real is None)
        except SourceUnreadable as e:
            found.problems.append(Problem(src.path, None, e.strerror or str(e)))
            continue
        f = parse_file(data, src.path, src.format, system.dialect)
        why_file = _file_ignored(root, src, f, system, found.problems)
        _jobs_of_file(f, src, system, why_file, found.jobs, found.disabled)
        if why_file is None and src.format is not Format.USER:
            found.triggers.extend(_triggers_of(f))
    return found


def _triggers_of(f: CrontabFile) -> list[Trigger]:
    anacron = f.format is Format.ANACRONTAB
    return [
        Trigger(
            d,
            f.path,
            line.number,
            line.schedule,
            line.user,
            line.command,
            anacron,
            line.retired_date or "?" if line.kind is Kind.RETIRED else None,
        )
        for line in f.lines
        if line.kind in (Kind.JOB, Kind.RETIRED) and "run-parts" in line.command
        for d in _RUN_PARTS_RE.findall(line.command)
    ]


_FIELDS = tuple(f.name for f in fields(CronJob))
_FORMATS = {str(f): f for f in Format}
_ALL_FIELDS = operator.attrgetter(*_FIELDS)  # one C call per job instead of a getattr per field
_SRC_I, _FMT_I, _WR_I = _FIELDS.index("source"), _FIELDS.index("format"), _FIELDS.index("wrappers")


def _pack(found: _Found) -> tuple[Any, ...]:
    def job(j: CronJob) -> list[Any]:
        vals = list(_ALL_FIELDS(j))
        vals[_SRC_I] = (j.source.path, j.source.line)
        vals[_FMT_I] = str(j.format)
        if j.wrappers:
            vals[_WR_I] = tuple((w.kind, w.text, w.meaning, w.args) for w in j.wrappers)
        return vals

    problems = [(p.path, p.line, p.message, p.severity) for p in found.problems]
    return [job(j) for j in found.jobs], [job(j) for j in found.disabled], problems, found.triggers


def _unpack(packed: tuple[Any, ...]) -> _Found:
    def job(v: list[Any]) -> CronJob:
        v[_SRC_I] = SourceRef(*v[_SRC_I])
        v[_FMT_I] = _FORMATS[v[_FMT_I]]
        if v[_WR_I]:
            v[_WR_I] = tuple(Wrapper(*w) for w in v[_WR_I])
        return CronJob(*v)

    jobs, disabled, problems, triggers = packed
    return _Found(
        [job(x) for x in jobs], [job(x) for x in disabled], [Problem(*p) for p in problems], list(triggers)
    )


def _file_ignored(
    root: Path, src: Source, f: CrontabFile, system: System, problems: list[Problem]
) -> str | None:
    """Report each bad line; return why cron ignores the whole file, if it does."""
    debian = system.dialect is Dialect.DEBIAN
    why: str | None = None
    for line in f.lines:
        if line.kind is Kind.PROBLEM:
            problems.append(Problem(f.path, line.number, line.message))
            if debian and why is None:
                why = f"line {line.number} has a syntax error, so Debian cron ignores the whole file"
    last = f.lines[-1] if f.lines else None
    if last and not last.raw.endswith(b"\n") and last.kind in (Kind.JOB, Kind.ENV):
        if debian:
            problems.append(
                Problem(
                    f.path,
                    last.number,
                    "no newline at the end of the file: Debian cron ignores the whole file",
                )
            )
            why = (
                why
                or f"line {last.number} is the last line and has no newline, so Debian cron ignores the file"
            )
        else:
            problems.append(Problem(f.path, last.number, "no newline at the end of the file", "warning"))
    if src.format is Format.SYSTEM and system.users is not None:
        for line in f.lines:
            if line.kind is Kind.JOB and line.user not in system.users:
                problems.append(
                    Problem(f.path, line.number, f"user '{line.user}' does not exist in etc/passwd")
                )
                if debian and why is None:
                    why = f"line {line.number} names unknown user '{line.user}': Debian cron ignores the file"
    if src.path.startswith("etc/cron.d/"):
        name = src.path.rsplit("/", 1)[1]
        bad_name = name_ignored(name, system.dialect)
        if bad_name:
            problems.append(Problem(f.path, None, f"never read by cron: {bad_name}", "warning"))
            return f"cron never reads this file: {bad_name}"
        try:
            st = os.lstat(under(root, src.real or src.path))
        except OSError:
            st = None
        if st and writable_by_others(st.st_mode):
            msg = f"mode {stat.S_IMODE(st.st_mode):o} is group- or world-writable, so cron refuses the file"
            problems.append(Problem(f.path, None, msg))
            return msg
    if src.format is Format.USER and system.users is not None and src.owner not in system.users:
        msg = f"user '{src.owner}' does not exist in etc/passwd, so cron never loads this spool file"
        problems.append(Problem(f.path, None, msg))
        return msg
    return why


_PERCENT_RE = re.compile(r"\\(.)|%", re.DOTALL)


def split_percent(command: str, *, debian: bool = True) -> tuple[str, str | None]:
    """Debian cron's `%` rule (do_command.c): the command ends at the first unescaped %, and in it `\\%`
    and `\\\\` lose their backslash; the rest is stdin, where % is a newline, `\\%` a literal %, and a
    newline is added when the text does not end in one. Returns (what the shell runs, stdin or None).
    cronie (`debian=False`) keeps a doubled backslash as it is."""
    if "%" not in command and ("\\\\" not in command or not debian):
        return command, None
    out: list[str] = []
    pos = 0
    for m in _PERCENT_RE.finditer(command):
        c = m.group(1)
        if c is None:  # an unescaped %: the command ends here
            out.append(command[pos : m.start()])
            return "".join(out), _stdin_text(command[m.end() :])
        if c == "%" or (debian and c == "\\"):
            out.append(command[pos : m.start()])
            out.append(c)
            pos = m.end()
    out.append(command[pos:])
    return "".join(out), None


def _stdin_text(data: str) -> str:
    """The input cron writes to the job's stdin, translated exactly as do_command.c does."""
    out: list[str] = []
    escaped = False
    for ch in data:
        if escaped:
            if ch != "%":
                out.append("\\")
        elif ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            out.append(ch)
    if escaped:
        out.append("\\")
    text = "".join(out)
    return text + "\n" if text and not text.endswith("\n") else text


def _warnings(schedule: str, command: str, has_stdin: bool, dialect: Dialect, tz: bool) -> tuple[str, ...]:
    w = _schedule_warnings(schedule, dialect, tz)
    if not has_stdin and "#" not in command and not command.endswith("\r"):
        return w
    return _command_warnings(command, has_stdin) + w


@lru_cache(maxsize=4096)
def _schedule_warnings(schedule: str, dialect: Dialect, tz: bool) -> tuple[str, ...]:
    w: list[str] = []
    fields = schedule.split()
    if len(fields) == 5 and fields[0] == "*" and fields[1] != "*":
        w.append(f"minute '*' with hour '{fields[1]}': fires every minute of those hours")
    if tz and dialect is Dialect.DEBIAN:
        w.append("CRON_TZ is passed to the job, but Debian cron schedules in the system time zone")
    return tuple(w)


def _command_warnings(command: str, has_stdin: bool) -> tuple[str, ...]:
    w: list[str] = []
    if has_stdin:
        w.append("unescaped % in the command: cron cuts the command there and feeds the rest as stdin")
    if command.endswith("\r"):
        w.append("CRLF line ending: the carriage return becomes part of the command")
    if _INLINE_COMMENT_RE.search(command) and "'" not in command and '"' not in command:
        w.append("inline '#' comment: cron has none, the shell sees the rest of the line as a comment")
    return tuple(w)


def _jobs_of_file(
    f: CrontabFile,
    src: Source,
    system: System,
    why_file: str | None,
    jobs: list[CronJob],
    disabled: list[CronJob],
) -> None:
    env: tuple[tuple[str, str], ...] = ()
    envd: dict[str, str] = {}
    digest = hashlib.sha256(f.data).hexdigest()
    system_format = src.format is Format.SYSTEM
    anacrontab = src.format is Format.ANACRONTAB
    cronie = system.dialect is Dialect.CRONIE
    for line in f.lines:
        kind = line.kind
        if kind is Kind.ENV:
            env = (*env, (line.name, line.value))
            envd = dict(env)
            continue
        if kind is not Kind.JOB and kind is not Kind.DISABLED and kind is not Kind.RETIRED:
            continue
        user = (line.user if system_format else src.owner) or "root"
        tz = envd.get("CRON_TZ") or None
        if anacrontab:
            shell_command, stdin = line.command, None  # anacron gives % no meaning
        else:
            shell_command, stdin = split_percent(line.command, debian=not cronie)
        wrappers, inner = peel(shell_command)
        why: list[str] = []
        if why_file:
            why.append(why_file)
        if kind is Kind.DISABLED:
            why.append("commented out")
        if kind is Kind.RETIRED:
            why.append(f"retired by cronshift on {line.retired_date}")
        if not anacrontab:
            verdict = check_schedule(line.schedule, system.dialect)
            if verdict is not None:
                why.append(f"the schedule can never fire: {verdict[1]}")
        random_delay = envd.get("RANDOM_DELAY")
        job = CronJob(
            id=line.retired_id
            or _recorded_id(wrappers)
            or job_id_for(f.path, user, line.schedule, line.command, inner),
            source=SourceRef(f.path, line.number),
            format=src.format,
            user=user,
            schedule=line.schedule,
            command=line.command,
            env=env,
            shell=envd.get("SHELL") or "/bin/sh",
            timezone=tz if cronie else None,
            runs=not why,
            why_not=tuple(why),
            warnings=_warnings(line.schedule, line.command, stdin is not None, system.dialect, bool(tz)),
            disabled=kind is Kind.DISABLED,
            retired=kind is Kind.RETIRED,
            stdin=stdin,
            shell_command=shell_command,
            wrappers=wrappers,
            inner_command=inner,
            job_id=line.job_id or None,
            random_delay=int(random_delay) if random_delay and random_delay.isdigit() else None,
            digest=digest,
            no_log=line.no_log,
            retired_id=line.retired_id or None,
        )
        (disabled if kind is Kind.DISABLED else jobs).append(job)


_RUN_PARTS_RE = re.compile(r"run-parts\b[^;&|]*?/etc/(cron\.(?:hourly|daily|weekly|monthly|yearly))\b")


def _run_parts_jobs(
    root: Path, scripts: list[Source], runners: list[Trigger], system: System
) -> list[CronJob]:
    """Each script in a run-parts folder is a job; its schedule is that of the line that runs the folder."""
    triggers: dict[str, list[Trigger]] = {}
    anacron: dict[str, Trigger] = {}
    retired_triggers: dict[str, list[Trigger]] = {}
    for t in runners:
        if t.retired is not None:
            retired_triggers.setdefault(t.folder, []).append(t)
        elif t.anacron:
            anacron.setdefault(t.folder, t)
        else:
            triggers.setdefault(t.folder, []).append(t)
    out: list[CronJob] = []
    retired = retired_scripts(root)
    for src in scripts:
        d = src.run_parts_dir or ""
        p = under(root, src.path)
        name = p.name
        why: list[str] = []
        bad = name_ignored(name, system.dialect)
        if bad:
            why.append(f"run-parts skips it: {bad}")
        try:
            st = os.stat(p)
            if not st.st_mode & stat.S_IXUSR:
                why.append("not executable: run-parts skips it")
        except OSError as e:
            why.append(f"cannot be read: {e.strerror}")
        trig = triggers.get(d, [])
        ana = anacron.get(d)
        if trig:
            schedule, user = trig[0].schedule, trig[0].user or "root"
        elif ana:
            schedule, user = ana.schedule, "root"
        elif retired_triggers.get(d):
            t = retired_triggers[d][0]
            why.append(
                f"the line that ran etc/{d} ({t.path}:{t.number}) was retired by cronshift on {t.retired}"
            )
            schedule, user = t.schedule, t.user or "root"
        else:
            why.append(f"no crontab or anacrontab line runs etc/{d}")
            schedule, user = "", "root"
        notes: list[str] = []
        if trig and ana and system.anacron_installed and "anacron" in trig[0].command:
            notes.append(f"anacron runs etc/{d} (etc/anacrontab:{ana.number}); the crontab line defers to it")
        gone = retired.get(src.path)
        if gone is not None and "not executable: run-parts skips it" in why:
            why[why.index("not executable: run-parts skips it")] = f"retired by cronshift on {gone.date}"
        else:
            gone = None
        job = CronJob(
            id=gone.job_id if gone else script_id(src.path),
            retired=gone is not None,
            retired_id=gone.job_id if gone else None,
            source=SourceRef(src.path, None),
            format=Format.RUN_PARTS,
            user=user,
            schedule=schedule,
            command="/" + src.path,
            shell="/bin/sh",
            runs=not why,
            why_not=tuple(why),
            warnings=tuple(notes),
            shell_command="/" + src.path,
            inner_command="/" + src.path,
            triggers=tuple(f"{t.path}:{t.number}" for t in trig),
            anacron=f"etc/anacrontab:{ana.number}" if ana else None,
        )
        out.append(job)
    return out


def _recorded_id(wrappers: tuple[Wrapper, ...]) -> str | None:
    """A job wrapped by `cronshift wrap` carries its id in `record --job`: wrapping must not rename it."""
    for w in wrappers:
        if w.kind == WRAPPER_KIND:
            job = dict(w.args).get("job")
            if job:
                return job
    return None


def script_id(path: str) -> str:
    """A run-parts script's id: its path alone, never the schedule of the line that happens to run it, so
    retiring or editing that line leaves every script's id as it was."""
    return f"{_word_slug(path)}-{hashlib.sha256(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def job_id_for(path: str, user: str, schedule: str, command: str, inner: str) -> str:
    """A short readable slug plus a hash of what makes the job itself: source path, user, schedule, command.

    A retired line keeps the id it was retired under, so undo and the generated task still find it."""
    key = "\0".join((path, user, schedule, command)).encode("utf-8", "surrogateescape")
    return f"{_slug(inner)}-{hashlib.sha256(key).hexdigest()[:8]}"


def _slug(inner: str) -> str:
    parts = inner.split(None, 1)
    word = parts[0] if parts else "job"
    if "run-parts" not in inner and word not in _SHELL_WORDS and "=" not in word:
        return _word_slug(word)
    rp = _RUN_PARTS_RE.search(inner)
    if rp:
        word = "run-parts-" + rp.group(1)
    if word in _SHELL_WORDS or "=" in word:
        words = re.findall(r"[/\w.-]*[A-Za-z][\w.-]*", inner)
        cand = [w for w in words if "/" in w and not w.startswith("/dev") and w.strip("/") not in ("", ".")]
        cand += [w for w in words if w not in _SHELL_WORDS and not w.startswith("-") and "/" not in w]
        word = cand[0] if cand else word
    return _word_slug(word)


_SHELL_WORDS = frozenset(
    (
        "cd",
        "test",
        "[",
        "sh",
        "bash",
        "/bin/sh",
        "/bin/bash",
        "env",
        "sudo",
        "su",
        "nice",
        "command",
        "if",
        "then",
        "exec",
        "nohup",
        "time",
        "true",
        "!",
        "{",
        "(",
    )
)


@lru_cache(maxsize=16384)
def _word_slug(word: str) -> str:
    return _SLUG_RE.sub("-", os.path.basename(word.rstrip("/")).lower()).strip("-")[:24] or "job"


def _unique_ids(jobs: list[CronJob]) -> list[CronJob]:
    """Two identical lines in one file would share an id; number the later ones so each is addressable.

    An id written in the file (a retire marker, `cronshift record --job`) is kept and reserved first, so
    retiring or wrapping one of several identical lines leaves the others' numbers where they were."""
    explicit = [j.retired_id or (_recorded_id(j.wrappers) if j.wrappers else None) for j in jobs]
    taken = {e for e in explicit if e}
    seen: dict[str, int] = {}
    out = []
    for j, e in zip(jobs, explicit, strict=True):
        n = seen.get(j.id, 0) + 1
        cand = j.id if n == 1 else f"{j.id}-{n}"
        if not e:
            while cand in taken:
                n += 1
                cand = f"{j.id}-{n}"
            taken.add(cand)
        seen[j.id] = n
        if cand != j.id and not e:
            j.id = cand  # a fresh object of this scan, not yet seen by anyone: no copy needed
        out.append(j)
    return out
