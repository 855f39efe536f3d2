"""One pass over the whole history: duplicates dropped, ends paired across files and workers, notes on the
right job, missed runs only while cron was observed running. Fixture logs are written in the real formats
(Debian cron 3.0pl1 `-L 15` and default level, classic and RFC 3339 stamps; cronie 1.7.2; journal export)."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronshift.history.evidence import Evidence
from cronshift.history.logfiles import find_logs, iter_runs, read_history
from cronshift.history.pairing import Pairer
from cronshift.model import CronJob, Format, SourceRef
from cronshift.rank import metrics, score

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def job(jid: str, user: str, command: str, schedule: str = "* * * * *") -> CronJob:
    return CronJob(
        id=jid,
        source=SourceRef(f"var/spool/cron/crontabs/{user}", 1),
        format=Format.USER,
        user=user,
        schedule=schedule,
        command=command,
        shell_command=command,
    )


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    os.utime(path, (NOW.timestamp(), NOW.timestamp()))
    return path


def classic(t: datetime) -> str:
    return t.strftime("%b %e %H:%M:%S")


def rfc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"


# -- generators of ground truth --------------------------------------------------------------------------

JOBS = [job("tick", "root", "/usr/local/bin/tick"), job("sync", "deploy", "/usr/local/bin/sync --all")]


def debian_l15(minutes: int, host: str = "web-01", stamp=classic, start: datetime = T0) -> list[tuple]:
    """(time, line) for `cron -L 15`: every minute both jobs run; tick 20 s, sync 90 s (overlapping)."""
    out: list[tuple[datetime, str]] = []
    pid = 2000
    for m in range(minutes):
        fire = start + timedelta(minutes=m, seconds=1)
        for j, dur in ((JOBS[0], 20), (JOBS[1], 90)):
            child, jp = pid, pid + 1
            pid += 5
            end = fire + timedelta(seconds=dur)
            out.append((fire, f"CRON[{child}]: pam_unix(cron:session): session opened for user {j.user}"))
            out.append((fire, f"CRON[{child}]: ({j.user}) CMD ([{jp}] {j.command})"))
            out.append((end, f"CRON[{jp}]: ({j.user}) END ([{jp}] {j.command})"))
            out.append((end, f"CRON[{child}]: pam_unix(cron:session): session closed for user {j.user}"))
    out.sort(key=lambda x: x[0])
    return [(t, f"{stamp(t)} {host} {line}") for t, line in out]


def cronie(
    minutes: int,
    host: str = "db-01",
    start: datetime = T0,
    gap: int = 1,
    skip: frozenset | set = frozenset(),
    mailer: bool = False,
) -> list[tuple]:
    """cronie 1.7.2 without a mailer (`-s`): CMD by the job's pid, CMDOUT and CMDEND by its child's pid."""
    out: list[tuple[datetime, str]] = []
    pid = 5000
    for m in range(minutes):
        fire = start + timedelta(minutes=m, seconds=1)
        for j, dur in ((JOBS[0], 20), (JOBS[1], 90)):
            child, jp = pid, pid + gap
            pid += gap + 3
            if (m, j.id) in skip:  # cron did not run it (the daemon was stuck, the host asleep)
                continue
            end = fire + timedelta(seconds=dur)
            out.append((fire, f"CROND[{jp}]: ({j.user}) CMD ({j.command})"))
            if mailer:  # with a broken mailer: cronie logs its failure, from the same child
                mail = "MAIL (mailed 80 bytes of output but got status 0x004b#012)"
                out.append((end, f"CROND[{child}]: ({j.user}) {mail}"))
            else:
                out.append((end, f"CROND[{child}]: ({j.user}) CMDOUT (done {j.id})"))
            out.append((end, f"CROND[{child}]: ({j.user}) CMDEND ({j.command})"))
    out.sort(key=lambda x: x[0])
    return [(t, f"{classic(t)} {host} {line}") for t, line in out]


def lines(events: list[tuple]) -> list[str]:
    return [x[1] for x in events]


def with_noise(events: list[tuple], host: str) -> list[str]:
    out = []
    for i, (t, line) in enumerate(events):
        out.append(line)
        if i % 3 == 0:
            out.append(f"{classic(t)} {host} systemd[1]: Started Session {i} of user deploy.")
    return out


def assert_exact(tmp_path: Path, paths: list[Path], minutes: int, **kw) -> None:
    h = read_history(paths, JOBS, None, None, NOW, **kw)
    tick, sync = h.per_job["tick"], h.per_job["sync"]
    assert tick.runs == sync.runs == minutes
    assert tick.ended == sync.ended == minutes
    assert all(abs(d - 20) <= 1 for d in tick.durations), sorted(set(tick.durations))
    assert all(abs(d - 90) <= 1 for d in sync.durations), sorted(set(sync.durations))
    assert h.orphan_ends == 0


# -- 1. duplicates ----------------------------------------------------------------------------------------


def test_syslog_and_cron_log_together_count_each_run_once(tmp_path: Path) -> None:
    ev = debian_l15(30)
    root = tmp_path / "root"
    write(root / "var/log/syslog", with_noise(ev, "web-01"))
    write(root / "var/log/cron.log", lines(ev))
    paths = find_logs(root)
    assert len(paths) == 2
    assert_exact(tmp_path, paths, 30)
    h = read_history(paths, JOBS, None, None, NOW)
    cron_lines = len(ev)
    assert h.duplicates_dropped == cron_lines - 60 * 2  # pam lines are not runs but still duplicates
    assert sum(s.duplicates for s in h.sources) == h.duplicates_dropped


def test_rfc3339_syslog_and_cron_log_and_journal_export_once(tmp_path: Path) -> None:
    ev = debian_l15(10, stamp=rfc)
    a = write(tmp_path / "syslog", with_noise(ev, "web-01"))
    b = write(tmp_path / "cron.log", lines(ev))
    entries = []
    for t, line in debian_l15(10):
        tag, _, msg = line.split(" ", 4)[4].partition(": ")
        ident, pid = tag[:-1].split("[")
        entries.append(
            json.dumps(
                {
                    "__REALTIME_TIMESTAMP": str(int(t.timestamp() * 1e6)),
                    "SYSLOG_IDENTIFIER": ident,
                    "_PID": pid,
                    "_HOSTNAME": "web-01",
                    "MESSAGE": msg,
                }
            )
        )
    c = write(tmp_path / "cron.json", entries)
    assert_exact(tmp_path, [a, b, c], 10)


def journal_entries(events: list[tuple], delay: float) -> list[str]:
    out = []
    for t, line in events:
        tag, _, msg = line.split(" ", 4)[4].partition(": ")
        ident, pid = tag[:-1].split("[")
        us = int((t.timestamp() + delay) * 1e6)
        out.append(
            json.dumps(
                {
                    "__REALTIME_TIMESTAMP": str(us),
                    "SYSLOG_IDENTIFIER": ident,
                    "_PID": pid,
                    "_HOSTNAME": "web-01",
                    "MESSAGE": msg,
                }
            )
        )
    return out


def test_journal_a_fraction_of_a_second_off_the_file_still_counts_once(tmp_path: Path) -> None:
    """rsyslog stamps a line when it receives it; the journal when it was sent: the second can differ."""
    ev = [(t + timedelta(seconds=0.8), line) for t, line in debian_l15(10)]
    a = write(tmp_path / "syslog", [f"{rfc(t)} web-01 {line.split(' ', 4)[4]}" for t, line in ev])
    c = write(tmp_path / "cron.json", journal_entries(ev, 0.4))  # next second for every line
    assert_exact(tmp_path, [a, c], 10)
    h = read_history([a, c], JOBS, None, None, NOW)
    assert h.duplicates_dropped == 10 * 2 * 2


def test_messages_and_cron_on_rhel_once(tmp_path: Path) -> None:
    ev = cronie(20)
    a = write(tmp_path / "var/log/messages", with_noise(ev, "db-01"))
    b = write(tmp_path / "var/log/cron", lines(ev))
    assert_exact(tmp_path, [a, b], 20)
    h = read_history([a, b], JOBS, None, None, NOW)
    assert h.per_job["tick"].output_lines == 20


def test_repeated_identical_lines_in_one_file_are_not_duplicates(tmp_path: Path) -> None:
    t = classic(T0)
    log = write(
        tmp_path / "cron",
        [
            f"{t} h CROND[11]: (root) CMD (/usr/local/bin/tick)",
            f"{t} h CROND[10]: (root) CMDOUT (same)",
            f"{t} h CROND[10]: (root) CMDOUT (same)",
            f"{t} h CROND[10]: (root) CMDEND (/usr/local/bin/tick)",
        ],
    )
    h = read_history([log], JOBS, None, None, NOW)
    assert h.per_job["tick"].output_lines == 2 and h.duplicates_dropped == 0
    other = write(tmp_path / "messages", log.read_text().splitlines())
    h = read_history([log, other], JOBS, None, None, NOW)
    assert h.per_job["tick"].output_lines == 2 and h.duplicates_dropped == 4


# -- 2. one pairing pass ----------------------------------------------------------------------------------


def test_cronie_log_rotated_into_three_files_one_gzipped(tmp_path: Path) -> None:
    ev = lines(cronie(60))
    n = len(ev)
    d = tmp_path / "var/log"
    write(d / "cron-20261123.gz", ev[: n // 3], gz=True)
    write(d / "cron-20261124", ev[n // 3 : 2 * n // 3])
    write(d / "cron", ev[2 * n // 3 :])
    paths = find_logs(tmp_path)
    assert [p.name for p in paths] == ["cron-20261123.gz", "cron-20261124", "cron"]
    assert_exact(tmp_path, paths, 60)
    runs = list(iter_runs(paths, JOBS, "sync", NOW, last=100))
    assert len(runs) == 60 and all(abs(r.duration - 90) <= 1 for r in runs)
    # two sync runs are always open when one ends: the pairing is inferred, and says so
    assert all(r.extra.get("pairing") == "inferred" for r in runs[1:])


def test_cronie_log_split_across_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cronshift.history.logfiles as lf

    log = write(tmp_path / "cron", lines(cronie(600)))
    monkeypatch.setattr(lf, "PARALLEL_MIN", 0)
    assert_exact(tmp_path, [log], 600, workers=4)


def test_debian_pairs_by_pid_exactly(tmp_path: Path) -> None:
    log = write(tmp_path / "syslog", lines(debian_l15(5)))
    runs = list(iter_runs([log], JOBS, "sync", NOW))
    assert [r.extra.get("pairing") for r in runs] == ["exact"] * 5
    assert all(r.duration == 90 for r in runs)


# -- 3. notes ---------------------------------------------------------------------------------------------


def test_cronie_notes_follow_the_child_pid_not_a_pid_window(tmp_path: Path) -> None:
    log = write(tmp_path / "cron", lines(cronie(10, gap=23)))
    h = read_history([log], JOBS, None, None, NOW)
    assert h.per_job["tick"].output_lines == 10 and h.per_job["sync"].output_lines == 10
    assert h.unattributed_notes == 0


def test_mail_line_goes_to_the_user_it_names_or_nowhere(tmp_path: Path) -> None:
    t = classic(T0)
    jobs = [*JOBS, job("eval", "evalcron", "/opt/eval/run")]
    log = write(
        tmp_path / "syslog",
        [
            f"{t} h CRON[3001]: (root) CMD (/usr/local/bin/tick)",
            f"{t} h CRON[3003]: (evalcron) CMD (/opt/eval/run)",
            f"{t} h CRON[3002]: (evalcron) MAIL (mailed 93 bytes of output but got status 0x0001#012)",
            f"{t} h CRON[2990]: (CRON) info (No MTA installed, discarding output)",
        ],
    )
    h = read_history([log], jobs, None, None, NOW)
    assert h.per_job["eval"].mail_failures == 1
    assert h.per_job["tick"].mail_failures == 0 and h.per_job["tick"].output_discarded == 0
    assert h.unattributed_discarded == 1


def test_debian_no_mta_linked_through_the_grandchild_line(tmp_path: Path) -> None:
    t = classic(T0)
    log = write(
        tmp_path / "syslog",
        [
            f"{t} h CRON[7277]: (root) CMD (/usr/local/bin/tick)",
            f"{t} h CRON[7290]: (deploy) CMD (/usr/local/bin/sync --all)",
            f"{t} h CRON[7250]: (CRON) error (grandchild #7290 failed with exit status 1)",
            f"{t} h CRON[7250]: (CRON) info (No MTA installed, discarding output)",
        ],
    )
    h = read_history([log], JOBS, None, None, NOW)
    assert h.per_job["sync"].output_discarded == 1 and h.per_job["tick"].output_discarded == 0


# -- 4. expected runs while cron ran ----------------------------------------------------------------------


def _rank_one(paths: list[Path], j: CronJob, jobs: list[CronJob] | None = None):
    h = read_history(paths, jobs or JOBS, None, None, NOW)
    ev = Evidence(now=NOW.timestamp(), history=h, log_paths=[str(p) for p in paths])
    m, unknown = metrics(j, ev.for_job(j.id), ev, "UTC")
    return m, score(j, m, unknown, ev.window[1])


def test_daemon_restart_in_the_middle_no_phantom_missed_runs(tmp_path: Path) -> None:
    first = debian_l15(30)
    down = T0 + timedelta(minutes=30, seconds=5)
    up = T0 + timedelta(minutes=45, seconds=20)
    second = debian_l15(15, start=T0 + timedelta(minutes=46))
    text = [
        f"{classic(T0 - timedelta(seconds=30))} web-01 cron[500]: (CRON) INFO (pidfile fd = 3)",
        *lines(first),
        f"{classic(up)} web-01 cron[900]: (CRON) INFO (pidfile fd = 3)",
        f"{classic(up)} web-01 cron[900]: (CRON) STARTUP (fork ok)",
        *lines(second),
    ]
    del down
    log = write(tmp_path / "syslog", text)
    for j in JOBS:
        m, s = _rank_one([log], j)
        assert m.missed == 0, (j.id, m.runs_expected, m.runs_seen)
        assert not any("missed" in r.text for r in s.reasons)


def test_missed_point_names_the_instants_not_seen(tmp_path: Path) -> None:
    ev = [x for x in debian_l15(20) if not (x[0].minute == 7 and "tick" in x[1])]
    log = write(tmp_path / "syslog", lines(ev))
    m, _s = _rank_one([log], JOBS[0])
    assert m.missed == 1
    assert m.missed_at and m.missed_at[0] == (T0 + timedelta(minutes=7)).timestamp()


def test_pam_lines_do_not_widen_the_window_in_either_reader_path(tmp_path: Path) -> None:
    t = T0 - timedelta(minutes=5)
    pam = f"{classic(t)} h CRON[10]: pam_unix(cron:session): session opened for user root"
    body = lines(debian_l15(5, host="h"))
    a = write(tmp_path / "a" / "syslog", [pam, *body])
    # a cronie line elsewhere in the block sends the block down the general path
    b = write(tmp_path / "b" / "syslog", [pam, *body, f"{classic(T0)} other CROND[1]: (x) CMD (y)"])
    ma, _ = _rank_one([a], JOBS[0])
    mb, _ = _rank_one([b], JOBS[0])
    assert ma.runs_expected == mb.runs_expected and ma.missed == mb.missed == 0


# -- 5. smaller -------------------------------------------------------------------------------------------


def test_cronie_exec_failed_is_not_malformed(tmp_path: Path) -> None:
    t = classic(T0)
    log = write(
        tmp_path / "cron",
        [f"{t} h CROND[12]: (CRON) EXEC FAILED (/usr/sbin/sendmail): No such file or directory"],
    )
    h = read_history([log], JOBS, None, None, NOW)
    assert h.malformed == 0


def test_failures_logged_is_decided_per_daemon_run(tmp_path: Path) -> None:
    t = classic(T0)
    t2 = classic(T0 + timedelta(hours=1))
    log = write(
        tmp_path / "syslog",
        [
            f"{t} h cron[100]: (CRON) INFO (pidfile fd = 3)",
            f"{t} h CRON[101]: (root) CMD ([102] /usr/local/bin/tick)",
            f"{t} h CRON[101]: (CRON) error (grandchild #102 failed with exit status 2)",
            f"{t} h CRON[102]: (root) END ([102] /usr/local/bin/tick)",
            f"{t2} h cron[200]: (CRON) INFO (pidfile fd = 3)",
            f"{t2} h CRON[201]: (root) CMD ([202] /usr/local/bin/tick)",
            f"{t2} h CRON[202]: (root) END ([202] /usr/local/bin/tick)",
        ],
    )
    h = read_history([log], JOBS, None, None, NOW)
    ev = h.per_job["tick"]
    assert ev.failed == 1 and ev.status_known == 1  # the second run's plain END proves nothing


def test_overlaps_from_start_end_pairs(tmp_path: Path) -> None:
    log = write(tmp_path / "syslog", lines(debian_l15(5)))
    m, _s = _rank_one([log], JOBS[1])
    assert m.overlaps == 4  # every run but the first started while the one before was going
    m, _ = _rank_one([log], JOBS[0])
    assert m.overlaps == 0


def test_damaged_pids_and_stamps_are_malformed_not_a_crash(tmp_path: Path) -> None:
    t = classic(T0)
    big = "9" * 25
    log = write(
        tmp_path / "syslog",
        [
            f"{t} h CRON[{big}]: (root) CMD ([1] /usr/local/bin/tick)",
            f"{t} h CRON[5]: (root) CMD ([{big}] /usr/local/bin/tick)",
            f"{t} h CRON[6]: (CRON) error (grandchild #{big} failed with exit status 1)",
            "0001-01-01T00:00:00+00:00 h CRON[7]: (root) CMD ([8] /usr/local/bin/tick)",
            f"{t} h CROND[{big}]: (root) CMD (/usr/local/bin/tick)",
            f"{t} h CRON[9]: (root) CMD ([10] /usr/local/bin/tick)",
        ],
    )
    journal = write(
        tmp_path / "cron.json",
        [
            json.dumps(
                {
                    "__REALTIME_TIMESTAMP": "9" * 30,
                    "SYSLOG_IDENTIFIER": "CRON",
                    "_PID": "3",
                    "MESSAGE": "(root) CMD (x)",
                }
            ),
            json.dumps(
                {
                    "__REALTIME_TIMESTAMP": "1",
                    "SYSLOG_IDENTIFIER": "CRON",
                    "_PID": big,
                    "MESSAGE": "(root) CMD (x)",
                }
            ),
        ],
    )
    h = read_history([log, journal], JOBS, None, None, NOW)
    assert h.per_job["tick"].runs == 1
    assert h.malformed >= 6


def test_show_lists_each_run_once_when_a_pid_is_reused_without_end_lines(tmp_path: Path) -> None:
    """Old crond logs only CMD; a pid the kernel hands out again must not list the earlier run twice."""
    a, b = classic(T0), classic(T0 + timedelta(hours=1))
    log = write(
        tmp_path / "cron",
        [
            f"{a} h crond[500]: (root) CMD (/usr/local/bin/tick)",
            f"{b} h crond[500]: (root) CMD (/usr/local/bin/tick)",
        ],
    )
    runs = list(iter_runs([log], JOBS, "tick", NOW))
    assert [r.start for r in runs] == [T0.timestamp(), (T0 + timedelta(hours=1)).timestamp()]


def test_scan_and_show_agree_on_runs_with_syslog_and_cron_log_at_the_default_level(tmp_path: Path) -> None:
    ev = [x for x in debian_l15(12) if " CMD " in x[1]]
    default = [(t, line.replace(line[line.index("([") : line.index("] ") + 2], "(")) for t, line in ev]
    a = write(tmp_path / "syslog", with_noise(default, "web-01"))
    b = write(tmp_path / "cron.log", lines(default))
    h = read_history([b, a], JOBS, None, None, NOW)
    runs = list(iter_runs([b, a], JOBS, "tick", NOW, last=100))
    assert h.per_job["tick"].runs == len(runs) == 12


def test_missed_instants_in_the_jobs_own_zone(tmp_path: Path) -> None:
    """A 09:30 New York job: its fires are 14:30 UTC in November; a day without its run is named."""
    j = CronJob(
        id="ny",
        source=SourceRef("etc/cron.d/ny", 2),
        format=Format.SYSTEM,
        user="root",
        schedule="30 9 * * *",
        command="/usr/local/bin/ny",
        shell_command="/usr/local/bin/ny",
        timezone="America/New_York",
    )
    out = []
    start = datetime(2026, 11, 10, tzinfo=UTC)
    for day in range(10):
        d = start + timedelta(days=day)
        for hour in range(24):  # other jobs keep the log going every hour, so cron is seen running
            t = d + timedelta(hours=hour, seconds=1)
            out.append(f"{classic(t)} h CRON[{day * 100 + hour + 10}]: (root) CMD (/usr/local/bin/tick)")
            if hour == 14 and day != 6:
                ny = classic(t + timedelta(minutes=30))
                out.append(f"{ny} h CRON[{day + 5000}]: (root) CMD (/usr/local/bin/ny)")
    log = write(tmp_path / "syslog", out)
    m, _ = _rank_one([log], j, [*JOBS, j])
    assert (m.runs_seen, m.runs_expected, m.missed) == (9, 10, 1)
    assert m.missed_at == (datetime(2026, 11, 16, 14, 30, tzinfo=UTC).timestamp(),)


def test_rotation_seam_copied_into_both_files_counts_once(tmp_path: Path) -> None:
    """copytruncate can leave the last lines of syslog.1 at the head of syslog too."""
    ev = lines(debian_l15(30))
    d = tmp_path / "var/log"
    write(d / "syslog.2.gz", ev[:100], gz=True)
    write(d / "syslog.1", ev[95:200])
    write(d / "syslog", ev[195:])
    paths = find_logs(tmp_path)
    assert_exact(tmp_path, paths, 30)
    h = read_history(paths, JOBS, None, None, NOW)
    kept = sum(1 for x in ev[95:100] + ev[195:200] if " CMD " in x or " END " in x)
    assert h.duplicates_dropped == kept


def test_journal_fqdn_beside_syslog_short_name_counts_once(tmp_path: Path) -> None:
    """rsyslog writes the short host name; the journal's _HOSTNAME may be the full one."""
    ev = debian_l15(5)
    a = write(tmp_path / "syslog", lines(ev))
    entries = [e.replace('"web-01"', '"web-01.example.com"') for e in journal_entries(ev, 0.0)]
    c = write(tmp_path / "cron.json", entries)
    assert_exact(tmp_path, [a, c], 5)


