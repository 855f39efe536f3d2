"""Dead letters: runs that failed for good (retries used up, not retryable, or delivered too often).

They go to the cronshift ledger as documents of kind "dead-letter" (CRONSHIFT_LEDGER or
CRONSHIFT_LEDGER_REDIS, as run records do); with no ledger configured, to the policy state Redis, so a
failure is never silent. `cronshift dead-letters` lists them and replays one through the generated project.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from cronshift.runtime.records import ledger_target

KIND = "dead-letter"

__all__ = ["KIND", "dead_letter_id", "write_dead_letter"]


def dead_letter_id(created: float, task_id: str) -> str:
    """Sortable by time, unique per task message: `<unix seconds>-<task id>`."""
    return f"{int(created):010d}-{task_id or 'notask'}"


def write_dead_letter(doc: dict[str, Any], state_url: str | None) -> str:
    """Store `doc` (it must carry `created` and `task_id`); return where it went."""
    from cronshift.ledger.store import open_ledger  # lazily: the ledger is optional at run time

    doc = {**doc, "host": socket.gethostname(), "status": "dead"}
    doc["id"] = dead_letter_id(float(doc["created"]), str(doc.get("task_id") or ""))
    store, url = ledger_target()
    if not store and not url:
        if state_url is None:
            raise RuntimeError(f"dead letter {doc['id']} for {doc.get('job_id')} has nowhere to go")
        url = state_url
    with open_ledger(Path(os.environ.get("CRONSHIFT_ROOT", "/")), store=store, redis_url=url) as ledger:
        ledger.put(KIND, doc["id"], doc)
    return store or url or ""
