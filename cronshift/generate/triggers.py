"""`generate --trigger KIND:ARGS`: event sources that run a job when its data changes, not on the clock.

[JOB=]KIND:ARGS (JOB: a job id or its prefix, for that job only; without it, every job generated) where
KIND:ARGS is one of
  postgres:TABLE   a trigger function + NOTIFY channel (SQL the user applies; a .down.sql undoes it) and a
                   psycopg 3 listener in the events process
  path:DIR         files closed after writing in, or moved into, DIR (inotify)
  stream:KEY       entries of a Redis stream the application already writes
  call             the application calls `notify_<job>()` (coalesced; `trigger_<job>()` stays uncoalesced)
followed by optional `,key=value` options: quiet=SECONDS, max_wait=SECONDS, safety=CRON (per job: the last
given wins; safety is a safety-net schedule run by the events process when no event came, cron syntax with
'_' for spaces, e.g. safety=0_*_*_*_*),
channel=NAME and events=insert+update+delete+truncate (postgres), pattern=GLOB (path), redis=URL (stream).

The beat entry stays: it is the safety net, so a lost notification costs freshness, never correctness.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronsim import CronSim, CronSimError

from cronshift.generate.common import RUFF_TOML, GenerateResult, ruff_format, slug, templates, write_files
from cronshift.generate.plan import Plan, plan_for
from cronshift.model import CronJob

__all__ = ["KINDS", "Trigger", "TriggerError", "parse_trigger", "render_event_sources", "write_event_sources"]

KINDS = ("postgres", "path", "stream", "call")
# Defaults: a single event starts its run within the quiet period; a steady burst runs at most every max_wait.
QUIET = {"postgres": 0.25, "path": 0.25, "stream": 0.01, "call": 0.01}
MAX_WAIT = 5.0
PG_EVENTS = ("insert", "update", "delete", "truncate")
_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
_TABLE = re.compile(rf"^{_IDENT}(\.{_IDENT})?$")
_OPTS = {
    "postgres": {"quiet", "max_wait", "safety", "channel", "events"},
    "path": {"quiet", "max_wait", "safety", "pattern"},
    "stream": {"quiet", "max_wait", "safety", "redis"},
    "call": {"quiet", "max_wait", "safety"},
}


class TriggerError(ValueError):
    """A --trigger value that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: str
    target: str  # table, folder, stream key; "" for call
    options: dict[str, str] = field(default_factory=dict, hash=False)
    job: str | None = None  # `JOB=KIND:ARGS`: only for jobs whose id starts with this; None: every job

    def applies(self, job_id: str) -> bool:
        return self.job is None or job_id.startswith(self.job)

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


def parse_trigger(text: str) -> Trigger:
    """`[JOB=]KIND:ARGS[,key=value...]` -> Trigger, or TriggerError saying what is wrong."""
    job = None
    head = text.split(":", 1)[0].split(",", 1)[0]
    if "=" in head:
        job, _, spec = text.partition("=")
        if not job:
            raise TriggerError(f"--trigger '{text}': name the job before '='")
        return replace(parse_trigger(spec), job=job)
    kind, sep, rest = text.partition(":")
    if "," in kind:  # `call,quiet=1`: no target, options straight after the kind
        kind, _, head = kind.partition(",")
        rest = "," + head + sep + rest
    kind = kind.strip()
    if kind not in KINDS:
        raise TriggerError(f"--trigger '{text}': kind must be one of {', '.join(KINDS)}")
    target, *opts = rest.split(",") if rest else [""]
    options: dict[str, str] = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or k not in _OPTS[kind]:
            raise TriggerError(
                f"--trigger '{text}': option '{o}' is not one of {', '.join(sorted(_OPTS[kind]))} (key=value)"
            )
        options[k] = v
    if "safety" in options:
        options["safety"] = options["safety"].replace("_", " ")
        try:
            CronSim(options["safety"], datetime.now(UTC))
        except CronSimError as e:
            raise TriggerError(f"--trigger '{text}': safety is not a cron schedule: {e}") from None
    for k in ("quiet", "max_wait"):
        if k in options:
            try:
                if float(options[k]) < 0:
                    raise ValueError
            except ValueError:
                raise TriggerError(f"--trigger '{text}': {k} must be a number of seconds >= 0") from None
    if kind == "postgres":
        if not _TABLE.match(target):
            raise TriggerError(f"--trigger '{text}': TABLE must be a table name, optionally schema.table")
        events = options.get("events", "insert+update+delete+truncate").split("+")
        if not events or any(e not in PG_EVENTS for e in events):
            raise TriggerError(f"--trigger '{text}': events must be {'+'.join(PG_EVENTS)} or a part of them")
        if "channel" in options and not re.fullmatch(_IDENT, options["channel"]):
            raise TriggerError(f"--trigger '{text}': channel must be an identifier of at most 63 characters")
    elif kind == "path":
        if not target.startswith("/"):
            raise TriggerError(f"--trigger '{text}': DIR must be an absolute path")
        target = target.rstrip("/") or "/"
    elif kind == "stream":
        if not target:
            raise TriggerError(f"--trigger '{text}': name the stream KEY")
    elif target:
        raise TriggerError(f"--trigger '{text}': call takes no argument")
    return Trigger(kind, target, options)


