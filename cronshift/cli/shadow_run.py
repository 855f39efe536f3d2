"""`cronshift shadow-run`: run the cron path and the event path side by side and judge parity."""

from __future__ import annotations

import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cronshift.cli.common import DialectOpt, JsonOpt, RootOpt, do_scan
from cronshift.cli.output import Env, ExitStatus, emit_json, fail
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.history.ledger import open_ledger
from cronshift.shadow.normalize import RuleError, build_normalizer
from cronshift.shadow.store import OBSERVATION_KIND, VERDICT_KIND, read_report, write_verdict_file
from cronshift.shadow.verdict import GATE_PAIRS

EventPath = Annotated[
    str, typer.Option("--event-path", help="local (runtime in-process) or celery (real worker).")
]


def _render(env: Env, doc: dict[str, Any], pairs: list[dict[str, Any]]) -> None:
    out = env.out
    colour = {"parity": "green", "mismatch": "red"}.get(doc["label"], "yellow")
    out.print(
        f"[bold {colour}]{doc['label']}[/] for {escape(doc['job'])}: {doc['runs_compared']} pair(s), "
        f"{doc['matched_consecutive']} matched in a row (gate: {doc['gate']['consecutive_pairs']})"
    )
    ev = doc["evidence"]
    out.print(f"mode {ev['mode']}, event path {ev['event_path']}, writes {ev['writes'] or 'none declared'}")
    if doc["noise_floor_text"]:
        out.print("noise learned from cron vs cron (A/A):")
        for line in doc["noise_floor_text"]:
            out.print(f"  {escape(line)}")
    for p in pairs:
        for d in p.get("differences", []):
            tag = "[dim]noise[/]" if d["explained"] else "[red]DIFF[/]"
            out.print(f"{tag} pair {p['round']}: {escape(d['what'])}")
            if d["diff"] and not d["explained"]:
                for line in d["diff"].splitlines():
                    style = (
                        "green"
                        if line.startswith("+")
                        else "red"
                        if line.startswith("-")
                        else "cyan"
                        if line.startswith("@@")
                        else ""
                    )
                    out.print(f"[{style}]{escape(line)}[/]" if style else escape(line), highlight=False)
    for m in doc["missing"]:
        out.print(f"[yellow]missing:[/] {escape(m)}")


