"""A fault or SIGKILL at any step of the write leaves the original or the new file, whole, no temp file."""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cronshift.edit import crontab as ce
from cronshift.edit.crontab import EditFailed, EditJournal, EditRefused, LineEdit, apply_edit, undo_edit

NOW = 1_767_225_600.0
REL = "etc/cron.d/backup"
ORIGINAL = b"SHELL=/bin/sh\r\n# caf\xe9\n15 2 * * * root /usr/local/bin/backup --all\n0 * * * * root true"
BEFORE = b"15 2 * * * root /usr/local/bin/backup --all\n"
AFTER = b"# cronshift: retired job backup-3f2a on 2026-01-01\n#" + BEFORE
NEW = ORIGINAL.replace(BEFORE, AFTER)
PACKAGE_DIR = str(Path(ce.__file__).resolve().parents[2])


def make(root: Path) -> Path:
    path = root / REL
    path.parent.mkdir(parents=True)
    path.write_bytes(ORIGINAL)
    os.chown(path, 1234, 2345)
    os.chmod(path, 0o640)
    return path


def the_edit() -> LineEdit:
    return LineEdit(REL, 3, BEFORE, AFTER, ce.sha256(ORIGINAL), "test")


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(ce.TMP_PREFIX))


def assert_original_intact(path: Path) -> None:
    st = path.stat()
    assert path.read_bytes() == ORIGINAL
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o640)
    assert temps(path.parent) == []


def _eio(*_: object, **__: object) -> None:
    raise OSError(errno.EIO, "Input/output error (injected)")


def _before(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _eio


def _after(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        fn(*args, **kwargs)
        _eio()

    return wrapped


# (object, attribute, how): each step function made to fail before doing its work, or right after it.
STEP_FAULTS = [
    (ce, "write_backup", _before),
    (ce, "write_backup", _after),
    (ce, "write_temp", _before),
    (ce.EditJournal, "add_intent", _before),
    (ce.EditJournal, "add_intent", _after),
    (ce, "check_unchanged", _before),
    (ce, "replace_file", _before),
    (ce, "replace_file", _after),
    (ce, "sync_dir", _before),
    (ce, "sync_dir", _after),
    (ce, "verify_result", _before),
    (ce, "verify_result", _after),
    (ce.EditJournal, "add", _before),
    (ce.EditJournal, "add", _after),
]


@pytest.mark.parametrize(
    ("owner", "name", "how"), STEP_FAULTS, ids=[f"{how.__name__[1:]}-{name}" for _, name, how in STEP_FAULTS]
)
def test_fault_in_a_step_function_leaves_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, how: Callable[..., Any]
) -> None:
    path = make(tmp_path)
    monkeypatch.setattr(owner, name, how(getattr(owner, name)))
    with pytest.raises(EditRefused) as caught:
        apply_edit(tmp_path, the_edit(), now=NOW)
    assert str(caught.value).startswith(f"{REL}:3: ") and "\n" not in str(caught.value)
    assert_original_intact(path)
    if name != "add" or how is _before:  # a fault after the journal's final write: the abort follows it
        assert EditJournal(tmp_path).all() == []
    assert EditJournal(tmp_path).pending() == []


@pytest.mark.parametrize("step", ce.STEPS)
def test_fault_after_each_step_leaves_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = make(tmp_path)

    def fail(done: str) -> None:
        if done == step:
            _eio()

    monkeypatch.setattr(ce, "_after_step", [fail])
    with pytest.raises(EditRefused) as caught:
        apply_edit(tmp_path, the_edit(), now=NOW)
    if step in ("rename", "dirsync", "verify-read", "verify", "done"):
        assert isinstance(caught.value, EditFailed)
        assert str(caught.value).endswith("the original was put back")
    assert_original_intact(path)
    assert EditJournal(tmp_path).all() == [] and EditJournal(tmp_path).pending() == []


def test_another_writers_change_after_the_rename_is_kept_with_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer edits another line right after the rename: its bytes stay, and so does our change."""
    path = make(tmp_path)
    theirs = NEW.replace(b"caf\xe9", b"caf\xe8")

    def other_writer(done: str) -> None:
        if done == "dirsync":
            path.write_bytes(theirs)

    monkeypatch.setattr(ce, "_after_step", [other_writer])
    rec = apply_edit(tmp_path, the_edit(), now=NOW)
    assert path.read_bytes() == theirs
    assert rec.sha256_after == ce.sha256(theirs)
    assert [r.id for r in EditJournal(tmp_path).all()] == [rec.id]


def test_another_writer_without_our_change_is_kept_and_the_edit_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer puts back its own version after the rename: never overwritten by our old snapshot."""
    path = make(tmp_path)
    theirs = ORIGINAL + b"\n5 5 * * * root /usr/bin/theirs\n"

    def other_writer(done: str) -> None:
        if done == "dirsync":
            path.write_bytes(theirs)

    monkeypatch.setattr(ce, "_after_step", [other_writer])
    with pytest.raises(ce.OtherWriter, match=r"^etc/cron.d/backup:3: another writer changed the file"):
        apply_edit(tmp_path, the_edit(), now=NOW)
    assert path.read_bytes() == theirs
    assert temps(path.parent) == []
    assert EditJournal(tmp_path).all() == [] and EditJournal(tmp_path).pending() == []


def test_failure_when_putting_back_names_the_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path)
    real_write_temp = ce.write_temp
    calls = []

    def write_temp_once(
        *args: Any,
    ) -> Any:  # the second temp file is the one that would put the original back
        calls.append(args)
        if len(calls) > 1:
            _eio()
        return real_write_temp(*args)

    def fail(done: str) -> None:
        if done == "verify":
            _eio()

    monkeypatch.setattr(ce, "write_temp", write_temp_once)
    monkeypatch.setattr(ce, "_after_step", [fail])
    with pytest.raises(
        EditFailed, match=r"putting the original back failed too .*saved at var/lib/cronshift/backups/"
    ):
        apply_edit(tmp_path, the_edit(), now=NOW)
    backups = list((tmp_path / "var/lib/cronshift/backups").iterdir())
    assert [b.read_bytes() for b in backups] == [ORIGINAL]
    assert path.read_bytes() == NEW  # never partial: the new file, whole
    assert temps(path.parent) == []