def test_cronie_with_a_mailer_mail_lines_on_the_right_job(tmp_path: Path) -> None:
    log = write(tmp_path / "cron", lines(cronie(15, gap=17, mailer=True)))
    h = read_history([log], JOBS, None, None, NOW)
    assert h.per_job["tick"].mail_failures == 15 and h.per_job["sync"].mail_failures == 15
    assert h.unattributed_notes == 0
    assert_exact(tmp_path, [log], 15)


# -- speed paths give the same answer ---------------------------------------------------------------------


def test_cronie_crond_lines_in_a_debian_block_take_the_general_path(tmp_path: Path) -> None:
    """The Debian fast path finds `CRON[` lines only; a block that also holds cronie's `CROND[` lines (no
    other tag in it) must still read them, through the general path."""
    deb = debian_l15(30, host="web-01")
    cro = cronie(30, host="db-01")
    log = write(tmp_path / "messages", [line for _, line in sorted(deb + cro, key=lambda x: x[0])])
    assert_exact(tmp_path, [log], 60)  # both dialects' tick and sync: 30 runs each from each host
    h = read_history([log], JOBS, None, None, NOW)
    assert h.sources[0].dialect == "mixed"


def test_pairing_order_is_one_stable_sort_by_second() -> None:
    """_order sorts a stretch at a time and re-sorts only the seams; it must give exactly what one stable
    sort of the whole gives, whatever the disorder and the stretch length."""
    import random
    from array import array

    import cronshift.history.pairing as pairing

    for trial in range(200):
        rnd = random.Random(trial)
        n = rnd.randint(0, 400)
        secs = sorted(rnd.randint(0, 40) for _ in range(n))
        for _ in range(rnd.randint(0, 20)):  # lines that went back (or ahead) a little
            if n:
                i = rnd.randrange(n)
                secs[i] = max(0, secs[i] + rnd.randint(-15, 15))
        if trial % 5 == 0:
            rnd.shuffle(secs)
        sec = array("q", secs)
        for stretch in (1, 3, 16, 1 << 14):
            pairing._STRETCH = stretch
            try:
                assert list(pairing._order(sec)) == sorted(range(n), key=secs.__getitem__), (trial, stretch)
            finally:
                pairing._STRETCH = 1 << 14


