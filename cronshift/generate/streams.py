"""Write a Redis Streams project for cron jobs: jobs.py (specs and schedules), consumer.py, scheduler.py,
triggers.py and a README. The lighter target: no Celery at run time, only Redis and `cronshift.runtime`.

The job specs, the formatting and the manifest are generate.common's, as the Celery target's are, so a
spec embeds identically and a re-run never overwrites a file the user edited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cronshift.discover.schedule import ScheduleError
from cronshift.generate.common import (
    RUFF_TOML,
    GenerateResult,
    JobOutput,
    expr_for,
    job_spec,
    one_line,
    plan_json,
    ruff_format,
    slug,
    templates,
    write_files,
)
from cronshift.generate.equivalence import BeatEntry, Translation, prove
from cronshift.generate.plan import Plan, plan_for
from cronshift.ledger.resp import RUNTIME_STREAM as LEDGER_STREAM  # where the consumers record runs
from cronshift.model import CronJob, Dialect
from cronshift.runtime.execute import DEFAULT_TIME_LIMIT
from cronshift.runtime.streams import DEFAULT_RETENTION, dead_key, group_name, stream_key

__all__ = ["DEFAULT_REDIS", "generate_streams_project", "render_streams_project"]

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

_WHY = "the scheduler enqueues at cronsim's instants for this expression in this zone (cron's own rules)"


def _translate(job: CronJob, dialect: Dialect, zone: str, year: int) -> tuple[Translation, tuple[str, ...]]:
    """The scheduler's entry for `job` (always cronsim: no stock-crontab detour here), proved over `year`."""
    try:
        expr, notes = expr_for(job, dialect)
    except ScheduleError as e:
        return Translation((), None, f"cron rejects this schedule: {e}"), ()
    if expr is None:
        return Translation((), None, "; ".join(notes) or "no schedule"), notes
    if expr.reboot:
        return Translation((), None, "@reboot runs when cron starts, not on the clock: no schedule"), notes
    reason, cexpr = expr.never_fires_reason(), expr.cronsim_expr()
    if reason is not None or cexpr is None:
        return Translation((), None, f"this schedule never fires ({reason}): no schedule"), notes
    entry = BeatEntry("cronsim", expr=cexpr, zone=zone, why=_WHY)
    return Translation((entry,), prove(expr, (entry,), zone, year)), notes


RETENTION_STREAMS = ("jobs", "dead", "ledger")


def parse_retention(values: list[str]) -> dict[str, tuple[float, int]]:
    """`--retention NAME=MAX_AGE:MAX_LENGTH` (age in seconds, or with s/m/h/d); ValueError says which."""
    out: dict[str, tuple[float, int]] = {}
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    for v in values:
        name, eq, rule = v.partition("=")
        age, colon, length = rule.partition(":")
        if not eq or not colon or name not in RETENTION_STREAMS:
            raise ValueError(
                f"--retention {v}: expected NAME=MAX_AGE:MAX_LENGTH, NAME one of jobs, dead, ledger"
            )
        try:
            scale = units.get(age[-1:], 1)
            seconds = float(age[:-1] if age[-1:] in units else age) * scale
            n = int(length)
        except ValueError:
            raise ValueError(f"--retention {v}: MAX_AGE and MAX_LENGTH must be numbers") from None
        if seconds <= 0 or n <= 0:
            raise ValueError(f"--retention {v}: MAX_AGE and MAX_LENGTH must be positive")
        out[name] = (seconds, n)
    return out


def _retention_rows(package: str, chosen: Mapping[str, tuple[float, int]] | None) -> list[dict[str, Any]]:
    keys = {"jobs": stream_key(package), "dead": dead_key(package), "ledger": LEDGER_STREAM}
    rows = []
    for name in RETENTION_STREAMS:
        age, maxlen = (chosen or {}).get(name) or DEFAULT_RETENTION[name]
        rows.append({"name": name, "key": keys[name], "age": float(age), "maxlen": int(maxlen),
                     "age_text": _age_text(float(age))})  # fmt: skip
    return rows


def _age_text(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:g} s"


