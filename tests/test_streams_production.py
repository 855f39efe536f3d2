"""The Streams target where production hurts: Redis restarts, passwords, first start, policies, trimming.

Every test owns its redis-server (tests/support/redis_server.py) and runs the generated consumer as a real
`python -m` process; the scheduler runs in-process only where a fast clock replaces real minutes.
"""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from cronshift.cli.app import app as cli_app
from cronshift.ledger.store import open_ledger
from cronshift.runtime.deadletters import KIND
from cronshift.runtime.streams import (
    Consumer,
    Scheduler,
    connect,
    dead_key,
    fire,
    run_scheduler,
    stream_key,
)
from tests.support.redis_server import RedisServer, start_redis
from tests.test_generate_streams import Project, _generate, _root, _specs, needs_root, wait_for


class FastClock:
    """Wall time running `speed` times faster from a minute boundary `ahead` seconds in the future: a
    scheduler sees a cron minute every 60/speed real seconds, and its instants are never late."""

    def __init__(self, speed: float = 30.0, ahead: float = 3600.0) -> None:
        self.speed, self.m0 = speed, time.monotonic()
        self.base = (int(time.time() + ahead) // 60) * 60 + 1.0

    def __call__(self) -> float:
        return self.base + (time.monotonic() - self.m0) * self.speed


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RedisServer]]:
    made: list[RedisServer] = []
    yield made
    for s in made:
        s.stop()


@pytest.fixture
def projects() -> Iterator[list[Project]]:
    made: list[Project] = []
    yield made
    for p in made:
        p.close()


def _scheduler_thread(
    url: str, pkg: str, clock: Callable[[], float]
) -> tuple[threading.Thread, threading.Event]:
    schedules = importlib.import_module(f"{pkg}.jobs").SCHEDULES
    ev = threading.Event()
    t = threading.Thread(
        target=run_scheduler,
        args=(url, pkg, schedules),
        kwargs={"stop": ev, "clock": clock, "deadline": 3600},
    )
    t.start()
    return t, ev


@needs_root
@pytest.mark.slow
@pytest.mark.parametrize("outage", ["restart", "sigstop"])
def test_redis_outage_under_consumer_and_scheduler_loses_and_doubles_nothing(
    tmp_path: Path,
    servers: list[RedisServer],
    projects: list[Project],
    caplog: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    """`restart`: SIGKILL and start again on the same port (its append-only file keeps every write).
    `sigstop`: Redis hangs (connections accepted, nothing answered) past the clients' socket timeout."""
    srv = start_redis(tmp_path / "redis", durable=True, password="s3cret")
    servers.append(srv)
    p = Project(tmp_path, _root(tmp_path, ["* * * * * root echo tick"]), srv.url)
    projects.append(p)
    consumer = p.consumer()
    clock = FastClock(speed=30)
    sched, halt = _scheduler_thread(srv.url, p.pkg, clock)
    try:
        wait_for(lambda: len(p.runs()) >= 2, why="two runs before the outage")
        if outage == "restart":
            srv.stop()  # SIGKILL: every acknowledged write is on disk (appendfsync always)
            time.sleep(4)  # two scheduled instants fall inside the outage
            servers.append(
                srv := start_redis(tmp_path / "redis", port=srv.port, durable=True, password="s3cret")
            )
        else:
            srv.pause()
            time.sleep(13)  # past the consumer's socket timeout (--block 0.2 + 10 s): it must notice
            srv.resume()
        n = len(p.runs())
        wait_for(lambda: len(p.runs()) >= n + 4, why="runs after the restart")
    finally:
        halt.set()
        sched.join(timeout=30)
    assert not sched.is_alive()
    wait_for(lambda: not p.pending() and p.redis.xlen(stream_key(p.pkg)) == 0, why="the stream drained")
    assert consumer.poll() is None, "the consumer exited on the Redis restart"
    got = sorted(r.scheduled_for for r in p.runs())
    assert len(got) == len(set(got)), f"an instant ran twice: {got}"
    assert got == [got[0] + 60 * i for i in range(len(got))], f"an instant was lost: {got}"
    assert got[0] == clock.base - 1 + 60  # the first start claims nothing from before it started
    log = (tmp_path / "consumer-0.log").read_text()
    assert log.count("Redis unreachable") == 1 and "Redis reachable again" in log
    assert [r.getMessage() for r in caplog.records].count("Redis unreachable") <= 1


@needs_root
@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["redis", "rediss"])
def test_forbid_job_on_password_protected_redis_takes_its_lock_with_the_url_as_given(
    tmp_path: Path, servers: list[RedisServer], projects: list[Project], tls: bool
) -> None:
    srv = start_redis(tmp_path / "redis", password="pw-" + "x" * 8, tls=tls)
    servers.append(srv)
    lock = tmp_path / "lockfile"
    url = srv.url.replace("/0", "/5", 1)  # a database number, kept as given too
    p = Project(tmp_path, _root(tmp_path, [f"0 3 * * * root flock -n {lock} echo locked-run"]), url)
    projects.append(p)
    assert _specs(p.out / p.pkg / "jobs.py")[p.job("locked-run")]["policy"]["overlap"] == "forbid"
    consumer = p.consumer()
    p.trigger(p.job("locked-run"))
    (run,) = wait_for(p.runs, why="the forbid job's run")
    assert run.exit_status == 0 and consumer.poll() is None
    assert p.redis.exists(f"cronshift:{p.pkg}:jobs")  # everything in database 5, nothing in 0
    assert redis.Redis.from_url(srv.url).dbsize() == 0
    with pytest.raises(redis.AuthenticationError):  # the server really refuses a URL without the password
        redis.Redis(
            host="127.0.0.1", port=srv.port, ssl=tls, ssl_ca_certs=str(srv.ca) if tls else None
        ).ping()


