"""`cronshift shadow-run` for real: fixture jobs that write files, print timestamps and draw random numbers,
run through the runtime in private mount namespaces; broken migrations are built by altering the spec the
event side hands to the runtime (never by mocking), and each is caught with a diff naming the cause."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import cronshift
from cronshift.cli.shadow_run import shadow_run
from cronshift.discover.lookup import find_job
from cronshift.discover.scan import scan
from cronshift.model import CronJob
from cronshift.retire import shadow_gate
from cronshift.shadow import execute as ex
from cronshift.shadow.normalize import build_normalizer
from cronshift.shadow.session import run_session

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "shadow"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="sandbox mode needs root (private mount namespaces)"
)


def make_root(base: Path) -> Path:
    root = base / "root"
    shutil.copytree(FIXTURE, root, symlinks=True)
    tab = root / "etc/cron.d/shadow"
    tab.write_text(tab.read_text().replace("@ROOT@", str(root)))
    return root


@pytest.fixture
def shadow_root() -> Iterator[Path]:
    """A copy of fixtures/shadow outside /tmp, so each side can also get a private /tmp."""
    base = Path(tempfile.mkdtemp(prefix="cronshift-shadow-test-", dir="/var/tmp"))
    base.chmod(0o755)  # another user (the wrong-user migration) must reach the scripts
    try:
        yield make_root(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("shadow-run")(shadow_run)
    app.command("noop")(lambda: None)  # two commands, so Typer keeps the command name
    return app


def report_job(root: Path) -> CronJob:
    return find_job(scan(root), "etc/cron.d/shadow:5")


def session(root: Path, event_spec: dict[str, Any], runs: int = 5, mode: str = "sandbox") -> Any:
    job = report_job(root)
    setup = ex.SideSetup(mode, (str(root / "var/out"),), ex.new_scratch(root, "t"), root)
    spec = ex.cron_spec(job)
    try:
        return run_session(
            job,
            cron_side=lambda label: ex.run_local(spec, setup, label),
            event_side=lambda label: ex.run_local(event_spec, setup, label),
            runs=runs,
            normalizer=build_normalizer(),
            evidence=setup.evidence(),
            clock=lambda: 0.0,
        )
    finally:
        ex.remove_scratch(setup.scratch)


def test_faithful_migration_reaches_parity_via_the_cli_and_opens_the_retire_gate(shadow_root: Path) -> None:
    out = shadow_root / "var/out"
    r = CliRunner().invoke(
        _cli(),
        [
            "shadow-run",
            "etc/cron.d/shadow:5",
            "--root",
            str(shadow_root),
            "--runs",
            "5",
            "--writes",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    v = doc["verdict"]
    assert v["verdict"] == "parity" and v["label"] == "parity", v["missing"] + v["differences"]
    assert v["runs_compared"] == 5 and v["matched_consecutive"] == 5
    assert v["evidence"]["mode"] == "sandbox" and v["evidence"]["writes"] == [str(out)]
    # A private /tmp would hide a checkout that lives under /tmp (as CI's may): then it is skipped, and said.
    code_under_tmp = any(
        os.path.realpath(p).startswith("/tmp/") for p in (os.path.dirname(cronshift.__file__), sys.prefix)
    )
    assert v["evidence"]["private_tmp"] is (not code_under_tmp)
    assert (v["evidence"]["private_tmp_note"] is None) is (not code_under_tmp)
    assert v["noise_floor_text"] == ["output: line 3 token 3 (number) varies"]  # the random draw, learned
    assert sorted(os.listdir(out)) == [".keep"], "sandbox: the real path was never written"
    first = doc["pairs"][0]
    assert first["cron"]["changes"]["created"] == [f"{out}/report.txt"]
    assert first["cron"]["output_raw_sha256"] != first["event"]["output_raw_sha256"]  # noise: raw differs
    job = report_job(shadow_root)
    gate = shadow_gate(shadow_root, job)
    assert gate.ok, gate.missing
    rep = CliRunner().invoke(_cli(), ["shadow-run", job.id, "--root", str(shadow_root), "--report"])
    assert rep.exit_code == 0 and "parity" in rep.stdout


def _altered(root: Path, **change: Any) -> dict[str, Any]:
    spec = ex.cron_spec(report_job(root))
    if "env_drop" in change:
        gone = change.pop("env_drop")
        spec["env"] = [kv for kv in spec["env"] if kv[0] != gone]
    if "env_set" in change:
        k, v = change.pop("env_set")
        spec["env"] = [[a, str(root / v) if a == k else b] for a, b in spec["env"]]
    if "prefix" in change:
        spec["command"] = change.pop("prefix") + spec["command"]
    if "suffix" in change:
        spec["command"] += change.pop("suffix")
    return {**spec, **change}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            {"user": "nobody"},
            "'user=root cwd=/root mode=full' (cron) vs 'user=nobody cwd=/ mode=full' (event)",
        ),
        ({"prefix": "cd /var && "}, "in 'user=root cwd=/root mode=full' vs 'user=root cwd=/var mode=full'"),
        (
            {"env_drop": "REPORT_MODE"},
            "'user=root cwd=/root mode=full' (cron) vs 'user=root cwd=/root mode=' (event)",
        ),
        ({"suffix": "; exit 3"}, "exit status 0 (cron) vs 3 (event)"),
        (
            {"env_set": ("OUTDIR", "var/elsewhere")},
            "out/report.txt: written by cron, not written by the event side",
        ),
        (
            {"suffix": "; sed -i 's/rows: 42/rows: 52/' $OUTDIR/report.txt"},
            "report.txt line 2: '42' (cron) vs '52' (event)",
        ),
        (
            {"suffix": "; rm $OUTDIR/report.txt"},
            "out/report.txt: written by cron, not written by the event side",
        ),
    ],
    ids=[
        "wrong-user",
        "wrong-cwd",
        "lost-env",
        "exit-code",
        "written-elsewhere",
        "file-byte",
        "file-missing",
    ],
)
def test_broken_migrations_are_caught_naming_the_cause(
    shadow_root: Path, change: dict[str, Any], needle: str
) -> None:
    res = session(shadow_root, _altered(shadow_root, **change), runs=1)
    assert res.verdict.label == "mismatch"
    assert any(needle in d for d in res.verdict.differences), (res.verdict.differences, res.observations[-1])
    assert sorted(os.listdir(shadow_root / "var/out")) == [".keep"], (
        "the declared path was never really written"
    )


def test_cli_same_failure_on_both_sides_is_not_a_mismatch_but_too_few_pairs(shadow_root: Path) -> None:
    tab = shadow_root / "etc/cron.d/shadow"
    r = CliRunner().invoke(
        _cli(), ["shadow-run", "etc/cron.d/shadow:6", "--root", str(shadow_root), "--runs", "2"]
    )
    assert r.exit_code == 0, r.output  # the failing job fails the same way on both sides: not a mismatch
    assert "insufficient evidence" in r.stdout and "the gate needs 5" in r.stdout
    assert tab.exists()


def test_allow_mode_really_writes_and_dry_run_needs_a_flag(shadow_root: Path) -> None:
    out = shadow_root / "var/out"
    res = session(shadow_root, ex.cron_spec(report_job(shadow_root)), runs=1, mode="allow")
    assert res.verdict.label == "insufficient evidence" and not res.verdict.differences
    assert (out / "report.txt").exists() and res.doc["evidence"]["mode"] == "allow"
    r = CliRunner().invoke(
        _cli(), ["shadow-run", "etc/cron.d/shadow:5", "--root", str(shadow_root), "--mode", "dry-run"]
    )
    assert r.exit_code == 2 and "--dry-run-flag" in r.stderr
