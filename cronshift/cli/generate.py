"""`cronshift generate JOB... --out DIR`: a Celery project for cron jobs, with each schedule proved."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cronshift.cli.common import (
    CELERY_BROKER_SCHEMES,
    REDIS_SCHEMES,
    DialectOpt,
    JsonOpt,
    NowOpt,
    RootOpt,
    check_package,
    check_url,
    clock,
    do_scan,
)
from cronshift.cli.output import Env, ExitStatus, busy, emit_json, fail
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.generate.celery import DEFAULT_BROKER, generate_project, never_run_refusal
from cronshift.generate.common import GenerateResult, unknown_zone
from cronshift.generate.plan import (
    PolicyError,
    parse_policy_options,
    plans_from_history,
    without_run_parts_triggers,
)
from cronshift.generate.streams import DEFAULT_REDIS, generate_streams_project, parse_retention
from cronshift.generate.triggers import TriggerError, parse_trigger, write_event_sources
from cronshift.history.evidence import env_redis_url


class Target(StrEnum):
    CELERY = "celery"
    STREAMS = "streams"


class Beat(StrEnum):
    CELERY = "celery"
    REDBEAT = "redbeat"


def generate(
    jobs: Annotated[
        list[str] | None, typer.Argument(help="Job ids (or unique prefixes), or PATH:LINE.")
    ] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every job cron runs.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the project into.")] = Path("."),
    package: Annotated[str, typer.Option("--package", help="Python package name.")] = "cronjobs",
    broker: Annotated[
        str, typer.Option("--broker", help="Broker URL (redis:// or amqp://).")
    ] = DEFAULT_BROKER,
    on_reboot: Annotated[
        bool, typer.Option("--on-reboot", help="Send @reboot jobs from a worker_ready hook.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files edited since generation.")] = False,
    include_never_run: Annotated[
        bool, typer.Option("--include-never-run", help="Generate jobs cron never runs (with a warning).")
    ] = False,
    target: Annotated[
        Target, typer.Option("--target", help="celery, or streams (a Redis Streams consumer).")
    ] = Target.CELERY,
    redis_url: Annotated[
        str, typer.Option("--redis", help="Redis URL of the streams target.")
    ] = DEFAULT_REDIS,
    no_history: Annotated[
        bool, typer.Option("--no-history", help="Choose policies from the cron lines alone.")
    ] = False,
    store: Annotated[str | None, typer.Option("--store", help="Ledger store to read history from.")] = None,
    transient_exit: Annotated[
        list[int] | None,
        typer.Option("--transient-exit", help="An exit status worth retrying (repeatable; default: none)."),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", help="[JOB:]key=value overriding a chosen policy (e.g. overlap=replace)."),
    ] = None,
    beat: Annotated[
        Beat, typer.Option("--beat", help="celery (one beat instance) or redbeat (HA, beat state in Redis).")
    ] = Beat.CELERY,
    state_redis: Annotated[
        str | None, typer.Option("--state-redis", help="Redis for locks and run claims (default: broker).")
    ] = None,
    trigger: Annotated[
        list[str] | None,
        typer.Option(
            "--trigger",
            help="[JOB=]KIND:ARGS event source that runs the jobs (or JOB only): postgres:TABLE, path:DIR, "
            "stream:KEY or call, with ,quiet=S ,max_wait=S ,safety=CRON (repeatable; see EVENTS.md).",
        ),
    ] = None,
    retention: Annotated[
        list[str] | None,
        typer.Option("--retention", help="Streams: NAME=MAX_AGE:MAX_LENGTH for jobs, dead or ledger."),
    ] = None,
    root: RootOpt = Path("/"),
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
) -> None:
    """Write Celery tasks and a beat schedule proved to fire at cron's instants (exit 3: a proof differs)."""
    env = Env()
    if target not in ("celery", "streams"):
        fail(env, f"--target '{target}' is not celery or streams", ExitStatus.USAGE)
    check_package(env, package)
    if target == "celery":
        check_url(env, "--broker", broker, CELERY_BROKER_SCHEMES)
        if state_redis:
            check_url(env, "--state-redis", state_redis, REDIS_SCHEMES)
    else:
        check_url(env, "--redis", redis_url, REDIS_SCHEMES)
    if all_jobs and jobs:
        fail(env, "give job ids or --all, not both", ExitStatus.USAGE)
    if out.exists() and not out.is_dir():
        fail(env, f"--out {out}: is not a directory", ExitStatus.USAGE)
    try:
        triggers = [parse_trigger(t) for t in trigger or ()]
    except TriggerError as e:
        fail(env, str(e), ExitStatus.USAGE)
    if triggers and target != "celery":
        fail(env, "--trigger needs --target celery", ExitStatus.USAGE)
    result = do_scan(env, root, dialect)
    if all_jobs:
        chosen = without_run_parts_triggers([j for j in result.jobs if j.runs])
    elif jobs:
        try:
            chosen = list({j.id: j for j in (find_job(result, ref) for ref in jobs)}.values())
        except JobNotFound as e:
            fail(env, str(e), ExitStatus.USAGE)
    else:
        fail(env, "name at least one job, or pass --all", ExitStatus.USAGE)
    refusal = None if include_never_run else never_run_refusal(chosen)
    if refusal is not None:
        fail(env, refusal, ExitStatus.USAGE)
    for t in triggers:
        if t.job is not None and not any(j.id.startswith(t.job) for j in chosen):
            fail(env, f"--trigger '{t.job}=…': no job generated here has an id starting with '{t.job}'",
                 ExitStatus.USAGE)  # fmt: skip
    tz = result.system_timezone or "UTC"
    year = clock(now, tz).year
    bad_zones = [(j, unknown_zone(j.timezone)) for j in chosen if j.timezone]
    if target == "streams":
        # Flags that only mean something to Celery: refused rather than silently ignored.
        celery_only = {"--broker": broker != DEFAULT_BROKER, "--beat": beat != "celery",
                       "--on-reboot": on_reboot, "--state-redis": state_redis is not None}  # fmt: skip
        try:
            kept = parse_retention(retention or [])
        except ValueError as e:
            fail(env, str(e), ExitStatus.USAGE)
        for flag, given in celery_only.items():
            if given:
                fail(env, f"{flag} is a Celery option: --target streams keeps all its state in --redis",
                     ExitStatus.USAGE)  # fmt: skip
    elif retention:
        fail(env, "--retention is a Streams option: Celery's broker keeps no streams", ExitStatus.USAGE)
    elif beat not in ("celery", "redbeat"):
        fail(env, f"--beat '{beat}' is not celery or redbeat", ExitStatus.USAGE)
    try:
        plans, _notes = plans_from_history(
            root, result.jobs, chosen, clock(now, tz), tz, result.dialect, history=not no_history,
            store=store, redis_url=env_redis_url(), transient=transient_exit or (),
            policies=parse_policy_options(policy or ()),
        )  # fmt: skip
    except PolicyError as e:
        fail(env, str(e), ExitStatus.USAGE)
    proving = f"writing {len(chosen)} job(s) and proving each schedule against cron's"
    with busy(env, proving):
        if target == "streams":
            res = generate_streams_project(
                chosen, out, package=package, timezone=tz, dialect=result.dialect, year=year,
                redis_url=redis_url, force=force, plans=plans, retention=kept,
            )  # fmt: skip
        else:
            res = generate_project(
                chosen, out, package=package, timezone=tz, dialect=result.dialect, year=year, broker=broker,
                on_reboot=on_reboot, force=force, plans=plans, beat=beat, state_redis=state_redis,
            )  # fmt: skip
    wired = (
        write_event_sources(
            chosen, triggers, out, res, package=package, plans=plans, force=force, timezone=tz
        )
        if triggers
        else []
    )
    if json:
        extra = {"target": "streams"} if target == "streams" else {}
        emit_json(env, {**to_json(res), **extra, **({"event_sources": wired} if wired else {})})
    else:
        _print(env, res, tz)
        for w in wired:
            srcs = ", ".join(s["kind"] + ":" + str(s.get("table") or s.get("dir") or s.get("key") or "")
                             for s in w["sources"])  # fmt: skip
            env.stdout.write(
                f"{w['id']}: event sources {srcs.replace('call:', 'call')} (quiet {w['quiet']:g} s, "
                f"max wait {w['max_wait']:g} s; beat stays the safety net): see {package}/EVENTS.md\n"
            )
    for rel in res.kept:
        env.stderr.write(
            f"cronshift: {out / rel}: edited since it was generated; left alone (--force overwrites)\n"
        )
    for j, problem in bad_zones:
        if problem is not None:
            env.stderr.write(f"cronshift: {j.source}: {problem}: no beat entry for {j.id}\n")
    if res.kept or any(p for _j, p in bad_zones):
        raise SystemExit(int(ExitStatus.ERROR))
    if res.proofs_differ:
        raise SystemExit(int(ExitStatus.DIFFERENCES))


