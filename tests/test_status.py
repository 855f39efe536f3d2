"""`cronshift status`: every job's stage on the migration path and the one next command, from real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from cronshift.board import build_board, read_project
from cronshift.cli.app import app
from cronshift.discover.scan import scan
from cronshift.edit.retire import apply_retire, plan_retire
from cronshift.ledger.store import DEFAULT_STORE, open_ledger
from cronshift.model import RunRecord
from cronshift.shadow.store import VERDICT_KIND

from .test_retire import NOW, by_id, write_verdict

REINDEX = "reindex-search-e299beff"
SYNC = "sync-orders-1cbf50a2"
CLEANUP = "cleanup-uploads-3212b9f7"
STOCK_FILE = "etc/cron.d/shop-sync"


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def board(root: Path, *args: str) -> dict[str, dict[str, object]]:
    code, out, err = cli("status", "--root", str(root), "--json", *args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_version"] >= 1
    return {r["job_id"]: r for r in doc["jobs"]}


def test_an_untouched_server_is_all_cron_and_status_writes_nothing(debian_root: Path) -> None:
    before = sorted(p.relative_to(debian_root).as_posix() for p in debian_root.rglob("*"))
    rows = board(debian_root)
    assert sorted(p.relative_to(debian_root).as_posix() for p in debian_root.rglob("*")) == before
    assert rows[REINDEX]["stage"] == "cron"
    assert rows[REINDEX]["host"] == "shop01"  # from the root's etc/hostname: rows can be merged across hosts
    assert rows[REINDEX]["next_command"] == f"cronshift wrap {REINDEX} --root {debian_root}"
    # A job cron never runs is said so, with the command that explains why.
    assert rows["archive-orders-db0f90a1"]["stage"] == "not-run"
    assert "can never fire" in str(rows["archive-orders-db0f90a1"]["detail"])
    assert str(rows["archive-orders-db0f90a1"]["next_command"]).startswith("cronshift show archive-orders")
    # Every job of the scan that cron could run is on the board, once.
    ids = {j.id for j in scan(debian_root).jobs}
    assert set(rows) == ids


def test_each_stage_with_its_evidence_and_next_command(debian_root: Path, tmp_path: Path) -> None:
    root = debian_root
    # wrapped: the line runs under `cronshift record`, and the ledger holds its runs.
    path = root / STOCK_FILE
    text = path.read_text()
    line = "flock -n /run/lock/sync-orders.lock"
    path.write_text(text.replace(line, f"cronshift record --job {SYNC} -- {line}", 1))
    with open_ledger(root) as led:
        for k in range(3):
            t = time.time() - 600 * (k + 1)
            led.add_run(RunRecord(job_id=SYNC, source="record", start=t, end=t + 2, exit_status=0))
    # generated: a project written by `cronshift generate`, one of its files edited since.
    out = tmp_path / "proj"
    code, _, err = cli("generate", REINDEX, "--root", str(root), "--out", str(out), "--no-history")
    assert code == 0, err
    # shadowing: a live verdict that has not seen every pattern yet (stored as shadow-run stores it).
    with open_ledger(root) as led:
        led.put(
            VERDICT_KIND,
            CLEANUP,
            {
                "verdict": "inconclusive",
                "job": CLEANUP,
                "runs_compared": 2,
                "matched_consecutive": 2,
                "gate": {"mode": "live", "consecutive_pairs": 5},
                "patterns": {"03:10": True, "Sunday 03:10": False},
                "differences": [],
                "missing": ["2 consecutive matched pair(s) at the end; the gate needs 5"],
            },
        )
    # parity: the verdict file retire reads.
    write_verdict(root, "cache-stats-9955005a", {"verdict": "parity", "job": "cache-stats-9955005a",
                  "matched_consecutive": 5, "gate": {"consecutive_pairs": 5}})  # fmt: skip
    # retired, through retire's own code.
    target = by_id(root, "compact-search-index-ba80d741")
    apply_retire(root, plan_retire(root, target, now=NOW), now=NOW, reason="test", forced=True)

    rows = board(root, "--project", str(out))
    assert rows[SYNC]["stage"] == "wrapped"
    assert rows[SYNC]["runs_recorded"] == 3
    assert "3 run(s) recorded" in str(rows[SYNC]["detail"])
    assert str(rows[SYNC]["next_command"]).startswith(f"cronshift generate {SYNC} --out")

    assert rows[REINDEX]["stage"] == "generated"
    assert rows[REINDEX]["project"] == str(out)
    assert rows[REINDEX]["project_changed"] == []
    assert rows[REINDEX]["next_command"] == (f"cronshift shadow-run {REINDEX} --project {out} --root {root}")

    assert rows[CLEANUP]["stage"] == "shadowing"
    shadow = rows[CLEANUP]["shadow"]
    assert isinstance(shadow, dict)
    assert shadow["patterns_unseen"] == ["Sunday 03:10"]
    assert "2 of 5 matched" in str(rows[CLEANUP]["detail"])
    assert "Sunday 03:10" in str(rows[CLEANUP]["detail"])
    assert rows[CLEANUP]["next_command"] == f"cronshift shadow-run {CLEANUP} --report --root {root}"

    assert rows["cache-stats-9955005a"]["stage"] == "parity"
    assert (
        rows["cache-stats-9955005a"]["next_command"] == f"cronshift retire cache-stats-9955005a --root {root}"
    )

    assert rows[target.id]["stage"] == "retired"
    assert rows[target.id]["next_command"] is None
    assert rows[target.id]["undo_command"] == f"cronshift retire {target.id} --undo --root {root}"

    # An edit to the generated project shows on the board.
    module = next(p for p in out.rglob("*.py") if "reindex_search" in p.name)
    module.write_text(module.read_text() + "# local change\n")
    rows = board(root, "--project", str(out))
    assert rows[REINDEX]["project_changed"] == [module.relative_to(out).as_posix()]
    assert "edited since" in str(rows[REINDEX]["detail"])

    # --stage filters, and the text board shows the id whole even at 80 columns.
    only = board(root, "--project", str(out), "--stage", "generated")
    assert list(only) == [REINDEX]
    from .test_cli_voice import on_terminal

    text = on_terminal(["status", "--root", str(root), "--project", str(out)], 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for jid in (REINDEX, SYNC, CLEANUP, target.id):
        assert jid in text


def test_read_project_finds_every_job_of_a_project(debian_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    code, _, err = cli(
        "generate", REINDEX, SYNC, "--root", str(debian_root), "--out", str(out), "--no-history"
    )
    assert code == 0, err
    proj = read_project(out)
    assert proj is not None
    assert set(proj.jobs) == {REINDEX, SYNC}
    assert proj.changed == []
    (out / ".cronshift-manifest.json").unlink()
    assert read_project(out) is None
    # No ledger and no project: the board is built without creating a store.
    rows = build_board(scan(debian_root), debian_root)
    assert rows and not (debian_root / DEFAULT_STORE).exists()


def test_read_project_reads_a_streams_project_too(debian_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    code, _, err = cli("generate", REINDEX, SYNC, "--target", "streams", "--root", str(debian_root),
                       "--out", str(out))  # fmt: skip
    assert code == 0, err
    proj = read_project(out)
    assert proj is not None and set(proj.jobs) == {REINDEX, SYNC}


def test_a_project_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    from .conftest import FIXTURES

    for cmd in (["status"], ["report", "--html", str(tmp_path / "r.html")]):
        code, out, err = cli(*cmd, "--root", str(FIXTURES / "debian"), "--project", str(tmp_path))
        assert code == 2 and out == ""
        why = "not a `cronshift generate` output (no .cronshift-manifest.json in it)"
        assert err == f"cronshift: {tmp_path}: {why}\n"
    assert not (tmp_path / "r.html").exists()


def test_a_verdict_retire_would_not_trust_is_never_shown_as_parity(debian_root: Path) -> None:
    """The board reads verdicts through the same contract as retire's gate: a parity written by a newer
    cronshift, or with a field of the wrong type, would be refused by retire, so the board must not send
    the user to `retire` on it."""
    root = debian_root
    newer = "cache-stats-9955005a"
    write_verdict(root, newer, {"schema": 99, "verdict": "parity", "job": newer, "matched_consecutive": 5,
                  "gate": {"consecutive_pairs": 5}})  # fmt: skip
    with open_ledger(root) as led:
        led.put(VERDICT_KIND, CLEANUP, {"verdict": "parity", "job": CLEANUP, "runs_compared": "five",
                "gate": {"mode": "live", "consecutive_pairs": 5}})  # fmt: skip
    rows = board(root)
    for jid, why in ((newer, "newer cronshift"), (CLEANUP, "runs_compared 'five' is not a int")):
        assert rows[jid]["stage"] == "shadowing", rows[jid]
        assert "verdict unreadable" in str(rows[jid]["detail"]) and why in str(rows[jid]["detail"])
        assert str(rows[jid]["next_command"]).startswith(f"cronshift shadow-run {jid}")
