"""Policy choices from history, their overrides, and the pure helpers the runtime's policies rest on."""

from __future__ import annotations

import hashlib
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronshift.generate.celery import render_project
from cronshift.generate.plan import PolicyError, parse_policy_options, plan_for
from cronshift.history.evidence import JobInput
from cronshift.model import CronJob, Format, RunRecord, SourceRef, Wrapper
from cronshift.rank import Metrics
from cronshift.runtime import state
from cronshift.runtime.execute import DEFAULT_TIME_LIMIT, JobFailed, run_job
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture


def job(command: str = "true", wrappers: tuple[Wrapper, ...] = (), **kw: object) -> CronJob:
    return CronJob(
        id="j-1", source=SourceRef("etc/cron.d/x", 1), format=Format.SYSTEM, user="root",
        schedule="*/5 * * * *", command=command, shell_command=command, wrappers=wrappers, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def runs(durations: list[float], statuses: list[int] | None = None) -> JobInput:
    st = statuses or [0] * len(durations)
    recs = tuple(
        RunRecord("j-1", "record", 1000.0 * i, 1000.0 * i + d, exit_status=s)
        for i, (d, s) in enumerate(zip(durations, st, strict=True))
    )
    return JobInput(logs=None, ledger=recs)


def test_without_history_cron_behaviour_is_kept() -> None:
    p = plan_for(job())
    assert (p.overlap, p.missed, p.retry_on, p.max_retries) == ("allow", "skip", (), 0)
    assert p.time_limit == DEFAULT_TIME_LIMIT and "no runtime history" in p.limit_why


def test_flock_keeps_forbid_and_timeout_becomes_the_limit() -> None:
    w = (
        Wrapper("flock", "flock -n /x", "overlap guard"),
        Wrapper("timeout", "timeout 90", "time limit", (("seconds", "90"),)),
    )
    p = plan_for(job("flock -n /x timeout 90 y", w))
    assert p.overlap == "forbid" and "flock -n /x" in p.overlap_why
    assert p.time_limit == 90 and p.hard_limit > 90 and p.celery_limit > p.hard_limit


def test_limit_from_p99_with_headroom_and_overlap_from_history() -> None:
    ds = [10.0] * 98 + [100.0, 400.0]
    inp = runs(ds)
    m = Metrics(overlaps=2, overlap_basis="start/end pairs", duration_p95=10.0, duration_max=400.0)
    p = plan_for(job(), m, inp)
    assert p.time_limit == 200 and "p99 runtime" in p.limit_why  # p99 of 100 runs = 100 s, x2
    assert p.overlap == "forbid" and "2 run(s)" in p.overlap_why
    calm = plan_for(job(), Metrics(overlaps=0, duration_p95=10.0, p95_over_interval=0.03), inp)
    assert calm.overlap == "allow" and "never overlapped" in calm.overlap_why


def test_retries_only_for_transient_statuses_the_history_shows() -> None:
    m = Metrics(exit_statuses={75: 4, 2: 1})
    assert plan_for(job(), m).retry_on == ()  # nothing configured: a failure is final
    p = plan_for(job(), m, transient=[75, 111])
    assert p.retry_on == (75,) and p.max_retries > 0 and "exit 75 x4" in p.retry_why
    none = plan_for(job(), Metrics(exit_statuses={2: 3}), transient=[75])
    assert none.retry_on == () and "none of the transient" in none.retry_why


def test_anacron_jobs_run_once_after_downtime() -> None:
    j = job()
    anac = CronJob(**{**{f: getattr(j, f) for f in j.__slots__}, "format": Format.ANACRONTAB})  # type: ignore[attr-defined]
    assert plan_for(anac).missed == "run-once"


def test_overrides_are_validated_and_named() -> None:
    opts = parse_policy_options(["j-1:overlap=replace", "retry_on=75,76"])
    assert opts == [("j-1", "overlap", "replace"), ("", "retry_on", "75,76")]
    p = plan_for(job(), overrides={"overlap": "replace", "retry_on": "75,76"})
    assert p.overlap == "replace" and "--policy overlap=replace" in p.overlap_why
    assert p.retry_on == (75, 76) and p.max_retries > 0
    with pytest.raises(PolicyError):
        parse_policy_options(["overlap"])
    with pytest.raises(PolicyError):
        plan_for(job(), overrides={"overlap": "sometimes"})


def test_visibility_timeout_above_every_hard_limit_and_deadline_matches_policies() -> None:
    jobs = [job()]
    plans = {"j-1": plan_for(job(), overrides={"time_limit": "50000"})}
    files, _ = render_project(jobs, package="p", timezone="UTC", dialect="debian", year=2026, plans=plans)  # type: ignore[arg-type]
    app = files["p/app.py"]
    vis = int(app.split('"visibility_timeout": ')[1].split("}")[0])
    assert vis > plans["j-1"].celery_limit > 50000 and "beat_cron_starting_deadline=120" in app
    plans = {"j-1": plan_for(job(), overrides={"missed": "catch-up"})}
    files, _ = render_project(jobs, package="p", timezone="UTC", dialect="debian", year=2026, plans=plans)  # type: ignore[arg-type]
    assert "beat_cron_starting_deadline=None" in files["p/app.py"]
    assert "Missed runs: catch-up. Why: set on the command line" in files["p/jobs/j_1.py"]


def test_latest_fire_and_missed_instants() -> None:
    t = datetime(2026, 3, 29, 1, 5, 0, 250000, tzinfo=UTC).timestamp()
    assert state.latest_fire("*/5 * * * *", "UTC", t) == datetime(2026, 3, 29, 1, 5, tzinfo=UTC).timestamp()
    assert state.latest_fire("*/5 * * * *", "UTC", t - 0.3 + 59) == t - 0.25  # still 01:05
    # Europe/Berlin's spring gap: cron runs a 02:30 job at the change (01:00 UTC)
    gap = datetime(2026, 3, 29, 1, 0, 20, tzinfo=UTC).timestamp()
    assert state.latest_fire("30 2 * * *", "Europe/Berlin", gap) == gap - 20
    lo = datetime(2026, 1, 1, 10, 0, tzinfo=UTC).timestamp()
    got = list(state.instants_between("* * * * *", "UTC", lo, lo + 300, cap=100))
    assert got == [lo + 60 * k for k in range(1, 5)]
    assert len(list(state.instants_between("* * * * *", "UTC", lo, lo + 3600, cap=10))) == 10


def test_backoff_has_jitter_within_bounds() -> None:
    rng = random.Random(1)
    ds = [state.backoff(30, 2, 3600, rng.random()) for _ in range(50)]
    assert all(60 <= d <= 120 for d in ds) and len(set(ds)) > 40
    assert state.backoff(30, 20, 3600, 1.0) == 3600


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs root's job")


@needs_root
def test_output_digest_length_and_split_tails_also_on_failure() -> None:
    spec = {"id": "t", "user": "root", "command": "echo out; echo err >&2; head -c 100000 /dev/zero; exit 4"}
    with pytest.raises(JobFailed) as info:
        run_job(spec)
    r = info.value.result
    body = b"out\nerr\n" + b"\0" * 100000
    assert r["output_bytes"] == len(body) and r["output_sha256"] == hashlib.sha256(body).hexdigest()
    assert r["stdout_tail"] is None  # merged, as cron mails it, unless asked
    with pytest.raises(JobFailed) as info:
        run_job({**spec, "split_output": True})
    r = info.value.result
    assert r["stderr_tail"] == "err\n" and r["stderr_bytes"] == 4
    assert r["stdout_bytes"] == 100004 and r["output_bytes"] == 100008
    assert r["stdout_sha256"] == hashlib.sha256(b"out\n" + b"\0" * 100000).hexdigest()


@needs_root
def test_large_stdin_is_fed_without_deadlock(tmp_path: Path) -> None:
    text = "x" * 300000 + "\n"
    res = run_job(
        {"id": "t", "user": "root", "command": f"cat > {tmp_path / 'in'}; echo done", "stdin": text}
    )
    assert res["output_tail"] == "done\n" and (tmp_path / "in").read_text() == text


def test_heartbeat_keeps_a_lock_past_its_expiry_and_only_the_owner_releases(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    import time

    from cronshift.runtime.lock import acquire, holder_info

    lease = acquire(redis_server.url, "hb-job", expiry=1.0)
    assert lease is not None and acquire(redis_server.url, "hb-job", expiry=1.0) is None
    try:
        time.sleep(2.5)  # well past the 1 s expiry: only the heartbeat keeps the key alive
        info = holder_info(redis_server.url, "hb-job")
        assert info["token"] == lease.token and 0 < info["pttl"] <= 1000 and not lease.lost
    finally:
        lease.release()
    assert holder_info(redis_server.url, "hb-job")["token"] is None


def test_an_instant_runs_once_and_each_dead_letter_replays_it_once(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Two replays of one dead letter sent at once (two operators, a repeated command) must not both run:
    the first to arrive takes the instant, the other is a duplicate; a replay can itself be replayed."""
    r = state.client(redis_server.url)
    job, at = f"claim-{os.getpid()}-{random.random()}", 1_800_000_000.0
    try:
        assert state.claim(r, job, at, "orig") is None
        assert state.claim(r, job, at, "orig") is None  # a retry or redelivery of the same message
        assert state.claim(r, job, at, "other") == "orig"  # a second message for the instant
        first, second = "orig-replay-aaaa1111", "orig-replay-bbbb2222"
        assert state.claim(r, job, at, first) is None
        assert state.claim(r, job, at, second) == "orig"  # the same dead letter replayed twice
        assert state.claim(r, job, at, first) is None  # the replay's own retry
        assert state.claim(r, job, at, "orig") == "orig"  # the dead original, delivered again
        again = first + "-replay-cccc3333"  # the replay failed for good too and is replayed in turn
        assert state.claim(r, job, at, again) is None
        assert state.claim(r, job, at, second + "-replay-dddd4444") == "orig"
        assert state.claim(r, job, at + 60, second) is None  # another instant is its own
    finally:
        r.delete(*r.keys(f"cronshift:claim:{job}:*"))
        r.close()


def test_generate_chooses_from_history_unless_told_not_to(tmp_path: Path, debian_root: Path) -> None:
    from tests.test_generate import run as gen

    out = tmp_path / "h"
    code, _, err = gen(
        "sync-orders", "--root", str(debian_root), "--out", str(out), "--now", "2026-03-01T00:00"
    )
    assert code == 0, err
    mod = (out / "cronjobs/jobs/sync_orders_1cbf50a2.py").read_text()
    assert "Why: p99 runtime 6.4 min over 698 run(s) in the history" in mod
    out2 = tmp_path / "n"
    args = ["sync-orders", "--root", str(debian_root), "--out", str(out2), "--no-history"]
    code, _, err = gen(*args, "--now", "2026-03-01T00:00", "--policy", "overlap=replace", "--beat", "redbeat")
    assert code == 0, err
    mod = (out2 / "cronjobs/jobs/sync_orders_1cbf50a2.py").read_text()
    assert "no runtime history" in mod and "Overlap policy: replace. Why: set on the command line" in mod
    assert "redbeat.RedBeatScheduler" in (out2 / "cronjobs/app.py").read_text()
    code, _, err = gen(*args, "--policy", "overlap=often")
    assert code == 2 and "overlap=often" in err


def test_redbeat_stores_and_loads_a_cronsim_schedule(redis_server: RedisServer) -> None:  # noqa: F811
    from celery import Celery
    from redbeat import RedBeatSchedulerEntry

    from cronshift.runtime.schedules import cronsim_schedule, enable_redbeat

    enable_redbeat()
    app = Celery("rb", broker=redis_server.url)
    app.conf.update(
        redbeat_redis_url=redis_server.url, redbeat_key_prefix="rbtest:", timezone="Europe/Berlin"
    )
    sched = cronsim_schedule("30 2 * * *", "Europe/Berlin")
    entry = RedBeatSchedulerEntry("gap", "x.gap", sched, app=app)
    entry.save()
    loaded = RedBeatSchedulerEntry.from_key(entry.key, app=app)
    assert loaded.schedule == sched and isinstance(loaded.schedule, cronsim_schedule)


def test_a_hung_redis_lets_the_lock_expire_and_the_lease_knows_it(tmp_path: Path) -> None:
    """Redis paused longer than the expiry: the key is gone when it resumes, and the holder sees the loss
    (recorded as extra.lock_lost) instead of renewing someone else's lock."""
    import time

    from cronshift.runtime.lock import acquire, holder_info
    from tests.support.redis_server import start_redis

    server = start_redis(tmp_path / "r")
    try:
        lease = acquire(server.url, "hung-job", expiry=1.0)
        assert lease is not None
        server.pause()
        time.sleep(2.0)
        server.resume()
        deadline = time.monotonic() + 30
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.lost and holder_info(server.url, "hung-job")["token"] is None
        newcomer = acquire(server.url, "hung-job", expiry=1.0)
        assert newcomer is not None
        lease.release()  # not the owner any more: must not free the newcomer's lock
        assert holder_info(server.url, "hung-job")["token"] == newcomer.token
        newcomer.release()
    finally:
        server.stop()
