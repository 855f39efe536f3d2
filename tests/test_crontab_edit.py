"""The crontab writer on real files: what changes, what must not, and that a refusal leaves the file alone."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronshift.edit import crontab as ce
from cronshift.edit.crontab import (
    EditFailed,
    EditJournal,
    EditRecord,
    EditRefused,
    LineEdit,
    apply_edit,
    undo_edit,
)

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MARK = b"# cronshift: retired job backup-3f2a on 2026-01-01\n"
CRON_D = "etc/cron.d/backup"


def put(root: Path, rel: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def retire(root: Path, rel: str, line: int) -> LineEdit:
    """The edit retire will make: marker comment, then the original line commented out."""
    data = (root / rel).read_bytes()
    before = ce.split_lines(data)[line - 1]
    return LineEdit(rel, line, before, MARK + b"#" + before, ce.sha256(data), "test")


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(ce.TMP_PREFIX)]


def stat_of(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


CONTENTS = {
    "lf": b"SHELL=/bin/bash\n# nightly\n15 2 * * * root /usr/local/bin/backup --all\n\n",
    "crlf": b"SHELL=/bin/sh\r\n15 2 * * * root backup\r\n0 * * * * root true\r\n",
    "no-final-newline": b"# x\n15 2 * * * root backup\n0 * * * * root tail-without-newline",
    "non-utf8": b"# caf\xe9 \xff\xfe\x00\n15 2 * * * root echo \x80\x81 % \\%\n\r\n\xc3\x28\n",
    "long-lines": b"# " + b"x" * 300_000 + b"\n15 2 * * * root " + b"y" * 70_000 + b"\n# end\n",
}


@pytest.mark.parametrize("name", sorted(CONTENTS))
def test_edit_changes_one_line_and_keeps_every_other_byte_and_owner_group_mode(root: Path, name: str) -> None:
    original = CONTENTS[name]
    path = put(root, CRON_D, original, mode=0o640, owner=(1234, 2345))
    lines = ce.split_lines(original)
    edit = retire(root, CRON_D, 2)

    rec = apply_edit(root, edit, now=NOW)

    assert path.read_bytes() == b"".join(lines[:1]) + edit.after + b"".join(lines[2:])
    assert stat_of(path) == (1234, 2345, 0o640)
    assert (rec.path, rec.line, rec.before, rec.after) == (CRON_D, 2, lines[1], edit.after)
    assert (rec.owner, rec.group, rec.mode) == (1234, 2345, 0o640)
    assert rec.sha256_before == ce.sha256(original) and rec.sha256_after == ce.sha256(path.read_bytes())
    backup = root / rec.backup_path
    assert backup.read_bytes() == original
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "var/lib/cronshift").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "var/lib/cronshift/edits.jsonl").stat().st_mode) == 0o600
    assert EditJournal(root).get(rec.id) == rec
    assert temps(path.parent) == []


def test_last_line_without_newline_can_be_edited(root: Path) -> None:
    original = b"# a\n0 * * * * root last"
    path = put(root, "etc/crontab", original)
    rec = apply_edit(root, retire(root, "etc/crontab", 2), now=NOW)
    assert path.read_bytes() == b"# a\n" + MARK + b"#0 * * * * root last"
    undo_edit(root, rec, now=NOW + 1)
    assert path.read_bytes() == original


def test_edit_is_recorded_in_the_ledger_too(root: Path) -> None:
    from cronshift.ledger.store import open_ledger

    put(root, CRON_D, CONTENTS["lf"])
    rec = apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    undo = undo_edit(root, rec, now=NOW + 1)
    with open_ledger(root) as led:
        docs = {d["id"]: d for d in led.list("crontab-edit")}
    assert EditRecord.from_dict(docs[rec.id]) == rec
    assert EditRecord.from_dict(docs[undo.id]) == undo


def test_an_unwritable_ledger_does_not_fail_a_done_edit(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    (root / "var/lib/cronshift").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/cronshift/ledger.db").write_bytes(b"this is not a database" * 100)
    rec = apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    assert path.read_bytes() != CONTENTS["lf"] and EditJournal(root).get(rec.id) == rec


def test_record_survives_json(root: Path) -> None:
    put(root, CRON_D, CONTENTS["non-utf8"])
    rec = apply_edit(root, retire(root, CRON_D, 2), now=NOW)
    assert EditRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_refuses_when_file_changed_since_scan(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    edit = retire(root, CRON_D, 3)
    changed = CONTENTS["lf"].replace(b"# nightly", b"# nightly, edited by crontab -e")
    path.write_bytes(changed)
    with pytest.raises(EditRefused, match=r"^etc/cron.d/backup:3: the file changed since it was scanned"):
        apply_edit(root, edit, now=NOW)
    assert path.read_bytes() == changed
    assert EditJournal(root).all() == [] and EditJournal(root).pending() == []


def test_refuses_when_line_is_not_what_the_edit_expects(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    edit = LineEdit(CRON_D, 2, b"15 2 * * * root other\n", b"#x\n", None, "test")
    with pytest.raises(EditRefused, match=r"^etc/cron.d/backup:2: the line is not what the edit expects"):
        apply_edit(root, edit, now=NOW)
    with pytest.raises(EditRefused, match=r":9: no such line"):
        apply_edit(root, LineEdit(CRON_D, 9, b"x\n", b"y\n", None, "test"), now=NOW)
    assert path.read_bytes() == CONTENTS["lf"]


def test_refuses_an_after_that_would_join_the_next_line(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    edit = retire(root, CRON_D, 2)
    with pytest.raises(EditRefused, match="join it to the next line"):
        apply_edit(
            root, LineEdit(CRON_D, 2, edit.before, b"# no newline", edit.expected_sha256, "t"), now=NOW
        )
    assert path.read_bytes() == CONTENTS["lf"]


def test_refuses_symlinked_crontab_leading_out_of_root(root: Path, tmp_path: Path) -> None:
    outside = put(tmp_path, "outside/crontab", b"* * * * * root real-system-job\n")
    (root / "etc").mkdir()
    (root / "etc/crontab").symlink_to(outside)
    edit = LineEdit("etc/crontab", 1, b"* * * * * root real-system-job\n", b"#gone\n", None, "t")
    with pytest.raises(EditRefused, match=r"^etc/crontab: resolves to .*outside the root"):
        apply_edit(root, edit, now=NOW)
    assert outside.read_bytes() == b"* * * * * root real-system-job\n"


def test_refuses_crontab_under_linked_folder_leading_out_of_root(root: Path, tmp_path: Path) -> None:
    outside = put(tmp_path, "outside/cron.d/backup", b"* * * * * root job\n")
    (root / "etc").mkdir()
    (root / "etc/cron.d").symlink_to(outside.parent)
    with pytest.raises(EditRefused, match="outside the root"):
        apply_edit(root, LineEdit(CRON_D, 1, b"* * * * * root job\n", b"#\n", None, "t"), now=NOW)
    assert outside.read_bytes() == b"* * * * * root job\n"
    assert not (root / "var").exists()  # refused before any backup or lock was made


@pytest.mark.parametrize("bad", ["etc/../../outside/crontab", "../outside/crontab", "/etc/crontab"])
def test_refuses_paths_that_escape_by_name(root: Path, tmp_path: Path, bad: str) -> None:
    outside = put(tmp_path, "outside/crontab", b"* * * * * root job\n")
    with pytest.raises(EditRefused, match=r"must (not contain `\.\.`|be relative)"):
        apply_edit(root, LineEdit(bad, 1, b"* * * * * root job\n", b"#\n", None, "t"), now=NOW)
    assert outside.read_bytes() == b"* * * * * root job\n"


def test_refuses_state_dir_linked_out_of_root(root: Path, tmp_path: Path) -> None:
    """A hostile copied tree must not get backups or the journal written elsewhere either."""
    path = put(root, CRON_D, CONTENTS["lf"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/cronshift").symlink_to(elsewhere)
    with pytest.raises(EditRefused, match=r"^var/lib/cronshift: is a symbolic link"):
        apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    assert list(elsewhere.iterdir()) == []
    assert path.read_bytes() == CONTENTS["lf"]


def test_symlink_inside_root_edits_its_target_and_stays_a_link(root: Path) -> None:
    real = put(root, "srv/crontabs/backup", CONTENTS["lf"])
    (root / "etc/cron.d").mkdir(parents=True)
    (root / CRON_D).symlink_to("../../srv/crontabs/backup")
    rec = apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    assert (root / CRON_D).is_symlink()
    assert MARK in real.read_bytes()
    undo_edit(root, rec, now=NOW + 1)
    assert real.read_bytes() == CONTENTS["lf"]


@pytest.fixture
def chattr(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths made immutable with `chattr +i` (root cannot write them either); cleared afterwards."""
    probe = tmp_path / "probe"
    probe.touch()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i does not work on this filesystem")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    marked: list[Path] = []
    yield marked
    for path in marked:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_permission_denied_on_directory_leaves_file_intact(root: Path, chattr: list[Path]) -> None:
    path = put(root, CRON_D, CONTENTS["crlf"], mode=0o600)
    edit = retire(root, CRON_D, 2)
    ce.open_state_dir(root)  # the state dir itself stays writable
    subprocess.run(["chattr", "+i", str(path.parent)], check=True)
    chattr.append(path.parent)
    with pytest.raises(
        EditFailed, match=r"^etc/cron.d/backup:2: write failed: Operation not permitted; the file is"
    ):
        apply_edit(root, edit, now=NOW)
    assert path.read_bytes() == CONTENTS["crlf"] and stat_of(path) == (0, 0, 0o600)
    assert temps(path.parent) == []
    assert EditJournal(root).all() == []


