"""A journal export says who sent each line (`_UID`, set by journald, not by the sender): a cron line from a
non-root sender is someone's `logger -t CRON`, not cron. It must not count as a run, and the user is told.

The export is written in the real `journalctl -o json` format (Debian 12, cron 3.0pl1 `-L 15`): every field
journald adds, the cursor included, as in fixtures/rhel/var/log/journal-export.json."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from cronshift.history.logfiles import iter_runs, read_history
from tests.test_history_cli import NOW as CLI_NOW
from tests.test_history_cli import make_root, run
from tests.test_history_pairing import JOBS, NOW, T0, write

BOOT = "5d0c3b7e9a2f4c61b8e04d7a1f3c9e25"
MACHINE = "a41f07c2d9e84b3fa6c51e2d0b7f8c93"
TRUSTED = ("_UID", "_GID", "_COMM", "_EXE", "_CMDLINE", "_CAP_EFFECTIVE", "_PID", "_TRANSPORT", "_SYSTEMD_")


def entry(t: datetime, pid: int, message: str, *, seq: int, forger: int | None = None) -> str:
    """One line of `journalctl -o json`: cron's own (`forger` None) or `logger -t CRON --id=PID` run by uid
    `forger` from a login session (journald records the real sender: logger's pid, uid, comm, exe)."""
    us = int(t.timestamp() * 1e6)
    e: dict[str, str] = {
        "__CURSOR": f"s=0e4b2c9d7f1a43e8b6c5d2a0f9e8b7c6;i={0x51A00 + seq:x};b={BOOT};m={0x9C2F00 + seq:x};"
        f"t={us:x};x={seq * 7919:016x}",
        "__REALTIME_TIMESTAMP": str(us),
        "__MONOTONIC_TIMESTAMP": str(us - 1795000000000000),
        "_BOOT_ID": BOOT,
        "_MACHINE_ID": MACHINE,
        "_HOSTNAME": "web-01",
        "PRIORITY": "6",
        "SYSLOG_FACILITY": "9",
        "_TRANSPORT": "syslog",
        "SYSLOG_IDENTIFIER": "CRON",
        "SYSLOG_PID": str(pid),
        "SYSLOG_TIMESTAMP": t.strftime("%b %e %H:%M:%S "),
        "MESSAGE": message,
        "_SOURCE_REALTIME_TIMESTAMP": str(us - 150),
    }
    if forger is None:
        e |= {
            "_UID": "0",
            "_GID": "0",
            "_CAP_EFFECTIVE": "1ffffffffff",
            "_PID": str(pid),
            "_COMM": "cron",
            "_EXE": "/usr/sbin/cron",
            "_CMDLINE": "/usr/sbin/cron -f -L 15",
            "_SYSTEMD_CGROUP": "/system.slice/cron.service",
            "_SYSTEMD_UNIT": "cron.service",
            "_SYSTEMD_SLICE": "system.slice",
            "_SYSTEMD_INVOCATION_ID": "c3e1a0b9d8f74e2a9b6c5d4e3f2a1b0c",
        }
    else:
        e |= {
            "_UID": str(forger),
            "_GID": str(forger),
            "_CAP_EFFECTIVE": "0",
            "_PID": "31337",  # logger's own pid: --id only changes SYSLOG_PID
            "_COMM": "logger",
            "_EXE": "/usr/bin/logger",
            "_CMDLINE": f"logger -t CRON --id={pid} {message}",
            "_AUDIT_SESSION": "3",
            "_AUDIT_LOGINUID": str(forger),
            "_SYSTEMD_CGROUP": f"/user.slice/user-{forger}.slice/session-3.scope",
            "_SYSTEMD_SESSION": "3",
            "_SYSTEMD_OWNER_UID": str(forger),
            "_SYSTEMD_UNIT": "session-3.scope",
            "_SYSTEMD_SLICE": f"user-{forger}.slice",
        }
    return json.dumps(e, separators=(",", ":"))


FORGED_AT = T0 + timedelta(minutes=7, seconds=30)


def export(minutes: int = 10) -> list[str]:
    """Cron's -L 15 lines for root's tick (every minute, 20 s, exit 0) and one real failure of deploy's sync
    (so the log proves failures are logged), plus a forged failing run of tick sent by uid 1000."""
    root_tick, deploy_sync = JOBS
    lines: list[tuple[datetime, int, str, int | None]] = []
    pid = 4000
    for m in range(minutes):
        fire = T0 + timedelta(minutes=m, seconds=1)
        child, jp = pid, pid + 1
        pid += 5
        lines.append(
            (fire, child, "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", None)
        )
        lines.append((fire, child, f"(root) CMD ([{jp}] {root_tick.command})", None))
        lines.append((fire + timedelta(seconds=20), jp, f"(root) END ([{jp}] {root_tick.command})", None))
        lines.append(
            (
                fire + timedelta(seconds=20),
                child,
                "pam_unix(cron:session): session closed for user root",
                None,
            )
        )
    fire = T0 + timedelta(minutes=3, seconds=1)
    lines += [
        (fire, 3990, f"(deploy) CMD ([3991] {deploy_sync.command})", None),
        (
            fire + timedelta(seconds=5),
            3990,
            "(CRON) error (grandchild #3991 failed with exit status 1)",
            None,
        ),
        (fire + timedelta(seconds=5), 3991, f"(deploy) END ([3991] {deploy_sync.command})", None),
    ]
    t = FORGED_AT
    lines += [
        (t, 4242, f"(root) CMD ([4243] {root_tick.command})", 1000),
        (t + timedelta(seconds=40), 4242, "(CRON) error (grandchild #4243 failed with exit status 2)", 1000),
        (t + timedelta(seconds=40), 4243, f"(root) END ([4243] {root_tick.command})", 1000),
    ]
    lines.sort(key=lambda x: x[0])
    return [entry(t, p, msg, seq=i, forger=f) for i, (t, p, msg, f) in enumerate(lines)]


def without_trusted_fields(lines: list[str]) -> list[str]:
    """The same export as an old or hand-made one: no field journald itself sets about the sender."""
    out = []
    for line in lines:
        e = json.loads(line)
        out.append(json.dumps({k: v for k, v in e.items() if not k.startswith(TRUSTED)}))
    return out


def test_a_forged_cron_line_from_a_non_root_sender_is_not_a_run_and_is_counted(tmp_path: Path) -> None:
    h = read_history([write(tmp_path / "cron.json", export())], JOBS, None, None, NOW)
    tick = h.per_job["tick"]
    assert (tick.runs, tick.ended, tick.status_known, tick.failed) == (10, 10, 10, 0)
    assert tick.exit_statuses == {} and tick.last_failure is None
    assert h.per_job["sync"].failed == 1  # the real failure still counts
    assert h.untrusted == 3 and h.sources[0].untrusted == 3
    assert h.orphan_ends == 0 and h.malformed == 0


def test_show_lists_no_forged_run(tmp_path: Path) -> None:
    log = write(tmp_path / "cron.json", export())
    runs = list(iter_runs([log], JOBS, "tick", NOW))
    assert len(runs) == 10 and all(r.exit_status == 0 for r in runs)
    assert FORGED_AT.timestamp() not in {r.start for r in runs}


def test_an_export_without_trusted_fields_reads_as_before(tmp_path: Path) -> None:
    """No `_UID` at all: nothing proves who sent a line, so it is read like a syslog text line (forgery and
    all), and nothing is counted as untrusted."""
    h = read_history([write(tmp_path / "cron.json", without_trusted_fields(export()))], JOBS, None, None, NOW)
    tick = h.per_job["tick"]
    assert (tick.runs, tick.failed, tick.exit_statuses) == (11, 1, {2: 1})
    assert h.untrusted == 0 and h.sources[0].untrusted == 0


def test_scan_and_show_report_the_ignored_lines(tmp_path: Path) -> None:
    root = make_root(tmp_path, {})
    log = write(tmp_path / "cron.json", export())
    p = run("scan", "--root", str(root), "--now", CLI_NOW, "--log", str(log))
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())
    assert "3 cron line(s) from non-root senders ignored (forged?)" in text
    js = json.loads(run("scan", "--root", str(root), "--now", CLI_NOW, "--log", str(log), "--json").stdout)
    assert js["history"]["untrusted"] == 3
    assert [s["untrusted"] for s in js["history"]["logs"]] == [3]
    tick = next(j for j in js["jobs"] if j["command"] == "/usr/local/bin/tick")
    assert tick["metrics"]["runs_seen"] == 10 and tick["metrics"]["failures"] == 0
    shown = json.loads(
        run("show", tick["job_id"], "--root", str(root), "--now", CLI_NOW, "--log", str(log), "--json").stdout
    )
    assert shown["history"]["untrusted"] == 3
    assert len(shown["runs"]) == 10
    p = run("show", tick["job_id"], "--root", str(root), "--now", CLI_NOW, "--log", str(log))
    assert "3 cron line(s) from non-root senders ignored (forged?)" in " ".join(p.stdout.split())


