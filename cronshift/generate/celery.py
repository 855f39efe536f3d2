"""Write a Celery project for cron jobs: app.py with a proved beat schedule, one task module per job,
triggers.py, a README per job, and a manifest so a re-run never overwrites a file the user edited."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cronshift.discover.schedule import CronExpr, ScheduleError
from cronshift.generate.common import (
    RUFF_TOML,
    GenerateResult,
    JobOutput,
    expr_for,
    job_spec,
    one_line,
    plan_json,
    slug,
    templates,
    unknown_zone,
    write_files,
)
from cronshift.generate.equivalence import BeatEntry, Translation, translate
from cronshift.generate.plan import Plan, plan_for
from cronshift.model import CronJob, Dialect

__all__ = ["DEFAULT_BROKER", "GenerateResult", "JobOutput", "generate_project", "render_project"]

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
STARTING_DEADLINE = 120  # seconds
VISIBILITY_MARGIN = 3600  # seconds above the longest hard limit


def job_warnings(job: CronJob, expr: CronExpr | None, dialect: Dialect) -> tuple[str, ...]:
    """What the scan knows that generate must say: cron never runs it, fields cron truncates, a CRON_TZ
    or TZ= that does not move the schedule, and the scan's own warnings about the line."""
    out: list[str] = []
    if not job.runs:
        out.append(
            f"cron never runs this job ({'; '.join(job.why_not)}); generated because of --include-never-run"
        )
    if expr is not None:
        out.extend(expr.notes)  # e.g. Debian keeps '1' of '1#2' and '1-5' of '1-5-7', silently
    for name, value in job.env:
        if name == "TZ":
            where = "CRON_TZ or the system" if dialect is Dialect.CRONIE else "the system"
            out.append(
                f"TZ={value} only reaches the job's environment: cron schedules it in {where} time zone"
            )
    out.extend(job.warnings)
    return tuple(dict.fromkeys(out))


def never_run_refusal(jobs: list[CronJob]) -> str | None:
    """One line refusing the first job cron never runs (generate needs --include-never-run for it)."""
    for job in jobs:
        if not job.runs:
            why = "; ".join(job.why_not) or "cron never runs it"
            return (
                f"{job.source}: {job.id}: cron never runs this job ({why}); pass --include-never-run to "
                "generate it anyway"
            )
    return None