def test_immutable_file_is_refused_and_intact(root: Path, chattr: list[Path]) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    subprocess.run(["chattr", "+i", str(path)], check=True)
    chattr.append(path)
    with pytest.raises(EditFailed, match="Operation not permitted; the file is unchanged"):
        apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    assert path.read_bytes() == CONTENTS["lf"]
    assert temps(path.parent) == []


def test_read_only_mode_file_is_edited_by_root_and_stays_read_only(root: Path) -> None:
    """Mode 0444 does not stop root (the directory decides); the mode is kept, not widened."""
    path = put(root, CRON_D, CONTENTS["lf"], mode=0o444)
    apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    assert stat_of(path) == (0, 0, 0o444)
    assert MARK in path.read_bytes()


def test_file_missing_before_edit_is_refused(root: Path) -> None:
    (root / "etc/cron.d").mkdir(parents=True)
    with pytest.raises(EditRefused, match=r"^etc/cron.d/backup: cannot read it: No such file"):
        apply_edit(root, LineEdit(CRON_D, 1, b"x\n", b"y\n", None, "t"), now=NOW)


def test_file_that_disappears_between_read_and_write_is_not_recreated(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])

    def vanish(step: str) -> None:
        if step == "temp":
            path.unlink()

    monkeypatch.setattr(ce, "_after_step", [vanish])
    with pytest.raises(EditRefused, match=r"^etc/cron.d/backup:3: the file disappeared; nothing was written"):
        apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    assert not path.exists()
    assert temps(path.parent) == []
    assert EditJournal(root).all() == [] and EditJournal(root).pending() == []