def test_streams_refuses_a_policy_it_cannot_honour(tmp_path: Path) -> None:
    root = _root(tmp_path, ["0 3 * * * root echo hi"])
    code, _, err = _generate(root, tmp_path / "out", "pol", "--policy", "bogus=1")
    assert code != 0 and "bogus" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    for flag in (
        ["--beat", "redbeat"],
        ["--state-redis", "redis://x/0"],
        ["--on-reboot"],
        ["--broker", "amqp://h//"],
    ):
        code, _, err = _generate(root, tmp_path / "out", "pol", *flag)
        assert code != 0 and flag[0] in err and len(err.strip().splitlines()) == 1, (flag, err)
    code, _, err = _generate(root, tmp_path / "out", "pol", "--retention", "jobs=forever:1")
    assert code != 0 and "--retention jobs=forever:1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written
    code, doc, err = _generate(
        root, tmp_path / "out", "pol", "--policy", "missed=catch-up", "--transient-exit", "75"
    )
    assert code == 0, err
    (pol,) = [j["policies"] for j in doc["jobs"]]
    assert pol["missed"]["value"] == "catch-up" and pol["retries"]["retry_on"] == [75]


@pytest.mark.slow
def test_units_restart_and_report_ready_only_once_redis_answers(
    tmp_path: Path, servers: list[RedisServer], projects: list[Project]
) -> None:
    """The generated systemd units pass `systemd-analyze verify`; Type=notify's READY=1 comes from the
    consumer only after it reached Redis (started while Redis is down, it waits and says so once)."""
    srv = start_redis(tmp_path / "redis")
    port = srv.port
    srv.stop()
    p = Project(tmp_path, _root(tmp_path, ["0 3 * * * root echo hi"]), f"redis://127.0.0.1:{port}/0")
    projects.append(p)
    units = sorted((p.out / "deploy").glob("*.service"))
    assert [u.name for u in units] == [f"{p.pkg}-consumer@.service", f"{p.pkg}-scheduler.service"]
    for u in units:
        text = u.read_text()
        assert "Restart=always" in text and "Type=notify" in text and "StartLimitIntervalSec=0" in text
    if shutil.which("systemd-analyze"):
        inst = tmp_path / "units" / f"{p.pkg}-consumer@1.service"
        inst.parent.mkdir()
        shutil.copy(units[0], inst)
        shutil.copy(units[1], inst.parent)
        got = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(inst), str(inst.parent / units[1].name)],
            capture_output=True, text=True,
        )  # fmt: skip
        bad = [ln for ln in got.stderr.splitlines() if "WorkingDirectory" not in ln and "/opt/" not in ln]
        assert not bad, got.stderr
    assert "autorestart=true" in (p.out / "deploy/supervisor.conf").read_text()

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    try:
        p.env["NOTIFY_SOCKET"] = str(sock_path)
        consumer = p.consumer()
        log = tmp_path / "consumer-0.log"
        wait_for(lambda: "Redis unreachable" in log.read_text(), why="the outage to be logged")
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(64)  # not ready while Redis is down
        servers.append(start_redis(tmp_path / "redis", port=port))
        sock.settimeout(60)
        assert sock.recv(64) == b"READY=1"
        assert consumer.poll() is None and log.read_text().count("Redis unreachable") == 1
    finally:
        sock.close()


