"""What `scan` and `show` say about the history: sources, duplicates, unattributed notes, pairing confidence,
and the instants a missed-run point is about. The real executable on a throwaway root."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from tests.test_history_pairing import T0, classic, cronie, debian_l15, lines, with_noise, write

CRONSHIFT = str(Path(sys.executable).parent / "cronshift")
NOW = "2026-11-24T12:00:00+00:00"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRONSHIFT, *args], capture_output=True, text=True, timeout=120, check=False)


def make_root(tmp_path: Path, logs: dict[str, list[str]]) -> Path:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/cron.d/jobs").write_text(
        "* * * * * root /usr/local/bin/tick\n* * * * * deploy /usr/local/bin/sync --all\n"
    )
    (root / "etc/timezone").write_text("UTC\n")
    for name, text in logs.items():
        write(root / "var/log" / name, text)
    return root


def test_scan_shows_sources_duplicates_and_unattributed(tmp_path: Path) -> None:
    ev = debian_l15(20)
    at = classic(T0 + timedelta(minutes=3))
    note = f"{at} web-01 CRON[9]: (CRON) info (No MTA installed, discarding output)"
    root = make_root(tmp_path, {"syslog": [*with_noise(ev, "web-01"), note], "cron.log": [*lines(ev), note]})
    p = run("scan", "--root", str(root), "--now", NOW)
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())
    dups = 20 * 2 * 2 + 1  # CMD and END of both jobs, and the note (PAM lines are not kept at all)
    assert "in 2 log(s) (cron.log, syslog)" in text  # cron.log first: its copy of each line is kept
    assert f"{dups} duplicate lines dropped" in text
    assert "1 No MTA/MAIL/CMDOUT line(s) tied to no job" in text
    out = json.loads(run("scan", "--root", str(root), "--now", NOW, "--json").stdout)
    h = out["history"]
    assert h["duplicates_dropped"] == dups
    assert [s["duplicates"] for s in h["logs"]] == [0, dups]
    assert h["orphan_ends"] == 0
    assert h["unattributed"] == {"no_mta": 1, "mail": 0, "cmdout": 0}
    tick = next(j for j in out["jobs"] if "tick" in j["command"])
    assert tick["metrics"]["runs_seen"] == 20 and tick["metrics"]["missed"] == 0


def test_show_gives_pairing_confidence_and_missed_instants(tmp_path: Path) -> None:
    ev = cronie(20, host="db-01", skip={(7, "sync")})
    root = make_root(tmp_path, {"cron": lines(ev)})
    p = run("show", "sync", "--root", str(root), "--now", NOW, "--last", "5")
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())
    assert "missed 1 of 20 runs" not in text  # one of 20 is under the threshold for points...
    assert "missed at │ 2026-11-24 10:07 │" in text  # ...but show names the instant
    assert "inferred (oldest of 2 open)" in text
    js = json.loads(run("show", "sync", "--root", str(root), "--now", NOW, "--json").stdout)
    assert js["runs"][-2]["pairing"] == "inferred" and js["runs"][-2]["open_runs"] == 2
    assert js["runs"][-1]["open_runs"] == 1  # the last one ended alone
    assert js["job"]["metrics"]["missed_at"] == ["2026-11-24T10:07:00+00:00"]
