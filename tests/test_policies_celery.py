"""The policies for real: a test-owned Redis, real prefork workers, real beats (redbeat), RabbitMQ.

Each test waits on events (a result, a file, a Redis key) with generous deadlines that only bound a hang;
no assertion depends on how fast something happened.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from typer.testing import CliRunner

from cronshift.cli.deadletters import dead_letters
from cronshift.discover.scan import scan
from cronshift.ledger.store import open_ledger
from cronshift.runtime.deadletters import KIND
from cronshift.runtime.execute import JobFailed
from cronshift.runtime.lock import holder_info, lock_key
from tests.support.celery_worker import start_celery, start_worker
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture
from tests.test_generate import _cli

PROJECT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the generated jobs run as root; the worker must be root"),
]


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@dataclass
class Project:
    out: Path
    pkg: str
    tmp: Path
    ids: dict[str, str]  # short name -> job id
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.db"

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        p = start_celery(self.pkg, *args, cwd=self.out, env=self.env, log=self.tmp / f"{name}.log")
        self.procs.append(p)
        return p

    def worker(self, name: str, concurrency: int = 4) -> subprocess.Popen[bytes]:
        p = start_worker(
            self.pkg, cwd=self.out, env=self.env, log=self.tmp / f"{name}.log", concurrency=concurrency,
            name=name, extra=["--without-mingle", "--without-gossip"],
        )  # fmt: skip
        self.procs.append(p)
        return p

    def task(self, short: str) -> Any:
        mod = importlib.import_module(f"{self.pkg}.jobs.{self.ids[short].replace('-', '_')}")
        return getattr(mod, self.ids[short].replace("-", "_"))

    def runs(self, short: str) -> list[Any]:
        if not self.ledger.exists():
            return []
        with open_ledger(self.tmp, store=str(self.ledger)) as led:
            return list(led.runs(job_id=self.ids[short]))

    def dead(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        with open_ledger(self.tmp, store=str(self.ledger)) as led:
            return led.list(KIND)

    def stop_all(self) -> None:
        for p in self.procs:
            kill(p, signal.SIGTERM)


def kill(p: subprocess.Popen[bytes], first: int = signal.SIGTERM) -> None:
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
            p.wait(timeout=20)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def make_project(
    tmp: Path,
    jobs: dict[str, str],
    policies: dict[str, list[str]],
    broker: str,
    extra_args: list[str] | None = None,
    state_redis: str | None = None,
    schedule: str = "0 3 * * *",
) -> Project:
    """A root with one cron.d line per job (as root), generated with per-job --policy overrides."""
    root = tmp / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/timezone").write_text("UTC\n")
    (root / "etc/cron.d/jobs").write_text("".join(f"{schedule} root {cmd}\n" for cmd in jobs.values()))
    by_cmd = {j.command: j.id for j in scan(root).jobs}
    ids = {short: by_cmd[cmd] for short, cmd in jobs.items()}
    out, pkg = tmp / "out", "pol_" + uuid.uuid4().hex[:8]
    args = ["generate", "--all", "--root", str(root), "--out", str(out), "--package", pkg, "--broker", broker]
    args += ["--now", "2026-03-01T00:00", *(extra_args or [])]
    for short, pols in policies.items():
        for p in pols:
            args += ["--policy", f"{ids[short]}:{p}"]
    if state_redis:
        args += ["--state-redis", state_redis]
    r = CliRunner().invoke(_cli(), args)
    assert r.exit_code == 0, r.stderr
    env = {**os.environ, "PYTHONPATH": f"{out}:{PROJECT}", "CRONSHIFT_LEDGER": str(tmp / "ledger.db")}
    env.pop("CRONSHIFT_STATE_REDIS", None)
    os.environ["CRONSHIFT_LEDGER"] = str(tmp / "ledger.db")  # this process sends, the workers record
    return Project(out, pkg, tmp, ids, env)


@pytest.fixture
def imported(request: pytest.FixtureRequest) -> Iterator[Callable[[Project], Project]]:
    added: list[Project] = []

    def use(p: Project) -> Project:
        sys.path.insert(0, str(p.out))
        added.append(p)
        return p

    yield use
    for p in added:
        p.stop_all()
        sys.path.remove(str(p.out))
        for mod in [m for m in sys.modules if m == p.pkg or m.startswith(p.pkg + ".")]:
            del sys.modules[mod]
    os.environ.pop("CRONSHIFT_LEDGER", None)


# -- one project, two workers, for the policies that do not kill workers -------------------------------------


# The tests on the shared project share one xdist worker: one project and two Celery workers, not one each.
SHARED = pytest.mark.xdist_group("policies-shared")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Project]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("policies")
    f = tmp / "files"
    f.mkdir()
    jobs = {
        # cron lines: a % must be written \\% (an unescaped % starts the job's stdin)
        "forbid": f'r="$$-$(date +\\%s\\%N)"; echo "$r start $(date +\\%s.\\%N)" >> {f}/iv; sleep 0.01; '
        f'echo "$r end $(date +\\%s.\\%N)" >> {f}/iv',
        "limit": f"sleep 300 & echo $! > {f}/limit.pid; wait",
        "replace": f"n=$(wc -l < {f}/rep 2>/dev/null || echo 0); echo $$ >> {f}/rep; "
        '[ "$n" -gt 0 ] || sleep 120; echo replaced-ok',
        "transient": f"n=$(cat {f}/tr 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}/tr; "
        '[ "$n" -ge 3 ] || { echo try $n; exit 75; }; echo ok',
        "permanent": "echo cannot reach db; exit 75",
        "selfkill": f"echo x >> {f}/deliveries; kill -9 $PPID",
        "skip": f"echo ran >> {f}/skip",
        "runonce": f"echo ran >> {f}/once",
        "catchup": f"echo ran >> {f}/catch",
    }
    fast = ["retry_backoff=0.2", "retry_backoff_max=1"]
    policies = {
        "forbid": ["overlap=forbid"],
        "limit": ["overlap=forbid", "time_limit=1", "kill_grace=2"],
        "replace": ["overlap=replace", "lock_expiry=3", "kill_grace=2"],
        "transient": ["retry_on=75", "max_retries=3", *fast],
        "permanent": ["retry_on=75", "max_retries=2", "starting_deadline=0", *fast],
        "selfkill": ["max_deliveries=2"],
        "skip": ["missed=skip"],
        "runonce": ["missed=run-once"],
        "catchup": ["missed=catch-up"],
    }
    p = make_project(tmp, jobs, policies, redis_server.url)
    p.worker("w1")
    p.worker("w2")
    sys.path.insert(0, str(p.out))
    try:
        yield p
    finally:
        p.stop_all()
        sys.path.remove(str(p.out))
        os.environ.pop("CRONSHIFT_LEDGER", None)


@SHARED
def test_forbid_keeps_zero_overlaps_under_200_concurrent_triggers(shared: Project) -> None:
    task = shared.task("forbid")
    results = [task.apply_async() for _ in range(200)]
    got = [r.get(timeout=120) for r in results]
    ran = [g for g in got if not g.get("skipped")]
    skipped = [g for g in got if g.get("skipped")]
    assert len(ran) + len(skipped) == 200 and ran and skipped
    assert all("overlap policy forbid" in g["reason"] for g in skipped)
    spans: dict[str, dict[str, float]] = {}
    for line in (shared.tmp / "files/iv").read_text().splitlines():
        rid, what, ts = line.split()
        spans.setdefault(rid, {})[what] = float(ts)
    assert len(spans) == len(ran)
    ivs = sorted((s["start"], s["end"]) for s in spans.values())
    overlaps = sum(1 for a, b in itertools.pairwise(ivs) if b[0] < a[1])
    assert overlaps == 0
    pids = {line.split(" ")[0] for line in (shared.tmp / "files/iv").read_text().splitlines()}
    assert len(pids) == len(ran)
    recs = shared.runs("forbid")
    assert len(recs) == 200 and sum(1 for r in recs if r.extra.get("skipped")) == len(skipped)


@SHARED
def test_time_limit_kill_releases_the_lock_and_kills_children(
    shared: Project,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with pytest.raises(JobFailed) as info:
        shared.task("limit").apply_async().get(timeout=60)
    assert info.value.result["time_limit_hit"] and info.value.signal == signal.SIGTERM
    assert holder_info(redis_server.url, shared.ids["limit"])["token"] is None  # released, not left to expire
    child = int((shared.tmp / "files/limit.pid").read_text())
    wait_for(lambda: not _alive(child), "the job's background child is killed with its group", 30)
    (rec,) = shared.runs("limit")
    assert rec.extra.get("time_limit_hit") == "1" and rec.extra.get("dead_letter")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@SHARED
def test_replace_terminates_the_older_run(shared: Project) -> None:
    task = shared.task("replace")
    older = task.apply_async()
    reps = shared.tmp / "files/rep"
    wait_for(lambda: reps.exists() and reps.read_text().strip(), "the first run started")
    first_pid = int(reps.read_text().split()[0])
    newer = task.apply_async()
    assert newer.get(timeout=60)["output_tail"] == "replaced-ok\n"
    with pytest.raises(JobFailed) as info:
        older.get(timeout=60)
    assert info.value.signal == signal.SIGTERM
    assert not _alive(first_pid)
    recs = {r.extra["task_id"]: r for r in shared.runs("replace")}
    assert (
        recs[older.id].extra.get("replaced_by_newer_run") == "1" and "dead_letter" not in recs[older.id].extra
    )
    assert recs[newer.id].extra.get("replaced") and recs[newer.id].exit_status == 0


@SHARED
def test_transient_failure_retries_and_succeeds(shared: Project) -> None:
    r = shared.task("transient").apply_async()
    assert r.get(timeout=60)["output_tail"] == "ok\n"
    recs = sorted(shared.runs("transient"), key=lambda x: int(x.extra["attempt"]))
    assert [x.exit_status for x in recs] == [75, 75, 0]
    assert all(float(x.extra["retry_in"]) <= 1 for x in recs[:2])
    assert not [d for d in shared.dead() if d["job_id"] == shared.ids["transient"]]


@SHARED
def test_permanent_failure_is_dead_lettered_after_the_maximum_and_replays(shared: Project) -> None:
    t = time.time() // 60 * 60 - 3600  # as if beat had sent it an hour ago
    r = shared.task("permanent").apply_async(kwargs={"scheduled_for": t})
    with pytest.raises(JobFailed) as info:
        r.get(timeout=60)
    assert info.value.exit_status == 75
    assert [x.exit_status for x in shared.runs("permanent")] == [75, 75, 75]
    app = typer.Typer()
    app.command("dead-letters")(dead_letters)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["dead-letters", "--list", "--json", "--store", str(shared.ledger)])
    assert res.exit_code == 0, res.stderr
    (dl,) = [d for d in json.loads(res.stdout)["dead_letters"] if d["job_id"] == shared.ids["permanent"]]
    assert dl["attempts"] == 3 and dl["task_id"] == r.id and dl["last_error"]["exit_status"] == 75
    assert dl["output_tail"] == "cannot reach db\n" and "max_retries 2" in dl["reason"]
    assert dl["scheduled_for"] == t and dl["status"] == "dead"
    res = CliRunner().invoke(
        app,
        ["dead-letters", "--replay", dl["id"], "--project", str(shared.out), "--store", str(shared.ledger)],
    )
    assert res.exit_code == 0, res.stderr
    new_id = res.stdout.split()[-1]
    with pytest.raises(JobFailed):
        shared.task("permanent").AsyncResult(new_id).get(timeout=60)  # it really ran again, not a duplicate
    assert [x.scheduled_for for x in shared.runs("permanent")] == [t] * 6
    with open_ledger(shared.tmp, store=str(shared.ledger)) as led:
        assert led.get(KIND, dl["id"])["status"] == "replayed"
        again = [d for d in led.list(KIND) if d["task_id"] == new_id]
    assert len(again) == 1 and again[0]["status"] == "dead"  # the replay failed for good too: its own record
    res = CliRunner().invoke(
        app,
        ["dead-letters", "--replay", dl["id"], "--project", str(shared.out), "--store", str(shared.ledger)],
    )
    assert res.exit_code == 4 and "already replayed at" in res.stderr and new_id in res.stderr, res.output


@SHARED
def test_a_job_that_kills_its_worker_is_dead_lettered_after_n_deliveries(shared: Project) -> None:
    r = shared.task("selfkill").apply_async()
    dl = wait_for(
        lambda: [d for d in shared.dead() if d["job_id"] == shared.ids["selfkill"]], "a dead letter", 90
    )[0]
    assert dl["deliveries"] == 3 and dl["task_id"] == r.id and "delivered 3 times" in dl["reason"]
    assert (shared.tmp / "files/deliveries").read_text() == "x\nx\n"  # the third delivery did not run it
    wait_for(lambda: r.state == "FAILURE", "the task is marked failed", 30)
    assert type(r.result).__name__ == "JobDeadLettered"


@SHARED
def test_missed_run_policies(shared: Project) -> None:
    now = time.time()
    t0 = now - now % 60 - 600  # ten minutes ago, on a minute
    skip = shared.task("skip").apply_async(kwargs={"scheduled_for": t0}).get(timeout=60)
    assert skip["skipped"] and "starting deadline" in skip["reason"]
    assert shared.runs("skip")[0].extra["skipped"] == skip["reason"]

    once = shared.task("runonce")
    got = [once.apply_async(kwargs={"scheduled_for": t0 + 60 * k}).get(timeout=60) for k in range(3)]
    assert [bool(g.get("skipped")) for g in got] == [False, True, True]
    assert (shared.tmp / "files/once").read_text() == "ran\n"

    catch = shared.task("catchup")  # "0 3 * * *": one instant a day
    day = 86400
    base = t0 - t0 % day + 3 * 3600 - 5 * day
    assert catch.apply_async(kwargs={"scheduled_for": base}).get(timeout=60)["exit_status"] == 0
    res = catch.apply_async(kwargs={"scheduled_for": base + 3 * day}).get(timeout=60)
    assert res["exit_status"] == 0
    recs = wait_for(lambda: (lambda rs: rs if len(rs) == 4 else None)(shared.runs("catchup")), "catch-up")
    assert (shared.tmp / "files/catch").read_text() == "ran\n" * 4
    assert sorted(r.scheduled_for for r in recs) == [base + k * day for k in range(4)]
    dup = catch.apply_async(kwargs={"scheduled_for": base + day}).get(timeout=60)
    assert dup["skipped"] and "duplicate" in dup["reason"]


# -- workers that die --------------------------------------------------------------------------------------


def test_sigkilled_workers_lock_expires_and_the_next_run_proceeds(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    imported: Callable[[Project], Project],
) -> None:
    flag, pidf = tmp_path / "flag", tmp_path / "pid"
    cmd = f"if [ -e {flag} ]; then echo second; else touch {flag}; echo $$ > {pidf}; sleep 300; fi"
    p = imported(
        make_project(tmp_path, {"j": cmd}, {"j": ["overlap=forbid", "lock_expiry=3"]}, redis_server.url)
    )
    w = p.worker("doomed", concurrency=1)
    p.task("j").apply_async()
    wait_for(lambda: pidf.exists() and pidf.read_text().strip(), "the long run started")
    job_pgid = int(pidf.read_text())
    info = holder_info(redis_server.url, p.ids["j"])  # read while the run lives: on a loaded host the
    assert info["token"] is not None and 0 < info["pttl"] <= 3000  # lease could lapse before a later read
    kill(w, signal.SIGKILL)  # the worker and its pool child, at once: nothing can release the lock
    wait_for(lambda: holder_info(redis_server.url, p.ids["j"])["token"] is None, "the lock expires", 60)
    wait_for(lambda: not _alive(job_pgid), "the watchdog killed the orphaned job", 90)
    p.worker("next", concurrency=1)
    res = p.task("j").apply_async().get(timeout=60)
    assert not res.get("skipped") and res["output_tail"] == "second\n"
    r = redis.Redis.from_url(redis_server.url)
    assert r.get(lock_key(p.ids["j"])) is None
    r.close()


def test_a_redelivered_scheduled_run_that_started_is_not_run_again(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    imported: Callable[[Project], Project],
) -> None:
    """The pool process running a beat-sent run dies (OOM, SIGKILL): acks_late redelivers the message, and
    cron's rule holds: that scheduled instant is not started twice; the skip is a run record."""
    starts = tmp_path / "starts"
    p = imported(make_project(tmp_path, {"j": f"echo $$ >> {starts}; sleep 300"}, {}, redis_server.url))
    p.worker("w", concurrency=1)
    now = time.time()
    sf = now - now % 60
    pending = p.task("j").apply_async(kwargs={"scheduled_for": sf})
    pid = int(wait_for(lambda: starts.exists() and starts.read_text().split(), "the run started")[0])
    pool_child = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the job's parent
    os.kill(pool_child, signal.SIGKILL)  # reject_on_worker_lost: the message goes back to the queue
    pending.get(timeout=60, propagate=False)
    recs = wait_for(lambda: [r for r in p.runs("j") if "redelivered" in r.extra.get("skipped", "")], "skip")
    assert recs[0].scheduled_for == sf
    assert starts.read_text().split() == [str(pid)]  # started once
    shown = subprocess.run(
        [sys.executable, "-m", "cronshift", "show", p.ids["j"], "--root", str(tmp_path / "root"),
         "--store", str(p.ledger), "--json"],
        capture_output=True, text=True, cwd=PROJECT, check=True,
    )  # fmt: skip
    (skip,) = [x for x in json.loads(shown.stdout)["skipped"] if "redelivered" in x["reason"]]
    assert skip["scheduled_for"].startswith(datetime.fromtimestamp(sf, UTC).strftime("%Y-%m-%dT%H:%M"))


