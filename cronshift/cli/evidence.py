"""The history options `scan` and `show` share, the evidence they load with them, and its --json form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from cronshift.cli.output import Env, ExitStatus, fail, progress_bar, text
from cronshift.history.events import History
from cronshift.history.evidence import Evidence, env_redis_url, gather
from cronshift.model import ScanResult

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Only history from this time on (ISO time, or 7d / 12h / 30m before now)."),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Only history before this time (ISO time, or 7d / 12h / 30m).")
]
LogOpt = Annotated[
    list[Path] | None,
    typer.Option("--log", help="Another cron log to read (syslog, cron, journalctl -o json); repeatable."),
]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Run ledger (SQLite) to read; default var/lib/cronshift/ledger.db."),
]
RedisOpt = Annotated[
    str | None, typer.Option("--redis", help="Read the run ledger from Redis (or CRONSHIFT_REDIS_URL).")
]
NoHistoryOpt = Annotated[
    bool, typer.Option("--no-history", help="Do not read logs: rank from the crontabs and the ledger only.")
]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(value: str | None, now: datetime, option: str) -> float | None:
    """An ISO time (naive: in the server's zone) or an age like `7d`, as unix seconds."""
    if value is None:
        return None
    m = _RELATIVE.match(value.strip())
    if m:
        return (now - timedelta(seconds=float(m[1]) * _UNIT[m[2]])).timestamp()
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO time or an age like 7d: {value!r}", param_hint=option) from None
    return (t if t.tzinfo else t.replace(tzinfo=now.tzinfo)).timestamp()


def load_evidence(
    env: Env,
    result: ScanResult,
    now: datetime,
    since: str | None,
    until: str | None,
    log: list[Path] | None,
    store: str | None,
    redis: str | None,
    no_history: bool,
) -> Evidence:
    """The history behind the ranking; shared by `scan` and `show`."""
    lo, hi = parse_when(since, now, "--since"), parse_when(until, now, "--until")
    if lo is not None and hi is not None and hi <= lo:
        fail(env, "--until must be later than --since", ExitStatus.USAGE)
    for p in log or ():
        if not p.is_file():
            fail(env, f"{p}: no such log file", ExitStatus.USAGE)
    with progress_bar(env, "reading logs") as update:
        return gather(
            Path(result.root),
            result.jobs,
            now,
            since=lo,
            until=hi,
            extra_logs=log or (),
            store=store,
            redis_url=redis or env_redis_url(),
            logs=not no_history,
            progress=update,
        )


def iso(ts: float | None, now: datetime) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).astimezone(now.tzinfo).isoformat()


def untrusted_text(h: History | None) -> str | None:
    """What `scan` and `show` say of journal cron lines a non-root process sent; None: there were none."""
    if h is None or not h.untrusted:
        return None
    return f"{h.untrusted} cron line(s) from non-root senders ignored (forged?)"


def history_to_dict(ev: Evidence, now: datetime) -> dict[str, Any]:
    """The top-level `history` object of --json: what the ranking was made from."""
    h = ev.history
    w = ev.window
    unmatched = [] if h is None else sorted(h.unmatched.values(), key=lambda u: (-u.count, u.user, u.command))
    return {
        "window": None if w is None else {"from": iso(w[0], now), "until": iso(w[1], now)},
        "since": iso(ev.since, now),
        "until": iso(ev.until, now),
        "evidence": ev.kinds,
        "logs": [
            {
                "path": s.path,
                "dialect": s.dialect,
                "lines": s.lines,
                "cron_lines": s.cron_lines,
                "malformed": s.malformed,
                "duplicates": s.duplicates,
                "untrusted": s.untrusted,
            }
            for s in (h.sources if h else [])
        ],
        "duplicates_dropped": h.duplicates_dropped if h else 0,
        "orphan_ends": h.orphan_ends if h else 0,
        "untrusted": h.untrusted if h else 0,
        "unattributed": {
            "no_mta": h.unattributed_discarded if h else 0,
            "mail": h.unattributed_mail_failures if h else 0,
            "cmdout": h.unattributed_output if h else 0,
        },
        "cron_observed": [
            {"from": iso(a, now), "until": iso(b, now)} for a, b in (h.daemon_windows if h else [])
        ],
        "lines_read": h.lines_read if h else 0,
        "cron_lines": h.cron_lines if h else 0,
        "malformed": h.malformed if h else 0,
        "unmatched": [
            {
                "user": u.user,
                "command": text(u.command),
                "count": u.count,
                "first_seen": iso(u.first_seen, now),
                "last_seen": iso(u.last_seen, now),
            }
            for u in unmatched
        ],
        "ambiguous": [
            {"user": k[0], "command": text(k[1]), "candidates": list(v)}
            for k, v in (h.ambiguous.items() if h else [])
        ],
        "ambiguous_runs": h.ambiguous_runs if h else 0,
        "ledger": {
            "where": ev.ledger_where,
            "runs": sum(len(v) for v in ev.ledger_runs.values()),
            "unmatched_runs": ev.ledger_unmatched,
        },
        "notes": list(ev.notes),
    }
