"""HA beat (redbeat): a send is labelled with the instant the schedule found due, and a standby beat takes
over within the time the generated app.py states, losing and doubling no instant, after a SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import crontab
from celery.signals import beat_init, before_task_publish

import cronshift.runtime.schedules as schedules_mod
from cronshift.runtime.schedules import cronsim_schedule, due_instant_of, stamp_from_beat_entries
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture
from tests.test_policies_celery import Project, imported, kill, make_project, wait_for  # noqa: F401


def _due(scheds: list[Any], last: datetime | None, now: float) -> float:
    got = due_instant_of(scheds, last, datetime.fromtimestamp(now, UTC))
    assert got is not None
    return got.timestamp()


def test_a_late_send_is_labelled_with_the_due_instant_not_the_next_one() -> None:
    """Through the schedule objects generated app.py gives beat: a stock crontab, and the class."""
    every = crontab(app=Celery("due", set_as_current=False))  # an app in UTC, Celery's default
    t = datetime(2026, 5, 1, 10, 0, tzinfo=UTC).timestamp()
    last = datetime.fromtimestamp(t - 59.5, UTC)  # the 09:59 run was sent half a second after its instant
    # Sent 59.3 s late (a takeover, a slow tick): still the 10:00 run, not 10:01's.
    assert _due([every], last, t + 59.3) == t
    assert _due([every], last.replace(tzinfo=None), t + 59.3) == t  # naive = UTC
    assert _due([every], None, t + 59.3) == t  # never sent: the latest due instant
    assert _due(
        [cronsim_schedule("30 2 * * *", "Europe/Berlin")], datetime(2026, 3, 28, 12, tzinfo=UTC), t
    ) == (
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()  # the spring gap: cron runs it at 03:00 CEST
    )


def test_beat_process_stamps_the_due_instant_when_it_sends_late(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """A real celery beat Scheduler sending through a real Redis broker, 90 s or more after the instant
    that made the entry due (as after a takeover): the message carries that instant, not the latest one.
    The stamping is what generated app.py installs (`stamp_from_beat_entries`), read from its beat entry."""
    app = Celery("stamp_" + str(os.getpid()), broker=redis_server.url, set_as_current=False)
    task = "stamp_test.tick"
    app.conf.beat_schedule = {"tick": {"task": task, "schedule": crontab()}}
    previous = schedules_mod._stamping_app
    stamp_from_beat_entries(app)
    sent: list[Any] = []

    def capture(sender: str | None = None, body: Any = None, **_: Any) -> None:
        if sender == task:
            sent.append(dict(body[1]))

    before_task_publish.connect(capture, weak=False, dispatch_uid="test-capture")

    class Service:
        scheduler = Scheduler(app, lazy=True)

    try:
        beat_init.send(sender=Service)
        last = time.time() - 150
        due = (last // 60 + 1) * 60  # the first instant after the last run: what makes the entry due
        entry = ScheduleEntry("tick", task, last_run_at=datetime.fromtimestamp(last, UTC),
                              schedule=crontab(), app=app)  # fmt: skip
        Service.scheduler.apply_async(entry, producer=None, advance=False)
        assert sent and sent[-1]["scheduled_for"] == due, (sent, due)
    finally:
        before_task_publish.disconnect(dispatch_uid="test-capture")
        # beat_init reached every listener in this process: this process is no beat, so later tests'
        # sends must not be stamped as beat's (under xdist, any test file may follow this one here)
        schedules_mod._in_beat = False
        schedules_mod._stamping_app = previous


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the generated jobs run as root; the worker must be root")
def test_standby_beat_takes_over_within_the_stated_time_after_the_leader_is_sigkilled(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    imported: Callable[[Project], Project],  # noqa: F811
) -> None:
    """Real minutes (about 3): the leader is SIGKILLed two seconds before an instant; the standby takes
    over and sends that instant and the next, each once, labelled with its own instant."""
    p = imported(
        make_project(
            tmp_path,
            {"tick": "echo tick"},
            {},
            redis_server.url,
            extra_args=["--beat", "redbeat"],
            schedule="* * * * *",
        )
    )
    app_py = (p.out / p.pkg / "app.py").read_text()
    lock_timeout = int(re.search(r"redbeat_lock_timeout=(\d+)", app_py).group(1))  # type: ignore[union-attr]
    loop = int(re.search(r"beat_max_loop_interval=(\d+)", app_py).group(1))  # type: ignore[union-attr]
    assert f"within redbeat_lock_timeout +\n    # beat_max_loop_interval = {lock_timeout + loop} s" in app_py
    p.worker("ha", concurrency=2)
    beats = [p.start("beat", "--loglevel", "info", name=f"beat{k}") for k in (1, 2)]
    ran = lambda: sorted(r.scheduled_for for r in p.runs("tick") if not r.extra.get("skipped"))  # noqa: E731
    wait_for(ran, "a first beat run", 150)
    logs = [tmp_path / f"beat{k}.log" for k in (1, 2)]
    leader = wait_for(lambda: [k for k in (0, 1) if "Acquired lock" in logs[k].read_text()], "a leader")[0]
    now = time.time()
    time.sleep((58 - now % 60) % 60)  # the worst moment: the next instant falls inside the takeover
    killed_at = time.time()
    kill(beats[leader], signal.SIGKILL)
    standby = logs[1 - leader]
    wait_for(lambda: "Acquired lock" in standby.read_text(), "the standby took over", 120)
    takeover = time.time() - killed_at
    print(f"takeover after SIGKILL: {takeover:.1f} s (stated bound {lock_timeout + loop} s)")
    assert takeover <= lock_timeout + loop + 5  # + polling slack of this test
    next_instant = (killed_at // 60 + 1) * 60
    wait_for(lambda: next_instant + 60 in ran(), "the instant after the takeover", 150)
    got = ran()
    assert len(got) == len(set(got)), f"an instant ran twice: {got}"
    assert got == [got[0] + 60 * i for i in range(len(got))], f"an instant was lost: {got}"
    assert next_instant in got
    dup = [r.extra.get("skipped") for r in p.runs("tick") if r.extra.get("skipped")]
    assert not dup, dup  # nothing mislabelled as a duplicate