def shadow_run(
    job: Annotated[str, typer.Argument(help="Job id (or a unique prefix), or PATH:LINE.")],
    root: RootOpt = Path("/"),
    runs: Annotated[
        int, typer.Option("--runs", min=1, help="Pairs (cron, event) to run and compare.")
    ] = GATE_PAIRS,
    mode: Annotated[
        str, typer.Option("--mode", help="sandbox (default), allow (job is idempotent), dry-run.")
    ] = "sandbox",
    writes: Annotated[
        list[str] | None, typer.Option("--writes", help="A path the job writes (repeatable).")
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option("--ignore", help="Regex of noise to ignore (repeatable).")
    ] = None,
    no_rule: Annotated[
        list[str] | None, typer.Option("--no-rule", help="Turn a built-in noise rule off.")
    ] = None,
    dry_run_flag: Annotated[
        str | None, typer.Option("--dry-run-flag", help="The job's own dry-run flag.")
    ] = None,
    event_path: EventPath = "local",
    project: Annotated[
        Path | None, typer.Option("--project", help="The `cronshift generate` output dir.")
    ] = None,
    package: Annotated[
        str | None, typer.Option("--package", help="Package in --project (if several).")
    ] = None,
    broker: Annotated[
        str | None, typer.Option("--broker", help="Broker URL for the celery event path.")
    ] = None,
    calibration: Annotated[int, typer.Option("--calibration", min=2, help="Cron-vs-cron runs first.")] = 3,
    gate_pairs: Annotated[
        int, typer.Option("--gate-pairs", min=1, help="Matched pairs in a row for parity.")
    ] = GATE_PAIRS,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for one side.")] = 300.0,
    report: Annotated[bool, typer.Option("--report", help="Show the evidence so far; run nothing.")] = False,
    live: Annotated[
        bool, typer.Option("--live", help="Pair beat's shadow runs with cron's (not yet).")
    ] = False,
    store: Annotated[str | None, typer.Option("--store", help="Ledger (SQLite) path.")] = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis ledger URL.")] = None,
    json: JsonOpt = False,
    dialect: DialectOpt = None,
) -> None:
    """Run a job through cron's path and the event path N times each and judge parity (exit 3: mismatch)."""
    env = Env()
    if live:
        fail(
            env,
            "--live is designed (see README: shadow-run live) but not implemented yet; use now mode",
            ExitStatus.USAGE,
        )
    from cronshift.shadow import execute as ex
    from cronshift.shadow.session import run_session

    result = do_scan(env, root, dialect)
    try:
        j = find_job(result, job)
    except JobNotFound as e:
        fail(env, str(e), ExitStatus.USAGE)
    if report:
        with open_ledger(root, store=store, redis_url=redis) as led:
            doc, obs = read_report(led, j.id)
        if doc is None:
            fail(
                env,
                f"no shadow-run evidence for {j.id} yet: run `cronshift shadow-run {j.id}`",
                ExitStatus.ERROR,
            )
        pairs = [o for o in obs if o.get("phase") == "pair" and o.get("session") == doc.get("session")]
        if json:
            emit_json(env, {"verdict": doc, "observations": obs})
        else:
            _render(env, doc, pairs)
        return
    if mode not in ex.MODES:
        fail(env, f"--mode {mode!r}: choose one of {', '.join(ex.MODES)}", ExitStatus.USAGE)
    if mode == "dry-run" and not dry_run_flag:
        fail(
            env,
            "--mode dry-run needs --dry-run-flag TEXT (the job's own no-side-effect flag)",
            ExitStatus.USAGE,
        )
    if event_path not in ("local", "celery"):
        fail(env, f"--event-path {event_path!r}: choose local or celery", ExitStatus.USAGE)
    paths = tuple(str(Path(w).absolute()) for w in writes or ())
    for w in paths:
        if not Path(w).exists():
            fail(
                env,
                f"{w}: --writes names a path that does not exist; declare the directory the job writes into",
                ExitStatus.USAGE,
            )
    if mode == "sandbox":
        why = ex.sandbox_available()
        if why:
            fail(env, why, ExitStatus.ERROR)
    try:
        norm = build_normalizer(no_rule or (), ignore or (), hosts=(socket.gethostname(), socket.getfqdn()))
    except RuleError as e:
        fail(env, str(e), ExitStatus.USAGE)
    session = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + __import__("os").urandom(2).hex()
    scratch = ex.new_scratch(root, session)
    if any(str(scratch).startswith(w.rstrip("/") + "/") for w in paths):
        fail(env, "a --writes path contains the scratch directory; declare narrower paths", ExitStatus.USAGE)
    setup = ex.SideSetup(mode, paths, scratch, root, dry_run_flag, timeout)
    cron_spec = ex.cron_spec(j)
    try:
        if event_path == "celery":
            from cronshift.shadow.celery_side import CelerySide, EventPathError, generated_spec

            if project is None:
                fail(
                    env,
                    "--event-path celery needs --project OUT (the `cronshift generate` output)",
                    ExitStatus.USAGE,
                )
            event_spec = generated_spec(project, package, j)
            event = CelerySide(project, package, j, broker, setup, timeout)
        else:
            from cronshift.shadow.celery_side import EventPathError, generated_spec

            event_spec = generated_spec(project, package, j) if project else dict(cron_spec)

            def event(label: str) -> ex.SideRun:  # type: ignore[name-defined]
                return ex.run_local(event_spec, setup, label)
    except EventPathError as e:
        ex.remove_scratch(scratch)
        fail(env, str(e), ExitStatus.ERROR)
    evidence = {
        "mode": mode,
        **setup.evidence(),
        "event_path": event_path,
        "project": str(project) if project else None,
        "command_line": shlex.join(["cronshift", "shadow-run", *sys.argv[2:]])
        if sys.argv[1:2] == ["shadow-run"]
        else None,
        "cron_spec": cron_spec,
        "event_spec": event_spec,
        "event_spec_source": "generated project"
        if project
        else "the job itself (no --project: proves the runtime only)",
        "rules": norm.names,
        "ignore": list(ignore or ()),
    }
    try:
        with open_ledger(root, store=store, redis_url=redis) as led:
            res = run_session(
                j,
                cron_side=lambda label: ex.run_local(cron_spec, setup, label),
                event_side=event,
                runs=runs,
                normalizer=norm,
                evidence=evidence,
                clock=time.time,
                calibration=calibration,
                gate_pairs=gate_pairs,
                record=lambda key, doc: led.put(OBSERVATION_KIND, key, doc),
                session=session,
            )
            led.put(VERDICT_KIND, j.id, res.doc)
    finally:
        ex.remove_scratch(scratch)
    res.doc["verdict_file"] = write_verdict_file(root, j.id, res.doc)
    pairs = [o for o in res.observations if o.get("phase") == "pair"]
    if json:
        emit_json(env, {"verdict": res.doc, "pairs": pairs})
    else:
        _render(env, res.doc, pairs)
    if res.verdict.label == "mismatch":
        raise SystemExit(int(ExitStatus.DIFFERENCES))
