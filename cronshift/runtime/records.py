"""Run records from generated tasks: written to the cronshift ledger when one is configured.

CRONSHIFT_LEDGER (a SQLite store path) or CRONSHIFT_LEDGER_REDIS (a Redis URL) on the worker turns it on;
CRONSHIFT_LEDGER_REDIS_CONFIG names a file holding that URL instead (private to the worker's user or root,
as `record --redis-config`), so the password of the runtime's Redis ACL user is in no environment or unit
file. CRONSHIFT_ROOT names the root the ledger belongs to (default '/'). Without them nothing is written.
On Redis the runtime's records go to their own stream (ledger.resp.RUNTIME_STREAM): give the runtime an
ACL user that alone may write it, and readers take `source` from the stream, never from the record.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from cronshift.ledger.resp import NotPrivate, read_private
from cronshift.model import RunRecord


def record_from_result(spec: dict[str, Any], res: dict[str, Any], extra: dict[str, str]) -> RunRecord:
    """stdout_* carry the merged stream (as cron mails it; extra["output"] = "merged") unless the run kept
    stdout and stderr apart, when they carry each stream and extra["output_sha256"] the merged one."""
    start = float(res["start"])
    split = res.get("stderr_sha256") is not None
    extra = dict(extra)
    if split:
        extra["output_sha256"] = str(res.get("output_sha256"))
    elif res.get("output_sha256"):
        extra["output"] = "merged"
    return RunRecord(
        job_id=spec["id"],
        source="celery",
        start=start,
        end=start + float(res["duration"]),
        exit_status=res.get("exit_status"),
        signal=res.get("signal"),
        host=socket.gethostname(),
        user=spec["user"],
        pid=res.get("pid"),
        command=spec["command"],
        scheduled_for=res.get("scheduled_for"),
        stdout_bytes=res.get("stdout_bytes") if split else res.get("output_bytes"),
        stderr_bytes=res.get("stderr_bytes") if split else None,
        stdout_sha256=res.get("stdout_sha256") if split else res.get("output_sha256"),
        stderr_sha256=res.get("stderr_sha256") if split else None,
        stdout_tail=(res.get("stdout_tail") if split else res.get("output_tail")) or "",
        stderr_tail=(res.get("stderr_tail") if split else "") or "",
        extra=extra,
    )


def ledger_retention() -> tuple[float, int] | None:
    """CRONSHIFT_LEDGER_RETENTION="MAX_AGE_SECONDS:MAX_LENGTH" trims a Redis ledger stream as it grows
    (a generated Streams project sets it from its RETENTION); unset or malformed: no trimming."""
    raw = os.environ.get("CRONSHIFT_LEDGER_RETENTION", "")
    age, _, length = raw.partition(":")
    try:
        return float(age), int(length)
    except ValueError:
        return None


class LedgerConfigError(RuntimeError):
    """CRONSHIFT_LEDGER_REDIS_CONFIG names a file that is missing, shared or not a plain file."""


def ledger_target() -> tuple[str | None, str | None]:
    """(SQLite store, Redis URL) from the worker's environment; the URL may be read from
    CRONSHIFT_LEDGER_REDIS_CONFIG. Raises LedgerConfigError for a config file others could read or swap."""
    store, url = os.environ.get("CRONSHIFT_LEDGER") or None, os.environ.get("CRONSHIFT_LEDGER_REDIS") or None
    path = os.environ.get("CRONSHIFT_LEDGER_REDIS_CONFIG")
    if path and not url:
        url = read_private_url(path)
    return store, url


def read_private_url(path: str) -> str:
    """The URL in `path`: a regular file (not a symlink) of root or this user, no group/other access."""
    try:
        url = read_private(path).decode("utf-8").strip()
    except NotPrivate:
        raise LedgerConfigError(
            f"CRONSHIFT_LEDGER_REDIS_CONFIG {path}: not a private file (0600) of root or this user"
        ) from None
    except OSError as e:
        raise LedgerConfigError(f"CRONSHIFT_LEDGER_REDIS_CONFIG {path}: {e.strerror}") from None
    if not url:
        raise LedgerConfigError(f"CRONSHIFT_LEDGER_REDIS_CONFIG {path}: empty")
    return url


def write_run(rec: RunRecord) -> bool:
    """Add `rec` to the configured ledger; False when none is configured."""
    store, url = ledger_target()
    if not store and not url:
        return False
    from cronshift.ledger.store import open_ledger  # lazily: the ledger is optional at run time

    with open_ledger(Path(os.environ.get("CRONSHIFT_ROOT", "/")), store=store, redis_url=url) as ledger:
        retention = ledger_retention() if url and not store else None
        if retention is None:
            ledger.add_run(rec)
        else:
            ledger.add_run(rec, retention)
    return True
