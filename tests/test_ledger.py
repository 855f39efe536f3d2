"""The run ledger: what stages store there comes back, on SQLite and on a real Redis, spool included."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronshift.ledger import spool
from cronshift.ledger.store import Ledger, open_ledger, record_to_doc
from cronshift.model import RunRecord
from tests.support.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]


@pytest.fixture(params=["sqlite", "redis"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        led = open_ledger(tmp_path)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        led = open_ledger(tmp_path, redis_url=server.url)
    try:
        yield led
    finally:
        led.close()


def rec(job: str, start: float, **kw) -> RunRecord:
    return RunRecord(job_id=job, source="celery", start=start, end=start + 2.5, **kw)


def test_runs_round_trip_with_filters(ledger: Ledger) -> None:
    job = f"j-{time.time_ns()}"  # the session Redis is shared: keep to this test's job
    ledger.add_run(rec(job, 200.0, exit_status=1, stdout_tail="boom\n", extra={"attempt": "2"}))
    ledger.add_run(rec(job, 100.0, signal=9, host="h1", user="www-data", pid=42, stdout_bytes=5))
    ledger.add_run(rec(job + "-other", 150.0, exit_status=0))
    runs = list(ledger.runs(job_id=job))
    assert [r.start for r in runs] == [100.0, 200.0]
    first, second = runs
    assert (first.signal, first.host, first.user, first.pid, first.stdout_bytes) == (
        9,
        "h1",
        "www-data",
        42,
        5,
    )
    assert first.duration == 2.5 and first.failed is True
    assert second.exit_status == 1 and second.stdout_tail == "boom\n" and second.extra["attempt"] == "2"
    assert [r.start for r in ledger.runs(job_id=job, since=150.0)] == [200.0]
    assert [r.start for r in ledger.runs(job_id=job, until=150.0)] == [100.0]


def test_documents_by_kind_and_key(ledger: Ledger) -> None:
    kind = f"edit-{time.time_ns()}"
    assert ledger.get(kind, "a") is None
    ledger.put(kind, "job1:2024", {"before": "* * * * * x", "n": 1})
    ledger.put(kind, "job1:2025", {"n": 2})
    ledger.put(kind, "job2:2024", {"n": 3})
    ledger.put(kind, "job1:2024", {"n": 4})  # replaces
    assert ledger.get(kind, "job1:2024") == {"n": 4}
    assert ledger.list(kind, "job1:") == [{"n": 4}, {"n": 2}]
    assert len(ledger.list(kind)) == 3
    assert ledger.list("other-" + kind) == []


def test_sqlite_store_is_wal_and_versioned(tmp_path: Path) -> None:
    open_ledger(tmp_path).close()
    db = sqlite3.connect(tmp_path / "var/lib/cronshift/ledger.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        open_ledger(tmp_path)


def test_spooled_runs_are_drained_once_and_damaged_lines_skipped(tmp_path: Path) -> None:
    store = str(tmp_path / "var/lib/cronshift/ledger.db")
    key = spool.spool_key(os.path.abspath(store))
    a, b = (record_to_doc(rec("job", t)) for t in (1.0, 2.0))
    line_a = _line(a)
    spool.append(str(tmp_path), key, line_a[:40])  # cut short by a full disk, then glued to the next
    spool.append(str(tmp_path), key, line_a + _line(b))
    with open_ledger(tmp_path) as led:
        assert [r.start for r in led.runs()] == [1.0, 2.0]
        assert led.drain_spool() == 0
    assert spool.pending(str(tmp_path), key) == []


def test_a_reader_sees_spooled_runs_even_when_it_cannot_drain(tmp_path: Path) -> None:
    store = tmp_path / "var/lib/cronshift/ledger.db"
    with open_ledger(tmp_path) as led:
        led.add_run(rec("job", 1.0))
        spool.append(str(tmp_path), spool.spool_key(str(store)), _line(record_to_doc(rec("job", 5.0))))
        locker = sqlite3.connect(store, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another writer holds the store
        led.busy_ms = 50
        try:
            assert [r.start for r in led.runs()] == [1.0, 5.0]
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert led.drain_spool() == 1


def _line(doc: dict) -> bytes:
    import json

    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def test_each_backend_is_the_whole_ledger_interface(ledger: Ledger) -> None:
    """One Ledger protocol, two backends: each serves every method with the protocol's signature, so a
    caller never asks which store it has."""
    import inspect

    from cronshift.ledger.store import RedisLedger, SqliteLedger

    assert type(ledger) in (SqliteLedger, RedisLedger)
    for name, member in vars(Ledger).items():
        if (callable(member) and not name.startswith("_")) or name in ("__enter__", "__exit__"):
            assert inspect.signature(getattr(type(ledger), name)) == inspect.signature(member), name
    for attr in ("root", "store", "redis_url", "skipped"):
        assert hasattr(ledger, attr), attr
