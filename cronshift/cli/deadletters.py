"""`cronshift dead-letters [--list | --replay ID]`: runs that failed for good, and sending one again.

Dead letters live in the ledger the workers write to (CRONSHIFT_LEDGER / CRONSHIFT_LEDGER_REDIS on the
worker; here `--store` or `--redis`), or in the policy state Redis when the workers had no ledger.
A replay sends the run again with the same payload and `scheduled_for` through the generated project
(`--project DIR`, Celery or Streams, told apart by its files), as a new message under an id derived from
the original's; the record is marked replayed with the new task id or stream entry, and a second replay of
it is refused (`cronshift.replay`, `cronshift.runtime.deadletters.replay`).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cronshift.cli.common import CELERY_BROKER_SCHEMES, JsonOpt, RootOpt, check_url
from cronshift.cli.output import Env, ExitStatus, emit_json, fail, text
from cronshift.ledger.store import open_ledger
from cronshift.replay import ReplayRefused, replay_dead_letter
from cronshift.runtime.deadletters import KIND, NoSuchDeadLetter


def _iso(ts: Any) -> str:
    return "-" if ts is None else datetime.fromtimestamp(float(ts), UTC).isoformat(timespec="seconds")


def dead_letters(
    list_: Annotated[bool, typer.Option("--list", help="List dead letters (the default).")] = False,
    replay: Annotated[str | None, typer.Option("--replay", help="Send dead letter ID again.")] = None,
    project: Annotated[
        Path | None, typer.Option("--project", help="The generated project directory (for --replay).")
    ] = None,
    package: Annotated[str | None, typer.Option("--package", help="Its package, if several.")] = None,
    broker: Annotated[
        str | None, typer.Option("--broker", help="Broker URL override (Streams: its Redis).")
    ] = None,
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
        if project is None:
            fail(env, "--replay needs --project DIR (the generated project)", ExitStatus.USAGE)
        try:
            target, doc = replay_dead_letter(ledger, replay, project, package, broker)
        except NoSuchDeadLetter as e:
            fail(env, str(e), ExitStatus.USAGE)
        except ReplayRefused as e:
            fail(env, f"{project}: {e}", ExitStatus.REFUSED)
        except Exception as e:  # no project there, broker or Redis unreachable: one line
            fail(env, f"{project}: replay of {replay} failed: {type(e).__name__}: {e}", ExitStatus.ERROR)
    if target == "streams":
        if json:
            emit_json(env, {"replayed": replay, "target": target, "stream": doc["task"],
                            "entry": doc["replay_entry"]})  # fmt: skip
        else:
            env.stdout.write(f"replayed {replay} to {doc['task']} as entry {doc['replay_entry']}\n")
        return
    new_id = doc["replay_task_id"]
    if json:
        emit_json(env, {"replayed": replay, "target": target, "task_id": new_id})
    else:
        env.stdout.write(f"replayed {replay} as task {new_id}\n")
