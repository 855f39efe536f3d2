"""`cronshift shadow-run` end to end on the fixture jobs (fixtures/shadow) with a generated project: the
parity verdict and what it is bound to, the sandbox that contains every write, the one-screen report."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cronshift.cli.generate import generate
from cronshift.cli.shadow_run import shadow_run
from cronshift.discover.lookup import find_job
from cronshift.discover.scan import scan
from cronshift.edit.retire import shadow_gate
from cronshift.generate.common import slug
from cronshift.model import CronJob

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "shadow"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox mode needs root (namespaces, overlayfs)")


def make_root(base: Path) -> Path:
    root = base / "root"
    shutil.copytree(FIXTURE, root, symlinks=True)
    tab = root / "etc/cron.d/shadow"
    tab.write_text(tab.read_text().replace("@ROOT@", str(root)))
    return root


@pytest.fixture
def shadow_root() -> Iterator[Path]:
    """A copy of fixtures/shadow outside /tmp (another user, the wrong-user migration, must reach it)."""
    base = Path(tempfile.mkdtemp(prefix="cronshift-shadow-test-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        yield make_root(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("shadow-run")(shadow_run)
    app.command("generate")(generate)
    return app


def report_job(root: Path) -> CronJob:
    return find_job(scan(root), "etc/cron.d/shadow:5")


def project_for(root: Path, dest: Path, package: str = "shp", broker: str | None = None) -> Path:
    args = [
        "generate",
        "--all",
        "--root",
        str(root),
        "--out",
        str(dest),
        "--package",
        package,
        "--no-history",
    ]
    r = CliRunner().invoke(_cli(), args + (["--broker", broker] if broker else []))
    assert r.exit_code == 0, r.output
    return dest


def task_module(root: Path, project: Path, line: int = 5, package: str = "shp") -> Path:
    job = find_job(scan(root), f"etc/cron.d/shadow:{line}")
    return project / package / "jobs" / f"{slug(job.id)}.py"


def digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for n in files:
            p = os.path.join(dirpath, n)
            if "var/lib/cronshift" not in p and "__pycache__" not in p:
                out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def run_cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(_cli(), list(args))
    return r.exit_code, r.stdout, r.stderr


def test_parity_is_bound_to_the_generated_files_it_ran_and_the_gate_refuses_when_they_change(
    shadow_root: Path, tmp_path: Path
) -> None:
    project = project_for(shadow_root, tmp_path / "proj")
    before = digest(shadow_root)
    code, out, err = run_cli(
        "shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project), "--json",
        "--ignore", r"took \d+s",  # the job prints its own elapsed seconds: a clock reading, named
    )  # fmt: skip
    assert code == 0, out + err
    doc = json.loads(out)
    v = doc["verdict"]
    assert v["label"] == "parity", v["missing"] + v["differences"]
    assert digest(shadow_root) == before, "sandbox: nothing real was written"
    ev = v["evidence"]
    assert ev["mode"] == "sandbox" and ev["event_path"] == "local"
    mod = task_module(shadow_root, project)
    assert (
        ev["project_digests"][mod.relative_to(project).as_posix()]
        == hashlib.sha256(mod.read_bytes()).hexdigest()
    )
    sm = v["summary"]
    assert sm["calibration_completed"] == sm["calibration_runs"] >= 3 and sm["pairs"] == 5
    # The report's undeclared write (no --writes given) was contained and is listed, for both sides.
    report = str(shadow_root / "var/out/report.txt")
    assert {"path": report, "sides": ["cron", "event"]} in v["summary"]["undeclared_writes"]
    assert v["summary"]["masked"]["cron"]["date-output"] == 5  # once per compared cron run
    job = report_job(shadow_root)
    assert shadow_gate(shadow_root, job).ok
    # An edit of the generated task after the parity run: the gate refuses, naming the file.
    mod.write_text(mod.read_text() + "\n# edited\n")
    gate = shadow_gate(shadow_root, job)
    assert not gate.ok and any(mod.name in m and "changed since" in m for m in gate.missing), gate.missing
    import sys

    exe = str(Path(sys.executable).with_name("cronshift"))
    tab_before = (shadow_root / "etc/cron.d/shadow").read_bytes()
    r = subprocess.run([exe, "retire", job.id, "--root", str(shadow_root)], capture_output=True, text=True)
    assert r.returncode == 4 and "changed since the parity run" in r.stderr, r.stderr
    assert (shadow_root / "etc/cron.d/shadow").read_bytes() == tab_before
    mod.write_text(mod.read_text().replace("\n# edited\n", ""))
    assert shadow_gate(shadow_root, job).ok
    # An edit of the crontab after the evidence: older evidence no longer counts.
    tab = shadow_root / "etc/cron.d/shadow"
    os.utime(tab, (os.stat(tab).st_atime, os.stat(tab).st_mtime + 3600))
    gate = shadow_gate(shadow_root, job)
    assert not gate.ok and any("older than the last edit" in m for m in gate.missing), gate.missing
    code, out, _ = run_cli("shadow-run", job.id, "--root", str(shadow_root), "--report")
    assert code == 0 and out.startswith("parity for report-sh") and "contained undeclared write" in out


def test_without_a_project_nothing_is_compared_and_no_verdict_is_written(shadow_root: Path) -> None:
    code, _out, err = run_cli("shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root))
    assert code == 2 and "--project" in err
    assert not (shadow_root / "var/lib/cronshift/shadow").exists()
    gate = shadow_gate(shadow_root, report_job(shadow_root))
    assert not gate.ok


def test_gate_refuses_a_parity_verdict_with_no_project_behind_it(shadow_root: Path) -> None:
    from cronshift.shadow.store import verdict_path

    job = report_job(shadow_root)
    p = verdict_path(shadow_root, job.id)
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"verdict": "parity", "job": job.id, "command": job.command, "runs_compared": 5}))
    gate = shadow_gate(shadow_root, job)
    assert not gate.ok and any("no generated project" in m for m in gate.missing), gate.missing


def test_undeclared_writes_anywhere_are_contained_and_a_timeout_kills_and_waits(
    shadow_root: Path, tmp_path: Path
) -> None:
    """A task that appends to a file nobody declared, then one that hangs: nothing real changes."""
    project = project_for(shadow_root, tmp_path / "proj")
    victim = Path("/var/tmp") / f"cronshift-victim-{os.getpid()}"
    victim.write_text("original\n")
    try:
        mod = task_module(shadow_root, project)
        call = "    return run_cron_task(self, SPEC, payload=payload, scheduled_for=scheduled_for)"
        body = f'    open("{victim}", "a").write("event\\n")\n' + call
        mod.write_text(mod.read_text().replace(call, body))
        code, out, _ = run_cli(
            "shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project),
            "--runs", "1", "--json",
        )  # fmt: skip
        assert code == 3
        v = json.loads(out)["verdict"]
        assert any(f"{victim}: changed by the event side only" in d for d in v["differences"]), v[
            "differences"
        ]
        assert {"path": str(victim), "sides": ["event"]} in v["summary"]["undeclared_writes"]
        assert victim.read_text() == "original\n"
        marker = f"cronshift-hang-{os.getpid()}"
        mod.write_text(
            mod.read_text().replace(
                body,
                f'    import subprocess\n    subprocess.run(["sh", "-c", "sleep 300 # {marker}"])\n' + call,
            )
        )
        code, out, _ = run_cli(
            "shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project),
            "--runs", "1", "--timeout", "3", "--json",
        )  # fmt: skip
        v = json.loads(out)["verdict"]
        assert code == 3 and any("no result within 3.0s" in d for d in v["differences"]), (
            v["missing"],
            v["differences"],
        )
        ps = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
        assert ps.stdout == "", "every process of the timed-out side was killed before its sandbox went away"
    finally:
        victim.unlink()


def test_rename_over_a_declared_single_file_works(shadow_root: Path, tmp_path: Path) -> None:
    conf = shadow_root / "var/out/conf"
    conf.write_text("v1\n")
    tab = shadow_root / "etc/cron.d/shadow"
    tab.write_text(tab.read_text() + f"0 1 * * * root printf 'v2\\n' > {conf}.tmp && mv {conf}.tmp {conf}\n")
    project = project_for(shadow_root, tmp_path / "proj")
    code, out, err = run_cli(
        "shadow-run", "etc/cron.d/shadow:7", "--root", str(shadow_root), "--project", str(project),
        "--writes", str(conf), "--runs", "2", "--gate-pairs", "2", "--json",
    )  # fmt: skip
    assert code == 0, out + err
    v = json.loads(out)["verdict"]
    assert v["label"] == "parity", v
    changes = json.loads(out)["pairs"][0]["event"]["changes"]
    assert [(c["path"], c["change"]) for c in changes] == [(str(conf), "changed")]
    assert conf.read_text() == "v1\n" and v["summary"]["undeclared_writes"] == []


def test_same_failure_on_both_sides_is_not_a_mismatch_and_the_report_leads_with_a_summary(
    shadow_root: Path, tmp_path: Path
) -> None:
    project = project_for(shadow_root, tmp_path / "proj")
    code, out, err = run_cli(
        "shadow-run",
        "etc/cron.d/shadow:6",
        "--root",
        str(shadow_root),
        "--project",
        str(project),
        "--runs",
        "2",
    )
    assert code == 0, out + err
    first = out.splitlines()[0]
    assert first.startswith("insufficient evidence for fail-sh") and "2 pair(s)" in first
    assert re.search(r"calibration: (\d+) of \1 cron runs completed", out) and "duration: event/cron" in out
    assert "the gate needs 5" in out


def test_allow_mode_compares_each_sides_own_changes_and_dry_run_needs_a_flag(
    shadow_root: Path, tmp_path: Path
) -> None:
    log = shadow_root / "var/out/append.log"
    log.write_text("start\n")
    tab = shadow_root / "etc/cron.d/shadow"
    tab.write_text(tab.read_text() + f"0 2 * * * root echo line >> {log}\n")
    project = project_for(shadow_root, tmp_path / "proj")
    code, out, err = run_cli(
        "shadow-run", "etc/cron.d/shadow:7", "--root", str(shadow_root), "--project", str(project),
        "--mode", "allow", "--writes", str(shadow_root / "var/out"), "--runs", "2", "--gate-pairs", "2",
        "--json",
    )  # fmt: skip
    assert code == 0, out + err
    v = json.loads(out)["verdict"]
    assert v["label"] == "parity", v  # each appended one line: the same own change, whatever the end state
    assert log.read_text().count("line") == 3 + 2 * 2, "allow mode really ran every run"
    code, _, err = run_cli(
        "shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project),
        "--mode", "dry-run",
    )  # fmt: skip
    assert code == 2 and "--dry-run-flag" in err


def test_allow_mode_counts_a_rewrite_with_the_same_bytes_as_a_change(
    shadow_root: Path, tmp_path: Path
) -> None:
    """cron regenerates a state file with the bytes it already holds; an event path that skips the write
    leaves the same end state but not the same effect, so it must not get parity in allow mode either."""
    state = shadow_root / "var/out/current"
    state.write_text("state: ok\n")
    tab = shadow_root / "etc/cron.d/shadow"
    tab.write_text(tab.read_text() + f"0 2 * * * root printf 'state: ok\\n' > {state}\n")
    project = project_for(shadow_root, tmp_path / "proj")
    args = ["shadow-run", "etc/cron.d/shadow:7", "--root", str(shadow_root), "--project", str(project)]
    args += ["--mode", "allow", "--writes", str(shadow_root / "var/out"), "--runs", "2", "--gate-pairs", "2"]
    code, out, err = run_cli(*args, "--json")
    assert code == 0, out + err
    assert json.loads(out)["verdict"]["label"] == "parity"  # the faithful project rewrites it too
    mod = task_module(shadow_root, project, line=7)
    mod.write_text(mod.read_text().replace("\n# Policies,", '\nSPEC["command"] = "true"\n\n# Policies,', 1))
    code, out, err = run_cli(*args, "--json")
    assert code == 3, out + err
    v = json.loads(out)["verdict"]
    assert v["label"] == "mismatch", v["differences"]
    assert any("current: changed by cron" in d for d in v["differences"]), v["differences"]
    assert state.read_text() == "state: ok\n"


def test_a_difference_shows_how_the_job_definitions_differ(shadow_root: Path, tmp_path: Path) -> None:
    """A lost env var shows as its symptom (a line of output) and as its cause (the definitions' diff)."""
    project = project_for(shadow_root, tmp_path / "proj")
    mod = task_module(shadow_root, project)
    lost = 'SPEC["env"] = [kv for kv in SPEC["env"] if kv[0] != "REPORT_MODE"]\n'
    mod.write_text(mod.read_text().replace("\n# Policies,", "\n" + lost + "\n# Policies,", 1))
    code, out, err = run_cli(
        "shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project),
        "--runs", "1",
    )  # fmt: skip
    assert code == 3, out + err
    assert out.splitlines()[0].startswith("mismatch for report-sh")
    assert "mode=full' (cron) vs 'user=root cwd=/root mode=' (event)" in out
    assert "job definitions differ:" in out and "env REPORT_MODE: 'full' (cron) vs unset (event)" in out


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv(1) to drop CAP_SYS_ADMIN")
def test_where_the_kernel_refuses_the_sandbox_one_line_and_insufficient_unless_dry_run(
    shadow_root: Path, tmp_path: Path
) -> None:
    """Root without CAP_SYS_ADMIN: unshare and overlay mounts are refused by the kernel, for real."""
    import sys

    project = project_for(shadow_root, tmp_path / "proj")
    exe = str(Path(sys.executable).with_name("cronshift"))
    drop = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", exe, "shadow-run"]
    args = ["etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(project), "--json"]
    before = digest(shadow_root)
    r = subprocess.run([*drop, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "refuses the sandbox" in r.stderr, r.stderr
    v = json.loads(r.stdout)["verdict"]
    assert v["label"] == "insufficient evidence" and v["runs_compared"] == 0
    assert digest(shadow_root) == before, "nothing ran"
    assert not shadow_gate(shadow_root, report_job(shadow_root)).ok
    # --mode dry-run says side effects are acceptable to skip: the job's own flag, no sandbox needed.
    r = subprocess.run(
        [
            *drop,
            *args,
            "--mode",
            "dry-run",
            "--dry-run-flag",
            "--dry-run",
            "--runs",
            "1",
            "--gate-pairs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode in (0, 3), r.stderr
    assert json.loads(r.stdout)["verdict"]["runs_compared"] == 1


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the scratch stream needs redis-server")
def test_streams_target_is_driven_through_its_generated_jobs_and_the_real_consumer(
    shadow_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "streams"
    r = CliRunner().invoke(
        _cli(),
        ["generate", "--all", "--target", "streams", "--root", str(shadow_root), "--out", str(out),
         "--package", "sts", "--no-history", "--redis", "redis://127.0.0.1:1/0"],  # nobody listens there
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    args = ["shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--project", str(out)]
    args += ["--runs", "2", "--gate-pairs", "2", "--ignore", r"took \d+s", "--json"]
    before = digest(shadow_root)
    code, stdout, err = run_cli(*args)
    assert code == 0, stdout + err
    v = json.loads(stdout)["verdict"]
    assert v["label"] == "parity", (v["missing"], v["differences"])
    assert v["evidence"]["module"] == "sts.jobs" and "sts/jobs.py" in v["evidence"]["project_digests"]
    jobs = out / "sts/jobs.py"
    jobs.write_text(
        jobs.read_text() + '\nfor _s in JOBS.values():\n    _s["command"] = "cd /tmp && " + _s["command"]\n'
    )
    code, stdout, err = run_cli(*args)
    assert code == 3, stdout + err
    v = json.loads(stdout)["verdict"]
    assert any("cwd=/tmp" in d for d in v["differences"]), v["differences"]
    assert digest(shadow_root) == before