def test_lines_that_go_back_a_second_pair_in_stamp_order_in_any_number_of_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """syslog stamps are the sender's: a 1 s cronie run's CMDEND can be written before its CMD. Pairing goes
    by second, so each such end still finds its start, whether the file is read whole or in pieces (the
    pieces are only joined in file order when no stamp goes back)."""
    import cronshift.history.logfiles as lf

    text = []
    for k in range(400):
        t = T0 + timedelta(minutes=k, seconds=1)
        start = f"{classic(t)} db-01 CROND[{6000 + 4 * k}]: (root) CMD (/usr/local/bin/tick)"
        then = classic(t + timedelta(seconds=1))
        end = f"{then} db-01 CROND[{6001 + 4 * k}]: (root) CMDEND (/usr/local/bin/tick)"
        text += [end, start] if k % 5 == 0 else [start, end]
        text.append(f"{classic(t)} db-01 systemd[1]: Started Session {k} of user deploy.")
    log = write(tmp_path / "cron", text)
    monkeypatch.setattr(lf, "PARALLEL_MIN", 0)
    for workers in (1, 2, 3, 4):
        h = read_history([log], JOBS, None, None, NOW, workers=workers)
        tick = h.per_job["tick"]
        assert (tick.runs, tick.ended, h.orphan_ends) == (400, 400, 0), workers
        assert set(tick.durations) == {1.0}


