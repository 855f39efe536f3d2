"""`wrap` / `unwrap`: put `cronshift record --job ID -- ` in front of a job's command, and take it off.

The words go right where the command starts (after the schedule and, in system files, the user column), so
every other byte of the line stays as it was, CR included; unwrap removes exactly those bytes. The write goes
through edit.crontab like every other crontab change. `--job ID` carries the job's id, so the id the job had
before wrapping stays its id (scan takes the id from the wrapper; see the report on issue 4).

`cronshift record -- WORDS` executes WORDS itself, without a shell, so only a simple command can be wrapped:
a shell list (`a && b`, `a; b`, a pipe, a subshell), a builtin (`cd`, `.`, `exec`) or an assignment in front
would be broken or only half recorded. Those are refused with the reason; put them in a script first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cronshift import __version__
from cronshift.edit import crontab as ce
from cronshift.edit.crontab import SAFE_ID, EditJournal, EditRecord, EditRefused, LineEdit, unified_diff
from cronshift.ledger.resp import parse_url
from cronshift.ledger.spool import prepare_user_spool
from cronshift.model import CronJob, Format

WRAPPER_KIND = "cronshift-record"
# Shell words that are not programs `cronshift record` could execute, or that start a compound command.
_WORDS = (
    "if then else elif fi case esac for while until do done { } ! [[ ]] function select time cd . source "
    "exec export eval set unset alias unalias ulimit umask trap readonly local return exit shift builtin "
    "command wait read type hash times break continue declare typeset let"
)
_NOT_PROGRAMS = frozenset(_WORDS.split())


class WrapRefused(EditRefused):
    """Nothing was changed: this job cannot be wrapped or unwrapped; the message says why."""


# Where `wrap` puts the wrapper the line runs: one shim per Python interpreter, readable by every user.
SHIM_DIR = "usr/local/lib/cronshift"
CRON_PATH = "/usr/bin:/bin"  # cron's default PATH for crontabs and cron.d (Debian and cronie)
INSTALL_HINT = (
    "install cronshift where every user can run it: `pipx install --global cronshift` (pipx >= 1.5; "
    "or PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install cronshift), or a venv outside any "
    "home with a link: `ln -s VENV/bin/cronshift /usr/local/bin/cronshift`"
)
_SHIM = """#!{python} -I
# Written by `cronshift wrap`: the wrapper cron jobs run. Python starts isolated (-I), so no PYTHON*
# variable of the job's environment (PYTHONHOME, PYTHONPATH, PYTHONINSPECT...) can change the wrapper;
# the job itself still gets that environment unchanged.
from cronshift.__main__ import main

main()
"""
# The same, without `site` (-S): no .pth files, sitecustomize or site-packages scan on every cron run
# (1-2 ms); the one folder cronshift lives in is named instead. Used when that works for this Python.
_FAST_SHIM = """#!{python} -IS
# Written by `cronshift wrap`: the wrapper cron jobs run. Python starts isolated (-I), so no PYTHON*
# variable of the job's environment (PYTHONHOME, PYTHONPATH, PYTHONINSPECT...) can change the wrapper;
# the job itself still gets that environment unchanged. -S skips site (.pth files, sitecustomize): the
# wrapper needs nothing but the standard library and this one folder.
import sys

sys.path.append({folder!r})
from cronshift.__main__ import main