CHILD = """
import base64, json, os, signal, sys
from pathlib import Path
from cronshift.edit import crontab as ce
args = json.loads(sys.argv[1])
def die(done):
    if done == args["step"]:
        os.kill(os.getpid(), signal.SIGKILL)
ce._after_step.append(die)
before, after = base64.b64decode(args["before"]), base64.b64decode(args["after"])
edit = ce.LineEdit(args["path"], args["line"], before, after, args["sha"], "killed")
ce.apply_edit(Path(args["root"]), edit, now=args["now"])
print("survived")
"""


def run_child_killed_at(root: Path, step: str) -> subprocess.CompletedProcess[str]:
    args: dict[str, Any] = {
        "root": str(root),
        "step": step,
        "path": REL,
        "line": 3,
        "before": base64.b64encode(BEFORE).decode(),
        "after": base64.b64encode(AFTER).decode(),
        "sha": ce.sha256(ORIGINAL),
        "now": NOW,
    }
    env = {**os.environ, "PYTHONPATH": PACKAGE_DIR}
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("step", ce.STEPS)
def test_sigkill_at_each_step_leaves_original_or_new_and_next_edit_cleans_up(
    tmp_path: Path, step: str
) -> None:
    path = make(tmp_path)
    proc = run_child_killed_at(tmp_path, step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    replaced = ce.STEPS.index(step) >= ce.STEPS.index("rename")
    assert path.read_bytes() == (NEW if replaced else ORIGINAL)
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o640)
    left_over = temps(path.parent)
    assert bool(left_over) == (step in ("temp", "journal", "recheck"))  # killed while its temp file existed

    journal = EditJournal(tmp_path)
    records = journal.all() + journal.pending()
    if replaced:  # a change on disk is never without its record, so it can always be undone
        assert len(records) == 1 and records[0].after == AFTER

    # The next edit of that directory is not blocked by the dead process's lock and removes its temp file.
    current = path.read_bytes()
    last = ce.split_lines(current)[-1]
    follow_up = LineEdit(REL, len(ce.split_lines(current)), last, b"#" + last, ce.sha256(current), "next")
    apply_edit(tmp_path, follow_up, now=NOW + 1, lock_timeout=5)
    assert temps(path.parent) == []
    assert path.read_bytes() == current[: -len(last)] + b"#" + last

    if replaced:  # and the killed edit's record still takes it back
        undo_edit(tmp_path, records[0], now=NOW + 2)
        assert path.read_bytes() == ORIGINAL[: -len(last)] + b"#" + last


