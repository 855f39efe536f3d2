"""Write a Celery project for cron jobs: app.py with a proved beat schedule, one task module per job,
triggers.py, a README per job, and a manifest so a re-run never overwrites a file the user edited."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
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
from cronshift.generate.equivalence import (
    BeatEntry,
    Translation,
    class_translation,
    crontab_entries,
    is_utc,
    prove,
    stock_translation,
    utc_tables,
)
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
    files, outs, _zone = _render(
        jobs, package=package, timezone=timezone, dialect=dialect, year=year, broker=broker,
        on_reboot=on_reboot, plans=plans, beat=beat, state_redis=state_redis,
    )  # fmt: skip
    return files, outs


def _render(
    jobs: list[CronJob],
    *,
    package: str,
    timezone: str,
    dialect: Dialect,
    year: int,
    broker: str,
    on_reboot: bool,
    plans: dict[str, Plan] | None,
    beat: str,
    state_redis: str | None,
) -> tuple[dict[str, str], list[JobOutput], BeatZone]:
    files: dict[str, str] = {}
    outs: list[JobOutput] = []
    ctx_jobs: list[dict[str, Any]] = []
    reboot: list[dict[str, Any]] = []
    policies: list[str] = []
    longest = 0
    parsed: dict[str, tuple[CronExpr | None, tuple[str, ...]]] = {}
    for job in jobs:
        try:
            parsed[job.id] = expr_for(job, dialect)
        except ScheduleError as e:
            parsed[job.id] = None, (f"cron rejects this schedule: {e}",)
    wanted = [
        (expr, job.timezone or timezone)
        for job in jobs
        if (expr := parsed[job.id][0]) is not None and unknown_zone(job.timezone or timezone) is None
    ]
    bz = BeatZone.choose(wanted, timezone, year)
    used_plans: list[Plan] = []
    several: list[str] = []  # jobs whose history shows more than one run at once (and allows it)
    for job in sorted(jobs, key=lambda j: j.id):
        name = slug(job.id)
        module, task = f"{package}.jobs.{name}", f"{package}.{name}"
        zone = job.timezone or timezone
        expr, notes = parsed[job.id]
        zone_bad = unknown_zone(zone)
        if zone_bad is not None:
            tr = Translation((), None, f"{zone_bad}: no beat entry")
        elif expr is None:
            tr = Translation((), None, "; ".join(notes) or "no schedule")
        else:
            tr = bz.translations[(expr, zone)]
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
        if plan.concurrency > 1:
            several.append(f"{job.id} {plan.concurrency}")
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
    pool_why = f"{len(used_plans)} job(s)" + (f"; several at once: {', '.join(several)}" if several else "")
    files[f"{package}/__init__.py"] = '"""Celery tasks generated by cronshift from cron jobs."""\n'
    files[f"{package}/jobs/__init__.py"] = '"""One module per cron job."""\n'
    files[f"{package}/app.py"] = templates.get_template("app.py.j2").render(
        package=package, broker=broker, backend=_backend(broker), jobs=[_safe_doc(c) for c in ctx_jobs],
        timezone=bz.zone, timezone_why=bz.why, uses_crontab="crontab" in uses, uses_cronsim="cronsim" in uses,
        longest_limit=longest, visibility_timeout=longest + VISIBILITY_MARGIN,
        deadline=STARTING_DEADLINE if all(p == "skip" for p in policies) else None,
        concurrency=max(1, sum(p.concurrency for p in used_plans)),
        concurrency_why=pool_why,
        reboot_jobs=reboot, redbeat=beat == "redbeat", state_redis=state_redis,
        redbeat_cronsim=beat == "redbeat" and "cronsim" in uses,
    )  # fmt: skip
    files[f"{package}/triggers.py"] = templates.get_template("triggers.py.j2").render(jobs=ctx_jobs)
    for rel, text in files.items():
        if rel.endswith(".py"):
            files[rel] = text.rstrip("\n") + "\n"  # one newline at the end, whatever the last block was
    files["ruff.toml"] = RUFF_TOML
    files["requirements.txt"] = requirements(beat)
    return files, outs, bz


_PARALLEL_FROM = 64  # distinct schedules; below this a second process costs more than it saves


@dataclass(frozen=True)
class BeatZone:
    """The zone of the app's beat, why, and each (schedule, cron zone)'s proved translation for it.

    Celery reads every stock crontab in the app's one zone (app.conf.timezone). A `nowfun` does not move
    that: Celery 5.7's crontab converts the time nowfun returns into the app's zone before it reads the
    fields (checked: crontab(minute=0, nowfun=<UTC now>) in an Asia/Kolkata app fires at :30 UTC), and
    django-celery-beat stores a crontab as its fields plus `schedule.tz` (the app's zone), dropping nowfun.
    So per-entry UTC via nowfun is neither exact nor storable; an app whose zone is UTC is both (its
    crontabs are stored with timezone UTC). Cron's own zone is kept unless UTC leaves strictly fewer jobs on
    cronshift's class, the only entry django-celery-beat cannot store: in a DST zone a schedule that does
    not follow the wall clock (`*/15 * * * *`) needs the class in a local app, and one that does
    (`0 3 * * *`) needs it in a UTC app. A CRON_TZ zone with one UTC offset over the proof range (Kolkata)
    needs the class in any other zone's app, and in a UTC app only where its shifted table is no crontab
    (`utc_tables`)."""

    zone: str
    why: str
    translations: dict[tuple[CronExpr, str], Translation]
    local_class: int = 0  # jobs on the class if the app kept cron's zone
    utc_class: int = 0  # jobs on the class if the app's zone were UTC

    @classmethod
    def choose(cls, wanted: list[tuple[CronExpr, str]], timezone: str, year: int) -> BeatZone:
        weights = Counter(k for k in wanted if not k[0].reboot and k[0].can_fire())
        keys = list(weights)
        out: dict[tuple[CronExpr, str], Translation] = {}
        for expr, zone in dict.fromkeys(wanted):
            if (expr, zone) not in weights:
                out[(expr, zone)] = class_translation(expr, zone, year, timezone)  # the no-entry message
        first = dict(zip(keys, _map(_stock_one, [(e, z, year, timezone) for e, z in keys]), strict=True))
        local_class = sum(w for k, w in weights.items() if not isinstance(first[k], Translation))
        utc_ok = {k: is_utc(k[1]) or bool(utc_tables(k[0], k[1], year).tables) for k in keys}
        utc_class = sum(w for k, w in weights.items() if not utc_ok[k])
        go_utc = not is_utc(timezone) and utc_class < local_class
        app = "UTC" if go_utc else timezone
        if go_utc:
            why = (
                f"cron runs in {timezone}, but {local_class - utc_class} more job(s) get a stock crontab "
                f"in UTC than in {timezone}: each of those fires at the same instants whatever {timezone}'s "
                "offset, so its crontab is written in UTC"
            )
            if utc_class:
                why += f"; the {utc_class} that no crontab in UTC says use cronshift's class, with their zone"
            args = [(e, z, year, app, _utc_class_why(e, z, year), True) for e, z in keys]
        else:
            why = f"cron reads the wall clock of the server's zone ({timezone}); beat reads crontabs in it"
            gain = sum(w for k, w in weights.items() if utc_ok[k] and not isinstance(first[k], Translation))
            if gain:
                why += (
                    f". In UTC {gain} job(s) on cronshift's class would get a stock crontab, but {utc_class} "
                    "that no crontab in UTC says would need the class: no fewer, so the app keeps cron's zone"
                )
            args = []
            for k in keys:
                f = first[k]
                if isinstance(f, Translation):
                    out[k] = f
                    continue
                e, z = k
                if z == timezone:
                    w = _local_why(f, z, utc_ok[k], timezone, utc_class)
                else:  # a CRON_TZ zone: in a UTC app, what stops a crontab in UTC
                    w = _utc_class_why(e, z, year) if is_utc(timezone) else _other_zone_why(z)
                args.append((e, z, year, app, w, False))
        keys2 = [(a[0], a[1]) for a in args]
        out.update(zip(keys2, _map(_final_one, args), strict=True))
        return cls(app, why, out, local_class, utc_class)


def _utc_class_why(expr: CronExpr, zone: str, year: int) -> str:
    """Why a job in a UTC app keeps cronshift's class: what stops a crontab in UTC (see `utc_tables`)."""
    shifted = utc_tables(expr, zone, year)
    why = shifted.why if not shifted.tables else "the stock crontab in UTC for it did not pass its proof"
    return f"{why}; so cronshift's class carries {zone} (django-celery-beat cannot store it)"


def _other_zone_why(zone: str) -> str:
    return (
        f"CRON_TZ={zone} differs from the app's zone; this cronsim-driven schedule keeps cron's zone "
        "(django-celery-beat cannot store it)"
    )


def _local_why(first: str, zone: str, utc_ok: bool, timezone: str, utc_class: int) -> str:
    why = (
        f"a stock crontab differs from cron at {first} ({zone} offset changes: cron runs fixed-time jobs "
        "caught in the spring gap at the change and wildcard jobs in both passes of a repeated hour); no "
        "stock Celery schedule does, so cronshift's class does (django-celery-beat cannot store it)"
    )
    if utc_ok:
        why += (
            f". A stock crontab in UTC would be exact, but the app keeps {timezone}: a UTC app would put "
            f"{utc_class} job(s) that no crontab in UTC says on the class instead"
        )
    return why


def _stock_one(args: tuple[CronExpr, str, int, str]) -> Translation | str:
    """The stock translation in the app's zone, or where a stock crontab first differs (for the why)."""
    expr, zone, year, app_zone = args
    tr = stock_translation(expr, zone, year, app_zone)
    if tr is not None:
        return tr
    if zone != app_zone:
        return ""
    first = prove(expr, crontab_entries(expr, zone), zone, year, first_difference=True, app_zone=zone)
    return first.differences[0]["instant"] if first.differences else "an offset change"


def _final_one(args: tuple[CronExpr, str, int, str, str, bool]) -> Translation:
    expr, zone, year, app_zone, why, try_stock = args
    tr = stock_translation(expr, zone, year, app_zone) if try_stock else None
    return tr if tr is not None else class_translation(expr, zone, year, app_zone, why)


def _map(fn: Callable[[Any], Any], args: list[Any]) -> list[Any]:
    """`fn` over `args`, on two processes when there are many (a varied fleet's proofs).

    Proofs are pure and deterministic, so the result is the same as running them one by one."""
    # deferred: a pool is needed only for a fleet of many proofs, not for the usual few jobs (start-up)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(2, len(os.sched_getaffinity(0)))
    if len(args) < _PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(a) for a in args]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
        return list(ex.map(fn, args, chunksize=8))


def requirements(beat: str = "celery") -> str:
    """What a worker or beat host installs: the runtime alone (no CLI dependencies), pinned to the cronshift
    that generated the code, and Celery as tested with it."""

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
    files, outs, bz = _render(
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
    result = GenerateResult(package=package, out=str(out), jobs=outs, beat_zone=bz.zone, beat_zone_why=bz.why)
    write_files(files, out, result, force)
    return result
