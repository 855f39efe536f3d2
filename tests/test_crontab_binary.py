"""User spools on a live system go through the real `crontab -u USER FILE`, with a throwaway user."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronshift.edit import crontab as ce
from cronshift.edit.crontab import EditFailed, EditJournal, EditRefused, LineEdit, apply_edit, undo_edit
from tests.support.parallel import host_lock
from tests.support.users import add_user, remove_user

if shutil.which("crontab") is None or shutil.which("useradd") is None:
    pytest.skip("the real `crontab` binary (Debian package cron) is not installed", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("creating a throwaway user and its spool needs root", allow_module_level=True)

# The real spool is one folder for the host (a test asserts no cronshift temp file is in it): one worker.
pytestmark = pytest.mark.xdist_group("crontab-spool")

NOW = 1_767_225_600.0
SPOOL = Path("/var/spool/cron/crontabs")
BODY = b'# jobs of the throwaway user\nMAILTO=""\n*/5 * * * * echo one\n17 3 * * * echo two >/dev/null 2>&1\n'
RETIRED = b"17 3 * * * echo two >/dev/null 2>&1\n"
MARK = b"# cronshift: retired job two-9c1e on 2026-01-01\n"


def crontab_list(user: str) -> bytes:
    return subprocess.run(["crontab", "-u", user, "-l"], capture_output=True, check=True).stdout


@pytest.fixture
def user(tmp_path: Path) -> Iterator[str]:
    name = f"cstest{uuid.uuid4().hex[:10]}"
    with host_lock("crontab-spool"):  # another test run on this host may use the spool too
        yield from _installed(name, tmp_path)


def _installed(name: str, tmp_path: Path) -> Iterator[str]:
    add_user(name, "--create-home")
    try:
        src = tmp_path / "install.crontab"
        src.write_bytes(BODY)
        subprocess.run(["crontab", "-u", name, str(src)], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["crontab", "-u", name, "-r"], check=False, capture_output=True)
        remove_user(name)
        assert not (SPOOL / name).exists()
        with pytest.raises(KeyError):
            pwd.getpwnam(name)


def test_retire_and_undo_through_the_crontab_binary(user: str, tmp_path: Path) -> None:
    spool = SPOOL / user
    installed = spool.read_bytes()
    lines = ce.split_lines(installed)
    assert ce.header_lines(lines) == 3  # Debian's crontab wrote its header in front of BODY
    line = lines.index(RETIRED) + 1
    rel = f"var/spool/cron/crontabs/{user}"
    edit = LineEdit(rel, line, RETIRED, MARK + b"#" + RETIRED, ce.sha256(installed), "test")

    # root "/" and a user spool: the automatic choice is the crontab binary. Backups, lock and journal go
    # to tmp_path so the test leaves nothing in /var/lib.
    rec = apply_edit(Path("/"), edit, now=NOW, state_root=tmp_path)

    assert rec.via_crontab_binary
    retired_body = BODY.replace(RETIRED, MARK + b"#" + RETIRED)
    assert crontab_list(user) == retired_body
    now_lines = ce.split_lines(spool.read_bytes())
    assert b"".join(now_lines[ce.header_lines(now_lines) :]) == retired_body
    assert now_lines[rec.line - 1 : rec.line + 1] == ce.split_lines(rec.after)
    st = spool.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (pwd.getpwnam(user).pw_uid, 0o600)
    assert (tmp_path / rec.backup_path).read_bytes() == installed
    assert EditJournal(tmp_path).get(rec.id) == rec

    undo = undo_edit(Path("/"), rec, now=NOW + 60, state_root=tmp_path)

    assert undo.via_crontab_binary
    assert crontab_list(user) == BODY
    # `crontab` writes a fresh header (with the install time); every line after it is the original.
    assert ce.split_lines(spool.read_bytes())[3:] == lines[3:]


def test_crontab_binary_rejecting_the_file_leaves_the_spool_untouched(user: str, tmp_path: Path) -> None:
    spool = SPOOL / user
    installed = spool.read_bytes()
    line = ce.split_lines(installed).index(RETIRED) + 1
    broken = LineEdit(
        f"var/spool/cron/crontabs/{user}", line, RETIRED, b"61 3 * * * echo bad minute\n", None, "t"
    )
    with pytest.raises(EditFailed, match=r":\d+: crontab refused it: .*bad minute.*; the file is unchanged"):
        apply_edit(Path("/"), broken, now=NOW, state_root=tmp_path, use_crontab_binary=True)
    assert spool.read_bytes() == installed
    assert EditJournal(tmp_path).all() == [] and EditJournal(tmp_path).pending() == []


def test_crontab_binary_is_refused_under_another_root(tmp_path: Path) -> None:
    spool = tmp_path / "var/spool/cron/crontabs/someone"
    spool.parent.mkdir(parents=True)
    spool.write_bytes(b"* * * * * true\n")
    edit = LineEdit(
        "var/spool/cron/crontabs/someone", 1, b"* * * * * true\n", b"#* * * * * true\n", None, "t"
    )
    with pytest.raises(EditRefused, match="only installs user spools under --root /"):
        apply_edit(tmp_path, edit, now=NOW, use_crontab_binary=True)
    assert spool.read_bytes() == b"* * * * * true\n"
    # Under any other root the file is written directly (the automatic choice).
    assert not apply_edit(tmp_path, edit, now=NOW).via_crontab_binary


def test_failure_after_install_puts_the_exact_original_spool_back(
    user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = SPOOL / user
    installed = spool.read_bytes()
    line = ce.split_lines(installed).index(RETIRED) + 1
    edit = LineEdit(
        f"var/spool/cron/crontabs/{user}", line, RETIRED, b"#" + RETIRED, ce.sha256(installed), "t"
    )

    def fail(done: str) -> None:
        if done == "install":
            raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(ce, "_after_step", [fail])
    with pytest.raises(EditFailed, match=r"injected.*; the original was put back"):
        apply_edit(Path("/"), edit, now=NOW, state_root=tmp_path)
    assert spool.read_bytes() == installed  # header and all, byte for byte
    st = spool.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (pwd.getpwnam(user).pw_uid, 0o600)
    assert crontab_list(user) == BODY
    assert [p for p in SPOOL.iterdir() if p.name.startswith(ce.TMP_PREFIX)] == []


CHILD = """
import os, signal, sys
from pathlib import Path
from cronshift.edit import crontab as ce
user, step, line, state = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ce._after_step.append(lambda done: os.kill(os.getpid(), signal.SIGKILL) if done == step else None)
data = Path(f"/var/spool/cron/crontabs/{user}").read_bytes()
before = ce.split_lines(data)[line - 1]
edit = ce.LineEdit(f"var/spool/cron/crontabs/{user}", line, before, b"#" + before, ce.sha256(data), "killed")
ce.apply_edit(Path("/"), edit, now=0.0, state_root=Path(state))
"""


@pytest.mark.parametrize("step", ["backup", "journal", "recheck", "install"])
def test_sigkill_during_a_binary_install_leaves_old_or_new_and_the_record(
    user: str, tmp_path: Path, step: str
) -> None:
    spool = SPOOL / user
    installed = spool.read_bytes()
    line = ce.split_lines(installed).index(RETIRED) + 1
    env = {**os.environ, "PYTHONPATH": str(Path(ce.__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, user, step, str(line), str(tmp_path)], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    if step != "install":
        assert spool.read_bytes() == installed
        return
    assert crontab_list(user) == BODY.replace(RETIRED, b"#" + RETIRED)
    (rec,) = EditJournal(tmp_path).pending()  # killed before its final record: the intent is there
    undo_edit(Path("/"), rec, now=NOW, state_root=tmp_path)
    assert crontab_list(user) == BODY