def test_stale_temp_of_a_live_writer_is_left_alone(tmp_path: Path) -> None:
    """Only dead writers' temp files are removed: a live one still holds its flock."""
    path = make(tmp_path)
    tmp = ce.write_temp(os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY), b"x", 0, 0, 0o600, "live")
    try:
        assert ce.clean_stale_temps(tmp.dir_fd) == []
        assert temps(path.parent) == [tmp.name]
    finally:
        os.close(tmp.fd)
    assert ce.clean_stale_temps(tmp.dir_fd) == [tmp.name]
    os.close(tmp.dir_fd)
    assert temps(path.parent) == []


def test_extended_attributes_are_kept(tmp_path: Path) -> None:
    path = make(tmp_path)
    try:
        os.setxattr(path, "user.origin", b"puppet")
    except OSError as exc:
        pytest.skip(f"no user xattrs here: {exc.strerror}")
    rec = apply_edit(tmp_path, the_edit(), now=NOW)
    assert os.getxattr(path, "user.origin") == b"puppet"
    undo_edit(tmp_path, rec, now=NOW + 1)
    assert os.getxattr(path, "user.origin") == b"puppet"
    assert_original_intact(path)


def test_a_hard_linked_crontab_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = make(tmp_path)
    os.link(path, tmp_path / "backup-copy")
    with pytest.raises(EditRefused, match="has 2 hard links: replacing it would split them"):
        apply_edit(tmp_path, the_edit(), now=NOW)
    assert_original_intact(path)
    assert os.stat(path).st_ino == os.stat(tmp_path / "backup-copy").st_ino


APPENDER = """
import os, random, sys, time
path, stop = sys.argv[1], sys.argv[2]
i = 0
# Bursts of back-to-back appends (edits that overlap one must be refused or keep every line) and quiet
# gaps of 5-40 ms (long enough for an edit and its undo to get through, however slow the host's fsync),
# until the test says stop: at most 100,000 lines.
while i < 100000 and not os.path.exists(stop):
    for _ in range(random.randint(1, 40)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"# appended %d\\n" % i)
        os.close(fd)
        i += 1
    time.sleep(random.uniform(0.005, 0.04))
print(i)
"""


def test_a_concurrent_appender_never_loses_a_line(tmp_path: Path) -> None:
    """Edits (and undos) race a process appending lines: every appended line survives every edit."""
    path = make(tmp_path)
    stop = tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(path), str(stop)], stdout=subprocess.PIPE, text=True
    )
    done = refused = 0
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and done < 30 and time.monotonic() < deadline:
            content = path.read_bytes()
            lines = ce.split_lines(content)
            edit = LineEdit(REL, 3, lines[2], b"#" + lines[2], None, "race")
            try:
                rec = apply_edit(tmp_path, edit, now=NOW)
                undo_edit(tmp_path, rec, now=NOW)
                done += 1
            except EditRefused:
                refused += 1  # another writer changed it between read and rename: refused, nothing lost
    finally:
        stop.touch()
        out, _ = proc.communicate(timeout=120)
    n = int(out)
    final = path.read_bytes()
    missing = [i for i in range(n) if b"# appended %d\n" % i not in final]
    assert missing == [], (len(missing), n, done, refused)
    assert done > 0 and n > 0, (n, done, refused)
    assert temps(path.parent) == []
