"""The drain: spooled run records into the SQLite ledger.

The wrapper (`cronshift record`) drains past a threshold and the ledger drains before it is read, so the one
drain lives here, below both; the wrapper imports it only when it drains (sqlite3 is slow to import).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cronshift.ledger import spool
from cronshift.ledger.schema import connect, insert_lines


def drain_to_sqlite(
    root: str,
    store: str,
    busy_ms: int,
    refused: list[str] | None = None,
    complain: Callable[[str, str], None] | None = None,
) -> int:
    """Move every spooled record for `store` into it; return how many were new. Raises on store failure,
    leaving unstored records in claimed spool files that the next drain adopts. A spool file that is not
    to be trusted (symlink, foreign owner) is left alone: added to `refused`, or else told to `complain`
    (the wrapper's syslog line)."""
    key = spool.spool_key(os.path.abspath(store))
    paths = spool.pending(root, key)
    gone = spool.lost(root, key)
    if not paths and not gone:
        return 0
    conn = connect(store, busy_ms)
    added = 0
    try:
        for path in paths:
            try:
                got = spool.claim(path)
            except OSError as e:  # Refused (untrusted), or another user's file we may not move
                if refused is None:
                    if complain is not None:
                        complain(root, f"{e.filename}: {e.strerror}; not drained")
                elif isinstance(e, spool.Refused):
                    refused.append(f"{e.filename}: {e.strerror}")
                continue
            if got is None:
                continue
            claimed, data, uid = got
            added += insert_lines(conn, spool.split_records(data), spool.user_name(uid))
            spool.release(claimed)
        for path in gone:  # after the finished records: a real end wins over "lost"
            try:
                data, uid = spool.read_trusted(path)
            except OSError as e:
                if isinstance(e, spool.Refused) and refused is not None:
                    refused.append(f"{e.filename}: {e.strerror}")
                continue
            added += insert_lines(conn, spool.split_records(data), spool.user_name(uid))
            spool.release(path)
    finally:
        conn.close()
    return added
