"""`cronshift generate JOB... --out DIR`: a Celery project for cron jobs, with each schedule proved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan
from cronshift.cli.output import Env, ExitStatus, emit_json, fail
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.generate.celery import DEFAULT_BROKER, GenerateResult, generate_project


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
    root: RootOpt = Path("/"),
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
) -> None:
    """Write Celery tasks and a beat schedule proved to fire at cron's instants (exit 3: a proof differs)."""
    env = Env()
    if not package.isidentifier():
        fail(env, f"--package '{package}' is not a Python identifier", ExitStatus.USAGE)
    result = do_scan(env, root, dialect)
    if all_jobs:
        chosen = [j for j in result.jobs if j.runs]
    elif jobs:
        try:
            chosen = list({j.id: j for j in (find_job(result, ref) for ref in jobs)}.values())
        except JobNotFound as e:
            fail(env, str(e), ExitStatus.USAGE)
    else:
        fail(env, "name at least one job, or pass --all", ExitStatus.USAGE)
    tz = result.system_timezone or "UTC"
    year = clock(now, tz).year
    res = generate_project(
        chosen, out, package=package, timezone=tz, dialect=result.dialect, year=year, broker=broker,
        on_reboot=on_reboot, force=force,
    )  # fmt: skip
    if json:
        emit_json(env, to_json(res))
    else:
        _print(env, res)
    for rel in res.kept:
        env.stderr.write(
            f"cronshift: {out / rel}: edited since it was generated; left alone (--force overwrites)\n"
        )
    if res.kept:
        raise SystemExit(int(ExitStatus.ERROR))
    if res.proofs_differ:
        raise SystemExit(int(ExitStatus.DIFFERENCES))


def to_json(res: GenerateResult) -> dict[str, Any]:
    return {
        "package": res.package,
        "out": res.out,
        "files": res.files,
        "jobs": [
            {
                "id": j.id,
                "task": j.task,
                "module": j.module,
                "beat_entries": [e.to_dict() for e in j.entries],
                "schedule_proof": None if j.translation.proof is None else j.translation.proof.to_dict(),
                "messages": list(j.messages),
            }
            for j in res.jobs
        ],
    }


def _print(env: Env, res: GenerateResult) -> None:
    for j in res.jobs:
        p = j.translation.proof
        verdict = "no beat entry" if p is None else ("proved identical" if p.identical else "DIFFERS")
        kinds = ", ".join(e.kind for e in j.entries) or "-"
        env.stdout.write(f"{j.id}: {j.task} [{kinds}] {verdict}\n")
        for m in j.messages:
            env.stdout.write(f"    {m}\n")
    written = sum(1 for f in res.files if f["status"] == "written")
    env.stdout.write(f"{written} file(s) written to {res.out}/{res.package}\n")
