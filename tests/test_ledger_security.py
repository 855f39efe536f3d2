"""The ledger on a multi-user host, tried by a throwaway unprivileged user: it can neither read what
cronshift stores (job output, crontab secrets), nor forge a run in another user's name, nor make root's
runs vanish. Everything here runs the real wrapper, as cron would, as that user."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

from cronshift.discover.scan import scan
from cronshift.edit.wrap import apply_plan, plan_wrap
from cronshift.history.evidence import Evidence, _read_ledger
from cronshift.ledger import spool
from cronshift.ledger.store import open_ledger
from cronshift.shadow.store import write_verdict_file
from tests.support.install import installed_python, shared_tmp
from tests.support.redis_server import start_redis
from tests.support.users import throwaway_user

from .test_retire import NOW

__all__ = ["installed_python", "throwaway_user"]
SECRET = b"db password is hunter2"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def as_user(user: pwd.struct_passwd, argv: list[str], **env: str) -> subprocess.CompletedProcess[bytes]:
    """argv as `user`, in cron's minimal environment, with no terminal."""
    base = {"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "LOGNAME": user.pw_name, "SHELL": "/bin/sh"}
    return subprocess.run(
        argv,
        env=base | env,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        start_new_session=True,
        timeout=60,
        check=False,
    )


def wrapped_line(root: Path, user: str, command: str, python: str, **opts: str) -> str:
    """Wrap `command` (run as `user`) in root's etc/cron.d and return the shell command cron would run."""
    (root / "etc/cron.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/cron.d/job").write_text(f"* * * * * {user} {command}\n")
    (job,) = scan(root).jobs
    apply_plan(root, plan_wrap(root, job, python=python, **opts), now=NOW)
    (wrapped,) = scan(root).jobs
    return wrapped.shell_command


def test_files_are_private_from_creation(tmp_path: Path) -> None:
    """Created under a permissive umask, the ledger, its WAL files, the spool and the shadow store are
    0600 in 0700 folders at once: nothing is ever readable by others, even before a wrap or retire."""
    old = os.umask(0o022)
    try:
        with open_ledger(tmp_path) as led:
            led.put("k", "v", {"x": 1})
        write_verdict_file(tmp_path, "job-1", {"verdict": "parity"})
        path, _, _ = spool.append(str(tmp_path), "runs-0", b'{"cronshift_run":1,"uid":"u","start":1}\n')
    finally:
        os.umask(old)
    state = tmp_path / "var/lib/cronshift"
    assert mode(state) == 0o700 and mode(state / "shadow") == 0o700
    for f in [*state.glob("ledger.db*"), state / "shadow/job-1.json"]:
        assert mode(f) == 0o600, f
    assert mode(Path(path)) == 0o600 and mode(Path(path).parent) == 0o700
    assert mode(tmp_path / spool.BASE) == 0o755  # each user reaches only their own folder in it


def test_an_unprivileged_user_cannot_read_forge_or_suppress(
    throwaway_user: pwd.struct_passwd, installed_python: str
) -> None:
    evil = throwaway_user
    with shared_tmp("cs-sec-") as base:
        root = base / "root"
        store = root / "var/lib/cronshift/ledger.db"
        fail = base / "fail.sh"
        fail.write_text(f"#!/bin/sh\necho '{SECRET.decode()}'\nexit 1\n")
        fail.chmod(0o755)
        root_line = wrapped_line(root, "root", str(fail), installed_python)
        (root_job,) = [j.id for j in scan(root).jobs]
        # Root's runs, and evil's own (wrap made evil's spool for it).
        (root / "etc/cron.d/evil").write_text(f"* * * * * {evil.pw_name} /bin/true\n")
        (evil_job,) = [j for j in scan(root).jobs if j.source.path == "etc/cron.d/evil"]
        apply_plan(root, plan_wrap(root, evil_job, python=installed_python), now=NOW)
        (evil_job,) = [j for j in scan(root).jobs if j.source.path == "etc/cron.d/evil"]
        evil_spool = Path(spool.user_dir(str(root), evil.pw_uid))
        assert evil_spool.stat().st_uid == evil.pw_uid and mode(evil_spool) == 0o700
        root_spool = Path(spool.user_dir(str(root), 0))

        # Suppress: plant names where root's records would go (its spool, its temp fallback).
        tmp = base / "tmp"
        tmp.mkdir(mode=0o1777)
        tmp.chmod(0o1777)
        key = spool.spool_key(str(store))
        plant = (
            "import os,sys\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        os.makedirs(os.path.dirname(p), exist_ok=True)\n"
            "        os.symlink('/dev/null', p); print('planted', p)\n"
            "    except OSError as e: print('refused', p, e.strerror)\n"
        )
        planted = as_user(
            evil,
            [
                installed_python,
                "-c",
                plant,
                f"{root_spool}/{key}.jsonl",
                f"{tmp}/cronshift-spool-0/{key}.jsonl",
            ],
        )
        assert f"refused {root_spool}/{key}.jsonl".encode() in planted.stdout, planted
        for _ in range(3):
            ran = subprocess.run(
                ["/bin/sh", "-c", root_line],
                env={"PATH": "/usr/bin:/bin", "HOME": "/root", "LOGNAME": "root", "TMPDIR": str(tmp)},
                capture_output=True,
                check=False,
            )
            assert ran.returncode == 1 and SECRET in ran.stdout

        # Read: neither the ledger nor root's spool, whatever the names.
        with open_ledger(root) as led:
            led.drain_spool()
        peek = (
            "import sys\n"
            "for p in sys.argv[1:]:\n"
            "    try: print('READ', p, open(p,'rb').read()[:200])\n"
            "    except OSError as e: print('denied', p, e.strerror)\n"
        )
        targets = [str(store), f"{store}-wal", str(root_spool), str(root / "var/lib/cronshift/backups")]
        seen = as_user(evil, [installed_python, "-c", peek, *targets])
        assert b"READ" not in seen.stdout and SECRET not in seen.stdout, seen.stdout

        # Forge: a record in evil's own spool claiming root and the Celery runtime, for root's job.
        forged = {
            "cronshift_run": 1,
            "uid": "f" * 32,
            "job_id": root_job,
            "source": "celery",
            "user": "root",
            "start": 1.0,
            "exit_status": 0,
        }
        line = json.dumps(forged, separators=(",", ":"))
        write = f"open({str(evil_spool / (key + '.jsonl'))!r}, 'a').write({line!r} + '\\n')"
        assert as_user(evil, [installed_python, "-c", write]).returncode == 0
        into_root = f"open({str(root_spool / 'x.jsonl')!r}, 'a').write({line!r} + '\\n')"
        assert as_user(evil, [installed_python, "-c", into_root]).returncode != 0
        # And evil's own wrapped job runs and is recorded under its name.
        assert as_user(evil, ["/bin/sh", "-c", evil_job.shell_command], TMPDIR=str(tmp)).returncode == 0

        with open_ledger(root) as led:
            runs = list(led.runs())
            assert led.skipped == []
        fails = [r for r in runs if r.user == "root"]
        assert len(fails) == 3 and all(r.exit_status == 1 and r.source == "record" for r in fails)
        (f,) = [r for r in runs if r.extra.get("uid") == "f" * 32]
        assert (f.user, f.source) == (evil.pw_name, "record")  # the file's owner, not the claim
        assert [r.user for r in runs if r.job_id == evil_job.id] == [evil.pw_name]
        # Scan counts for root's job only runs written by root's job's user.
        ev = Evidence(now=NOW.timestamp())
        _read_ledger(ev, root, scan(root).jobs, None, None)
        assert len(ev.ledger_runs[root_job]) == 3
        assert any("another user" in n for n in ev.notes), ev.notes


def test_symlinks_and_foreign_files_in_a_spool_are_refused(
    throwaway_user: pwd.struct_passwd, tmp_path: Path
) -> None:
    d = Path(spool.prepare_user_spool(str(tmp_path), throwaway_user.pw_uid, throwaway_user.pw_gid))
    store = tmp_path / "var/lib/cronshift/ledger.db"
    key = spool.spool_key(str(store))
    rec = b'{"cronshift_run":1,"uid":"%s","start":1,"user":"root"}\n'
    (tmp_path / "victim.jsonl").write_bytes(rec % b"a")
    (d / f"{key}.jsonl").symlink_to(tmp_path / "victim.jsonl")
    foreign = d / f"{key}.x.jsonl"
    foreign.write_bytes(rec % b"b")  # root-owned, in the user's folder: not the user's to vouch for
    with open_ledger(tmp_path) as led:
        assert list(led.runs()) == []
        assert any("symbolic link" in s for s in led.skipped), led.skipped
        assert any("owned by" in s for s in led.skipped), led.skipped
    assert (tmp_path / "victim.jsonl").read_bytes() == rec % b"a"


def test_the_redis_password_is_in_a_private_file_not_the_line(
    throwaway_user: pwd.struct_passwd, installed_python: str
) -> None:
    user = throwaway_user
    with shared_tmp("cs-redis-") as base:
        server = start_redis(base)
        try:
            import redis

            r = redis.Redis(port=server.port)
            r.config_set("requirepass", "s3cret-pw")
            url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
            root = base / "root"
            line = wrapped_line(root, user.pw_name, "/bin/true", installed_python, redis_url=url)
            assert "s3cret" not in line and "--redis-config" in line
            text = (root / "etc/cron.d/job").read_text()
            assert "s3cret" not in text
            conf = Path(line.split("--redis-config ")[1].split()[0])
            st = conf.stat()
            assert (st.st_uid, mode(conf)) == (user.pw_uid, 0o600)
            ran = as_user(user, ["/bin/sh", "-c", line])
            assert ran.returncode == 0, ran.stderr
            with open_ledger(root, redis_url=url) as led:
                (run,) = list(led.runs())
            assert run.user == user.pw_name
        finally:
            server.stop()
