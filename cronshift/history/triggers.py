"""Trigger records (one per event-started run, written by cronshift.runtime.coalesce) read back for `show`:
how many events each run covered, and the time from the first event to the job's command start."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cronshift.ledger import store as ledger_mod
from cronshift.model import RunRecord


def trigger_records(
    root: Path, where: str | None, job_id: str, runs: Sequence[RunRecord] = (), n: int = 20
) -> list[dict[str, Any]]:
    """The last `n` trigger records of `job_id` in the ledger at `where` (a store path or redis:// URL),
    each with `run_start` and `freshness` (seconds from its first event) when its run is in `runs`."""
    if where is None:
        return []
    redis = where if where.startswith(("redis://", "rediss://", "unix://")) else None
    try:
        with ledger_mod.open_ledger(root, store=None if redis else where, redis_url=redis) as led:
            docs = led.list("trigger", prefix=job_id + ":")
    except (OSError, sqlite3.Error, RuntimeError, ValueError):
        return []
    except Exception as exc:  # redis-py's errors: show goes on without them
        if type(exc).__module__.startswith("redis"):
            return []
        raise
    started = {r.extra.get("payload_id"): r.start for r in runs if r.extra.get("payload_id")}
    out = []
    for d in docs[-n:]:
        start = started.get(d.get("id"))
        first = d.get("first_event")
        out.append(
            {
                **d,
                "run_start": start,
                "freshness": None if start is None or first is None else round(start - float(first), 3),
            }
        )
    return out
