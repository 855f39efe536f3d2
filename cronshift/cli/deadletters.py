"""`cronshift dead-letters [--list | --replay ID]`: runs that failed for good, and sending one again.

Dead letters live in the ledger the workers write to (CRONSHIFT_LEDGER / CRONSHIFT_LEDGER_REDIS on the
worker; here `--store` or `--redis`), or in the policy state Redis when the workers had no ledger.
A replay sends the same task with the same payload and `scheduled_for` through the generated project
(`--project DIR`), as a new message; the record is marked replayed with the new task id.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cronshift.cli.common import CELERY_BROKER_SCHEMES, JsonOpt, RootOpt, check_url
from cronshift.cli.output import Env, ExitStatus, emit_json, fail, text
from cronshift.history.ledger import open_ledger
from cronshift.runtime.deadletters import KIND
from cronshift.runtime.state import REPLAY


def _iso(ts: Any) -> str:
    return "-" if ts is None else datetime.fromtimestamp(float(ts), UTC).isoformat(timespec="seconds")


def _send(project: Path, package: str | None, broker: str | None, doc: dict[str, Any]) -> str:
    from cronshift.shadow.celery_side import load_project  # finds the package, applies the broker override

    _triggers, pkg = load_project(project, package, broker)
    app = importlib.import_module(f"{pkg}.app").app
    kwargs = {"payload": doc.get("payload"), "scheduled_for": doc.get("scheduled_for")}
    # A task id derived from the original lets the replay through the claim on its scheduled_for (which the
    # original holds) while counting its deliveries afresh.
    task_id = f"{doc.get('task_id') or 'notask'}{REPLAY}{uuid.uuid4().hex[:8]}"
    return str(app.send_task(doc["task"], kwargs=kwargs, task_id=task_id).id)


def dead_letters(
    list_: Annotated[bool, typer.Option("--list", help="List dead letters (the default).")] = False,
    replay: Annotated[str | None, typer.Option("--replay", help="Send dead letter ID again.")] = None,
    project: Annotated[
        Path | None, typer.Option("--project", help="The generated project directory (for --replay).")
    ] = None,
    package: Annotated[str | None, typer.Option("--package", help="Its package, if several.")] = None,
    broker: Annotated[str | None, typer.Option("--broker", help="Broker URL override.")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Ledger store (SQLite path).")] = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Ledger or state Redis URL.")] = None,
    root: RootOpt = Path("/"),
    json: JsonOpt = False,
) -> None:
    """List runs that failed for good (retries used up, or delivered too often), or replay one."""
    env = Env()
    redis = redis or os.environ.get("CRONSHIFT_LEDGER_REDIS") or os.environ.get("CRONSHIFT_STATE_REDIS")
    if replay is not None and list_:
        fail(env, "--list and --replay exclude each other", ExitStatus.USAGE)
    if broker:
        check_url(env, "--broker", broker, CELERY_BROKER_SCHEMES)
    try:
        ledger = open_ledger(root, store=store, redis_url=redis)
    except Exception as e:  # sqlite or redis-py: one line, not a traceback
        fail(env, f"{redis or store or root}: cannot open the ledger: {e}", ExitStatus.ERROR)
    with ledger:
        if replay is None:
            docs = ledger.list(KIND)
            if json:
                emit_json(env, {"dead_letters": docs})
                return
            table = Table(title="dead letters")
            for col in ("id", "job", "scheduled for", "attempts", "reason", "status", "output tail"):
                table.add_column(col, overflow="fold")
            for d in docs:
                table.add_row(
                    d["id"], d.get("job_id"), _iso(d.get("scheduled_for")), str(d.get("attempts")),
                    text(d.get("reason")), d.get("status"), text((d.get("output_tail") or "")[-80:]),
                )  # fmt: skip
            env.out.print(table)
            return
        doc = ledger.get(KIND, replay)
        if doc is None:
            fail(env, f"no dead letter {replay}", ExitStatus.USAGE)
        if project is None:
            fail(env, "--replay needs --project DIR (the generated project)", ExitStatus.USAGE)
        added = str(project) not in sys.path
        try:
            new_id = _send(project, package, broker, doc)
        except Exception as e:
            fail(env, f"{project}: replay of {replay} failed: {type(e).__name__}: {e}", ExitStatus.ERROR)
        finally:
            if added and str(project) in sys.path:
                sys.path.remove(str(project))
        doc = {**doc, "status": "replayed", "replayed_at": time.time(), "replay_task_id": new_id}
        ledger.put(KIND, replay, doc)
    if json:
        emit_json(env, {"replayed": replay, "task_id": new_id})
    else:
        env.stdout.write(f"replayed {replay} as task {new_id}\n")