def _summary(h) -> dict:
    jobs = {
        jid: (
            e.runs,
            e.ended,
            e.failed,
            e.status_known,
            e.inferred_pairings,
            sorted(e.durations),
            e.output_lines,
        )
        for jid, e in h.per_job.items()
    }
    return {
        "jobs": jobs,
        "dup": h.duplicates_dropped,
        "orphans": h.orphan_ends,
        "windows": h.daemon_windows,
        "window": h.window,
        "sources": [(s.dialect, s.lines, s.duplicates) for s in h.sources],
    }


def _rotated_with_cron_log(tmp_path: Path, files: int = 5) -> list[Path]:
    ev = sorted(debian_l15(600, host="web-01") + cronie(600, host="web-01"), key=lambda x: x[0])
    text = with_noise(ev, "web-01")
    cron_only = [line for line in text if "systemd[" not in line]
    d = tmp_path / "var/log"
    n = len(text) // files
    for k in range(files):  # syslog.4.gz ... syslog, and the same cron lines in cron.log.*
        suffix = "" if k == files - 1 else f".{files - 1 - k}"
        gz = k == 0
        part = text[k * n : (k + 1) * n if k < files - 1 else len(text)]
        write(d / f"syslog{suffix}{'.gz' if gz else ''}", part, gz=gz)
        write(d / f"cron.log{suffix}{'.gz' if gz else ''}", [x for x in part if x in set(cron_only)], gz=gz)
    return find_logs(tmp_path)


