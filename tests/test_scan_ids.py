"""Job identity: what a job is (its file and its line's own text; a run-parts script's path), never which
line happens to run it; `show` resolves every id scan printed, or says where the job went."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from cronshift.cli.app import app
from cronshift.discover.scan import scan
from cronshift.edit.retire import apply_retire, plan_retire

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def retire(root: Path, where: str) -> str:
    (job,) = [j for j in scan(root).jobs if str(j.source) == where]
    apply_retire(root, plan_retire(root, job, now=NOW), now=NOW, forced=True, reason="test")
    return job.id


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def scripts(root: Path) -> dict[str, str]:
    return {j.source.path: j.id for j in scan(root).jobs if j.source.line is None}


def test_run_parts_ids_do_not_change_when_their_trigger_is_retired(debian_root: Path) -> None:
    before = scripts(debian_root)
    assert any(p.startswith("etc/cron.daily/") for p in before)
    retire(debian_root, "etc/crontab:19")  # the /etc/crontab line that runs cron.daily
    assert scripts(debian_root) == before
    retire(debian_root, "etc/anacrontab:11")  # and anacron's
    assert scripts(debian_root) == before


def test_a_script_whose_trigger_was_retired_is_not_running_and_says_why(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "etc/cron.daily").mkdir(parents=True)
    (root / "etc/crontab").write_text("25 6 * * * root cd / && run-parts --report /etc/cron.daily\n")
    script = root / "etc/cron.daily/rotate"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (job,) = [j for j in scan(root).jobs if j.source.path == "etc/cron.daily/rotate"]
    assert job.runs
    retire(root, "etc/crontab:1")
    (after,) = [j for j in scan(root).jobs if j.source.path == "etc/cron.daily/rotate"]
    assert after.id == job.id and not after.runs
    assert any("etc/crontab:1" in w and "retired by cronshift" in w for w in after.why_not)


def test_show_resolves_a_retired_job_by_the_id_scan_printed(debian_root: Path) -> None:
    job_id = retire(debian_root, "etc/cron.d/shop-sync:8")
    code, out, err = cli("show", job_id, "--root", str(debian_root), "--no-history", "--now", NOW.isoformat())
    assert code == 0, err
    assert "retired" in out
    assert f"--root {debian_root}" in out.replace("\n", "")


def test_show_says_where_a_job_went_when_its_line_is_gone(debian_root: Path) -> None:
    job_id = retire(debian_root, "etc/cron.d/shop-sync:8")
    path = debian_root / "etc/cron.d/shop-sync"
    path.write_bytes(b"".join(x for x in path.read_bytes().splitlines(True) if b"cronshift:retired" not in x))
    code, out, err = cli("show", job_id, "--root", str(debian_root), "--no-history")
    assert code == 2  # no such job: a usage error, as everywhere
    assert "cronshift last retired it at etc/cron.d/shop-sync:8" in err
    assert "Traceback" not in out + err


def test_the_undo_hint_retire_prints_includes_the_root(debian_root: Path) -> None:
    (job,) = [j for j in scan(debian_root).jobs if str(j.source) == "etc/cron.d/shop-sync:8"]
    code, out, err = cli("retire", job.id, "--root", str(debian_root), "--force", "--reason", "t")
    assert code == 0, err
    hint = out.split("undo with `", 1)[1].split("`", 1)[0]
    assert hint == f"cronshift retire --undo {job.id} --root {os.path.abspath(debian_root)}"
    code, out, err = cli(*hint.split()[1:])
    assert code == 0, err
