"""Dead letters: runs that failed for good (retries used up, not retryable, or delivered too often).

They go to the cronshift ledger as documents of kind "dead-letter" (CRONSHIFT_LEDGER or
CRONSHIFT_LEDGER_REDIS, as run records do); with no ledger configured, to the policy state Redis, so a
failure is never silent. `cronshift dead-letters` lists them and replays one through the generated project.

A replay is the same for both targets: a new message (a Celery task, or a Streams entry) with the dead
letter's payload and `scheduled_for`, under an id derived from the original's (`replay_id`), so the claim
the failed run holds on its instant lets the replay through; the document is then marked replayed, and a
second replay of it is refused (the first one may already have run).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronshift.runtime.records import ledger_target
from cronshift.runtime.state import REPLAY

if TYPE_CHECKING:
    from cronshift.ledger.store import Ledger

KIND = "dead-letter"
REPLAYED = "replayed"  # the status of a dead letter once replayed
# The field of a replayed dead letter that names the new message, per target.
NEW_ID_FIELD = {"celery": "replay_task_id", "streams": "replay_entry"}

__all__ = [
    "KIND",
    "REPLAYED",
    "NoSuchDeadLetter",
    "ReplayRefused",
    "dead_letter_id",
    "replay",
    "replay_id",
    "write_dead_letter",
]


class NoSuchDeadLetter(LookupError):
    """No dead letter has this id in the ledger."""


class ReplayRefused(RuntimeError):
    """This dead letter must not be sent again from here: already replayed, or another target's run."""


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


def replay_id(task_id: str | None) -> str:
    """The message id a replay runs under: `<original>-replay-<random>`. `state.claim` lets it through the
    instant's claim, which the failed original holds, while any other message for that instant stays a
    duplicate; the random part gives it its own delivery count and retries."""
    return f"{task_id or 'notask'}{REPLAY}{uuid.uuid4().hex[:8]}"


def replay(ledger: Ledger, dl_id: str, target: str, send: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Send dead letter `dl_id` again with `send` (the project's target: "celery" or "streams"), then mark
    it replayed with the new message's id; return the updated document.

    NoSuchDeadLetter: not in this ledger. ReplayRefused: already replayed (running it again is the operator's
    call to make with a fresh trigger, not a side effect of repeating a command), or recorded by the other
    target (its `task` names what that target sends, which this project cannot)."""
    doc = ledger.get(KIND, dl_id)
    if doc is None:
        raise NoSuchDeadLetter(f"no dead letter {dl_id}")
    if doc.get("status") == REPLAYED:
        sent = next((doc[f] for f in NEW_ID_FIELD.values() if doc.get(f)), "?")
        when = doc.get("replayed_at")
        at = "" if when is None else time.strftime(" at %Y-%m-%dT%H:%M:%SZ", time.gmtime(float(when)))
        raise ReplayRefused(f"dead letter {dl_id} was already replayed{at} as {sent}")
    source = doc.get("source") or "celery"
    if source != target:
        raise ReplayRefused(f"dead letter {dl_id} is a {source} run; this project is the {target} target")
    new_id = send(doc)
    doc = {**doc, "status": REPLAYED, "replayed_at": time.time(), NEW_ID_FIELD[target]: new_id}
    ledger.put(KIND, dl_id, doc)
    return doc