def test_rotated_history_is_paired_as_it_is_read_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """syslog and cron.log rotated five times each: paired a rotation at a time (the memory of one part, not
    of the whole history), with exactly the result of joining everything first."""
    import cronshift.history.logfiles as lf
    from cronshift.history.pairing import Pairer

    paths = _rotated_with_cron_log(tmp_path)
    assert len(paths) == 10
    fed: list[int] = []
    feed = Pairer.feed
    monkeypatch.setattr(Pairer, "feed", lambda self, m: (fed.append(len(m.order)), feed(self, m))[1])
    monkeypatch.setattr(lf, "SLACK", 60.0)
    streamed = read_history(paths, JOBS, None, None, NOW)
    assert len(fed) >= 4 and max(fed) < sum(fed) / 2, fed  # several parts, none near the whole
    whole = lf._read(paths, JOBS, lf.Options(tz=NOW.tzinfo), NOW, None, None, None, stream=False)[1]
    assert _summary(streamed) == _summary(whole)
    assert streamed.per_job["tick"].runs == 1200 and streamed.duplicates_dropped > 0


def test_a_file_older_than_what_was_paired_reads_the_history_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--log` files come after the found ones: one whose first line is recent but which then holds older
    lines than those already paired (an export out of order) sends the read back to one pass over
    everything, with the same result."""
    import cronshift.history.logfiles as lf

    paths = _rotated_with_cron_log(tmp_path)
    newest = paths[-1].read_text().splitlines()  # syslog (more than the 64 KiB head), then cron.log.4
    assert paths[-1].stat().st_size > 1 << 16
    extra = write(
        tmp_path / "export", [*newest, *gzip.decompress(paths[0].read_bytes()).decode().splitlines()]
    )
    monkeypatch.setattr(lf, "SLACK", 60.0)
    calls: list[bool] = []
    read = lf._read
    monkeypatch.setattr(lf, "_read", lambda *a, **k: (calls.append(k.get("stream", True)), read(*a, **k))[1])
    h = read_history([*paths, extra], JOBS, None, None, NOW)
    assert calls == [True, False]
    assert h.per_job["tick"].runs == 1200  # every run once: the export's lines are copies
    whole = read([*paths, extra], JOBS, lf.Options(tz=NOW.tzinfo), NOW, None, None, None, stream=False)[1]
    assert _summary(h) == _summary(whole)


def test_cutting_a_piece_at_a_second_keeps_file_order_on_both_sides() -> None:
    """Pairing starts on a piece before the others are read: the piece is cut at a second, with two slices
    when the stamps allow a clean cut and by picking events when lines went back across it."""
    import random

    from cronshift.history.pairing import cut
    from cronshift.history.syslog import Options, Segment

    for trial in range(300):
        rnd = random.Random(trial)
        n = rnd.randint(0, 60)
        ts = sorted(rnd.uniform(0, 50) for _ in range(n))
        for _ in range(rnd.randint(0, 8)):  # lines that went back (or ahead)
            if n:
                i = rnd.randrange(n)
                ts[i] = max(0.0, ts[i] + rnd.uniform(-10, 10))
        seg = Segment(Options())
        for i, x in enumerate(ts):
            seg._emit(x, 1, i, i, 0, 0, 0)
        second = rnd.randint(-1, 52)
        before, after = cut(seg, second)
        assert list(before.ev.pid) == [i for i, x in enumerate(ts) if x < second], (trial, second)
        assert list(after.ev.pid) == [i for i, x in enumerate(ts) if x >= second], (trial, second)


# -- one big file, read a batch of pieces at a time ------------------------------------------------------


def _every(start: datetime, count: int, step: timedelta) -> list[tuple]:
    """Debian `-L 15`: tick every `step` (20 s, ended), with pam lines, sorted by time."""
    out: list[tuple[datetime, str]] = []
    for k in range(count):
        fire = start + k * step + timedelta(seconds=1)
        child, jp = 3000 + 4 * (k % 5000), 3001 + 4 * (k % 5000)
        end = fire + timedelta(seconds=20)
        out.append((fire, f"CRON[{child}]: pam_unix(cron:session): session opened for user root"))
        out.append((fire, f"CRON[{child}]: (root) CMD ([{jp}] /usr/local/bin/tick)"))
        out.append((end, f"CRON[{jp}]: (root) END ([{jp}] /usr/local/bin/tick)"))
        out.append((end, f"CRON[{child}]: pam_unix(cron:session): session closed for user root"))
    out.sort(key=lambda x: x[0])
    return [(t, f"{classic(t)} web-01 {line}") for t, line in out]


def _one_pass(lf, paths: list[Path]):
    """The reference: the whole history held and paired at once, the file read by one process."""
    return lf._read(paths, JOBS, lf.Options(tz=NOW.tzinfo), NOW, None, None, 1, stream=False)[1]


def _batched(lf, paths: list[Path], workers: int):
    """Streamed, with the number of events held after each piece was taken."""
    held: list[int] = []
    h = lf._read(paths, JOBS, lf.Options(tz=NOW.tzinfo), NOW, None, None, workers, watch=held.append)[1]
    return h, held


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_one_big_file_is_paired_a_batch_at_a_time_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """A 2 GB syslog that is never rotated must not cost memory in proportion to its size: it is read as
    pieces of at most PIECE_MAX bytes, `workers` at a time, each batch paired before the next is held.
    Doubling the file leaves the most events held at once where it was; the result is the one-pass one."""
    import cronshift.history.logfiles as lf

    monkeypatch.setattr(lf, "PIECE_MAX", 64 << 10)
    monkeypatch.setattr(lf, "PARALLEL_MIN", 0)
    monkeypatch.setattr(lf, "SLACK", 60.0)
    peaks = []
    for minutes in (2000, 4000):
        log = write(
            tmp_path / str(minutes) / "syslog",
            with_noise(debian_l15(minutes, start=T0 - timedelta(days=6)), "web-01"),
        )
        whole = _one_pass(lf, [log])
        assert whole.per_job["tick"].runs == whole.per_job["sync"].runs == minutes
        fed: list[int] = []
        feed = Pairer.feed
        monkeypatch.setattr(
            Pairer, "feed", lambda self, m, f=feed, n=fed: (n.append(len(m.order)), f(self, m))[1]
        )
        h, held = _batched(lf, [log], workers)
        monkeypatch.setattr(Pairer, "feed", feed)
        assert _summary(h) == _summary(whole)
        # events of one piece at most (cron lines of PIECE_MAX bytes, the file's density), and the slack
        per_piece = whole.cron_lines * lf.PIECE_MAX // log.stat().st_size + 1
        bound = (workers + 1) * per_piece
        assert len(held) > 2 * (minutes // 1000) and max(held) <= bound, (max(held), bound)
        assert max(fed) <= bound and sum(fed) >= whole.cron_lines // 2, (max(fed), bound)
        peaks.append((max(held), bound))
    (small, bound), (big, _) = peaks
    assert big <= bound and small <= bound < whole.cron_lines // 4  # the same bound, a fraction of the file


def test_a_later_batch_older_than_what_was_paired_reads_the_file_again_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run from a day earlier written three fifths into a big file (a clock set back, lines
    replayed), past the 64 KiB head of its piece: its batch comes after the earlier ones were paired, so
    the read starts again in one pass, the workers still reading are stopped, and the answer is the one-pass
    one, that run included."""
    import cronshift.history.logfiles as lf

    monkeypatch.setattr(lf, "PIECE_MAX", 1 << 20)
    monkeypatch.setattr(lf, "PARALLEL_MIN", 0)
    monkeypatch.setattr(lf, "SLACK", 60.0)
    text = with_noise(debian_l15(3000, start=T0 - timedelta(days=6)), "web-01")
    at = len(text) * 3 // 5
    old = datetime.strptime(text[at][:15], "%b %d %H:%M:%S").replace(year=2026, tzinfo=UTC) - timedelta(
        hours=24
    )
    back = [
        (old, "CRON[90001]: (root) CMD ([90002] /usr/local/bin/tick)"),
        (old + timedelta(seconds=5), "CRON[90002]: (root) END ([90002] /usr/local/bin/tick)"),
    ]
    text[at:at] = [f"{classic(t)} web-01 {line}" for t, line in back]
    log = write(tmp_path / "syslog", text)
    whole = _one_pass(lf, [log])
    assert whole.per_job["tick"].runs == 3001 and whole.orphan_ends == 0
    calls: list[bool] = []
    read = lf._read
    monkeypatch.setattr(lf, "_read", lambda *a, **k: (calls.append(k.get("stream", True)), read(*a, **k))[1])
    kids: list[int] = []
    fork = lf._fork_parse
    monkeypatch.setattr(lf, "_fork_parse", lambda args: (kids.append((r := fork(args))[0]), r)[1])
    for workers in (1, 2):
        calls.clear()
        h = read_history([log], JOBS, None, None, NOW, workers=workers)
        assert calls == [True, False], workers
        assert _summary(h) == _summary(whole), workers
    assert kids
    for pid in kids:  # every worker was waited for, those stopped too
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_years_are_checked_across_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Classic stamps have no year: each piece guesses its own from the file's mtime and the guesses must
    chain. December to February in many batches: each January and February piece is in the next year, no
    read again. Fourteen months in one file: a piece in the first months guesses a year too late, which is
    seen in a later batch, after pairing began, so the read starts again in one pass: the one-pass years.
    A file whose last lines are after its mtime (a month later): only its last piece shows the guesses were
    wrong, after the others were paired: read again in one pass too, with the one-pass answer."""
    import cronshift.history.logfiles as lf

    for end, span, step, mtime, again in (
        (datetime(2027, 2, 20, tzinfo=UTC), timedelta(days=80), timedelta(minutes=20), None, False),
        (datetime(2027, 2, 20, tzinfo=UTC), timedelta(days=425), timedelta(hours=1), None, True),
        (datetime(2027, 2, 1, 12, tzinfo=UTC), timedelta(days=20), timedelta(minutes=20), 1.5, True),
    ):
        stamp = (end - timedelta(days=mtime or 0)).timestamp()
        ev = _every(end - span, int(span / step), step)
        log = write(tmp_path / f"{span.days}" / "syslog", with_noise(ev, "web-01"))
        os.utime(log, (stamp, stamp))
        now = datetime(2027, 2, 21, tzinfo=UTC)
        whole = lf._read([log], JOBS, lf.Options(tz=UTC), now, None, None, 1, stream=False)[1]
        tick = whole.per_job["tick"]
        first = (end - span + timedelta(seconds=1)).timestamp()
        assert tick.runs == len(ev) // 4 and (mtime or min(tick.starts) == first)
        with monkeypatch.context() as m:
            m.setattr(lf, "PIECE_MAX", 64 << 10)
            m.setattr(lf, "PARALLEL_MIN", 0)
            m.setattr(lf, "SLACK", 60.0)
            calls: list[bool] = []
            read = lf._read
            m.setattr(
                lf, "_read", lambda *a, c=calls, r=read, **k: (c.append(k.get("stream", True)), r(*a, **k))[1]
            )
            h = read_history([log], JOBS, None, None, now, workers=workers)
        assert calls == ([True, False] if again else [True]), span
        assert _summary(h) == _summary(whole) and list(h.per_job["tick"].starts) == list(tick.starts), span


def test_the_head_of_a_piece_is_the_first_line_it_owns(tmp_path: Path) -> None:
    """What is paired stops short of the first stamp of the next piece to read (less SLACK): a piece cut at
    a line start owns that line, so its head is that line's stamp, not the next line's (half an hour later
    here, an hour's slack would not cover two)."""
    import cronshift.history.logfiles as lf

    at = [T0, T0 + timedelta(minutes=30), T0 + timedelta(minutes=60)]
    text = [
        f"{classic(t)} web-01 CRON[{10 + k}]: (root) CMD ([{20 + k}] /usr/local/bin/tick)"
        for k, t in enumerate(at)
    ]
    log = write(tmp_path / "syslog", text)
    opts = lf.Options(tz=UTC)
    cut = len(text[0]) + 1  # the second line begins here
    assert lf._head_second(log, opts, 2026, 0) == at[0].timestamp()
    assert lf._head_second(log, opts, 2026, cut) == at[1].timestamp()
    assert lf._head_second(log, opts, 2026, cut - 5) == at[1].timestamp()  # inside the first line
    assert lf._head_second(log, opts, 2026, cut + 1) == at[2].timestamp()  # inside the second
