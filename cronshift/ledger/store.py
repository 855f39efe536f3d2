"""The run ledger: one interface over SQLite (one host) and Redis Streams (a fleet), plus the spool.

Wrappers mostly append to the spool (see spool.py) and drain it into the store in batches, so readers here
drain it first (or, when they may not write, read it beside the store): a reader always sees every run.
Besides runs, later stages keep small JSON documents by (kind, key): edit records, observations, dead
letters. Records read back carry their spool uid in `extra["uid"]`, so stages can dedupe across backends.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cronshift.ledger import schema as ledger_schema
from cronshift.ledger import spool
from cronshift.ledger.drain import drain_to_sqlite
from cronshift.ledger.resp import RUNTIME_STREAM, STREAM
from cronshift.model import RunRecord

DEFAULT_STORE = "var/lib/cronshift/ledger.db"
DOC_PREFIX = "cronshift:doc:"
_FIELDS = [c for c in ledger_schema.RUN_COLUMNS if c not in ("uid", "extra")]
RUNTIME_SOURCES = frozenset({"celery", "streams"})  # written to RUNTIME_STREAM, trusted only from there


def record_to_doc(rec: RunRecord, uid: str | None = None) -> dict[str, Any]:
    """The spool/stream JSON shape of a record (the one `cronshift record` writes)."""
    extra = dict(rec.extra)
    uid = uid or extra.pop("uid", None) or os.urandom(16).hex()
    doc: dict[str, Any] = {"cronshift_run": 1, "uid": uid}
    doc |= {f: getattr(rec, f) for f in _FIELDS}
    doc["extra"] = extra
    return doc


def doc_to_record(doc: dict[str, Any]) -> RunRecord:
    extra = doc.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    extra = {str(k): str(v) for k, v in extra.items()}
    if doc.get("uid"):
        extra["uid"] = doc["uid"]
    fields = {f: doc.get(f) for f in _FIELDS}
    for text in ("host", "user", "command", "stdout_tail", "stderr_tail"):
        fields[text] = fields[text] or ""
    fields["source"] = fields["source"] or "record"
    for name in ("stdout", "stderr"):  # the lossless tail, where the text one would drop bytes (NUL)
        raw = extra.get(f"{name}_tail_b64")
        if raw:
            fields[f"{name}_tail"] = base64.b64decode(raw).decode("utf-8", "replace")
    return RunRecord(**fields, extra=extra)


def argv_bytes(rec: RunRecord) -> list[bytes] | None:
    """The exact argument bytes of a wrapped command whose text form had to escape some."""
    raw = rec.extra.get("argv_b64")
    return base64.b64decode(raw).split(b"\0") if raw else None


def _in_window(r: RunRecord, job_id: str | None, since: float | None, until: float | None) -> bool:
    return (
        (job_id is None or r.job_id == job_id)
        and (since is None or r.start >= since)
        and (until is None or r.start < until)
    )


class Ledger:
    """Run records and small documents, in SQLite (`store`, default under `root`) or Redis (`redis_url`)."""

    def __init__(self, root: Path, store: str | None = None, redis_url: str | None = None) -> None:
        self.root = str(root)
        self.redis_url = redis_url
        self.store = None if redis_url else os.path.abspath(store or os.path.join(self.root, DEFAULT_STORE))
        self.key = spool.spool_key(redis_url or self.store or "")
        self.busy_ms = 5000  # how long the app waits for a store many wrappers are writing to
        self._db: Any = None
        self._redis: Any = None
        self._redis_errors: tuple[type[Exception], ...] = ()
        if redis_url:
            import redis  # the app's path may pay for redis-py; the wrapper never does

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
            self._redis_errors = (redis.RedisError,)
        else:
            assert self.store is not None
            _tighten_default(self.root, self.store)
            self._db = ledger_schema.connect(self.store, busy_ms=self.busy_ms)
            # Never fail a whole read on one row: text that is not UTF-8 (an older wrapper stored raw
            # arguments) comes back with U+FFFD instead of raising for every row after it.
            self._db.text_factory = lambda b: b.decode("utf-8", "replace")
        self.skipped: list[str] = []  # "<where>: <why>" for each record a read could not use

    # -- runs -----------------------------------------------------------------------------------------
    def add_run(self, rec: RunRecord, retention: tuple[float, int] | None = None) -> None:
        """`retention` (max age in seconds, max length) trims the Redis stream as it grows."""
        doc = record_to_doc(rec)
        if self._redis is not None:
            fields = {"record": json.dumps(doc, separators=(",", ":"))}
            stream = RUNTIME_STREAM if rec.source in RUNTIME_SOURCES else STREAM
            if retention is None:
                self._redis.xadd(stream, fields)
                return
            age, maxlen = retention
            pipe = self._redis.pipeline(transaction=False)
            pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
            pipe.xtrim(stream, minid=f"{int((time.time() - age) * 1000)}-0", approximate=False)
            pipe.execute()
            return
        row = [doc[c] for c in ledger_schema.RUN_COLUMNS[:-1]] + [json.dumps(doc["extra"])]
        self._db.execute(ledger_schema.INSERT_ROW, row)

    def runs(
        self, job_id: str | None = None, since: float | None = None, until: float | None = None
    ) -> Iterator[RunRecord]:
        """Runs in start order. Spooled runs are drained first, or read in place if the store refuses."""
        try:
            self.drain_spool()
            waiting: list[RunRecord] = []
        except (OSError, RuntimeError, sqlite3.Error, *self._redis_errors):
            waiting = [r for r in self._spooled() if _in_window(r, job_id, since, until)]
        if self._redis is not None:
            found = {
                r.extra.get("uid"): r for r in self._stream_runs() if _in_window(r, job_id, since, until)
            }
        else:
            found = {r.extra.get("uid"): r for r in self._sqlite_runs(job_id, since, until)}
        for r in waiting:
            found.setdefault(r.extra.get("uid"), r)
        yield from sorted(found.values(), key=lambda r: (r.start, r.extra.get("uid", "")))

    def _skip(self, where: str, why: object) -> None:
        self.skipped.append(f"{where}: {why}")

    def _sqlite_runs(self, job_id: str | None, since: float | None, until: float | None) -> list[RunRecord]:
        where, args = [], []
        for cond, value in (("job_id = ?", job_id), ("start >= ?", since), ("start < ?", until)):
            if value is not None:
                where.append(cond)
                args.append(value)
        cols = ", ".join(f'"{c}"' for c in ledger_schema.RUN_COLUMNS)
        sql = f"SELECT {cols} FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        out = []
        for row in self._db.execute(sql + " ORDER BY start", args):
            doc = dict(zip(ledger_schema.RUN_COLUMNS, row, strict=True))
            try:
                out.append(doc_to_record(doc))
            except (ValueError, TypeError) as e:  # one damaged row: skip it, say which, keep the rest
                self._skip(f"{self.store}: run {doc.get('uid')}", e)
        return out

    def _stream_runs(self) -> Iterator[RunRecord]:
        """Both streams. The key says who wrote an entry (Redis ACLs decide who may write which key):
        only RUNTIME_STREAM's entries may be runtime runs; every entry of the wrappers' stream is read as a
        wrapper's record (source "record"), a different claim kept in extra["claimed_source"]."""
        for stream in (STREAM, RUNTIME_STREAM):
            last = "-"
            while True:
                batch = self._redis.xrange(stream, min=last, max="+", count=1000)
                for _entry_id, fields in batch:
                    raw = fields.get(b"record")
                    if raw is not None:
                        try:
                            yield _from_stream(stream, json.loads(raw))
                        except (ValueError, TypeError, AttributeError) as e:  # foreign or damaged: not fatal
                            self._skip(f"{stream} entry {_entry_id.decode()}", e)
                if len(batch) < 1000:
                    break
                last = "(" + batch[-1][0].decode()

    def _spooled(self) -> list[RunRecord]:
        """Records still waiting in spools we may read, with the same trust rules as a drain."""
        out = []
        for path in spool.pending(self.root, self.key):
            try:
                data, uid = spool.read_trusted(path)
            except OSError as e:
                if isinstance(e, spool.Refused):
                    self._skip(path, e.strerror)
                continue
            for line in spool.split_records(data):
                try:
                    out.append(_spooled_record(json.loads(line), uid))
                except (ValueError, TypeError) as e:
                    self._skip(path, e)
        return out

    def drain_spool(self) -> int:
        """Move spooled records into the store; return how many were new. Raises if the store refuses."""
        if self._redis is None:
            assert self.store is not None
            refused: list[str] = []
            try:
                return drain_to_sqlite(self.root, self.store, busy_ms=self.busy_ms, refused=refused)
            finally:
                self.skipped += [r for r in refused if r not in self.skipped]
        added = 0
        for path in spool.pending(self.root, self.key):
            try:
                got = spool.claim(path)
            except OSError as e:
                if isinstance(e, spool.Refused):
                    self._skip(path, e.strerror)
                continue
            if got is None:
                continue
            claimed, data, uid = got
            pipe = self._redis.pipeline(transaction=False)
            for line in spool.split_records(data):
                try:
                    doc = json.loads(line)
                    doc["user"], doc["source"] = spool.user_name(uid), "record"  # the owner, not the claim
                except (ValueError, TypeError):
                    continue  # a fragment cut short by a full disk
                # a re-sent record is deduped by uid on reading
                pipe.xadd(STREAM, {"record": json.dumps(doc, separators=(",", ":"))})
                added += 1
            pipe.execute()
            spool.release(claimed)
        for path in spool.lost(self.root, self.key):  # runs whose wrapper died: recorded as lost
            try:
                data, uid = spool.read_trusted(path)
            except OSError:
                continue
            for line in spool.split_records(data):
                doc = _spooled_record(json.loads(line), uid)
                self._redis.xadd(STREAM, {"record": json.dumps(record_to_doc(doc), separators=(",", ":"))})
                added += 1
            spool.release(path)
        return added

    # -- documents ------------------------------------------------------------------------------------
    def put(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        text = json.dumps(doc, sort_keys=True)
        if self._redis is not None:
            self._redis.hset(DOC_PREFIX + kind, key, text)
            return
        self._db.execute(
            "INSERT INTO docs (kind, key, doc, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc, updated = excluded.updated",
            (kind, key, text, time.time()),
        )

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        if self._redis is not None:
            raw = self._redis.hget(DOC_PREFIX + kind, key)
        else:
            row = self._db.execute("SELECT doc FROM docs WHERE kind = ? AND key = ?", (kind, key)).fetchone()
            raw = row and row[0]
        return None if raw is None else json.loads(raw)

    def list(self, kind: str, prefix: str = "") -> list[dict[str, Any]]:
        """Documents of `kind` whose key starts with `prefix`, in key order."""
        if self._redis is not None:
            items = sorted((k.decode(), v) for k, v in self._redis.hgetall(DOC_PREFIX + kind).items())
            return [json.loads(v) for k, v in items if k.startswith(prefix)]
        rows = self._db.execute(
            "SELECT doc FROM docs WHERE kind = ? AND substr(key, 1, ?) = ? ORDER BY key",
            (kind, len(prefix), prefix),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _from_stream(stream: str, doc: dict[str, Any]) -> RunRecord:
    """A stream entry's record, its `source` decided by the stream it was read from."""
    claimed = doc.get("source") or "record"
    source = "record"  # the wrappers' stream: whoever holds a wrapper's credential wrote it, whatever it says
    if stream == RUNTIME_STREAM:
        source = claimed if claimed in RUNTIME_SOURCES else "celery"
    rec = doc_to_record(doc | {"source": source})
    if source != claimed:
        rec.extra["claimed_source"] = str(claimed)
    return rec


def _spooled_record(doc: dict[str, Any], uid: int) -> RunRecord:
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    return doc_to_record(doc | {"user": spool.user_name(uid), "source": "record"})


def _tighten_default(root: str, store: str) -> None:
    """The default ledger's folder holds job output and crontab backups: 0700, created so (see
    ledger_schema.private_dir); one an earlier version left 0755 is closed here, if it is ours."""
    folder = os.path.dirname(store)
    ledger_schema.private_dir(folder)
    if os.path.join(root, DEFAULT_STORE) != store:
        return
    for path, mode in ((folder, 0o700), (store, 0o600)):
        try:
            st = os.lstat(path)
            if st.st_uid == os.geteuid() and st.st_mode & 0o077 and not os.path.islink(path):
                os.chmod(path, mode)
        except OSError:
            pass


def has_spooled(root: Path, store: str | None = None, redis_url: str | None = None) -> bool:
    """Whether runs wait in a spool for this store: readers must look even before the store exists."""
    target = redis_url or os.path.abspath(store or os.path.join(str(root), DEFAULT_STORE))
    return bool(spool.pending(str(root), spool.spool_key(target)))


def open_ledger(root: Path, store: str | None = None, redis_url: str | None = None) -> Ledger:
    return Ledger(root, store=store, redis_url=redis_url)