def render_project(
    jobs: list[CronJob],
    *,
    package: str,
    timezone: str,
    dialect: Dialect,
    year: int,
    broker: str = DEFAULT_BROKER,
    on_reboot: bool = False,
    plans: dict[str, Plan] | None = None,
    beat: str = "celery",
    state_redis: str | None = None,
) -> tuple[dict[str, str], list[JobOutput]]:
    """Every generated file (path relative to OUT -> text) and each job's translation. Pure: no I/O."""
    files: dict[str, str] = {}
    outs: list[JobOutput] = []
    ctx_jobs: list[dict[str, Any]] = []
    reboot: list[dict[str, Any]] = []
    policies: list[str] = []
    longest = 0
    proved = _translate_in_parallel(jobs, timezone, dialect, year)
    used_plans: list[Plan] = []
    for job in sorted(jobs, key=lambda j: j.id):
        name = slug(job.id)
        module, task = f"{package}.jobs.{name}", f"{package}.{name}"
        zone = job.timezone or timezone
        try:
            expr, notes = expr_for(job, dialect)
        except ScheduleError as e:
            expr, notes = None, (f"cron rejects this schedule: {e}",)
        zone_bad = unknown_zone(zone)
        if zone_bad is not None:
            tr = Translation((), None, f"{zone_bad}: no beat entry")
        elif expr is None:
            tr = Translation((), None, "; ".join(notes) or "no schedule")
        elif zone != timezone and not expr.reboot:
            tr = _other_zone(expr, zone, year)
        else:
            tr = proved.get(expr) or translate(expr, zone, year)
        warns = job_warnings(job, expr, dialect)
        messages = (
            *(f"warning: {w}" for w in warns),
            *notes,
            *((tr.message,) if tr.message else ()),
            *tr.notes,
        )
        if expr is not None and expr.reboot:
            extra = "a worker_ready hook in app.py sends it each time a worker starts" if on_reboot else (
                "nothing sends it; pass --on-reboot for a worker_ready hook")  # fmt: skip
            messages = (*messages, extra)
            if on_reboot:
                reboot.append({"task": task})
        plan = (plans or {}).get(job.id) or plan_for(job)
        longest = max(longest, plan.celery_limit)
        used_plans.append(plan)
        policies.append(plan.missed)
        entries = tuple(BeatEntry(e.kind, e.fields, e.expr, e.zone, e.why) for e in tr.entries)
        named = [
            {"name": name if len(entries) == 1 else f"{name}-{k + 1}", "source": e.source(), "why": e.why}
            for k, e in enumerate(entries)
        ]
        proof = tr.proof
        proof_line = (
            "none"
            if proof is None
            else (
                f"identical to cron over {proof.window[0]} .. {proof.window[1]} in {proof.zone} "
                f"({proof.fires} fires; tables compared, Celery's own schedule code driven across "
                f"{proof.transitions} offset change(s) and each month boundary against a port of cron's loop)"
                if proof.identical
                else f"DIFFERS from cron at {len(proof.differences) + proof.more_differences} instant(s)"
            )
        )
        # No schedule in the spec: the beat entries in app.py are the only copy (the runtime reads them).
        spec_json = json.dumps(job_spec(job, plan, dialect=dialect), ensure_ascii=True, sort_keys=True)
        ctx = {
            "id": job.id, "func": name, "module": module, "task": task, "package": package,
            "source": str(job.source), "user": job.user, "shell": job.shell, "schedule_text": job.schedule,
            "has_stdin": job.stdin is not None, "spec_json": spec_json, "overlap": plan.overlap,
            "overlap_why": plan.overlap_why, "time_limit": plan.time_limit, "limit_why": plan.limit_why,
            "celery_limit": plan.celery_limit, "entries": named, "plan": _plan_ctx(plan),
            "no_entry": "; ".join(messages) or "none",
            "notes": messages[len(warns):], "warnings": warns, "proof_line": proof_line,
            "command": (job.command.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")),
            "fence": "`" * max(3, 1 + max((len(m) for m in re.findall("`+", job.command)), default=0)),
        }  # fmt: skip
        ctx_jobs.append(ctx)
        files[f"{package}/jobs/{name}.py"] = templates.get_template("job.py.j2").render(**_safe_doc(ctx))
        files[f"{package}/jobs/{name}.md"] = templates.get_template("README.md.j2").render(**ctx)
        outs.append(JobOutput(job.id, task, module, tr, entries, messages, plan_json(plan), warns))
    uses = {e.kind for o in outs for e in o.entries}
    files[f"{package}/__init__.py"] = '"""Celery tasks generated by cronshift from cron jobs."""\n'
    files[f"{package}/jobs/__init__.py"] = '"""One module per cron job."""\n'
    files[f"{package}/app.py"] = templates.get_template("app.py.j2").render(
        package=package, broker=broker, backend=_backend(broker), jobs=[_safe_doc(c) for c in ctx_jobs],
        timezone=timezone, uses_crontab="crontab" in uses, uses_cronsim="cronsim" in uses,
        longest_limit=longest, visibility_timeout=longest + VISIBILITY_MARGIN,
        deadline=STARTING_DEADLINE if all(p == "skip" for p in policies) else None,
        concurrency=max(1, sum(p.concurrency for p in used_plans)),
        concurrency_why=f"{len(used_plans)} job(s)",
        reboot_jobs=reboot, redbeat=beat == "redbeat", state_redis=state_redis,
        redbeat_cronsim=beat == "redbeat" and "cronsim" in uses,
    )  # fmt: skip
    files[f"{package}/triggers.py"] = templates.get_template("triggers.py.j2").render(jobs=ctx_jobs)
    for rel, text in files.items():
        if rel.endswith(".py"):
            files[rel] = text.rstrip("\n") + "\n"  # one newline at the end, whatever the last block was
    files["ruff.toml"] = RUFF_TOML
    files["requirements.txt"] = requirements(beat)
    return files, outs


_PARALLEL_FROM = 64  # distinct schedules; below this a second process costs more than it saves


def _translate_one(args: tuple[CronExpr, str, int]) -> Translation:
    return translate(*args)


def _translate_in_parallel(
    jobs: list[CronJob], timezone: str, dialect: Dialect, year: int
) -> dict[CronExpr, Translation]:
    """Prove the app zone's distinct schedules on two processes when there are many (a varied fleet).

    Proofs are pure and deterministic, so the result is the same as proving them one by one."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    exprs: dict[CronExpr, None] = {}
    for job in jobs:
        if (job.timezone or timezone) != timezone:
            continue
        try:
            expr, _notes = expr_for(job, dialect)
        except ScheduleError:
            continue
        if expr is not None and not expr.reboot and expr.can_fire():
            exprs[expr] = None
    workers = min(2, len(os.sched_getaffinity(0)))
    if len(exprs) < _PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return {}
    keys = list(exprs)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
        done = ex.map(_translate_one, [(e, timezone, year) for e in keys], chunksize=8)
        return dict(zip(keys, done, strict=True))


def requirements(beat: str = "celery") -> str:
    """What a worker or beat host installs: the runtime alone (no CLI dependencies), pinned to the cronshift
    that generated the code, and Celery as tested with it."""
    from importlib.metadata import PackageNotFoundError, version

    def pinned(name: str, fallback: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return fallback

    lines = [
        "# Generated by cronshift generate: what workers and beat need to run this project.",
        "# cronshift-runtime (cronshift.runtime without the CLI's dependencies) is built from the cronshift",
        "# repository: pip install <cronshift checkout>/packaging/cronshift-runtime",
        f"cronshift-runtime=={pinned('cronshift', '0.1.0')}",
        f"celery[redis]=={pinned('celery', '5.4.0')}",
    ]
    if beat == "redbeat":
        lines.append(f"celery-redbeat=={pinned('celery-redbeat', '2.2.0')}")
    return "\n".join(lines) + "\n"


def _plan_ctx(plan: Plan) -> dict[str, Any]:
    """The plan's values and reasons, each reason safe inside a # comment."""
    out: dict[str, Any] = {k: getattr(plan, k) for k in plan.__slots__ if not k.endswith("_why")}  # type: ignore[attr-defined]
    for k in ("overlap_why", "limit_why", "missed_why", "retry_why", "delivery_why", "concurrency_why"):
        out[k] = one_line(getattr(plan, k))
    out["hard_limit"], out["retry_on"] = plan.hard_limit, list(plan.retry_on)
    return out


def _safe_doc(ctx: dict[str, Any]) -> dict[str, Any]:
    out = dict(ctx)
    for k in ("id", "source", "user", "schedule_text", "overlap_why", "limit_why", "no_entry"):
        out[k] = one_line(str(ctx[k]))
    out["entries"] = [{**e, "why": one_line(e["why"])} for e in ctx["entries"]]
    return out


def _backend(broker: str) -> str:
    return "rpc://" if broker.startswith(("amqp://", "amqps://", "pyamqp://")) else broker


def _other_zone(expr: CronExpr, zone: str, year: int) -> Translation:
    """A CRON_TZ other than the app's: beat has one zone, so the cronsim class carries this one."""
    from cronshift.generate.equivalence import prove

    cexpr = expr.cronsim_expr()
    if cexpr is None:
        return translate(expr, zone, year)
    why = f"CRON_TZ={zone} differs from the app's zone; this cronsim-driven schedule keeps cron's zone"
    entry = BeatEntry("cronsim", expr=cexpr, zone=zone, why=why)
    return Translation((entry,), prove(expr, (entry,), zone, year))


def generate_project(
    jobs: list[CronJob],
    out: Path,
    *,
    package: str,
    timezone: str,
    dialect: Dialect,
    year: int,
    broker: str = DEFAULT_BROKER,
    on_reboot: bool = False,
    force: bool = False,
    plans: dict[str, Plan] | None = None,
    beat: str = "celery",
    state_redis: str | None = None,
) -> GenerateResult:
    """Render and write; a file whose bytes differ from what generate last wrote is kept unless `force`."""
    files, outs = render_project(
        jobs,
        package=package,
        timezone=timezone,
        dialect=dialect,
        year=year,
        broker=broker,
        on_reboot=on_reboot,
        plans=plans,
        beat=beat,
        state_redis=state_redis,
    )
    result = GenerateResult(package=package, out=str(out), jobs=outs)
    write_files(files, out, result, force)
    return result
