"""Cron's own logs -> per-job evidence: every dialect, pairing by pid, years, rotation, damaged lines."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronshift.history.logfiles import find_logs, iter_runs, read_history
from cronshift.history.match import Matcher, cut_at_percent, logged_forms
from cronshift.model import CronJob, Format, SourceRef

CORPUS = Path("/work/shared/corpus/logs")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def job(jid: str, user: str, command: str, fmt: Format = Format.USER, path: str = "", **kw) -> CronJob:
    return CronJob(
        id=jid,
        source=SourceRef(path or f"var/spool/cron/crontabs/{user}", 1),
        format=fmt,
        user=user,
        schedule="* * * * *",
        command=command,
        **kw,
    )


def write(tmp: Path, name: str, text: str, mtime: datetime = NOW) -> Path:
    p = tmp / name
    data = text.encode()
    if name.endswith(".gz"):
        p.write_bytes(gzip.compress(data))
    else:
        p.write_bytes(data)
    os.utime(p, (mtime.timestamp(), mtime.timestamp()))
    return p


def ts(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


def test_debian_default_level_has_starts_only_and_never_assumes_success(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        "syslog",
        "Nov 24 10:05:01 web-01 CRON[4101]: (root) CMD (/usr/local/bin/sync --full)\n"
        "Nov 24 10:05:01 web-01 CRON[4100]: pam_unix(cron:session): session opened for user root\n"
        "Nov 24 10:10:01 web-01 CRON[4201]: (root) CMD (/usr/local/bin/sync --full)\n",
    )
    h = read_history([log], [job("sync", "root", "/usr/local/bin/sync --full")], None, None, NOW)
    ev = h.per_job["sync"]
    assert ev.runs == 2
    assert list(ev.starts) == [ts("2026-11-24T10:05:01"), ts("2026-11-24T10:10:01")]
    assert ev.ended == 0 and ev.status_known == 0 and ev.failed == 0
    assert ev.evidence == {"cmd-only"}
    assert h.cron_lines == 3 and h.malformed == 0
    runs = list(iter_runs([log], [job("sync", "root", "/usr/local/bin/sync --full")], "sync", NOW))
    assert [(r.end, r.exit_status) for r in runs] == [(None, None), (None, None)]


DEBIAN_L15 = """\
Nov 24 03:00:01 db1 CRON[700]: (postgres) CMD ([702] /usr/bin/vacuumdb --all)
Nov 24 03:00:01 db1 CRON[701]: (root) CMD ([703] /usr/local/bin/backup.sh)
Nov 24 03:00:01 db1 CRON[704]: (root) CMD ([705] /usr/local/bin/rotate-tmp)
Nov 24 03:00:02 db1 CRON[704]: (CRON) info (No MTA installed, discarding output)
Nov 24 03:00:02 db1 CRON[705]: (root) END ([705] /usr/local/bin/rotate-tmp)
Nov 24 03:00:09 db1 CRON[701]: (CRON) error (grandchild #703 failed with exit status 3)
Nov 24 03:00:09 db1 CRON[703]: (root) END ([703] /usr/local/bin/backup.sh)
Nov 24 03:02:41 db1 CRON[700]: (CRON) error (grandchild #702 terminated by signal 9)
Nov 24 03:02:41 db1 CRON[702]: (postgres) END ([702] /usr/bin/vacuumdb --all)
"""
L15_JOBS = [
    job("vacuum", "postgres", "/usr/bin/vacuumdb --all"),
    job("backup", "root", "/usr/local/bin/backup.sh"),
    job("rotate", "root", "/usr/local/bin/rotate-tmp"),
]


def test_debian_L15_pairs_by_pid_not_by_order(tmp_path: Path) -> None:
    h = read_history([write(tmp_path, "syslog", DEBIAN_L15)], L15_JOBS, None, None, NOW)
    vac, bak, rot = h.per_job["vacuum"], h.per_job["backup"], h.per_job["rotate"]
    assert list(bak.durations) == [8.0] and bak.exit_statuses == {3: 1} and bak.failed == 1
    assert list(vac.durations) == [160.0] and vac.signals == {9: 1} and vac.failed == 1  # SIGKILLed
    assert list(rot.durations) == [1.0] and rot.failed == 0 and rot.output_discarded == 1
    # failure lines were being logged, so rotate's plain END is a known success
    assert rot.status_known == 1 and rot.last_success == ts("2026-11-24T03:00:02")
    assert "status" in rot.evidence
    assert h.orphan_ends == 0 and h.malformed == 0


def test_debian_end_without_failure_logging_leaves_status_unknown(tmp_path: Path) -> None:
    text = "\n".join(line for line in DEBIAN_L15.splitlines() if "error" not in line) + "\n"
    h = read_history([write(tmp_path, "syslog", text)], L15_JOBS, None, None, NOW)
    assert h.per_job["backup"].ended == 1 and h.per_job["backup"].status_known == 0
    h2 = read_history([tmp_path / "syslog"], L15_JOBS, None, None, NOW, failures_logged=True)
    assert h2.per_job["backup"].status_known == 1 and h2.per_job["backup"].failed == 0


def test_run_records_for_show(tmp_path: Path) -> None:
    runs = list(iter_runs([write(tmp_path, "syslog", DEBIAN_L15)], L15_JOBS, "vacuum", NOW))
    assert len(runs) == 1
    r = runs[0]
    assert (r.signal, r.exit_status, r.duration, r.pid, r.user, r.command) == (
        9,
        None,
        160.0,
        702,
        "postgres",
        "/usr/bin/vacuumdb --all",
    )
    assert r.failed is True


def test_corpus_grandchild_failure_without_pid_bit(tmp_path: Path) -> None:
    """Ubuntu forum sample (-L 5-ish): CMD by the job pid, error and No MTA by the cron child."""
    src = CORPUS / "debian-syslog_forum-grandchild-nomta.log"
    jobs = [
        job("bk", "henk", "/var/bashes/backup_codeblocks.sh 2>&1 >> /var/bashes/logs/backup_codeblocks.log"),
        job("mk", "henk", "sudo mkdir /var/testard"),
    ]
    h = read_history([src], jobs, None, None, NOW)
    assert h.per_job["bk"].failed == 1 and h.per_job["mk"].failed == 1
    assert h.per_job["bk"].output_discarded == 1 and h.per_job["mk"].output_discarded == 1
    assert h.per_job["bk"].exit_statuses == {1: 1}
    assert h.unattributed_discarded == 0


CRONIE = """\
May  1 15:54:01 ip-172-31-25-61 CROND[3652]: (ec2-user) CMD (sh /home/ec2-user/clean.sh)
May  1 15:54:01 ip-172-31-25-61 CROND[3660]: (ec2-user) CMD (sh /home/ec2-user/clean.sh)
May  1 15:54:01 ip-172-31-25-61 CROND[3651]: (ec2-user) CMDOUT (Files to delete : /tmp/a.log)
May  1 15:54:30 ip-172-31-25-61 CROND[3659]: (ec2-user) CMDEND (sh /home/ec2-user/clean.sh)
May  1 15:55:01 ip-172-31-25-61 CROND[3651]: (ec2-user) CMDEND (sh /home/ec2-user/clean.sh)
May  1 15:56:01 ip-172-31-25-61 CROND[3774]: (ec2-user) CMD (sh /home/ec2-user/clean.sh)
May  1 15:56:01 ip-1 CROND[3773]: (ec2-user) MAIL (mailed 2802 bytes of output but got status 0x004b#012)
May  1 15:56:02 ip-172-31-25-61 CROND[3773]: (ec2-user) CMDEND (sh /home/ec2-user/clean.sh)
"""


def test_cronie_cmdend_pairs_by_command_and_flags_guesses(tmp_path: Path) -> None:
    h = read_history(
        [write(tmp_path, "cron", CRONIE)],
        [job("clean", "ec2-user", "sh /home/ec2-user/clean.sh")],
        None,
        None,
        NOW,
    )
    ev = h.per_job["clean"]
    assert ev.runs == 3 and ev.ended == 3
    assert sorted(ev.durations) == [1.0, 29.0, 60.0]  # the child pid just below each CMD settles the overlap
    assert ev.status_known == 0  # CMDEND carries no exit status
    assert ev.mail_failures == 1 and ev.output_lines == 1
    assert h.sources[0].dialect == "cronie"


def test_cronie_overlap_without_pid_hint_is_a_guess(tmp_path: Path) -> None:
    text = CRONIE.replace("CROND[3659]", "CROND[9000]").replace(
        "CROND[3651]: (ec2-user) CMDEND", "CROND[9001]: (ec2-user) CMDEND"
    )
    h = read_history(
        [write(tmp_path, "cron", text)],
        [job("clean", "ec2-user", "sh /home/ec2-user/clean.sh")],
        None,
        None,
        NOW,
    )
    assert h.per_job["clean"].guessed_pairings == 1


def test_run_parts_and_anacron(tmp_path: Path) -> None:
    text = (
        "Feb  9 03:19:01 dev7u7 anacron[30728]: Job `cron.daily' started\n"
        "Feb  9 03:19:01 dev7u7 run-parts(/etc/cron.daily)[340]: starting logrotate\n"
        "Feb  9 03:19:03 dev7u7 run-parts(/etc/cron.daily)[351]: finished logrotate\n"
        "Feb  9 03:19:03 dev7u7 anacron[30728]: Job `cron.daily' terminated (exit status: 1) (mailing output)"
        "\n"
        "Feb  9 04:01:01 dev7u7 run-parts[2651121]: (/etc/cron.hourly) starting 0anacron\n"
        "Feb  9 04:01:02 dev7u7 run-parts[2651127]: (/etc/cron.hourly) finished 0anacron\n"
    )
    jobs = [
        job("logrotate", "root", "/etc/cron.daily/logrotate", Format.RUN_PARTS, "etc/cron.daily/logrotate"),
        job("0anacron", "root", "/etc/cron.hourly/0anacron", Format.RUN_PARTS, "etc/cron.hourly/0anacron"),
        job(
            "daily",
            "root",
            "run-parts /etc/cron.daily",
            Format.ANACRONTAB,
            "etc/anacrontab",
            job_id="cron.daily",
        ),
    ]
    h = read_history([write(tmp_path, "cron", text)], jobs, None, None, NOW)
    assert list(h.per_job["logrotate"].durations) == [2.0]
    assert list(h.per_job["0anacron"].durations) == [1.0]
    assert h.per_job["daily"].exit_statuses == {1: 1}


def test_journal_export(tmp_path: Path) -> None:
    base = int(ts("2026-11-24T10:05:01") * 1e6)

    def entry(us: int, ident: str, pid: int, msg: object) -> str:
        return json.dumps(
            {
                "__REALTIME_TIMESTAMP": str(us),
                "SYSLOG_IDENTIFIER": ident,
                "_PID": str(pid),
                "MESSAGE": msg,
                "_HOSTNAME": "web-01",
            }
        )

    lines = [
        entry(base, "CRON", 10, "(root) CMD ([11] /usr/local/bin/sync --full)"),
        entry(base + 1000, "systemd", 1, "Started Session 4 of user root."),
        entry(base + 2_500_000, "CRON", 10, "(CRON) error (grandchild #11 failed with exit status 2)"),
        entry(base + 2_500_000, "CRON", 11, "(root) END ([11] /usr/local/bin/sync --full)"),
        entry(base + 3_000_000, "CRON", 12, [40, 255, 41]),  # non-UTF-8 message as a byte array
        '{"__REALTIME_TIMESTAMP": "17',  # truncated export line mentioning nothing
    ]
    h = read_history(
        [write(tmp_path, "cron.json", "\n".join(lines) + "\n")],
        [job("sync", "root", "/usr/local/bin/sync --full")],
        None,
        None,
        NOW,
    )
    ev = h.per_job["sync"]
    assert ev.runs == 1 and list(ev.durations) == [2.5] and ev.exit_statuses == {2: 1}
    assert h.sources[0].dialect == "journal"


def test_december_to_january_year_rollover(tmp_path: Path) -> None:
    text = (
        "Dec 31 23:59:01 h CRON[1]: (root) CMD (/bin/tick)\n"
        "Jan  1 00:00:01 h CRON[2]: (root) CMD (/bin/tick)\n"
    )
    log = write(tmp_path, "syslog", text, mtime=datetime(2027, 1, 1, 6, 0, tzinfo=UTC))
    h = read_history([log], [job("tick", "root", "/bin/tick")], None, None, datetime(2027, 1, 2, tzinfo=UTC))
    assert list(h.per_job["tick"].starts) == [ts("2026-12-31T23:59:01"), ts("2027-01-01T00:00:01")]
    # a file last written in December is all from the previous year when read in January
    log2 = write(
        tmp_path,
        "syslog.1",
        "Dec 30 10:00:01 h CRON[3]: (root) CMD (/bin/tick)\n",
        mtime=datetime(2026, 12, 30, 10, 0, tzinfo=UTC),
    )
    h2 = read_history(
        [log2], [job("tick", "root", "/bin/tick")], None, None, datetime(2027, 1, 2, tzinfo=UTC)
    )
    assert list(h2.per_job["tick"].starts) == [ts("2026-12-30T10:00:01")]


def test_rfc3339_stamps(tmp_path: Path) -> None:
    text = (
        "2026-11-24T10:05:01.123456+01:00 web-01 CRON[20]: (root) CMD ([21] /bin/tick)\n"
        "2026-11-24T10:05:04.123456+01:00 web-01 CRON[21]: (root) END ([21] /bin/tick)\n"
    )
    h = read_history([write(tmp_path, "syslog", text)], [job("tick", "root", "/bin/tick")], None, None, NOW)
    ev = h.per_job["tick"]
    assert list(ev.starts) == [pytest.approx(ts("2026-11-24T09:05:01.123456"))]
    assert list(ev.durations) == [pytest.approx(3.0)]


def test_rotated_gz_files_found_oldest_first_and_paired_across_files(tmp_path: Path) -> None:
    logdir = tmp_path / "var" / "log"
    logdir.mkdir(parents=True)
    write(logdir, "syslog.2.gz", "Nov 22 10:00:01 h CRON[5]: (root) CMD ([6] /bin/tick)\n")
    write(
        logdir,
        "syslog.1",
        "Nov 23 09:59:59 h CRON[6]: (root) END ([6] /bin/tick)\n"
        "Nov 23 10:00:01 h CRON[7]: (root) CMD ([8] /bin/tick)\n",
    )
    write(logdir, "syslog", "Nov 24 10:00:01 h CRON[9]: (root) CMD ([10] /bin/tick)\n")
    write(logdir, "auth.log", "Nov 24 10:00:01 h CRON[9]: pam_unix(cron:session): session opened\n")
    extra = write(tmp_path, "old-cron.log", "")
    paths = find_logs(tmp_path, [extra])
    assert [p.name for p in paths] == ["syslog.2.gz", "syslog.1", "syslog", "old-cron.log"]
    h = read_history(paths, [job("tick", "root", "/bin/tick")], None, None, NOW)
    ev = h.per_job["tick"]
    assert ev.runs == 3 and list(ev.durations) == [ts("2026-11-23T09:59:59") - ts("2026-11-22T10:00:01")]


def test_truncated_and_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    text = (
        "Nov 24 10:05:01 h CRON[1]: (root) CMD (/bin/tick)\n"
        "Nov 24 10:06:01 h CRON[2]: (root) CMD (/bin/ti"  # cut mid-line (disk full), no newline
        "\nNov 24 10:0\n"
        "Zzz 24 10:07:01 h CRON[3]: (root) CMD (/bin/tick)\n"
        "\x00\x00\x00\x00garbage\n"
        "Nov 24 10:08:01 h CRON[4]: (root) CMD (/bin/tick)\n"
    )
    h = read_history([write(tmp_path, "syslog", text)], [job("tick", "root", "/bin/tick")], None, None, NOW)
    assert h.per_job["tick"].runs == 2
    assert h.malformed == 2


def test_unmatched_commands_kept_with_counts(tmp_path: Path) -> None:
    text = (
        "Nov 24 10:05:01 h CRON[1]: (deploy) CMD (/opt/old/report.sh)\n"
        "Nov 24 11:05:01 h CRON[2]: (deploy) CMD (/opt/old/report.sh)\n"
        "Nov 24 11:06:01 h CRON[3]: (root) CMD (/bin/tick)\n"
    )
    h = read_history([write(tmp_path, "syslog", text)], [job("tick", "root", "/bin/tick")], None, None, NOW)
    u = h.unmatched[("deploy", "/opt/old/report.sh")]
    assert u.count == 2 and u.last_seen == ts("2026-11-24T11:05:01")
    assert h.per_job["tick"].runs == 1


def test_ambiguous_matches_are_said(tmp_path: Path) -> None:
    jobs = [job("a", "root", "/bin/tick"), job("b", "root", "/bin/tick", path="etc/cron.d/tick")]
    h = read_history(
        [write(tmp_path, "syslog", "Nov 24 10:05:01 h CRON[1]: (root) CMD (/bin/tick)\n")],
        jobs,
        None,
        None,
        NOW,
    )
    assert h.ambiguous[("root", "/bin/tick")] == ("a", "b")
    assert h.ambiguous_runs == 1 and not h.per_job


def test_since_until_window(tmp_path: Path) -> None:
    text = "".join(f"Nov 24 1{i}:00:01 h CRON[{i}]: (root) CMD (/bin/tick)\n" for i in range(5))
    h = read_history(
        [write(tmp_path, "syslog", text)],
        [job("tick", "root", "/bin/tick")],
        ts("2026-11-24T11:00:00"),
        ts("2026-11-24T13:00:00"),
        NOW,
    )
    assert h.per_job["tick"].runs == 2


def test_percent_and_escapes_match_what_cron_logs() -> None:
    assert cut_at_percent(r"date +\%Y-\%m%input%more", debian=True) == "date +%Y-%m"
    assert cut_at_percent(r"echo a\\%b", debian=True) == "echo a\\"
    assert cut_at_percent(r"echo a\\%b", debian=False) == "echo a\\\\"
    j = job("d", "root", "tar czf /b/$(date +\\%F).tgz /etc%stdin text")
    assert "tar czf /b/$(date +%F).tgz /etc" in logged_forms(j)
    m = Matcher([j, job("cr", "root", "/bin/x\r")])
    assert m.match("root", "tar czf /b/$(date +%F).tgz /etc") == "d"
    assert m.match("root", "/bin/x^M") == "cr"  # mkprint shows the CR of a DOS line ending as ^M


def test_leading_spaces_as_logged_by_debian() -> None:
    """logstash sample: `CMD (   cd / && run-parts --report /etc/cron.hourly)` keeps blanks cron kept."""
    m = Matcher([job("h", "root", "cd / && run-parts --report /etc/cron.hourly")])
    assert m.match("root", "   cd / && run-parts --report /etc/cron.hourly") == "h"


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.log")))
def test_every_corpus_log_parses(tmp_path: Path, name: str) -> None:
    src = tmp_path / name
    shutil.copyfile(CORPUS / name, src)
    h = read_history([src], [], None, None, NOW)
    runs = sum(u.count for u in h.unmatched.values())
    text = src.read_bytes()
    cmd_lines = text.count(b") CMD (")
    starts = cmd_lines + text.count(b" starting ") + text.count(b"' started")  # run-parts / anacron runs
    if "ru-journal" in name:
        assert runs == 0 and h.unreadable_stamps == text.count(b"localhost.localdomain")
    else:
        assert runs == starts
        assert h.unreadable_stamps == 0
    assert h.cron_lines >= cmd_lines
    assert h.lines_read == len(text.splitlines())


def test_corpus_thunderbird_prefix_and_crlf(tmp_path: Path) -> None:
    src = CORPUS / "rhel-crond_loghub-thunderbird.log"
    h = read_history([src], [job("h", "root", "run-parts /etc/cron.hourly")], None, None, NOW)
    assert h.per_job["h"].runs == 14  # every `crond[pid]: (root) CMD (run-parts ...)` line
    assert ("root", "/projects/tbird/temps/get_temps a") in h.unmatched


def test_progress_reports_bytes(tmp_path: Path) -> None:
    seen: list[int] = []
    log = write(tmp_path, "syslog", DEBIAN_L15)
    read_history([log], L15_JOBS, None, None, NOW, progress=seen.append)
    assert seen and seen[-1] == log.stat().st_size


def test_parallel_split_gives_the_same_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs straddling the cut between worker ranges still pair (END lines are replayed on the join)."""
    import cronshift.history.logfiles as lf

    start = datetime(2026, 11, 20, tzinfo=UTC)
    lines = []
    for i in range(3000):
        t0 = start + timedelta(seconds=60 * i)
        s = t0.strftime("%b %e %H:%M:%S")
        e = (t0 + timedelta(seconds=90)).strftime("%b %e %H:%M:%S")
        lines.append((t0, f"{s} h CRON[{2 * i + 100000}]: (root) CMD ([{2 * i + 100001}] /bin/tick)"))
        lines.append(
            (
                t0 + timedelta(seconds=90),
                f"{e} h CRON[{2 * i + 100001}]: (root) END ([{2 * i + 100001}] /bin/tick)",
            )
        )
    lines.sort(key=lambda x: x[0])
    log = write(tmp_path, "syslog", "\n".join(x[1] for x in lines) + "\n")
    jobs = [job("tick", "root", "/bin/tick")]
    one = read_history([log], jobs, None, None, NOW, workers=1, failures_logged=True)
    monkeypatch.setattr(lf, "PARALLEL_MIN", 0)
    two = read_history([log], jobs, None, None, NOW, workers=2, failures_logged=True)
    a, b = one.per_job["tick"], two.per_job["tick"]
    assert a.runs == b.runs == 3000 and a.ended == b.ended == 3000
    assert sorted(a.durations) == sorted(b.durations) and list(a.starts) == list(b.starts)
    assert one.orphan_ends == two.orphan_ends == 0


def test_byte_ranges_own_the_lines_that_begin_in_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers read byte ranges block by block (plain files step back to the start of a cut line instead
    of copying): whatever the block size and the cuts, the ranges' lines joined are the file, once."""
    import random
    from itertools import pairwise

    import cronshift.history.logfiles as lf

    rnd = random.Random(3)
    for trial in range(200):
        lines = [b"x" * rnd.choice([0, 1, 5, 30, 200, 3000]) for _ in range(rnd.randint(0, 60))]
        data = b"\n".join(lines) + (b"\n" if rnd.random() < 0.7 else b"")
        gz = trial % 5 == 0
        path = tmp_path / f"log-{trial}"
        path.write_bytes(gzip.compress(data) if gz else data)
        monkeypatch.setattr(lf, "BLOCK", rnd.choice([1, 2, 7, 64, 1000, 1 << 20]))
        cuts = sorted(rnd.randint(0, len(data)) for _ in range(rnd.randint(0, 4)))
        bounds = [0, *cuts, len(data)]
        got = b""
        for a, b in pairwise(bounds):
            stop = None if b == len(data) and rnd.random() < 0.5 else b
            for block, end in lf._blocks(path, a, stop, None):
                assert end > 0
                got += block[:end]
        assert got == data, (trial, bounds, gz)