@needs_root
@pytest.mark.slow
@pytest.mark.parametrize(
    ("missed", "expected", "sent"),
    [
        ("skip", ["skipped", "skipped", "ran", "ran"], (0, 1, 2, 3)),  # 185 s, 125 s late: past 120 s
        ("run-once", ["ran", "skipped", "skipped", "skipped"], (0, 1, 2, 3)),  # one run covers the rest
        ("catch-up", ["ran", "ran", "ran", "ran"], (0, 1, 2, 3)),
        ("catch-up", ["ran", "ran", "ran", "ran"], (0, 3)),  # the scheduler was down too: resent
    ],
)
def test_three_minute_consumer_outage_follows_the_missed_run_policy(
    tmp_path: Path,
    servers: list[RedisServer],
    projects: list[Project],
    monkeypatch: pytest.MonkeyPatch,
    missed: str,
    expected: list[str],
    sent: tuple[int, ...],
) -> None:
    """The scheduler enqueues four instants (or, when it was down too, the first and the last) while no
    consumer runs; the consumer (in-process, its clock 185 s after the first instant) then applies the
    same policy the Celery target does, and records it."""
    srv = start_redis(tmp_path / "redis")
    servers.append(srv)
    p = Project(
        tmp_path, _root(tmp_path, ["* * * * * root echo ran"]), srv.url, "--policy", f"missed={missed}"
    )
    projects.append(p)
    monkeypatch.setenv("CRONSHIFT_LEDGER", str(p.ledger))
    monkeypatch.setenv("CRONSHIFT_ROOT", str(tmp_path))
    jobs = importlib.import_module(f"{p.pkg}.jobs")
    (job,) = jobs.JOBS
    assert jobs.JOBS[job]["policy"]["missed"] == missed
    t0 = (int(time.time()) // 60) * 60 - 3600.0
    sched = Scheduler(jobs.SCHEDULES)
    sched.start(t0 - 1)
    instants = [t0 + 60 * i for i in range(4)]
    for now in instants:  # the scheduler runs on time throughout; no consumer does
        for _, w in sched.due(now + 0.5):
            if instants.index(w) in sent:
                fire(srv.url, p.pkg, job, w)
    consumer = Consumer(
        connect(srv.url, 0.1), p.pkg, jobs.JOBS, url=srv.url, block=0.1, clock=lambda: t0 + 185
    )
    consumer.ensure_group()
    while consumer.step() is not None:
        pass
    runs = {r.scheduled_for: r for r in p.runs()}
    assert sorted(runs) == instants
    got = ["skipped" if runs[w].extra.get("skipped") else "ran" for w in instants]
    assert got == expected, [runs[w].extra.get("skipped") for w in instants]
    assert all(runs[w].exit_status == 0 for w, g in zip(instants, got, strict=True) if g == "ran")
    assert p.redis.xlen(stream_key(p.pkg)) == 0 and not p.pending()


@needs_root
@pytest.mark.slow
def test_transient_exit_is_retried_and_a_final_failure_is_a_dead_letter_cronshift_lists(
    tmp_path: Path, servers: list[RedisServer], projects: list[Project]
) -> None:
    srv = start_redis(tmp_path / "redis")
    servers.append(srv)
    count = tmp_path / "count"
    flaky = f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; [ $n -ge 1 ] || exit 75"
    lines = [f"0 3 * * * root {flaky}", "0 4 * * * root echo broken; exit 9"]
    args = ("--transient-exit", "75", "--policy", "retry_backoff=0.2", "--no-history")
    p = Project(tmp_path, _root(tmp_path, lines), srv.url, *args)
    projects.append(p)
    p.consumer()
    p.trigger(p.job("exit 75"))
    p.trigger(p.job("exit 9"))
    wait_for(lambda: len(p.runs()) == 3, why="two runs of the flaky job and one of the broken one")
    by_job: dict[str, list[Any]] = {}
    for r in p.runs():
        by_job.setdefault(r.job_id, []).append(r)
    first, second = by_job[p.job("exit 75")]
    assert first.exit_status == 75 and "retry_in" in first.extra and first.extra["attempt"] == "0"
    assert second.exit_status == 0 and second.extra["attempt"] == "1"
    (broken,) = by_job[p.job("exit 9")]
    assert broken.exit_status == 9 and broken.extra["dead_letter"]
    r = CliRunner().invoke(
        cli_app, ["dead-letters", "--root", str(tmp_path), "--store", str(p.ledger), "--json"]
    )
    assert r.exit_code == 0, r.output
    (dl,) = json.loads(r.stdout)["dead_letters"]
    assert dl["id"] == broken.extra["dead_letter"] and dl["job_id"] == p.job("exit 9")
    assert dl["source"] == "streams" and "exit status 9" in dl["reason"]


@pytest.mark.slow
def test_every_stream_is_bounded_after_ten_thousand_runs(
    tmp_path: Path, servers: list[RedisServer], projects: list[Project]
) -> None:
    """Retention chosen at generation (shown in the README) holds the jobs, dead-letter and ledger streams
    to their length bound, and drops entries older than their age."""
    srv = start_redis(tmp_path / "redis")
    servers.append(srv)
    args = ["--retention", "jobs=1d:1000", "--retention", "dead=2h:500", "--retention", "ledger=30d:2000"]
    p = Project(tmp_path, _root(tmp_path, ["* * * * * root echo hi"]), srv.url, *args)
    projects.append(p)
    readme = (p.out / p.pkg / "README.md").read_text()
    assert f"| jobs | `{stream_key(p.pkg)}` | 1 days | 1000 |" in readme
    assert f"| dead | `{dead_key(p.pkg)}` | 2 hours | 500 |" in readme
    assert "| ledger | `cronshift:runs:runtime` | 30 days | 2000 |" in readme
    jobs = importlib.import_module(f"{p.pkg}.jobs")
    assert jobs.RETENTION == {"jobs": (86400.0, 1000), "dead": (7200.0, 500), "ledger": (2592000.0, 2000)}
    (job,) = jobs.JOBS
    r = p.redis
    for key in (stream_key(p.pkg), dead_key(p.pkg), "cronshift:runs:runtime"):
        r.xadd(key, {"old": "1"}, id="1-0")  # from 1970: past every max age

    trigger = getattr(importlib.import_module(f"{p.pkg}.triggers"), p.doc["jobs"][0]["task"].rsplit(".")[-1])
    t0 = 1_800_000_000.0
    for i in range(5000):
        trigger({"id": i})
        fire(r, p.pkg, job, t0 + 60 * i, jobs.RETENTION["jobs"])
    consumer = Consumer(connect(srv.url), p.pkg, jobs.JOBS, url=srv.url, retention=jobs.RETENTION)
    for i in range(10_000):
        consumer._dead(f"{i + 1}-0", {"job": job}, 1, "test")
    from cronshift.ledger.store import open_ledger
    from cronshift.model import RunRecord

    with open_ledger(tmp_path, redis_url=srv.url) as ledger:
        for i in range(10_000):
            rec = RunRecord(job_id=job, source="streams", start=t0 + i, end=t0 + i + 1, exit_status=0)
            ledger.add_run(rec, jobs.RETENTION["ledger"])
    lengths = {k: r.xlen(k) for k in (stream_key(p.pkg), dead_key(p.pkg), "cronshift:runs:runtime")}
    bounds = {stream_key(p.pkg): 1000, dead_key(p.pkg): 500, "cronshift:runs:runtime": 2000}
    for key, n in lengths.items():
        # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): the bound, plus at most a node
        assert bounds[key] <= n <= bounds[key] + 100, (key, n)
        assert r.xrange(key, "-", "+", count=1)[0][0] != "1-0", f"{key}: the 1970 entry outlived its age"


@needs_root
@pytest.mark.slow
def test_forbid_job_ending_while_redis_is_down_runs_once(
    tmp_path: Path, servers: list[RedisServer], projects: list[Project]
) -> None:
    """Redis goes away mid-run and is still away when the job ends: the lock cannot be released nor the
    entry acknowledged then. The consumer must wait, acknowledge, and never run the job again."""
    srv = start_redis(tmp_path / "redis", durable=True)
    servers.append(srv)
    ran, started = tmp_path / "ran", tmp_path / "started"
    cmd = f"flock -n {tmp_path / 'lk'} sh -c 'touch {started}; sleep 2; echo once >> {ran}'"
    p = Project(tmp_path, _root(tmp_path, [f"0 3 * * * root {cmd}"]), srv.url)
    projects.append(p)
    consumer = p.consumer()
    p.trigger(p.job("echo once"))
    wait_for(started.exists, why="the job to start")
    srv.stop()
    wait_for(ran.exists, why="the job to end while Redis is down")
    time.sleep(1)
    servers.append(srv := start_redis(tmp_path / "redis", port=srv.port, durable=True))
    wait_for(lambda: not p.pending() and p.redis.xlen(stream_key(p.pkg)) == 0, why="the entry acked")
    time.sleep(1)  # a rerun would start at once from the re-read pending entry
    assert ran.read_text() == "once\n" and consumer.poll() is None
    (run,) = p.runs()
    assert run.exit_status == 0


DEADLINE = 5  # seconds: the missed-run policy's starting deadline in the replay test


@needs_root
@pytest.mark.slow
def test_a_dead_letter_is_replayed_through_the_stream_once_after_the_job_is_fixed(
    tmp_path: Path, servers: list[RedisServer], projects: list[Project]
) -> None:
    """The Streams target's recovery path, as the Celery target's: a scheduled run that failed for good
    (retries used up) is listed, the job is fixed, `--replay` puts it back on the job's stream with its
    payload and `scheduled_for`, the real consumer runs it once past the instant's claim (which the failed
    run holds) and past the missed-run deadline (the operator replays after it, as one would), and a
    second replay of the same dead letter is refused."""
    srv = start_redis(tmp_path / "redis")
    servers.append(srv)
    fixed, tries = tmp_path / "fixed", tmp_path / "tries"
    line = f"0 3 * * * root echo x >> {tries}; test -e {fixed} || {{ echo not fixed; exit 75; }}"
    policies = ("retry_backoff=0.2", "max_retries=1", f"starting_deadline={DEADLINE}")
    args = ("--transient-exit", "75", *(x for p in policies for x in ("--policy", p)))
    p = Project(tmp_path, _root(tmp_path, [line]), srv.url, *args, "--no-history")
    projects.append(p)
    job = p.job("not fixed")
    p.consumer()
    when = float(int(time.time()))  # the instant the scheduler sends, through the scheduler's own `fire`
    assert fire(p.redis, p.pkg, job, when) is not None
    failed = wait_for(lambda: [r for r in p.runs() if r.extra.get("dead_letter")], why="a dead letter")
    assert [r.exit_status for r in p.runs()] == [75, 75]  # the first run and its one retry
    ledger = ["--root", str(tmp_path), "--store", str(p.ledger)]
    r = CliRunner().invoke(cli_app, ["dead-letters", "--list", "--json", *ledger])
    assert r.exit_code == 0, r.output
    (dl,) = json.loads(r.stdout)["dead_letters"]
    assert dl["id"] == failed[0].extra["dead_letter"] and dl["status"] == "dead"
    assert dl["source"] == "streams" and dl["scheduled_for"] == when and dl["attempts"] == 2

    fixed.touch()
    time.sleep(max(0.0, when + DEADLINE + 1 - time.time()))  # the operator comes back after the deadline
    r = CliRunner().invoke(cli_app, ["dead-letters", "--replay", dl["id"], "--project", str(p.out), *ledger])
    assert r.exit_code == 0, r.output
    entry = r.stdout.split()[-1]
    runs = wait_for(lambda: [x for x in p.runs() if x.extra.get("stream_entry") == entry], why="the replay")
    (replayed,) = runs
    assert replayed.exit_status == 0 and not replayed.extra.get("skipped"), replayed.extra
    assert replayed.scheduled_for == when and replayed.job_id == job
    assert replayed.extra["trigger_id"].startswith(dl["task_id"] + "-replay-")
    assert tries.read_text() == "x\nx\nx\n"  # two failed attempts, then the replay: once
    with open_ledger(tmp_path, store=str(p.ledger)) as led:
        doc = led.get(KIND, dl["id"])
    assert doc["status"] == "replayed" and doc["replay_entry"] == entry

    r = CliRunner().invoke(cli_app, ["dead-letters", "--replay", dl["id"], "--project", str(p.out), *ledger])
    assert r.exit_code == 4 and "already replayed" in r.stderr, r.output
    assert p.redis.xinfo_stream(stream_key(p.pkg))["last-generated-id"] == entry  # nothing was added
    wait_for(lambda: not p.pending() and p.redis.xlen(stream_key(p.pkg)) == 0, why="the stream drained")
    assert len(p.runs()) == 3


def test_replay_refuses_a_dead_letter_this_streams_project_cannot_send(
    tmp_path: Path, servers: list[RedisServer], projects: list[Project]
) -> None:
    """A Celery run's dead letter names a task, and a job gone from jobs.py would be dead-lettered unrun by
    the consumers: both are refused (exit 4), nothing is added and the record stays `dead`."""
    srv = start_redis(tmp_path / "redis")
    servers.append(srv)
    p = Project(tmp_path, _root(tmp_path, ["0 3 * * * root echo kept"]), srv.url, "--no-history")
    projects.append(p)
    base = {"scheduled_for": 1_800_000_000.0, "payload": None, "status": "dead", "created": 1_800_000_000.0}
    docs = {
        "celery": {**base, "job_id": p.job("echo kept"), "task": f"{p.pkg}.jobs.x.run", "source": "celery"},
        "gone": {**base, "job_id": "gone-00000000", "task": stream_key(p.pkg), "source": "streams"},
    }
    with open_ledger(tmp_path, store=str(p.ledger)) as led:
        for key, doc in docs.items():
            led.put(KIND, key, {**doc, "id": key, "task_id": "t-" + key})
    ledger = ["--root", str(tmp_path), "--store", str(p.ledger)]
    for key, why in (("celery", "is a celery run"), ("gone", "no longer in")):
        r = CliRunner().invoke(cli_app, ["dead-letters", "--replay", key, "--project", str(p.out), *ledger])
        assert r.exit_code == 4 and why in r.stderr, r.output
    assert p.redis.xlen(stream_key(p.pkg)) == 0
    with open_ledger(tmp_path, store=str(p.ledger)) as led:
        assert [d["status"] for d in led.list(KIND)] == ["dead", "dead"]
