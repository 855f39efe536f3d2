"""`cronshift scan` and `cronshift show` as a user runs them: the real executable, on fixture copies."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cronshift.ledger.store import open_ledger
from cronshift.model import RunRecord

PROJECT = Path(__file__).resolve().parent.parent
CRONSHIFT = str(Path(sys.executable).parent / "cronshift")  # the one installed beside this interpreter
NOW = "2026-11-24T10:10:00"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRONSHIFT, *args], capture_output=True, text=True, timeout=120, check=False)


def scan_json(root: Path, *extra: str) -> dict:
    p = run("scan", "--root", str(root), "--json", "--now", NOW, *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_scan_json_schema_and_order(debian_root: Path) -> None:
    out = scan_json(debian_root)
    jobs = out["jobs"]
    scores = [j["score"] for j in jobs]
    assert scores == sorted(scores, reverse=True)
    top = jobs[0]
    assert (top["source"]["path"], top["source"]["line"]) == ("var/spool/cron/crontabs/www-data", 8)
    for key in ("score", "reasons", "unknown", "metrics"):
        assert key in top
    assert {"text", "points", "evidence"} <= set(top["reasons"][0])
    assert top["reasons"][0]["text"].startswith("failed 78 of 697 runs")
    assert top["score"] == round(sum(r["points"] for r in top["reasons"]), 1)
    m = top["metrics"]
    for key in (
        "window",
        "runs_seen",
        "runs_expected",
        "missed",
        "failures",
        "failure_rate",
        "duration_p50",
        "duration_p95",
        "duration_max",
        "p95_over_interval",
        "overlaps",
        "since_last_success",
        "output_discarded",
        "silent_risk",
        "polls",
        "dst",
        "never_runs",
    ):
        assert key in m
    # 66 overruns, 65 of them with a later run started before they ended (start/end pairs)
    assert (m["runs_seen"], m["failures"], m["overlaps"]) == (698, 78, 65)
    h = out["history"]
    assert h["window"]["from"].startswith("2026-11-22T00:00") and h["window"]["until"].startswith(
        "2026-11-24T10:07"
    )
    assert set(h["evidence"]) >= {"logs", "end", "status"}
    assert h["lines_read"] > 10000
    gone = {(u["user"], u["command"]): u["count"] for u in h["unmatched"]}
    assert gone[("deploy", "/opt/shop/bin/export-feed --google")] == 15  # hourly until Nov 22 14:00
    assert all(d["score"] is None for d in out["disabled"])


def test_scan_rhel_puts_load_trades_first(rhel_root: Path) -> None:
    out = scan_json(rhel_root)
    top = out["jobs"][0]
    assert (top["source"]["path"], top["source"]["line"]) == ("var/spool/cron/oracle", 6)
    assert any("failures unknown" in u for u in top["unknown"])
    assert top["metrics"]["failures"] is None


def test_since_and_until_bound_the_window(debian_root: Path) -> None:
    full = scan_json(debian_root)
    day = scan_json(debian_root, "--since", "2026-11-23T00:00", "--until", "2026-11-24T00:00")
    assert day["history"]["window"]["from"].startswith("2026-11-23T00:00")
    assert day["history"]["window"]["until"] < "2026-11-24T00:00"

    def runs(d: dict) -> int:
        return next(j for j in d["jobs"] if j["source"]["line"] == 8 and "www-data" in j["source"]["path"])[
            "metrics"
        ]["runs_seen"]

    assert runs(day) == 288  # every 5 minutes for one day
    assert runs(full) == 698
    relative = scan_json(debian_root, "--since", "2h")
    assert relative["history"]["window"]["from"] >= "2026-11-24T08:10"


def test_no_history_and_bad_options(debian_root: Path) -> None:
    out = scan_json(debian_root, "--no-history")
    assert out["history"]["window"] is None
    assert "history not read (--no-history)" in out["history"]["notes"]
    top = out["jobs"][0]
    assert top["reasons"][0]["text"].startswith("cron never runs it")
    p = run("scan", "--root", str(debian_root), "--now", NOW, "--log", str(debian_root / "nope.log"))
    assert p.returncode == 2 and "no such log file" in p.stderr
    p = run("scan", "--root", str(debian_root), "--since", "yesterday-ish")
    assert p.returncode == 2


def test_extra_log_is_read(rhel_root: Path) -> None:
    journal = rhel_root / "var" / "log" / "journal-export.json"
    base = scan_json(rhel_root)
    more = scan_json(rhel_root, "--log", str(journal))
    assert more["history"]["window"]["from"] < base["history"]["window"]["from"]  # the journal starts Nov 19
    assert str(journal) in [s["path"] for s in more["history"]["logs"]]


def test_table_fits_160_columns_and_is_ranked(debian_root: Path) -> None:
    p = run("scan", "--root", str(debian_root), "--now", NOW)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert max(len(line) for line in lines) <= 160
    rows = [line for line in lines if line.startswith("│")]
    assert "reindex-search" in rows[0] and "+21.2 failed 78 of 697" in rows[0]
    assert all(len(r.split("│")) == 8 for r in rows)  # one line per job: nothing wrapped
    long_row = next(r for r in rows if "find-58ced5bd" in r)  # shop-maintenance:15, a 1,114-byte line
    assert "find /var/www/shop/var/cach…" in long_row  # cut with an ellipsis, not wrapped


def test_show_prints_breakdown_metrics_and_last_runs(debian_root: Path) -> None:
    p = run("show", "reindex-search", "--root", str(debian_root), "--now", NOW, "--last", "5")
    assert p.returncode == 0, p.stderr
    assert "pain score 71.2 / 100" in p.stdout
    assert "failed 78 of 697 runs (11.2%; exit 1 x68, exit 255 x8, signal 9 x2" in p.stdout
    assert "65 (start/end pairs)" in p.stdout
    assert "last 5 runs" in p.stdout and "2026-11-24 10:05:01+01:00" in p.stdout
    js = json.loads(run("show", "reindex-search", "--root", str(debian_root), "--now", NOW, "--json").stdout)
    assert js["job"]["score"] == 71.2
    assert len(js["runs"]) == 20 and js["runs"][-1]["start"] == "2026-11-24T10:05:01+01:00"
    statuses = [(r["start"][11:19], r["exit_status"]) for r in js["runs"]]
    assert ("08:40:01", 255) in statuses  # a failure in the log, with its status
    assert statuses[-1] == ("10:05:01", None)  # still running when the logs end: unknown, not a success


def test_show_uses_the_ledger_store(debian_root: Path) -> None:
    store = debian_root / "var" / "lib" / "cronshift" / "ledger.db"
    scan = scan_json(debian_root)
    sync = next(j for j in scan["jobs"] if j["source"] == {"path": "etc/cron.d/shop-sync", "line": 8})
    t = datetime(2026, 11, 24, 10, 0, 3, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    with open_ledger(debian_root, store=str(store)) as led:
        led.add_run(
            RunRecord(
                job_id=sync["id"],
                source="record",
                start=t,
                end=t + 4,
                exit_status=3,
                stdout_bytes=12,
                stderr_bytes=40,
            )
        )
    p = run("show", sync["id"], "--root", str(debian_root), "--now", NOW, "--json")
    js = json.loads(p.stdout)
    assert js["history"]["ledger"]["runs"] == 1
    recorded = [r for r in js["runs"] if r["source"] == "record"]
    assert recorded == [
        {
            "start": "2026-11-24T10:00:03+01:00",
            "end": "2026-11-24T10:00:07+01:00",
            "duration": 4.0,
            "exit_status": 3,
            "signal": None,
            "failed": True,
            "source": "record",
            "pid": None,
            "stdout_bytes": 12,
            "stderr_bytes": 40,
            "output_to_file": [],
            "guessed_pairing": False,
            "pairing": None,
            "open_runs": None,
        }
    ]
    assert js["job"]["metrics"]["sources"] == ["logs", "ledger"]
    assert js["job"]["metrics"]["output_bytes"] == 52


def test_unreadable_root_is_exit_1_with_one_line(tmp_path: Path) -> None:
    p = run("scan", "--root", str(tmp_path / "missing"))
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("cronshift: ")


def test_malformed_lines_are_one_line_each_and_the_scan_goes_on(debian_root: Path) -> None:
    p = run("scan", "--root", str(debian_root), "--no-history")
    assert p.returncode == 0
    lines = p.stderr.splitlines()
    assert any(ln.startswith("cronshift: etc/cron.d/shop-cache-warm:8: bad schedule") for ln in lines)
    assert all(ln.startswith("cronshift: ") for ln in lines)
    assert "reindex-search" in p.stdout  # the rest of the tree was still read


def test_python_dash_m_runs_the_same_cli(debian_root: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "cronshift", "scan", "--root", str(debian_root), "--json", "--no-history"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0 and json.loads(p.stdout)["schema_version"] == 2


def test_show_by_path_and_line_and_unknown_job(debian_root: Path) -> None:
    p = run(
        "show", "var/spool/cron/crontabs/www-data:8", "--root", str(debian_root), "--json", "--no-history"
    )
    assert p.returncode == 0 and json.loads(p.stdout)["job"]["id"].startswith("reindex-search-")
    q = run("show", "no-such-job", "--root", str(debian_root))
    assert q.returncode == 2 and q.stderr.startswith("cronshift: no job 'no-such-job'")


def test_progress_bar_on_a_terminal_only(debian_root: Path) -> None:
    """A person at a terminal sees progress on stderr; a script reading a pipe sees none."""
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [CRONSHIFT, "scan", "--root", str(debian_root), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    assert b"scanning" in seen or b"reading cron logs" in seen
    piped = run("scan", "--root", str(debian_root), "--json")
    assert all(line.startswith("cronshift: ") for line in piped.stderr.splitlines())
