"""Run records from generated tasks: written to the cronshift ledger when one is configured.

CRONSHIFT_LEDGER (a SQLite store path) or CRONSHIFT_LEDGER_REDIS (a Redis URL) on the worker turns it on;
CRONSHIFT_ROOT names the root the ledger belongs to (default '/'). Without them nothing is written.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from cronshift.model import RunRecord


def record_from_result(spec: dict[str, Any], res: dict[str, Any], extra: dict[str, str]) -> RunRecord:
    start = float(res["start"])
    return RunRecord(
        job_id=spec["id"],
        source="celery",
        start=start,
        end=start + float(res["duration"]),
        exit_status=res.get("exit_status"),
        signal=res.get("signal"),
        host=socket.gethostname(),
        user=spec["user"],
        command=spec["command"],
        scheduled_for=res.get("scheduled_for"),
        stdout_bytes=res.get("output_bytes"),
        stdout_tail=res.get("output_tail", ""),
        extra=extra,
    )


def write_run(rec: RunRecord) -> bool:
    """Add `rec` to the configured ledger; False when none is configured."""
    store, url = os.environ.get("CRONSHIFT_LEDGER"), os.environ.get("CRONSHIFT_LEDGER_REDIS")
    if not store and not url:
        return False
    from cronshift.history.ledger import open_ledger  # lazily: the ledger is optional at run time

    with open_ledger(Path(os.environ.get("CRONSHIFT_ROOT", "/")), store=store, redis_url=url) as ledger:
        ledger.add_run(rec)
    return True
