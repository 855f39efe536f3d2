"""What `cronshift retire` left behind, read back: run-parts scripts retired by mode (retire.jsonl).

Scan shows a retired script under the id it was retired as, so stage 1 reads this record; it lives here, below
the edit layer that writes it, so discover never imports retire. A retired crontab line needs no journal: its
marker is in the line itself (crontab_file.RETIRED_MARKER).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cronshift.ledger.state import STATE_DIR, Journal

RETIRE_JOURNAL = "retire.jsonl"


@dataclass(frozen=True)
class Retirement:
    """One job retired now (not undone): what `retire --list` shows and `retire --undo` reverses."""

    job_id: str
    kind: str
    path: str
    line: int | None
    date: str
    reason: str
    time: float
    edit_id: str  # edit.crontab's record id (line), or this journal's (mode)
    backup_path: str | None  # line retires: the backup edit.crontab made
    mode_before: int | None = None
    mode_after: int | None = None
    to: str | None = None  # where the job went (the generated task), as the user said
    present: bool = True  # whether the file still shows the retirement

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "kind": self.kind,
            "path": self.path,
            "line": self.line,
            "date": self.date,
            "reason": self.reason,
            "time": self.time,
            "edit_id": self.edit_id,
            "backup": self.backup_path,
            "mode_before": None if self.mode_before is None else f"{self.mode_before:04o}",
            "mode_after": None if self.mode_after is None else f"{self.mode_after:04o}",
            "to": self.to,
            "present": self.present,
        }


def retire_events(root: Path) -> list[dict[str, Any]]:
    """Intact records of the retire journal; a torn last line (a killed run) is skipped, never fatal."""
    path = Path(root).joinpath(*STATE_DIR, RETIRE_JOURNAL)
    if not path.is_file() or path.is_symlink():
        return []
    return [e for e in Journal(Path(root), RETIRE_JOURNAL).events() if _well_formed(e)]


_NEEDS = {
    "intent": ("edit_id", "job", "path", "date", "reason", "time", "mode_before", "mode_after"),
    "done": ("edit_id",),
    "abort": ("edit_id",),
    "undo": ("job",),
    "undo-intent": ("job", "edit_id"),
    "note": ("edit_id",),
}


def _well_formed(e: dict[str, Any]) -> bool:
    return all(k in e for k in _NEEDS.get(e.get("event"), ("-",)))


def retire_notes(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["edit_id"]: e for e in events if e.get("event") == "note"}


def mode_retirement(i: dict[str, Any], present: bool = True) -> Retirement:
    return Retirement(
        i["job"], "mode", i["path"], None, i["date"], i["reason"], i["time"], i["edit_id"], None,
        i["mode_before"], i["mode_after"], i.get("to"), present,
    )  # fmt: skip


def _mode_is(root: Path | None, i: dict[str, Any]) -> bool | None:
    """Whether the script has the mode retire set (None: unknown)."""
    if root is None:
        return None
    try:
        return stat.S_IMODE(os.lstat(Path(root, i["path"])).st_mode) == i["mode_after"]
    except OSError:
        return None


def mode_retirements(events: list[dict[str, Any]], root: Path | None = None) -> dict[str, Retirement]:
    """Run-parts retirements in force, by job id.

    An intent with neither done nor abort is a retire killed half-way: it counts (given `root`) when the
    script has the mode retire was setting, so the change is never in force without a record."""
    intents: dict[str, dict[str, Any]] = {}
    active: dict[str, Retirement] = {}
    for e in events:
        kind = e.get("event")
        if kind == "intent":
            intents[e["edit_id"]] = e
        elif kind == "abort":
            intents.pop(e["edit_id"], None)
        elif kind == "done" and e["edit_id"] in intents:
            i = intents.pop(e["edit_id"])
            active[i["job"]] = mode_retirement(i, _mode_is(root, i) is not False)
        elif kind == "undo":
            active.pop(e["job"], None)
    for i in intents.values() if root is not None else ():
        try:
            mode = stat.S_IMODE(os.lstat(Path(root, i["path"])).st_mode)
        except OSError:
            continue
        if mode == i["mode_after"] and i["job"] not in active:
            active[i["job"]] = mode_retirement(i)
    return active


def retired_scripts(root: Path) -> dict[str, Retirement]:
    """Run-parts scripts retired by mode, by path: scan uses this to show them retired under their id."""
    return {r.path: r for r in mode_retirements(retire_events(root), root).values()}
