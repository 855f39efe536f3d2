"""`journalctl -o json` exports: one JSON object per line, fed to the same per-job parser as syslog text.

The journal keeps the daemon's message unescaped and the time in microseconds since the epoch, so there is no
year to infer; the identifier and pid come from their own fields instead of the `tag[pid]:` prefix.

Who sent a line: any local user can send `logger -t CRON '(root) CMD (...)'`, and a syslog text file cannot
tell that line from cron's. The journal can: fields starting with `_` are set by journald from the sender's
socket credentials, never by the sender, and the cron daemon, its children, anacron and the run-parts cron
runs are root. So a cron line whose `_UID` is present and not 0 is not read; it is counted (`untrusted`)
and scan says so. `_UID` is the only rule: `_COMM`/`_EXE` would drop real lines (RHEL's run-parts script
logs through `logger`, whose `_COMM` is a forger's too). An entry without `_UID` (an old or hand-made
export) proves nothing either way and is read as a syslog text line is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from cronshift.history.syslog import Segment

_CRON_IDS = {"CRON", "CROND", "cron", "crond", "anacron", "/USR/SBIN/CRON"}


def _text(value: object) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list) and all(isinstance(b, int) for b in value):  # non-UTF-8 messages
        try:
            return bytes(value)
        except ValueError:
            return None
    return None


def _foreign(obj: dict) -> bool:
    """Whether journald saw a non-root process send this entry (see the module docstring)."""
    uid = obj.get("_UID")
    return uid is not None and uid != "0" and uid != 0


def feed_journal(seg: Segment, lines: Iterable[bytes]) -> None:
    c = seg.c
    n = 0
    for line in lines:
        n += 1
        if b"CRON" not in line and b"cron" not in line and b"run-parts" not in line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if line.strip():
                c.cron_lines += 1
                c.malformed += 1  # a truncated export line
            continue
        if not isinstance(obj, dict):
            continue
        ident = obj.get("SYSLOG_IDENTIFIER")
        if not isinstance(ident, str):
            continue
        folder: bytes | None = None
        if ident.startswith("run-parts"):
            if ident.startswith("run-parts(") and ident.endswith(")"):
                folder = ident[10:-1].encode()
            ident = "run-parts"
        elif ident not in _CRON_IDS:
            continue
        if _foreign(obj):
            c.untrusted += 1  # not one of cron's lines: neither read nor counted as a cron line
            continue
        msg = _text(obj.get("MESSAGE"))
        try:
            t = int(obj["__REALTIME_TIMESTAMP"]) / 1e6
            pid = int(obj.get("SYSLOG_PID") or obj["_PID"])
        except (KeyError, TypeError, ValueError):
            msg = None
        if msg is None:
            c.cron_lines += 1
            c.malformed += 1
            continue
        host = _text(obj.get("_HOSTNAME")) or b""
        seg.on_message(t, ident.encode(), pid, msg.rstrip(b"\r\n"), folder, host)
    c.lines += n