def test_scan_of_an_export_without_trusted_fields_has_a_zero_counter(tmp_path: Path) -> None:
    root = make_root(tmp_path, {})
    log = write(tmp_path / "cron.json", without_trusted_fields(export()))
    p = run("scan", "--root", str(root), "--now", CLI_NOW, "--log", str(log))
    assert p.returncode == 0, p.stderr
    assert "non-root senders" not in p.stdout
    js = json.loads(run("scan", "--root", str(root), "--now", CLI_NOW, "--log", str(log), "--json").stdout)
    assert js["history"]["untrusted"] == 0
    tick = next(j for j in js["jobs"] if j["command"] == "/usr/local/bin/tick")
    assert tick["metrics"]["runs_seen"] == 11 and tick["metrics"]["failures"] == 1


def test_an_export_holding_only_forged_lines_says_so(tmp_path: Path) -> None:
    """No cron line left: scan prints no history line, so the "no cron lines" note names the forgeries."""
    root = make_root(tmp_path, {})
    log = write(tmp_path / "cron.json", [x for x in export() if '"_UID":"1000"' in x])
    js = json.loads(run("scan", "--root", str(root), "--now", CLI_NOW, "--log", str(log), "--json").stdout)
    assert js["history"]["untrusted"] == 3 and js["history"]["cron_lines"] == 0
    assert (
        "no cron lines in 1 log file(s) (3 from non-root senders ignored: forged?)" in js["history"]["notes"]
    )
    assert [j["metrics"]["runs_seen"] for j in js["jobs"]] == [None, None]  # no log evidence