def custom_class_jobs(res: GenerateResult) -> list[str]:
    """Jobs whose beat entry is cronshift's schedule class (no stock crontab is exact for them)."""
    return [j.id for j in res.jobs if any(e.kind == "cronsim" for e in j.entries)]


CUSTOM_NOTE = (
    "no stock crontab is exact for them in this app's zone, so they use cronshift's schedule class: "
    "django-celery-beat's database scheduler cannot store them (celery beat's default file scheduler and "
    "redbeat can)"
)


def to_json(res: GenerateResult) -> dict[str, Any]:
    beat = {}
    if res.beat_zone:
        custom = custom_class_jobs(res)
        beat = {"beat": {"timezone": res.beat_zone, "why": res.beat_zone_why, "custom_class_jobs": custom,
                         **({"custom_class_note": CUSTOM_NOTE} if custom else {})}}  # fmt: skip
    return {
        "package": res.package,
        "out": res.out,
        **beat,
        "files": res.files,
        "jobs": [
            {
                "job_id": j.id,
                "id": j.id,
                "task": j.task,
                "module": j.module,
                "beat_entries": [e.to_dict() for e in j.entries],
                "schedule_proof": None if j.translation.proof is None else j.translation.proof.to_dict(),
                "messages": list(j.messages),
                "warnings": list(getattr(j, "warnings", ())),
                **({"policies": j.policies} if getattr(j, "policies", None) else {}),
            }
            for j in res.jobs
        ],
    }


