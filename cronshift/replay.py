"""`cronshift dead-letters --replay`: send a dead letter again through the generated project, either target.

The target comes from the project's own files (`project_target`), the way shadow-run tells them apart; the
policy of a replay (derived id, replayed once) is `cronshift.runtime.deadletters.replay`, the same for both.
Celery: the same task as a new message through the project's app. Streams: a new entry on the job's stream
(`cronshift.runtime.streams.replay`), which the project's consumers run.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cronshift.ledger.store import Ledger
from cronshift.runtime import deadletters, streams
from cronshift.runtime.deadletters import ReplayRefused
from cronshift.shadow.celery_side import load_project, project_target

__all__ = ["ReplayRefused", "replay_dead_letter"]


@contextmanager
def _on_path(project: Path) -> Iterator[None]:
    added = str(project) not in sys.path
    if added:
        sys.path.insert(0, str(project))
    try:
        yield
    finally:
        if added and str(project) in sys.path:
            sys.path.remove(str(project))


def _celery_sender(project: Path, package: str, broker: str | None) -> Callable[[dict[str, Any]], str]:
    def send(doc: dict[str, Any]) -> str:
        _triggers, pkg = load_project(project, package, broker)  # applies the broker override first
        app = importlib.import_module(f"{pkg}.app").app
        kwargs = {"payload": doc.get("payload"), "scheduled_for": doc.get("scheduled_for")}
        task_id = deadletters.replay_id(str(doc.get("task_id") or ""))
        return str(app.send_task(doc["task"], kwargs=kwargs, task_id=task_id).id)

    return send


def _streams_sender(project: Path, package: str, redis_url: str | None) -> Callable[[dict[str, Any]], str]:
    def send(doc: dict[str, Any]) -> str:
        jobs = importlib.import_module(f"{package}.jobs")
        if doc.get("job_id") not in jobs.JOBS:  # its consumers would dead-letter the entry unrun
            raise ReplayRefused(f"job {doc.get('job_id')} is no longer in {project}/{package}/jobs.py")
        client = streams.connect(redis_url or jobs.REDIS_URL)
        try:
            # A project generated before retention existed has no RETENTION.
            retention = getattr(jobs, "RETENTION", None) or {}
            return streams.replay(client, jobs.PROJECT, doc, retention.get("jobs"))
        finally:
            client.close()

    return send


def replay_dead_letter(
    ledger: Ledger, dl_id: str, project: Path, package: str | None = None, broker: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Replay dead letter `dl_id` through the project; (its target, the dead letter marked replayed).

    `broker` overrides where it goes: the Celery broker, or the Streams Redis. Raises
    `deadletters.NoSuchDeadLetter`, `ReplayRefused`, `EventPathError` (no generated package there), or
    whatever sending raised (nothing is marked then)."""
    target, pkg = project_target(project, package)
    with _on_path(project):
        if target == "streams":
            send = _streams_sender(project, pkg, broker)
        else:
            send = _celery_sender(project, pkg, broker)
        return target, deadletters.replay(ledger, dl_id, target, send)