def test_writer_that_changes_the_file_during_the_edit_wins(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    theirs = CONTENTS["lf"] + b"0 1 * * * root added-by-crontab-e\n"

    def other_writer(step: str) -> None:
        if step == "journal":
            path.write_bytes(theirs)

    monkeypatch.setattr(ce, "_after_step", [other_writer])
    with pytest.raises(EditRefused, match="another writer changed the file; nothing was written"):
        apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    assert path.read_bytes() == theirs
    assert temps(path.parent) == []


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    """Another process holding an flock until we write a line to its stdin."""
    code = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    proc.wait(timeout=30)


def test_concurrent_cronshift_edit_makes_us_refuse_after_the_timeout(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    ce.open_state_dir(root)
    holder = _hold_lock(root / "var/lib/cronshift/edit.lock")
    try:
        with pytest.raises(
            EditRefused, match=r"another cronshift edit holds var/lib/cronshift/edit.lock; gave up"
        ):
            apply_edit(root, retire(root, CRON_D, 3), now=NOW, lock_timeout=0.2)
    finally:
        _release(holder)
    assert path.read_bytes() == CONTENTS["lf"]


def test_concurrent_cronshift_edit_makes_us_wait_then_succeed(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    ce.open_state_dir(root)
    holder = _hold_lock(root / "var/lib/cronshift/edit.lock")
    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(apply_edit(root, retire(root, CRON_D, 3), now=NOW, lock_timeout=60))
    )
    worker.start()
    try:
        # While the other process holds the lock, nothing may be written (this cannot pass by luck
        # if the lock were ignored: the edit takes milliseconds).
        worker.join(timeout=0.5)
        assert worker.is_alive() and path.read_bytes() == CONTENTS["lf"]
    finally:
        _release(holder)
        worker.join(timeout=60)
    assert len(result) == 1 and isinstance(result[0], EditRecord)
    assert MARK in path.read_bytes()


def test_flock_held_on_the_crontab_itself_is_respected(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    holder = _hold_lock(path)
    try:
        with pytest.raises(EditRefused, match="another process holds a lock on the file"):
            apply_edit(root, retire(root, CRON_D, 3), now=NOW, lock_timeout=0.2)
    finally:
        _release(holder)
    assert path.read_bytes() == CONTENTS["lf"]


def test_undo_restores_exactly_after_other_lines_changed(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["crlf"], mode=0o600, owner=(42, 43))
    rec = apply_edit(root, retire(root, CRON_D, 2), now=NOW)
    edited = path.read_bytes()
    # Someone adds a line at the top and changes the last one: both changes must survive the undo.
    path.write_bytes(b"MAILTO=ops\r\n" + edited.replace(b"root true", b"root false"))

    undo = undo_edit(root, rec, now=NOW + 60)

    assert path.read_bytes() == b"MAILTO=ops\r\n" + CONTENTS["crlf"].replace(b"root true", b"root false")
    assert stat_of(path) == (42, 43, 0o600)
    assert (undo.line, undo.before, undo.after, undo.reason) == (
        3,
        rec.after,
        rec.before,
        f"undo of {rec.id}",
    )
    assert [r.id for r in EditJournal(root).all()] == [rec.id, undo.id]


def test_undo_refuses_when_the_retired_line_was_edited(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    rec = apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    hand_edited = path.read_bytes().replace(b"#15 2", b"#15 3")
    path.write_bytes(hand_edited)
    with pytest.raises(
        EditRefused, match=r"^etc/cron.d/backup:3: the line changed by edit \w+ was edited or removed"
    ):
        undo_edit(root, rec, now=NOW + 1)
    assert path.read_bytes() == hand_edited


def test_undo_of_edit_that_never_took_effect_says_so(root: Path) -> None:
    path = put(root, CRON_D, CONTENTS["lf"])
    rec = apply_edit(root, retire(root, CRON_D, 3), now=NOW)
    path.write_bytes(CONTENTS["lf"])
    with pytest.raises(EditRefused, match="never took effect; nothing to undo"):
        undo_edit(root, rec, now=NOW + 1)


def test_undo_after_lines_were_appended_to_a_file_without_final_newline(root: Path) -> None:
    path = put(root, "etc/crontab", b"# a\n0 * * * * root last")
    rec = apply_edit(root, retire(root, "etc/crontab", 2), now=NOW)
    path.write_bytes(path.read_bytes() + b"\n5 * * * * root new\n")
    undo_edit(root, rec, now=NOW + 1)
    assert path.read_bytes() == b"# a\n0 * * * * root last\n5 * * * * root new\n"


_body = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"", b"# comment", b"SHELL=/bin/bash", b"*/5 * * * * root run % in\\%put", b"\r", b"\xff\xfe"]
    ),
    st.tuples(st.binary(min_size=1, max_size=3), st.integers(1_000, 20_000)).map(lambda t: t[0] * t[1]),
).map(lambda b: b.replace(b"\n", b""))
_lines = st.lists(st.tuples(_body, st.sampled_from([b"\n", b"\r\n"])), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_lines, final_newline=st.booleans(), pick=st.integers(min_value=0))
def test_apply_changes_exactly_one_line_and_undo_is_the_identity(
    lines: list[tuple[bytes, bytes]], final_newline: bool, pick: int
) -> None:
    physical = [body + end for body, end in lines]
    if not final_newline and lines[-1][0]:
        physical[-1] = lines[-1][0]
    original = b"".join(physical)
    assert ce.split_lines(original) == physical
    i = pick % len(physical)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = put(root, CRON_D, original, mode=0o640, owner=(7, 8))
        rec = apply_edit(root, retire(root, CRON_D, i + 1), now=NOW)
        new = path.read_bytes()
        after = ce.split_lines(rec.after)
        assert ce.split_lines(new) == physical[:i] + after + physical[i + 1 :]
        undo_edit(root, rec, now=NOW + 1)
        assert path.read_bytes() == original
        assert stat_of(path) == (7, 8, 0o640)
        assert temps(path.parent) == []


def _crontabs(root: Path) -> list[str]:
    found = [root / "etc/crontab", root / "etc/anacrontab"]
    found += [
        p for d in ("etc/cron.d", "var/spool/cron") if (root / d).is_dir() for p in (root / d).rglob("*")
    ]
    return sorted(
        str(p.relative_to(root)) for p in found if p.is_file() and not p.is_symlink() and p.stat().st_size
    )


@pytest.mark.slow  # a whole server, edit by edit, each fsynced: tens of seconds
@pytest.mark.parametrize("server", ["debian_root", "rhel_root", "corpus_root"])
def test_every_line_of_a_whole_server_retired_then_undone_in_another_order(
    server: str, request: pytest.FixtureRequest
) -> None:
    """Each marker names its line (retire's names its job), so undo order is free: shuffled here."""
    root: Path = request.getfixturevalue(server)
    files = _crontabs(root)
    assert files, f"no crontab files found under {root}"
    originals = {rel: (root / rel).read_bytes() for rel in files}
    records = []
    for rel, original in originals.items():
        for i in reversed(range(len(ce.split_lines(original)))):  # bottom-up: line numbers above stay valid
            data = (root / rel).read_bytes()
            before = ce.split_lines(data)[i]
            after = f"# cronshift: retired {rel}:{i + 1}\n".encode() + b"#" + before
            records.append(
                apply_edit(root, LineEdit(rel, i + 1, before, after, ce.sha256(data), "all"), now=NOW)
            )
        assert (root / rel).read_bytes() != original
    random.Random(8).shuffle(records)
    for rec in records:
        undo_edit(root, rec, now=NOW + 1)
    assert {rel: (root / rel).read_bytes() for rel in files} == originals
    assert len(EditJournal(root).all()) == 2 * len(records)
