"""The SQLite ledger's schema and the one statement that moves spooled JSON lines into it.

Shared by the wrapper (`cronshift record`, which must stay light: nothing here imports beyond sqlite3, and
only when called) and `ledger.py`. SQLite parses the spooled JSON itself (json_extract), so the wrapper
never imports the json module.
"""

import os

VERSION = 1

# model.RunRecord's fields, after the spool uid. Spelled out, not derived: importing the model (dataclasses)
# would cost the wrapper's drain ~13 ms; tests/test_record.py holds this, the table and the wrapper's JSON
# to the model field for field.
RUN_COLUMNS = (
    "uid",
    "job_id",
    "source",
    "start",
    "end",
    "exit_status",
    "signal",
    "host",
    "user",
    "pid",
    "command",
    "scheduled_for",
    "stdout_bytes",
    "stderr_bytes",
    "stdout_sha256",
    "stderr_sha256",
    "stdout_tail",
    "stderr_tail",
    "extra",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    uid TEXT PRIMARY KEY,
    job_id TEXT,
    source TEXT NOT NULL,
    start REAL NOT NULL,
    "end" REAL,
    exit_status INTEGER,
    signal INTEGER,
    host TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    command TEXT NOT NULL DEFAULT '',
    scheduled_for REAL,
    stdout_bytes INTEGER,
    stderr_bytes INTEGER,
    stdout_sha256 TEXT,
    stderr_sha256 TEXT,
    stdout_tail TEXT NOT NULL DEFAULT '',
    stderr_tail TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_job_start ON runs (job_id, start);
CREATE INDEX IF NOT EXISTS runs_start ON runs (start);
CREATE TABLE IF NOT EXISTS docs (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
"""

_COLS = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
# A spooled record's user is the spool file's owner (:user, from fstat) and its source is "record": never
# what the record itself claims (any local user can write any JSON into their own spool).
_FROM_JSON = ", ".join(
    "coalesce(json_extract(j, '$.extra'), '{}')"
    if c == "extra"
    else "'record'"
    if c == "source"
    else ":user"
    if c == "user"
    # NOT NULL columns: a record without them is still a run (INSERT OR IGNORE would drop it silently)
    else f"coalesce(json_extract(j, '$.{c}'), '')"
    if c in ("host", "command", "stdout_tail", "stderr_tail")
    else f"json_extract(j, '$.{c}')"
    for c in RUN_COLUMNS
)
INSERT_FROM_JSON = (
    f"INSERT OR IGNORE INTO runs ({_COLS}) SELECT {_FROM_JSON} FROM (SELECT :j AS j) "
    # CASE, not AND: SQLite does not promise to test json_valid before json_extract raises on bad JSON.
    "WHERE CASE WHEN json_valid(j) THEN json_extract(j, '$.uid') IS NOT NULL "
    "AND json_extract(j, '$.start') IS NOT NULL ELSE 0 END"
)
INSERT_ROW = f"INSERT OR IGNORE INTO runs ({_COLS}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})"


def connect(path: str, busy_ms: int, create: bool = True):  # -> sqlite3.Connection
    """Open (and if needed create or upgrade) the store: WAL so readers never block the many writers,
    busy_timeout so writers queue instead of failing at once, synchronous=NORMAL (a power cut may lose the
    last commits, never corrupt the file; the spool line is already on disk)."""
    import sqlite3  # deferred: ~10 ms the wrapper pays only when it drains (see the module docstring)

    if not create and not os.path.exists(path):
        raise FileNotFoundError(2, "no ledger", path)
    # Job output and crontab secrets end up here: the file (and SQLite's -wal/-shm, which copy its mode)
    # is 0600 from creation, in a 0700 folder.
    private_dir(os.path.dirname(path) or ".")
    old = os.umask(0o077)
    try:
        if create:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        conn = _connect(sqlite3, path, busy_ms)
    finally:
        os.umask(old)
    return conn


def private_dir(path: str) -> None:
    """Create `path` (and missing parents) 0700 with umask 077 in force, so nothing is ever readable by
    others, not even for a moment. An existing folder is left as it is."""
    if os.path.isdir(path):
        return
    old = os.umask(0o077)
    try:
        os.makedirs(path, 0o700, exist_ok=True)
    finally:
        os.umask(old)


def _connect(sqlite3, path: str, busy_ms: int):  # -> sqlite3.Connection
    conn = sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise RuntimeError(f"{path}: ledger schema {version} is newer than this cronshift ({VERSION})")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if version < VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] < VERSION:  # lost no race
                    for stmt in SCHEMA.split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
                    conn.execute(f"PRAGMA user_version = {VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    except BaseException:
        conn.close()
        raise
    return conn


def insert_lines(conn, lines: list[bytes], user: str) -> int:
    """Store spooled record lines, written by `user` (the spool file's owner), in one transaction; return
    how many were new."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = conn.total_changes
        rows = [{"j": ln.decode("utf-8", "replace"), "user": user} for ln in lines]
        conn.executemany(INSERT_FROM_JSON, rows)
        added = conn.total_changes - before
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return added