main()
"""


def _shim_text(python: str) -> str:
    """The fast shim when this Python finds cronshift without site's help, else the plain -I one."""
    where = (
        "import cronshift, os; print(os.path.dirname(os.path.dirname(os.path.abspath(cronshift.__file__))))"
    )
    try:
        found = subprocess.run([python, "-I", "-c", where], capture_output=True, timeout=60, check=True)
        folder = found.stdout.decode().strip()
        probe = f"import sys; sys.path.append({folder!r}); import cronshift.record"
        subprocess.run([python, "-IS", "-c", probe], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return _SHIM.format(python=python)
    return _FAST_SHIM.format(python=python, folder=folder)


def _interpreters() -> list[str]:
    """Pythons that have cronshift, best first: the one running now, then those of installed scripts."""
    found = [sys.executable]
    for script in (shutil.which("cronshift"), "/usr/local/bin/cronshift", "/usr/bin/cronshift"):
        if not script:
            continue
        try:
            with open(script, "rb") as f:
                first = f.readline(512)
        except OSError:
            continue
        if first.startswith(b"#!"):
            words = first[2:].decode("utf-8", "replace").split()
            if words and os.path.isabs(words[0]) and "python" in os.path.basename(words[0]):
                found.append(words[0])
    return list(dict.fromkeys(p for p in found if p and os.path.isabs(p)))


def shim_path(root: Path, python: str) -> str:
    digest = hashlib.sha256(python.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return str(Path(root, SHIM_DIR, f"py-{digest}", "cronshift"))


def _installed(root: Path, python: str) -> bool:
    try:
        return Path(shim_path(root, python)).read_bytes() == _shim_text(python).encode(
            "utf-8", "surrogateescape"
        )
    except OSError:
        return False


def install_shim(root: Path, python: str) -> str:
    """Write (once) the shim for `python` under <root>/usr/local/lib/cronshift and return its path.

    Why a shim and not the console script pip writes: that one starts Python without -I (so PYTHONHOME in
    a crontab stops the job) and imports `re` (5 ms on every run). Its name stays `cronshift`, so scan
    recognises the wrapper on the line."""
    shim = Path(shim_path(root, python))
    d = shim.parent
    text = _shim_text(python).encode("utf-8", "surrogateescape")
    try:
        if shim.read_bytes() == text:
            return str(shim)
    except OSError:
        pass
    d.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = d / f".cronshift.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    try:
        os.write(fd, text)
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)
    os.replace(tmp, shim)
    return str(shim)


def cron_env(job: CronJob, home: str, name: str) -> dict[str, str]:
    """The environment cron gives the job: its minimal one, then the crontab's assignments."""
    env = {"SHELL": "/bin/sh", "PATH": CRON_PATH, "HOME": home, "LOGNAME": name, "USER": name}
    env.update(dict(job.env))
    return env


@functools.lru_cache(maxsize=256)
def _runs_as(
    command: str, shell: str, env: tuple[tuple[str, str], ...], uid: int, gid: int, home: str
) -> str:
    """Run `command` as cron would (that env only, that user, no terminal); return '' or why it failed."""
    me = os.geteuid()
    kw: dict[str, object] = {}
    if me == 0 and uid != 0:
        name = dict(env).get("LOGNAME", "")
        try:
            groups = os.getgrouplist(name, gid) if name else [gid]
        except OSError:
            groups = [gid]
        kw = {"user": uid, "group": gid, "extra_groups": groups}
    cwd = home if os.path.isdir(home) else "/"
    try:
        res = subprocess.run(
            [shell, "-c", command],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            start_new_session=True,  # no controlling terminal, as under cron
            check=False,
            **kw,  # type: ignore[arg-type]
        )
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if res.returncode == 0 and f"cronshift {__version__}".encode() in res.stdout:
        return ""
    said = (res.stderr or res.stdout).decode("utf-8", "replace").strip().splitlines()
    return f"exit {res.returncode}" + (f": {said[-1]}" if said else "")


def job_account(root: Path, job: CronJob) -> pwd.struct_passwd:
    """The account the job runs as on this host (under another --root: ours, when the name is unknown)."""
    where = (job.source.path, job.source.line)
    user = job.user or ("root" if os.geteuid() == 0 else "")
    try:
        pw = pwd.getpwnam(user) if user else pwd.getpwuid(os.geteuid())
    except KeyError:
        if str(Path(root).resolve()) == "/":
            raise WrapRefused(*where, f"user {user!r} does not exist on this host") from None
        pw = pwd.getpwuid(os.geteuid())  # a copy of another host's files: check as ourselves
    if os.geteuid() != 0 and pw.pw_uid != os.geteuid():
        raise WrapRefused(*where, f"only root can check that {user}'s job can run the wrapper; run as root")
    return pw


def redis_config_path(root: Path, uid: int) -> str:
    return str(Path(root).resolve() / "etc/cronshift" / f"redis-{uid}.url")


def resolve_wrapper(
    root: Path, job: CronJob, interpreters: list[str] | None = None, *, dry_run: bool = False
) -> str:
    """An absolute path to a `cronshift` that runs under cron's environment as the job's user.

    Each candidate is proved by running `<wrapper> record --version` exactly that way (env -i with cron's
    variables and the line's assignments, the line's SHELL, the job's user, no terminal) before any line
    names it. Raises WrapRefused with how to install one when none works. With `dry_run` nothing is
    written under the root: a shim not installed yet is checked as a copy in a temporary folder."""
    where = (job.source.path, job.source.line)
    pw = job_account(root, job)
    env = cron_env(job, pw.pw_dir, pw.pw_name)
    shell = env.get("SHELL") or "/bin/sh"
    tried = []
    for python in interpreters if interpreters is not None else _interpreters():
        if any(c.isspace() or c == "%" for c in python):
            tried.append(f"{python}: has a blank or '%' in its path")
            continue
        real = shim_path(root, python)
        if any(c.isspace() or c == "%" for c in real):
            raise WrapRefused(*where, f"the wrapper path {real!r} has a blank or '%'; use a plainer --root")
        scratch = None
        try:
            if dry_run and not _installed(root, python):
                scratch = tempfile.mkdtemp(prefix="cronshift-wrap-")
                os.chmod(scratch, 0o755)  # the job's user must reach the copy
                shim = install_shim(Path(scratch), python)
            else:
                shim = install_shim(root, python)
            why = _runs_as(
                f"{shlex.quote(shim)} record --version",
                shell,
                tuple(sorted(env.items())),
                pw.pw_uid,
                pw.pw_gid,
                pw.pw_dir,
            )
        except OSError as e:
            tried.append(f"{python}: cannot write the wrapper: {e.strerror}")
            continue
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        if not why:
            return real
        tried.append(f"{shim} ({python}): {why}")
    raise WrapRefused(
        *where,
        f"no cronshift that cron can run as {pw.pw_name} (tried {'; '.join(tried) or 'nothing'}); "
        + INSTALL_HINT,
    )


@dataclass(frozen=True)
class WrapPlan:
    job_id: str
    path: str
    line: int
    before: bytes
    after: bytes
    expected_sha256: str
    diff: str
    action: str  # "wrap" | "unwrap"
    owner: tuple[int, int] | None = None  # (uid, gid) the job runs as: its spool is made for it
    secret: tuple[str, str] | None = None  # (path, Redis URL) to write 0600 for the owner, never on the line


def wrapper_words(
    job_id: str,
    store: str | None = None,
    redis_url: str | None = None,
    *,
    wrapper: str = "cronshift",
    root: str | None = None,
    redis_config: str | None = None,
    digest: bool = False,
) -> str:
    """The words put in front of the command, ending in `-- ` (one blank, which unwrap takes off again).
    `digest`: keep a pipe (and hash the output) even where the line redirects output to a file."""
    words = [shlex.quote(wrapper), "record"]
    if root and root != "/":
        words += ["--root", shlex.quote(root)]
    words += ["--job", shlex.quote(job_id)]
    if digest:
        words.append("--digest")
    if redis_config:
        words += ["--redis-config", shlex.quote(redis_config)]
    if store:
        words += ["--store", shlex.quote(store)]
    if redis_url:
        words += ["--redis", shlex.quote(redis_url)]
    return " ".join(words) + " -- "


def not_simple(command: str) -> str | None:
    """Why `command` is not one simple command the wrapper can execute, or None when it is."""
    first = command.lstrip(" \t").split(None, 1)[0] if command.strip(" \t") else ""
    if first in _NOT_PROGRAMS:
        return f"it starts with the shell word `{first}`, which no program can run"
    if "=" in first.split("'", 1)[0].split('"', 1)[0]:
        return f"it starts with the assignment `{first}`"
    quote, escaped, subst, backtick, prev, at_word_start = "", False, 0, False, "", True
    for c in command:
        if escaped:
            escaped, prev, at_word_start = False, c, False
            continue
        if c == "\\" and quote != "'":
            escaped = True
            continue
        if quote:
            if c == quote:
                quote = ""
            elif quote == '"' and c == "`":
                backtick = not backtick
            prev = c
            continue
        if c in "'\"":
            quote = c
        elif c == "`":
            backtick = not backtick
        elif backtick:
            pass
        elif subst:
            subst += {"(": 1, ")": -1}.get(c, 0)
        elif c == "(" and prev == "$":
            subst = 1
        elif c == "#" and at_word_start:
            break  # a comment: the shell ignores the rest of the line
        elif c == "\n":
            return "it spans several lines"
        elif c == ";":
            return "it is a shell list (`;`): the wrapper would record only the first command"
        elif c == "|" and prev != ">":
            return "it is a pipeline or list (`|`, `||`): the wrapper would record only the first command"
        elif c == "&" and prev not in "<>":
            return "it is a shell list or runs in the background (`&`, `&&`)"
        elif c in "()":
            return "it has a subshell `( ... )`"
        at_word_start = c in " \t"
        prev = c
    return None


def _command_span(before: bytes, job: CronJob) -> int:
    """Byte offset in the line where the command starts (the line ends with the command, then LF or not)."""
    cmd = job.command.encode("utf-8", "surrogateescape")
    body = before[:-1] if before.endswith(b"\n") else before
    if not cmd or not body.endswith(cmd):
        raise WrapRefused(job.source.path, job.source.line, "cannot find the command in the line")
    return len(body) - len(cmd)


def _read_line(root: Path, job: CronJob) -> tuple[bytes, list[bytes], str]:
    path, n = job.source.path, job.source.line
    if job.format is Format.RUN_PARTS or n is None:
        raise WrapRefused(
            path,
            None,
            "a run-parts script has no command line to wrap: wrap the line that runs its folder, or "
            "call `cronshift record` inside the script",
        )
    if job.retired or job.disabled:
        raise WrapRefused(path, n, f"{job.id} does not run (retired or commented out); nothing to wrap")
    try:
        data = Path(root, path).read_bytes()
    except OSError as exc:
        raise WrapRefused(path, n, f"cannot read it: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if job.digest and digest != job.digest:
        raise WrapRefused(path, n, "the file changed since it was scanned; scan again")
    lines = ce.split_lines(data)
    if not 1 <= n <= len(lines):
        raise WrapRefused(path, n, f"no such line (the file has {len(lines)})")
    return lines[n - 1], lines, digest


def _plan(
    job: CronJob, lines: list[bytes], digest: str, before: bytes, after: bytes, action: str
) -> WrapPlan:
    n = job.source.line
    assert n is not None
    new = b"".join(lines[: n - 1]) + after + b"".join(lines[n:])
    diff = unified_diff(job.source.path, b"".join(lines), new)
    return WrapPlan(job.id, job.source.path, n, before, after, digest, diff, action)


def plan_wrap(
    root: Path,
    job: CronJob,
    *,
    store: str | None = None,
    redis_url: str | None = None,
    redis_config: str | None = None,
    wrapper: str | None = None,
    python: str | None = None,
    dry_run: bool = False,
    digest: bool = False,
) -> WrapPlan:
    """Plan the wrapped line. `wrapper` (a path) skips resolve_wrapper's check: tests and callers that
    already proved it. `digest`: the wrapper hashes output even where the line sends it to a file (live
    shadow-run compares output digests); without it, such output goes to the file untouched."""
    before, lines, file_digest = _read_line(root, job)
    if not SAFE_ID.fullmatch(job.id):
        raise WrapRefused(job.source.path, job.source.line, f"job id {job.id!r} is not a plain id")
    if any(w.kind == WRAPPER_KIND for w in job.wrappers) or "cronshift record" in job.command:
        raise WrapRefused(
            job.source.path, job.source.line, f"{job.id} is already wrapped by cronshift record"
        )
    on_line = None if redis_url and _has_password(redis_url) else redis_url
    for value, what in ((store, "--store"), (on_line, "--redis")):
        if value and any(c in value for c in "%\n\r"):
            raise WrapRefused(
                job.source.path, job.source.line, f"{what} may not hold '%' or a line break in a crontab"
            )
    shell_command = job.command if job.format is Format.ANACRONTAB else job.shell_command
    why = not_simple(shell_command)
    if why:
        raise WrapRefused(
            job.source.path,
            job.source.line,
            f"cannot wrap {job.id}: {why}; put the command in a script first",
        )
    at = _command_span(before, job)
    if wrapper is None:
        wrapper = resolve_wrapper(root, job, [python] if python else None, dry_run=dry_run)
    pw = job_account(root, job)
    secret = None
    if redis_url and _has_password(redis_url):
        # A password on the line would be readable in the crontab, its backups and `ps`: the line names a
        # file only the job's user (and root) can read instead.
        redis_config = redis_config_path(root, pw.pw_uid)
        secret = (redis_config, redis_url)
        redis_url = None
    words = wrapper_words(
        job.id,
        store,
        redis_url,
        wrapper=wrapper,
        root=str(Path(root).resolve()),
        redis_config=redis_config,
        digest=digest,
    )
    after = before[:at] + words.encode("utf-8", "surrogateescape") + before[at:]
    plan = _plan(job, lines, file_digest, before, after, "wrap")
    return dataclasses.replace(plan, owner=(pw.pw_uid, pw.pw_gid), secret=secret)


def _has_password(url: str) -> bool:
    try:
        return parse_url(url)[3] is not None
    except ValueError as e:
        raise WrapRefused("--redis", None, str(e)) from None


def _write_secret(path: str, text: str, uid: int, gid: int) -> None:
    """Write `text` to `path`, 0600 and owned by uid from creation (root-owned 0755 folder)."""
    folder = os.path.dirname(path)
    old = os.umask(0o022)
    try:
        os.makedirs(folder, 0o755, exist_ok=True)
    finally:
        os.umask(old)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        os.write(fd, text.encode("utf-8", "surrogateescape") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def plan_unwrap(root: Path, job: CronJob) -> WrapPlan:
    before, lines, digest = _read_line(root, job)
    outer = job.wrappers[0] if job.wrappers else None
    if outer is None or outer.kind != WRAPPER_KIND:
        raise WrapRefused(job.source.path, job.source.line, f"{job.id} is not wrapped by cronshift record")
    if not job.command.startswith(outer.text):
        raise WrapRefused(
            job.source.path,
            job.source.line,
            "`cronshift record` is not at the very start of the command; unwrap it by hand",
        )
    at = _command_span(before, job)
    cut = len(outer.text.encode("utf-8", "surrogateescape"))
    if before[at + cut : at + cut + 1] in (b" ", b"\t"):
        cut += 1
    after = before[:at] + before[at + cut :]
    return _plan(job, lines, digest, before, after, "unwrap")


def apply_plan(
    root: Path,
    plan: WrapPlan,
    *,
    now: datetime,
    journal: EditJournal | None = None,
    lock_timeout: float = 10.0,
) -> EditRecord:
    """Write the edit; for a wrap, first make the job user's spool and its Redis config file, so the very
    first run has a private place to record to."""
    if plan.action == "wrap" and plan.owner is not None:
        uid, gid = plan.owner
        try:
            if os.geteuid() == 0 or uid == os.geteuid():
                prepare_user_spool(str(root), uid, gid)
            if plan.secret is not None:
                _write_secret(*plan.secret, uid, gid)
        except OSError as e:
            raise WrapRefused(plan.path, plan.line, f"cannot prepare {e.filename}: {e.strerror}") from e
    edit = LineEdit(
        plan.path, plan.line, plan.before, plan.after, plan.expected_sha256, f"{plan.action} {plan.job_id}"
    )
    return ce.apply_edit(Path(root), edit, now=now.timestamp(), journal=journal, lock_timeout=lock_timeout)