def _pg_names(table: str, channel: str | None) -> dict[str, str]:
    flat = table.replace(".", "_").lower()
    base = f"cronshift_notify_{flat}"[:63]
    return {
        "channel": channel or f"cronshift_{flat}"[:63],
        "function": base,
        "trigger": base,
        "table_sql": ".".join(f'"{p}"' for p in table.split(".")),
        "function_sql": (f'"{table.split(".")[0]}".' if "." in table else "") + f'"{base}"',
    }


def render_event_sources(
    jobs: list[CronJob],
    triggers: list[Trigger],
    *,
    package: str,
    plans: dict[str, Plan] | None = None,
    timezone: str = "UTC",
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The files of the events process (path -> text) and, per job, what was wired (for --json)."""
    files: dict[str, str] = {}
    cfg: dict[str, Any] = {}
    ctx_jobs: list[dict[str, Any]] = []
    sql: list[dict[str, Any]] = []
    wired: list[dict[str, Any]] = []
    for job in sorted(jobs, key=lambda j: j.id):
        mine = [t for t in triggers if t.applies(job.id)]
        if not mine:
            continue
        name = slug(job.id)
        plan = (plans or {}).get(job.id) or plan_for(job)
        quiet = min(QUIET[t.kind] for t in mine)
        max_wait = MAX_WAIT
        safety = None
        sources: list[dict[str, Any]] = []
        for t in mine:
            quiet = float(t.options.get("quiet", quiet))
            max_wait = float(t.options.get("max_wait", max_wait))
            safety = t.options.get("safety", safety)
            if t.kind == "postgres":
                n = _pg_names(t.target, t.options.get("channel"))
                events = t.options.get("events", "insert+update+delete+truncate").split("+")
                if n["channel"] not in {s.get("channel") for s in sources}:
                    sources.append({"kind": "postgres", "table": t.target, "channel": n["channel"]})
                if t.target not in {s["table"] for s in sql}:
                    sql.append({"table": t.target, "events": events, "job": job.id, **n})
            elif t.kind == "path":
                sources.append({"kind": "path", "dir": t.target, "pattern": t.options.get("pattern", "*")})
            elif t.kind == "stream":
                sources.append({"kind": "stream", "key": t.target, "redis": t.options.get("redis", "")})
            else:
                sources.append({"kind": "call"})
        max_wait = max(max_wait, quiet)
        cfg[job.id] = {
            "quiet": quiet,
            "max_wait": max_wait,
            "max_busy": plan.celery_limit + 60,
            "overlap": plan.overlap,
            "safety": safety,
            "zone": job.timezone or timezone,
            "sources": sources,
        }
        ctx_jobs.append(
            {"id": job.id, "func": name, "module": f"{package}.jobs.{name}", "call": any(
                s["kind"] == "call" for s in sources), "schedule": job.schedule, "quiet": quiet,
             "max_wait": max_wait, "sources": sources, "overlap": plan.overlap, "safety": safety}
        )  # fmt: skip
        wired.append(
            {"id": job.id, "quiet": quiet, "max_wait": max_wait, "safety": safety, "sources": sources}
        )
    for s in sql:
        stem = f"{package}/sql/{s['function']}"
        files[f"{stem}.up.sql"] = templates.get_template("triggers_notify_up.sql.j2").render(
            **s, events_sql=" OR ".join(e.upper() for e in s["events"])
        )
        files[f"{stem}.down.sql"] = templates.get_template("triggers_notify_down.sql.j2").render(**s)
    files[f"{package}/events.py"] = templates.get_template("events.py.j2").render(
        package=package, jobs=ctx_jobs, config_json=json.dumps(cfg, sort_keys=True, ensure_ascii=True)
    )
    files[f"{package}/EVENTS.md"] = templates.get_template("EVENTS.md.j2").render(
        package=package, jobs=ctx_jobs, sql=sql
    )
    return files, wired


def write_event_sources(
    jobs: list[CronJob],
    triggers: list[Trigger],
    out: Path,
    result: GenerateResult,
    *,
    package: str,
    plans: dict[str, Plan] | None = None,
    force: bool = False,
    timezone: str = "UTC",
) -> list[dict[str, Any]]:
    """Render and write the event-source files beside the project (same manifest rule as every file)."""
    files, wired = render_event_sources(jobs, triggers, package=package, plans=plans, timezone=timezone)
    py = {k: v for k, v in files.items() if k.endswith(".py")}
    # The package's __init__ and jobs let ruff's isort see `package` as first-party, as in the real project.
    ctx = {f"{package}/__init__.py": "", f"{package}/jobs/__init__.py": "", "ruff.toml": RUFF_TOML}
    formatted = ruff_format({**py, **ctx}, package)
    files.update({k: formatted[k] for k in py})
    write_files(files, out, result, force)
    return wired
