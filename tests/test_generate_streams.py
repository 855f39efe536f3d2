"""`cronshift generate --target streams`: the generated project for real, with a test-owned Redis and the
consumer and scheduler as real `python -m` subprocesses."""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from typer.testing import CliRunner

from cronshift.discover.scan import scan
from cronshift.runtime.streams import Scheduler, dead_key, fire, group_name, stream_key
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture
from tests.support.users import throwaway_user  # noqa: F401 - fixture
from tests.test_generate import HOSTILE, NOW, _cli, hostile_root

PROJECT = Path(__file__).resolve().parent.parent
RUFF = str(Path(sys.executable).with_name("ruff"))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run jobs as their users")


def _generate(root: Path, out: Path, pkg: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    args = ["generate", "--all", "--root", str(root), "--out", str(out), "--package", pkg]
    r = CliRunner().invoke(_cli(), [*args, "--target", "streams", "--json", *NOW, *extra])
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


def _specs(jobs_py: Path) -> dict[str, dict[str, Any]]:
    """Every SPEC_* literal of a generated jobs.py, read by parsing (never importing) the file."""
    out: dict[str, dict[str, Any]] = {}
    for node in ast.parse(jobs_py.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "").startswith("SPEC_"):
            assert isinstance(node.value, ast.Call)
            spec = json.loads(ast.literal_eval(node.value.args[0]))
            out[spec["id"]] = spec
    return out


def _root(
    tmp_path: Path,
    lines: list[str],
    users: list[pwd.struct_passwd] = (),
    zone: str = "UTC",  # type: ignore[assignment]
) -> Path:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    pw = "root:x:0:0:root:/root:/bin/bash\n" + "".join(
        f"{u.pw_name}:x:{u.pw_uid}:{u.pw_gid}::{u.pw_dir}:/bin/sh\n" for u in users
    )
    (root / "etc/passwd").write_text(pw)
    (root / "etc/timezone").write_text(zone + "\n")
    (root / "etc/cron.d/streams").write_text("\n".join(lines) + "\n")
    return root


def test_project_is_deterministic_lints_and_embeds_hostile_commands(tmp_path: Path) -> None:
    root = hostile_root(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    code, doc, err = _generate(root, a, "hostile")
    assert code == 0, err
    assert _generate(root, b, "hostile")[0] == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert {f["path"] for f in doc["files"]} >= {
        f"hostile/{n}" for n in ("jobs.py", "consumer.py", "scheduler.py", "triggers.py", "README.md")
    }
    assert doc["schema_version"] == 2 and doc["target"] == "streams" and doc["package"] == "hostile"
    jobs = {j.id: j for j in scan(root).jobs}
    specs = _specs(a / "hostile/jobs.py")
    assert len(doc["jobs"]) == len(HOSTILE) == len(jobs) == len(specs)
    for j in doc["jobs"]:
        job = jobs[j["id"]]
        assert specs[j["id"]]["command"] == job.shell_command
        assert specs[j["id"]]["stdin"] == job.stdin
        assert specs[j["id"]]["env"] == [list(kv) for kv in job.env]
        assert j["schedule_proof"]["identical"] and [e["kind"] for e in j["beat_entries"]] == ["cronsim"]
        assert j["task"].startswith("hostile.triggers.trigger_")
    subprocess.run([RUFF, "check", "--no-cache", str(a)], check=True)
    subprocess.run([RUFF, "format", "--check", "--no-cache", str(a)], check=True)
    # The package imports and its SCHEDULES and JOBS say exactly what the scan says.
    probe = "import json, hostile.jobs as j; print(json.dumps([j.JOBS, j.SCHEDULES]))"
    env = {**os.environ, "PYTHONPATH": f"{a}:{PROJECT}"}
    got = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    loaded, schedules = json.loads(got.stdout)
    assert loaded == specs
    assert schedules == {i: [jobs[i].schedule, "UTC"] for i in jobs}


def test_dst_gap_job_is_proved_in_its_zone_and_reboot_has_no_schedule(tmp_path: Path) -> None:
    root = _root(tmp_path, ["30 2 * * * root echo gap", "@reboot root echo boot"], zone="Europe/Berlin")
    code, doc, err = _generate(root, tmp_path / "out", "dst")
    assert code == 0, err
    proofs = {j["id"]: j["schedule_proof"] for j in doc["jobs"]}
    boot = [j for j in doc["jobs"] if j["schedule_proof"] is None]
    assert len(boot) == 1 and any("@reboot" in m for m in boot[0]["messages"])
    gap = next(j for j in doc["jobs"] if j["schedule_proof"] is not None)
    assert gap["schedule_proof"]["identical"] and gap["schedule_proof"]["zone"] == "Europe/Berlin"
    assert gap["beat_entries"][0]["zone"] == "Europe/Berlin" and len(proofs) == 2
    jobs_py = (tmp_path / "out/dst/jobs.py").read_text()
    assert f'"{gap["id"]}": ("30 2 * * *", "Europe/Berlin")' in jobs_py
    assert f"# {boot[0]['id']}: @reboot runs when cron starts" in jobs_py


def test_spec_carries_the_scanned_dialect_so_the_environment_is_the_crons(tmp_path: Path) -> None:
    """A cronie host's jobs get cronie's environment (USER set), a Debian host's Debian's."""
    for dialect in ("cronie", "debian"):
        root = _root(tmp_path / dialect, ["0 3 * * * root echo hi"])
        code, _doc, err = _generate(root, tmp_path / dialect / "out", "dia", "--dialect", dialect)
        assert code == 0, err
        (spec,) = _specs(tmp_path / dialect / "out/dia/jobs.py").values()
        assert spec["dialect"] == dialect


def test_rerun_keeps_user_edits_unless_forced(tmp_path: Path) -> None:
    root = _root(tmp_path, ["0 3 * * * root echo hi"])
    out = tmp_path / "out"
    assert _generate(root, out, "edits")[0] == 0
    edited = out / "edits/consumer.py"
    edited.write_text(edited.read_text() + "# my change\n")
    code, _, err = _generate(root, out, "edits")
    assert code == 1 and "edited since it was generated; left alone" in err
    assert edited.read_text().endswith("# my change\n")
    assert _generate(root, out, "edits", "--force")[0] == 0
    assert not edited.read_text().endswith("# my change\n")


def test_scheduler_fires_cron_instants_skips_stale_and_restart_refires_within_deadline() -> None:
    """Fake clock: the spring gap in Berlin (cron runs `30 2` at 03:00), the deadline, and a restart."""
    berlin = ZoneInfo("Europe/Berlin")
    t = datetime(2026, 3, 29, 1, 0, tzinfo=berlin).timestamp()
    s = Scheduler({"gap": ("30 2 * * *", "Europe/Berlin"), "tick": ("*/30 * * * *", "Europe/Berlin")})
    s.start(t, {"tick": t - 1800, "gap": t - 86400})  # both ran before: resume, within the deadline

    def due(now: float) -> list[tuple[str, str]]:
        return [(j, datetime.fromtimestamp(w, berlin).strftime("%H:%M%z")) for j, w in s.due(now)]

    assert due(t) == [("tick", "01:00+0100")]  # an instant exactly at start counts
    assert due(t + 1799) == []
    assert due(t + 1800) == [("tick", "01:30+0100")]
    assert due(t + 3600) == [("gap", "03:00+0200"), ("tick", "03:00+0200")]  # 02:00-02:59 never exists
    assert due(t + 3 * 3600 + 300) == []
    assert due(t + 3 * 3600 + 1800 + 9) == [
        ("tick", "05:30+0200")
    ]  # a loop that wakes late still fires  # 03:30 .. 05:00 were missed by more than the deadline: skipped
    restarted = Scheduler({"tick": ("*/30 * * * *", "Europe/Berlin")})
    restarted.start(t + 3600 + 60, {"tick": t + 1800})  # back one minute after 03:00, unsent: offered
    assert [w for _, w in restarted.due(t + 3600 + 60)] == [t + 3600]
    restarted.start(t + 3600 + 60, {"tick": t + 3600})  # another scheduler sent 03:00: not offered
    assert restarted.due(t + 3600 + 60) == []
    first = Scheduler({"tick": ("*/30 * * * *", "Europe/Berlin")})
    first.start(t + 60)  # the first start ever (cutover): cron ran 01:00, nothing before now is offered
    assert first.due(t + 60) == [] and first.due(t + 1800) == [("tick", t + 1800)]


def test_fire_enqueues_each_instant_once(redis_server: RedisServer) -> None:  # noqa: F811
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    project = "once_" + uuid.uuid4().hex[:6]
    assert fire(client, project, "job-1", 1_800_000_000.0) is not None
    assert fire(client, project, "job-1", 1_800_000_000.0) is None
    assert fire(client, project, "job-2", 1_800_000_000.0) is not None
    entries = client.xrange(stream_key(project))
    assert [(f["job"], f["scheduled_for"]) for _, f in entries] == [
        ("job-1", "1800000000.0"),
        ("job-2", "1800000000.0"),
    ]


# --- real consumers --------------------------------------------------------------------------------------


class Project:
    """A generated streams project and the processes a test starts from it (all stopped by `close`)."""

    def __init__(self, tmp_path: Path, root: Path, url: str, *generate_args: str) -> None:
        self.tmp, self.url = tmp_path, url
        self.pkg = "st_" + uuid.uuid4().hex[:8]  # the package names the stream: unique per test
        self.out = tmp_path / "out"
        code, self.doc, err = _generate(root, self.out, self.pkg, "--redis", url, *generate_args)
        assert code == 0, err
        subprocess.run([RUFF, "check", "--no-cache", str(self.out)], check=True, capture_output=True)
        self.ledger = tmp_path / "ledger.db"
        self.env = {
            **os.environ,
            "PYTHONPATH": f"{self.out}:{PROJECT}",
            "CRONSHIFT_LEDGER": str(self.ledger),
            "CRONSHIFT_ROOT": str(tmp_path),
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        sys.path.insert(0, str(self.out))

    def start(self, module: str, *args: str, log: str | None = None) -> subprocess.Popen[bytes]:
        with open(self.tmp / (log or f"{module}-{len(self.procs)}.log"), "wb") as f:
            p = subprocess.Popen(
                [sys.executable, "-m", f"{self.pkg}.{module}", *args],
                cwd=self.out, env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.procs.append(p)
        return p

    def consumer(self, *args: str) -> subprocess.Popen[bytes]:
        return self.start("consumer", "--block", "0.2", *args)

    def trigger(self, job_id: str, payload: Any = None) -> str:
        mod = importlib.import_module(f"{self.pkg}.triggers")
        name = next(j["task"] for j in self.doc["jobs"] if j["id"] == job_id).rsplit(".", 1)[1]
        return getattr(mod, name)(payload)

    def job(self, needle: str) -> str:
        """The id of the one job whose command contains `needle`."""
        specs = _specs(self.out / self.pkg / "jobs.py")
        (found,) = [i for i, s in specs.items() if needle in s["command"]]
        return found

    def runs(self) -> list[Any]:
        if not self.ledger.exists():
            return []
        from cronshift.ledger.store import open_ledger

        with open_ledger(self.tmp, store=str(self.ledger)) as ledger:
            return list(ledger.runs())

    def pending(self) -> list[dict[str, Any]]:
        try:
            return list(self.redis.xpending_range(stream_key(self.pkg), group_name(self.pkg), "-", "+", 100))
        except redis.ResponseError:  # no group yet
            return []

    def close(self) -> None:
        sys.path.remove(str(self.out))
        for p in self.procs:
            stop(p)
        self.redis.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(what: Callable[[], Any], timeout: float = 30, why: str = "") -> Any:
    """Poll until `what()` is truthy; the timeout only stops a broken run from hanging the suite."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {why or what}")


@pytest.fixture
def make_project(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Project]]:  # noqa: F811
    made: list[Project] = []

    def make(lines: list[str], users: list[pwd.struct_passwd] = ()) -> Project:  # type: ignore[assignment]
        made.append(Project(tmp_path, _root(tmp_path, lines, users), redis_server.url))
        return made[-1]

    yield make
    for p in made:
        p.close()


@needs_root
@pytest.mark.slow
def test_triggered_entries_run_exactly_as_cron_and_failures_are_recorded_and_acked(
    make_project: Callable[..., Project],
    throwaway_user: pwd.struct_passwd,  # noqa: F811 - the shared fixture
    tmp_path: Path,
) -> None:
    u = throwaway_user
    p = make_project(
        [
            'GREETING=it\'s "quoted" {{x}}',
            f"0 3 * * * {u.pw_name} env | sort > $HOME/env.txt; pwd >> $HOME/env.txt; "
            "cat >> $HOME/env.txt %in%put",
            f'0 4 * * * {u.pw_name} cat "$CRONSHIFT_PAYLOAD_FILE" > $HOME/payload.json',
            f"0 5 * * * {u.pw_name} echo failing; exit 7",
        ],
        [u],
    )
    env_job, payload_job, fail_job = p.job("env | sort"), p.job("payload.json"), p.job("exit 7")
    marker = tmp_path / "marker"
    hostile = {"id": "p1", "x": f"$(touch {marker}); `touch {marker}`; touch {marker} && echo '\"", "n": [1]}
    p.trigger(env_job)  # queued before any consumer exists: the group starts at 0, nothing is lost
    p.consumer()
    p.trigger(payload_job, hostile)
    p.trigger(fail_job)
    runs = wait_for(lambda: len(p.runs()) == 3 and p.runs(), why="three run records")

    lines = (Path(u.pw_dir) / "env.txt").read_text().splitlines()
    # Debian's cron: PAM's variables (this host's /etc/environment and locale), then cron's own; no USER
    from cronshift.runtime.execute import pam_environment

    own = {"HOME": u.pw_dir, "LOGNAME": u.pw_name, "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
    own |= {"GREETING": 'it\'s "quoted" {{x}}', "PWD": u.pw_dir}
    expected = [f"{k}={v}" for k, v in (pam_environment() | own).items()]
    assert lines == [*sorted(expected), u.pw_dir, "in", "put"]
    assert (Path(u.pw_dir) / "env.txt").stat().st_uid == u.pw_uid
    assert json.loads((Path(u.pw_dir) / "payload.json").read_text()) == hostile
    assert not marker.exists()

    by_job = {r.job_id: r for r in runs}
    assert by_job[fail_job].exit_status == 7 and "failing" in by_job[fail_job].stdout_tail
    assert by_job[env_job].exit_status == 0 and by_job[payload_job].exit_status == 0
    assert by_job[payload_job].extra["payload_id"] == "p1"
    assert {r.source for r in runs} == {"streams"} and {r.user for r in runs} == {u.pw_name}
    assert {r.extra["deliveries"] for r in runs} == {"1"}
    wait_for(lambda: not p.pending() and p.redis.xlen(stream_key(p.pkg)) == 0, why="all acked")
    assert p.redis.xlen(dead_key(p.pkg)) == 0


@needs_root
@pytest.mark.slow
def test_hostile_entries_run_nothing(make_project: Callable[..., Project], tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    p = make_project([f"0 3 * * * root echo ran >> {out}"])
    marker = tmp_path / "marker"
    touch = f"$(touch {marker}); `touch {marker}`; touch {marker}"
    job = p.job("echo ran")
    stream = stream_key(p.pkg)
    p.redis.xadd(stream, {"job": touch})
    p.redis.xadd(stream, {"job": f"{job}; touch {marker}"})
    p.redis.xadd(stream, {"job": job, "payload": f"{touch} not json"})
    p.redis.xadd(stream, {"job": job, "scheduled_for": touch})
    p.redis.xadd(
        stream, {"job": job, "command": f"touch {marker}", "shell": "/bin/bash", "payload": json.dumps(touch)}
    )
    p.consumer()
    wait_for(lambda: p.redis.xlen(dead_key(p.pkg)) == 4 and len(p.runs()) == 1, why="4 dead, 1 run")
    dead = p.redis.xrange(dead_key(p.pkg))
    assert [d["dead_reason"].split(":")[0] for _, d in dead] == [
        "no such job in this project",
        "no such job in this project",
        "malformed entry",
        "malformed entry",
    ]
    assert dead[0][1]["entry_job"] == touch  # kept as data, for a person to read
    assert out.read_text() == "ran\n"  # the one well-formed entry ran the job's own command, once
    assert not marker.exists()
    wait_for(lambda: not p.pending() and p.redis.xlen(stream) == 0, why="all acked")


@needs_root
@pytest.mark.slow
def test_consumer_killed_mid_job_leaves_entry_pending_and_another_claims_it(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    starts, done = tmp_path / "starts", tmp_path / "done"
    # The first run announces itself and hangs; a run after it finishes at once.
    cmd = f'echo "$$" >> {starts}; [ "$(wc -l < {starts})" -gt 1 ] || sleep 300; echo ok >> {done}'
    p = make_project([f"0 3 * * * root {cmd}"])
    job = p.job("sleep 300")
    first = p.consumer("--min-idle", "1")
    p.trigger(job)
    # its pid written, not only the file created: under load the two are apart
    wait_for(lambda: starts.exists() and starts.read_text().strip(), why="the first run to start")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=15)
    job_pid = int(starts.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):  # whatever the runtime does with an orphan, we own it
        os.killpg(job_pid, signal.SIGKILL)
    (pending,) = p.pending()
    assert pending["consumer"].endswith(f"-{first.pid}") and pending["times_delivered"] == 1
    assert p.runs() == []

    second = p.consumer("--min-idle", "1")
    (run,) = wait_for(p.runs, why="the claimed entry to run")
    assert run.exit_status == 0 and run.job_id == job
    assert run.extra["deliveries"] == "2" and run.extra["consumer"].endswith(f"-{second.pid}")
    assert run.extra["stream_entry"] == pending["message_id"]
    assert len(starts.read_text().split()) == 2 and done.read_text() == "ok\n"
    wait_for(lambda: not p.pending(), why="the claimed entry to be acked")


@needs_root
@pytest.mark.slow
def test_long_job_keeps_its_entry_while_its_consumer_lives(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    """min-idle is 0.5 s and the job runs 3 s: the heartbeat must stop a second consumer claiming it."""
    starts = tmp_path / "starts"
    p = make_project([f"0 3 * * * root echo $$ >> {starts}; sleep 3"])
    p.consumer("--min-idle", "0.5")
    p.consumer("--min-idle", "0.5")
    p.trigger(p.job("sleep 3"))
    (run,) = wait_for(p.runs, why="the run")
    assert run.extra["deliveries"] == "1" and len(starts.read_text().split()) == 1


@needs_root
@pytest.mark.slow
def test_entry_that_kills_its_consumer_lands_in_dead_letters_after_n_deliveries(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    tries = tmp_path / "tries"
    p = make_project([f"0 3 * * * root echo x >> {tries}; kill -KILL $PPID; sleep 30"])
    job = p.job("kill -KILL")
    entry = p.trigger(job)
    args = ("--min-idle", "0.5", "--max-deliveries", "2")
    for n in (1, 2):
        c = p.consumer(*args)
        assert c.wait(timeout=30) == -signal.SIGKILL, f"delivery {n} did not kill its consumer"
    last = p.consumer(*args)
    ((_, dead),) = wait_for(lambda: p.redis.xrange(dead_key(p.pkg)), why="a dead letter")
    assert last.poll() is None  # the third delivery was not run
    assert dead["entry_job"] == job and dead["dead_from"] == entry and dead["dead_deliveries"] == "3"
    assert "delivered 3 times without finishing (max_deliveries 2)" in dead["dead_reason"]
    assert tries.read_text() == "x\nx\n"
    assert not p.pending() and p.redis.xlen(stream_key(p.pkg)) == 0
    (rec,) = p.runs()  # the ledger says what happened to it, and `cronshift dead-letters` lists it
    assert rec.exit_status is None and rec.extra["skipped"].startswith("dead-lettered (")


@needs_root
@pytest.mark.slow
def test_scheduler_enqueues_at_the_minute_boundary_once(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    """Waits for a real minute boundary (up to 60 s), then restarts the scheduler inside the deadline."""
    ticks = tmp_path / "ticks"
    p = make_project([f"* * * * * root echo tick >> {ticks}"])
    job = p.job("echo tick")
    s1 = p.start("scheduler", "--deadline", "0", log="s1.log")  # nothing from before it started
    ((_, first),) = wait_for(lambda: p.redis.xrange(stream_key(p.pkg)), timeout=90, why="a scheduled entry")
    os.kill(s1.pid, signal.SIGKILL)
    when = float(first["scheduled_for"])
    assert first["job"] == job and when % 60 == 0
    p.start("scheduler", "--deadline", "30", log="s2.log")  # resumes after the instant s1 sent
    at = datetime.fromtimestamp(when, ZoneInfo("UTC")).isoformat()
    wait_for(lambda: f"resuming after {at}" in (tmp_path / "s2.log").read_text(), why="the s2 resume")
    assert [f["scheduled_for"] for _, f in p.redis.xrange(stream_key(p.pkg))].count(repr(when)) == 1
    p.consumer()
    run = wait_for(lambda: [r for r in p.runs() if r.scheduled_for == when], why="the scheduled run")
    assert len(run) == 1 and run[0].exit_status == 0 and run[0].start >= when