def _print(env: Env, res: GenerateResult, cron_zone: str = "") -> None:
    for j in res.jobs:
        p = j.translation.proof
        verdict = "no beat entry" if p is None else ("proved identical" if p.identical else "DIFFERS")
        kinds = ", ".join(e.kind for e in j.entries) or "-"
        env.stdout.write(f"{j.id}: {j.task} [{kinds}] {verdict}\n")
        for m in j.messages:
            env.stdout.write(f"    {m}\n")
        conc = (j.policies or {}).get("concurrency") or {}
        if conc.get("history_max") is not None:  # the evidence, when the history had runs with an end
            env.stdout.write(f"    concurrency {conc['value']}: {conc['why']}\n")
    custom = custom_class_jobs(res) if res.beat_zone else []  # a Celery beat (not the streams target)
    if res.beat_zone and (custom or res.beat_zone != cron_zone):  # said when it matters
        env.stdout.write(f"beat timezone {res.beat_zone}: {res.beat_zone_why}\n")
    if custom:
        env.stdout.write(f"{len(custom)} job(s) ({', '.join(custom)}): {CUSTOM_NOTE}\n")
    written = sum(1 for f in res.files if f["status"] == "written")
    env.stdout.write(f"{written} file(s) written to {res.out}/{res.package}\n")