def test_two_redbeat_beats_fire_each_instant_once(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    imported: Callable[[Project], Project],
) -> None:
    """Waits for a real minute boundary (the one test here that does)."""
    fired = tmp_path / "fired"
    p = imported(
        make_project(
            tmp_path,
            {"tick": f"date +%s >> {fired}"},
            {},
            redis_server.url,
            extra_args=["--beat", "redbeat"],
            schedule="* * * * *",
        )
    )
    assert 'beat_scheduler="redbeat.RedBeatScheduler"' in (p.out / p.pkg / "app.py").read_text()
    p.worker("rb", concurrency=2)
    beats = [p.start("beat", "--loglevel", "info", name=f"beat{k}") for k in (1, 2)]
    first = wait_for(lambda: [r for r in p.runs("tick") if not r.extra.get("skipped")], "a beat run", 150)[0]
    assert first.scheduled_for is not None and first.scheduled_for % 60 == 0
    assert first.start >= first.scheduled_for
    logs = [(tmp_path / f"beat{k}.log").read_text() for k in (1, 2)]
    assert sum("Acquired lock" in log for log in logs) == 1  # the other beat waits on the lock
    time.sleep(6)  # > beat_max_loop_interval: a second beat sending would have sent by now
    same = [r for r in p.runs("tick") if r.scheduled_for == first.scheduled_for]
    assert len(same) == 1, [r.extra for r in same]
    leader = 0 if "Acquired lock" in logs[0] else 1
    kill(beats[leader])  # SIGTERM: redbeat releases its lock; the other beat takes over
    other = tmp_path / f"beat{2 - leader}.log"
    wait_for(lambda: "Acquired lock" in other.read_text(), "the second beat took over", 60)


def test_same_project_runs_on_rabbitmq(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    imported: Callable[[Project], Project],
) -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    f = tmp_path / "n"
    jobs = {
        "forbid": "echo via-amqp",
        "transient": f"n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}; "
        '[ "$n" -ge 2 ] || exit 75; echo ok',
    }
    pols = {
        "forbid": ["overlap=forbid"],
        "transient": ["retry_on=75", "retry_backoff=0.2", "retry_backoff_max=1"],
    }
    broker = "amqp://guest:guest@127.0.0.1:5672//"
    p = imported(make_project(tmp_path, jobs, pols, broker, state_redis=redis_server.url))
    p.worker("amqp", concurrency=2)
    try:
        assert p.task("forbid").apply_async().get(timeout=60)["output_tail"] == "via-amqp\n"
        assert p.task("transient").apply_async().get(timeout=60)["output_tail"] == "ok\n"
        assert [r.exit_status for r in p.runs("transient")] == [75, 0]
    finally:
        p.stop_all()
        app = importlib.import_module(f"{p.pkg}.app").app
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(p.pkg)  # the package names the queue: leave the broker clean