def render_streams_project(
    jobs: list[CronJob],
    *,
    package: str,
    timezone: str,
    dialect: Dialect,
    year: int,
    redis_url: str = DEFAULT_REDIS,
    plans: dict[str, Plan] | None = None,
    retention: Mapping[str, tuple[float, int]] | None = None,
) -> tuple[dict[str, str], list[JobOutput]]:
    """Every generated file (path relative to OUT -> text) and each job's schedule and proof. Pure.

    `plans` (from `plans_from_history`, as the Celery target gets them) carry each job's policies; a job
    without one gets `plan_for(job)`: cron's own behaviour, from the cron line alone."""
    outs: list[JobOutput] = []
    ctx_jobs: list[dict[str, Any]] = []
    hard_limits: list[int] = []
    for job in sorted(jobs, key=lambda j: j.id):
        name = slug(job.id)
        zone = job.timezone or timezone
        tr, notes = _translate(job, dialect, zone, year)
        messages = (*notes, *((tr.message,) if tr.message else ()), *tr.notes)
        plan = (plans or {}).get(job.id) or plan_for(job)
        hard_limits.append(plan.hard_limit)
        proof = tr.proof
        proof_line = (
            "none"
            if proof is None
            else (
                f"identical to cron over {proof.window[0]} .. {proof.window[1]} in {proof.zone} "
                f"({proof.fires} fires)"
                if proof.identical
                else f"DIFFERS from cron at {len(proof.differences) + proof.more_differences} instant(s)"
            )
        )
        entry = tr.entries[0] if tr.entries else None
        schedule = {"expr": entry.expr, "zone": entry.zone} if entry and entry.expr else None
        ctx_jobs.append({
            "raw_id": job.id, "id": one_line(job.id), "func": name, "const": name.upper(),
            "source": one_line(str(job.source)), "user": one_line(job.user),
            "schedule_text": one_line(job.schedule),
            "spec_json": json.dumps(
                job_spec(job, plan, schedule, dialect=dialect), ensure_ascii=True, sort_keys=True
            ),
            "overlap": plan.overlap, "overlap_why": one_line(plan.overlap_why),
            "time_limit": plan.time_limit, "limit_why": one_line(plan.limit_why),
            "hard_limit": plan.hard_limit, "missed": plan.missed, "missed_why": one_line(plan.missed_why),
            "starting_deadline": plan.starting_deadline, "retry_on": list(plan.retry_on),
            "max_retries": plan.max_retries, "retry_why": one_line(plan.retry_why),
            "max_deliveries": plan.max_deliveries,
            "cron": entry.expr if entry else "", "zone": entry.zone if entry else zone,
            "no_entry": one_line("; ".join(messages) or "none"), "notes": (*notes, *tr.notes),
            "proof_line": proof_line,
            "command": job.command.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
            "fence": "`" * max(3, 1 + max((len(m) for m in re.findall("`+", job.command)), default=0)),
        })  # fmt: skip
        outs.append(JobOutput(job.id, f"{package}.triggers.trigger_{name}", f"{package}.jobs", tr,
                              tr.entries, messages, policies=plan_json(plan)))  # fmt: skip
    names = {"package": package, "redis": redis_url, "jobs": ctx_jobs, "stream": stream_key(package),
             "group": group_name(package), "dead": dead_key(package),
             "max_hard_limit": max(hard_limits, default=DEFAULT_TIME_LIMIT),
             "retention": _retention_rows(package, retention)}  # fmt: skip
    files = {
        f"{package}/__init__.py": '"""Cron jobs on Redis Streams, generated by cronshift."""\n',
        f"{package}/jobs.py": templates.get_template("streams_jobs.py.j2").render(**names),
        f"{package}/consumer.py": templates.get_template("streams_consumer.py.j2").render(**names),
        f"{package}/scheduler.py": templates.get_template("streams_scheduler.py.j2").render(**names),
        f"{package}/triggers.py": templates.get_template("streams_triggers.py.j2").render(**names),
        f"{package}/README.md": templates.get_template("streams_README.md.j2").render(**names),
        f"deploy/{package}-consumer@.service": templates.get_template("streams_consumer.service.j2").render(
            **names
        ),
        f"deploy/{package}-scheduler.service": templates.get_template("streams_scheduler.service.j2").render(
            **names
        ),
        "deploy/supervisor.conf": templates.get_template("streams_supervisor.conf.j2").render(**names),
        "ruff.toml": RUFF_TOML,
    }
    return ruff_format(files, package), outs


def generate_streams_project(
    jobs: list[CronJob],
    out: Path,
    *,
    package: str,
    timezone: str,
    dialect: Dialect,
    year: int,
    redis_url: str = DEFAULT_REDIS,
    force: bool = False,
    plans: dict[str, Plan] | None = None,
    retention: Mapping[str, tuple[float, int]] | None = None,
) -> GenerateResult:
    """Render and write; a file whose bytes differ from what generate last wrote is kept unless `force`."""
    files, outs = render_streams_project(
        jobs, package=package, timezone=timezone, dialect=dialect, year=year, redis_url=redis_url,
        plans=plans, retention=retention,
    )  # fmt: skip
    result = GenerateResult(package=package, out=str(out), jobs=outs)
    write_files(files, out, result, force)
    return result
