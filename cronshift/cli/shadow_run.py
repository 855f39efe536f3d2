"""`cronshift shadow-run`: run the cron path and the event path side by side and judge parity."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cronshift.cli.common import (
    CELERY_BROKER_SCHEMES,
    DialectOpt,
    JsonOpt,
    NowOpt,
    RootOpt,
    check_url,
    clock,
    do_scan,
)
from cronshift.cli.output import Env, ExitStatus, emit_json, fail, progress_bar
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.discover.schedule import CronExpr, ScheduleError
from cronshift.discover.schedule import parse as parse_schedule
from cronshift.edit.crontab import EditFailed, EditRefused
from cronshift.edit.wrap import WRAPPER_KIND, apply_plan, plan_wrap
from cronshift.ledger.store import DEFAULT_STORE, open_ledger
from cronshift.model import CronJob, Format, ScanResult
from cronshift.shadow import effects, live
from cronshift.shadow.live import DEFAULT_GRACE, LIVE_KIND
from cronshift.shadow.normalize import RuleError, build_normalizer
from cronshift.shadow.session import NowOptions, judge_live, run_now
from cronshift.shadow.store import (
    project_digests,
    read_report,
)
from cronshift.shadow.verdict import GATE_PAIRS


class EventPathKind(StrEnum):
    LOCAL = "local"
    CELERY = "celery"


class Mode(StrEnum):
    SANDBOX = "sandbox"
    ALLOW = "allow"
    DRY_RUN = "dry-run"


EventPath = Annotated[
    EventPathKind,
    typer.Option("--event-path", help="local (the runtime, in-process) or celery (a real worker)."),
]


DEFINITION_KEYS = ("user", "shell", "command", "stdin", "umask")


def definition_diff(cron: dict[str, Any] | None, event: dict[str, Any] | None) -> list[str]:
    """How the two sides' job definitions differ (user, working directory, env, shell, umask...)."""
    if not cron or not event:
        return []
    out = [
        f"{k}: {cron.get(k)!r} (cron) vs {event.get(k)!r} (event)"
        for k in DEFINITION_KEYS
        if cron.get(k) != event.get(k)
    ]
    ea = {kv[0]: kv[1] for kv in cron.get("env") or []}
    eb = {kv[0]: kv[1] for kv in event.get("env") or []}
    for k in sorted(set(ea) | set(eb)):
        if ea.get(k) != eb.get(k):
            a = "unset" if k not in ea else repr(ea[k])
            b = "unset" if k not in eb else repr(eb[k])
            out.append(
                f"env {k}: {a} (cron) vs {b} (event)" + (" (the working directory)" if k == "HOME" else "")
            )
    return out


def _render_masked(env: Env, masked: dict[str, dict[str, int]], none: str) -> None:
    """Masked spans per side and rule: every span a normaliser hid from the comparison is counted."""
    if not any(masked.values()):
        env.out.print(f"masked: nothing ({none})")
        return
    for side in ("cron", "event"):
        counts = masked.get(side) or {}
        if counts:
            env.out.print(
                f"masked ({side}): " + ", ".join(f"{escape(r)} {n}" for r, n in sorted(counts.items())),
                highlight=False,
            )


def _render(env: Env, doc: dict[str, Any], pairs: list[dict[str, Any]]) -> None:
    """One screen first (verdict, evidence, masks, contained writes, duration), then each difference once."""
    out = env.out
    colour = {"parity": "green", "mismatch": "red"}.get(doc["label"], "yellow")
    out.print(
        f"[bold {colour}]{doc['label']}[/] for {escape(doc['job'])}: {doc['runs_compared']} pair(s), "
        f"{doc['matched_consecutive']} matched in a row (gate: {doc['gate']['consecutive_pairs']})"
    )
    ev = doc["evidence"]
    sm = doc.get("summary") or {}
    out.print(
        f"calibration: {sm.get('calibration_completed', 0)} of {sm.get('calibration_runs', 0)} cron runs "
        f"completed; mode {ev['mode']}; event path {ev['event_path']} ({escape(str(ev.get('module')))}); "
        f"writes declared: {escape(', '.join(ev.get('writes') or [])) or 'none'}",
        highlight=False,
    )
    _render_masked(env, sm.get("masked") or {}, "no rule span varied between cron runs")
    for w in sm.get("undeclared_writes") or []:
        out.print(
            f"[yellow]contained undeclared write:[/] {escape(w['path'])} ({', '.join(w['sides'])})",
            highlight=False,
        )
    d = sm.get("duration") or {}
    if d.get("ratio") is not None:
        out.print(
            f"duration: event/cron {d['ratio']:.2f}x (median {d['event_median']:.3f}s vs "
            f"{d['cron_median']:.3f}s; "
            f"{d['event_runs']} event, {d['cron_runs']} cron run(s); cron spread "
            f"{d['cron_spread'][0]:.3f}s..{d['cron_spread'][1]:.3f}s)",
            highlight=False,
        )
    for line in doc["differences"]:
        out.print(f"[red]DIFF[/] {escape(line)}", highlight=False)
    shown: set[str] = set()
    for p in pairs:
        for df in p.get("differences", []):
            if df["diff"] and not df["explained"] and df["what"] not in shown:
                shown.add(df["what"])
                _diff_lines(out, df["diff"])
    if doc["differences"] and pairs:
        defs = definition_diff(ev.get("cron_spec"), (pairs[0].get("event") or {}).get("meta", {}).get("spec"))
        if defs:
            out.print("job definitions differ:")
            for line in defs:
                out.print(f"  {escape(line)}", highlight=False)
    for m in doc["missing"]:
        out.print(f"[yellow]missing:[/] {escape(m)}", highlight=False)
    if doc.get("noise_floor_text"):
        out.print("[dim]noise learned from cron vs cron (A/A):[/]")
        for line in doc["noise_floor_text"]:
            out.print(f"[dim]  {escape(line)}[/]", highlight=False)


def _expr(env: Env, result: ScanResult, j: CronJob) -> CronExpr:
    """The job's schedule, or a usage error when beat cannot fire it at cron's instants."""
    where = str(j.source)
    if j.format is Format.ANACRONTAB or j.format is Format.RUN_PARTS:
        fail(
            env,
            f"{where}: live mode pairs runs by cron instant; {j.format.value} jobs have none",
            ExitStatus.USAGE,
        )
    try:
        expr = parse_schedule(j.schedule, result.dialect)
    except ScheduleError as e:
        fail(env, f"{where}: {e}", ExitStatus.USAGE)
    if expr.reboot or not expr.can_fire():
        fail(
            env, f"{where}: {j.schedule!r} never fires on the clock; nothing to shadow live", ExitStatus.USAGE
        )
    return expr


def _live_setup(
    env: Env,
    result: ScanResult,
    j: CronJob,
    root: Path,
    mode: str,
    dry_run_flag: str | None,
    store: str | None,
    redis: str | None,
    project: Path | None,
    package: str | None,
    now: str | None,
    json: bool,
    probe: str | None = None,
) -> None:
    """Wrap the cron line if needed (through edit.crontab), record the shadow-live doc, say what to run."""
    why = live.mode_refusal(mode, dry_run_flag)
    if why:
        fail(env, why, ExitStatus.USAGE)
    _expr(env, result, j)
    digests: dict[str, str] = {}
    triggers: list[dict[str, Any]] = []
    if project is not None:
        if not package or not (project / package).is_dir():
            fail(env, f"--project {project}: no generated package {package!r} there", ExitStatus.USAGE)
        digests = project_digests(project, package)
        triggers = effects.project_triggers(project, package, j.id)
    why = live.trigger_refusal(triggers, probe, mode)
    if why:
        fail(env, why, ExitStatus.USAGE)
    t = clock(now, result.system_timezone)
    # The wrapper on the line must write where --report reads: name the store unless it is the default.
    store_abs = None if redis else os.path.abspath(store or os.path.join(str(root), DEFAULT_STORE))
    line_store = None if redis or (store is None and Path(root).resolve() == Path("/")) else store_abs
    wrapped = any(w.kind == WRAPPER_KIND for w in j.wrappers)
    diff, backup = "", None
    if wrapped:
        words = shlex.split(next(w.text for w in j.wrappers if w.kind == WRAPPER_KIND))
        target = next((words[k + 1] for k, w in enumerate(words[:-1]) if w in ("--store", "--redis")), None)
        if target not in (None, line_store, redis):
            env.err.print(
                f"[yellow]warning:[/] the line's wrapper writes to {escape(target or '')}, not the ledger "
                "--report reads: pass the same --store/--redis"
            )
        if "--digest" not in words and re.search(r"(^|[^<&0-9])>", j.command):
            env.err.print(
                "[yellow]warning:[/] the line's wrapper has no --digest, so output the line redirects to a "
                "file is not hashed and live can compare it by size and tail only: unwrap the job and let "
                "shadow-run wrap it"
            )
    else:
        try:
            # --digest: live compares output digests, so the wrapper keeps a pipe even for `>> file`
            plan = plan_wrap(root, j, store=line_store, redis_url=redis, digest=True)
            diff = plan.diff
            if not json:
                env.stdout.write(diff)
            rec = apply_plan(root, plan, now=t)
        except EditRefused as exc:
            fail(env, str(exc), ExitStatus.ERROR if isinstance(exc, EditFailed) else ExitStatus.REFUSED)
        backup = rec.backup_path
    started = t.timestamp()
    session = "live-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + os.urandom(2).hex()
    doc = live.setup_doc(
        job_id=j.id,
        command=j.command,
        inner_command=j.inner_command or j.shell_command,
        schedule=j.schedule,
        tz=j.timezone or result.system_timezone,
        mode=mode,
        dry_run_flag=dry_run_flag,
        started=started,
        store=store_abs,
        redis_url=redis,
        wrapped_now=not wrapped,
        session=session,
        project=None if project is None else str(project.resolve()),
        package=package,
        project_digests=digests,
        triggers=triggers,
        probe=probe,
    )
    with open_ledger(root, store=store, redis_url=redis) as led:
        led.put(LIVE_KIND, j.id, doc)
    cmds = live.event_path_commands(
        root=str(Path(root).resolve()),
        store=store_abs,
        redis_url=redis,
        project=str(project) if project else None,
        package=package,
        triggered=bool(triggers),
    )
    where = ["--root", str(root)] + (["--redis", redis] if redis else ["--store", store_abs] if store else [])
    report_cmd = shlex.join(["cronshift", "shadow-run", j.id, "--report", *where])
    probe_cmds = (
        [shlex.join(["cronshift", "shadow-run", j.id, "--probe-watch", *where])]
        + [
            shlex.join(["cronshift", "shadow-run", j.id, "--probe-now", "--side", s, *where])
            for s in effects.SIDES
        ]
        if triggers
        else []
    )
    if json:
        emit_json(
            env,
            {
                "job_id": j.id,
                "live": doc,
                "diff": diff,
                "backup": backup,
                "event_path": cmds,
                "probes": probe_cmds,
                "report": report_cmd,
            },
        )
        return
    out = env.out
    out.print(
        f"[bold]live shadowing of {escape(j.id)}[/] from {doc['started_iso']} (mode {mode}); cron keeps "
        + ("running the job, now wrapped by `cronshift record`" if not wrapped else "running the wrapped job")
        + (f" (backup {escape(backup)})" if backup else "")
    )
    if mode == "dry-run":
        out.print(
            f"the generated task must run the job with {escape(dry_run_flag or '')}: output is not compared"
        )
    out.print("start the event path in shadow, writing to the same ledger:")
    for c in cmds:
        out.print(f"  {escape(c)}", highlight=False)
    if triggers:
        kinds = ", ".join(
            f"{t.get('kind')}:{t.get('table') or t.get('dir') or t.get('key') or ''}" for t in triggers
        )
        out.print(
            f"the event path is event-triggered ({escape(kinds.rstrip(':'))}): effects are compared per cron "
            "interval. "
            "Probe the effect after each cron run and before the next (the watcher does both), or by hand:",
            highlight=False,
        )
        for c in probe_cmds:
            out.print(f"  {escape(c)}", highlight=False)
    out.print(f"then, any time: {escape(report_cmd)}", highlight=False)


def _diff_lines(out: Any, diff: str) -> None:
    for line in diff.splitlines():
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


def _render_live(env: Env, doc: dict[str, Any], rep: live.LiveReport) -> None:
    out = env.out
    colour = {"parity": "green", "mismatch": "red"}.get(doc["label"], "yellow")
    f = doc["fidelity"]
    out.print(
        f"[bold {colour}]{doc['label']}[/] for {escape(doc['job'])} (live, mode {doc['evidence']['mode']}): "
        f"{f['instants']} instant(s) judged, {f['both']} with both sides, {doc['matched_consecutive']} "
        f"matched in a row (gate: {doc['gate']['consecutive_pairs']}); {f['warmup']} warm-up, "
        f"{f['pending']} pending"
    )
    seen = doc["patterns"]
    out.print(
        "patterns: "
        + ", ".join(
            f"{escape(p)} {'[green]seen[/]' if ok else '[yellow]not yet[/]'}" for p, ok in seen.items()
        )
    )
    _render_masked(env, rep.masked, "no rule span varied between cron's own runs")
    for line in rep.floor_text:
        out.print(f"[dim]noise learned from cron's own runs:[/] {escape(line)}", highlight=False)
    shown = [i for i in rep.instants if not i.matched]
    tail = rep.instants[-rep.gate_pairs :]
    rows = sorted({id(i): i for i in shown + tail}.values(), key=lambda i: i.instant)
    table = Table("instant", "pattern", "cron", "event", "result")

    def side(rs: list[Any], inst: int) -> str:
        return (
            ", ".join(
                f"exit {r.exit_status if r.signal is None else 'sig ' + str(r.signal)} +{r.start - inst:.1f}s"
                for r in rs
            )
            or "-"
        )

    for i in rows:
        res = "[green]match[/]" if i.matched else f"[red]{escape(i.status)}[/]"
        if i.status == "both" and not i.matched:
            res = "[red]differs[/]" if i.real else "[yellow]cannot tell[/]"
        table.add_row(
            escape(i.local),
            escape(", ".join(i.patterns)),
            side(i.cron, i.instant),
            side(i.event, i.instant),
            res,
        )
    out.print(table)
    hidden = len(rep.instants) - len(rows)
    if hidden:
        out.print(f"[dim]{hidden} more matched instant(s) not shown (--json has them all)[/]")
    noise: dict[str, int] = {}
    for i in rep.instants:
        for d in i.differences:
            if d.explained:
                key = f"{d.what} ({d.explained})"
                noise[key] = noise.get(key, 0) + 1
    for what, n in noise.items():
        out.print(f"[dim]noise at {n} instant(s):[/] {escape(what)}")
    for line in doc["differences"]:  # each difference once, with the instants it was seen at
        out.print(f"[red]mismatch:[/] {escape(line)}", highlight=False)
    diffs: set[str] = set()
    for i in rep.instants:
        for d in i.real:
            if d.diff and d.what not in diffs:
                diffs.add(d.what)
                out.print(f"[dim]{escape(i.local)}:[/]", highlight=False)
                _diff_lines(out, d.diff)
    for n in doc["notes"]:
        out.print(f"[dim]note:[/] {escape(n)}")
    for m in doc["missing"]:
        out.print(f"[yellow]missing:[/] {escape(m)}")


def _render_triggered(env: Env, doc: dict[str, Any], rep: effects.TriggeredReport) -> None:
    """Intervals (cron run, event runs, the two probes), then each difference and what is missing."""
    out = env.out
    colour = {"parity": "green", "mismatch": "red"}.get(doc["label"], "yellow")
    f = doc["fidelity"]
    out.print(
        f"[bold {colour}]{doc['label']}[/] for {escape(doc['job'])} "
        "(live, event-triggered; effects compared): "
        f"{f['intervals']} interval(s) judged, {doc['matched_consecutive']} matched in a row (gate: "
        f"{doc['gate']['consecutive_pairs']}), {rep.exercised} matched with an event-triggered run; "
        f"{f['pending']} pending",
        highlight=False,
    )
    out.print(f"probe: {escape(str(doc['evidence'].get('probe')))}", highlight=False)
    table = Table("interval from", "cron", "event runs", "effect", "result")
    for i in rep.intervals:
        effect = (
            "-"
            if i.cron_probe is None or i.event_probe is None
            else ("same" if not any("effect differs" in d for d in i.differences) else "differs")
        )
        res = (
            "[green]match[/]"
            if i.matched
            else "[red]differs[/]"
            if i.differences
            else "[yellow]cannot tell[/]"
        )
        table.add_row(
            escape(i.local),
            f"exit {i.cron.exit_status}" if i.cron.signal is None else f"sig {i.cron.signal}",
            f"{len(i.event)} ({i.triggered} triggered)",
            effect,
            res,
        )
    out.print(table)
    for line in doc["differences"]:
        out.print(f"[red]mismatch:[/] {escape(line)}", highlight=False)
    for n in doc["notes"]:
        out.print(f"[dim]note:[/] {escape(n)}", highlight=False)
    for m in doc["missing"]:
        out.print(f"[yellow]missing:[/] {escape(m)}", highlight=False)


def _probes(
    env: Env,
    result: ScanResult,
    j: CronJob,
    root: Path,
    store: str | None,
    redis: str | None,
    side: str | None,
    watch: bool,
    json: bool,
) -> None:
    """Take the effect probe of an event-triggered live shadow: once (--probe-now), or at every interval's
    two times (--probe-watch: after each cron run, and shortly before the next cron instant)."""
    setup = effects.probe_setup(root, j.id, store, redis)
    if setup is None:
        fail(
            env,
            f"{j.id}: no event-triggered live shadow with an effect probe: set it up with "
            "`--live --mode allow --project OUT --package PKG --probe CMD`",
            ExitStatus.USAGE,
        )

    def said(doc: dict[str, Any]) -> None:
        if json:
            emit_json(env, {"job_id": j.id, "probe": doc})
        else:
            env.out.print(
                f"{doc['side']}-side probe at {time.strftime('%H:%M:%S', time.localtime(doc['started']))}: "
                f"exit {doc['exit_status']}, {doc['output_bytes']} byte(s)"
                + (f"; {escape(doc['error'])}" if doc.get("error") else ""),
                highlight=False,
            )

    if not watch:
        assert side is not None
        said(effects.probe_once(root, j.id, setup, side, store, redis))
        return
    expr = _expr(env, result, j)
    env.err.print(
        f"probing {escape(j.id)}'s effect at every cron interval; stop with Ctrl-C", highlight=False
    )
    with contextlib.suppress(KeyboardInterrupt):
        effects.watch_job(
            root, j.id, setup, expr, j.timezone or result.system_timezone, store, redis, on_probe=said
        )


def _live_report(
    env: Env,
    result: ScanResult,
    j: CronJob,
    root: Path,
    led: Any,
    setup: dict[str, Any],
    since: str | None,
    now: str | None,
    grace: float,
    gate_pairs: int,
    ignore: list[str] | None,
    no_rule: list[str] | None,
    json: bool,
) -> None:
    """Judge the live evidence so far, store the verdict where retire reads it, and show it."""
    expr = _expr(env, result, j)
    tz = j.timezone or result.system_timezone
    try:
        norm = build_normalizer(no_rule or (), ignore or (), hosts=(socket.gethostname(), socket.getfqdn()))
    except RuleError as e:
        fail(env, str(e), ExitStatus.USAGE)
    t_now = clock(now, result.system_timezone).timestamp()
    start = float(setup["started"]) if since is None else clock(since, tz).timestamp()
    got = judge_live(
        j,
        led,
        setup,
        root=root,
        expr=expr,
        tz=tz,
        start=start,
        now=t_now,
        normalizer=norm,
        ignore=tuple(ignore or ()),
        grace=grace,
        gate_pairs=gate_pairs,
    )
    doc = dict(got.doc)
    if json:
        emit_json(env, {"job_id": j.id, "verdict": doc})
    elif isinstance(got.report, effects.TriggeredReport):
        _render_triggered(env, doc, got.report)
    else:
        _render_live(env, doc, got.report)
    if got.label == "mismatch":
        raise SystemExit(int(ExitStatus.DIFFERENCES))


def shadow_run(
    job: Annotated[str, typer.Argument(help="Job id (or a unique prefix), or PATH:LINE.")],
    root: RootOpt = Path("/"),
    runs: Annotated[
        int, typer.Option("--runs", min=1, help="Pairs (cron, event) to run and compare.")
    ] = GATE_PAIRS,
    mode: Annotated[
        Mode,
        typer.Option("--mode", help="sandbox (writes kept apart), allow (the job is idempotent), dry-run."),
    ] = Mode.SANDBOX,
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
    event_path: EventPath = EventPathKind.LOCAL,
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
        bool, typer.Option("--live", help="Wrap the cron line and pair beat's shadow runs with cron's.")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="Live --report: judge instants from this ISO time on.")
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Live --report: seconds an instant may take to report.")
    ] = DEFAULT_GRACE,
    probe: Annotated[
        str | None,
        typer.Option("--probe", help="Live, event-triggered: a command summarising the job's effect."),
    ] = None,
    probe_now: Annotated[
        bool, typer.Option("--probe-now", help="Live, event-triggered: take one effect probe now (--side).")
    ] = False,
    side: Annotated[
        str | None, typer.Option("--side", help="--probe-now: cron (after cron's run) or event.")
    ] = None,
    probe_watch: Annotated[
        bool,
        typer.Option("--probe-watch", help="Live, event-triggered: take every interval's probes (runs on)."),
    ] = False,
    now: NowOpt = None,
    store: Annotated[str | None, typer.Option("--store", help="Ledger (SQLite) path.")] = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis ledger URL.")] = None,
    json: JsonOpt = False,
    dialect: DialectOpt = None,
) -> None:
    """Run a job through cron's path and the event path N times each and judge parity (exit 3: mismatch)."""
    env = Env()
    if sum((live, report, probe_now, probe_watch)) > 1:
        fail(
            env,
            "--live sets live shadowing up, --probe-now/--probe-watch probe it, --report judges it: give one",
            ExitStatus.USAGE,
        )
    if probe_now and side not in effects.SIDES:
        fail(env, "--probe-now needs --side cron or --side event", ExitStatus.USAGE)
    if broker:
        check_url(env, "--broker", broker, CELERY_BROKER_SCHEMES)
    from cronshift.shadow import execute as ex  # deferred: the sandbox is only needed by now mode

    result = do_scan(env, root, dialect)
    try:
        j = find_job(result, job)
    except JobNotFound as e:
        fail(env, str(e), ExitStatus.USAGE)
    if live:
        _live_setup(
            env, result, j, root, mode, dry_run_flag, store, redis, project, package, now, json, probe
        )
        return
    if probe_now or probe_watch:
        _probes(env, result, j, root, store, redis, side, probe_watch, json)
        return
    if report:
        with open_ledger(root, store=store, redis_url=redis) as led:
            setup = led.get(LIVE_KIND, j.id)
            if setup is not None:
                _live_report(
                    env, result, j, root, led, setup, since, now, grace, gate_pairs, ignore, no_rule, json
                )
                return
            doc, obs = read_report(led, j.id)
        if doc is None:
            fail(
                env,
                f"no shadow-run evidence for {j.id} yet: run `cronshift shadow-run {j.id}`",
                ExitStatus.ERROR,
            )
        pairs = [o for o in obs if o.get("phase") == "pair" and o.get("session") == doc.get("session")]
        if json:
            emit_json(env, {"job_id": j.id, "verdict": doc, "observations": obs})
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
    if project is None:
        fail(
            env,
            "--project OUT is needed: the event path is the generated code (`cronshift generate` output); "
            "without it nothing would be compared",
            ExitStatus.USAGE,
        )
    if event_path == "celery" and not broker:
        fail(
            env,
            "--event-path celery needs --broker URL (a broker the shadow worker may use)",
            ExitStatus.USAGE,
        )
    paths = tuple(str(Path(w).absolute()) for w in writes or ())
    for w in paths:
        if mode == "allow" and not Path(w).exists():
            fail(
                env,
                f"{w}: --writes names a path that does not exist; declare the directory the job writes into",
                ExitStatus.USAGE,
            )
    try:
        norm = build_normalizer(no_rule or (), ignore or (), hosts=(socket.gethostname(), socket.getfqdn()))
    except RuleError as e:
        fail(env, str(e), ExitStatus.USAGE)
    opts = NowOptions(
        root=root,
        project=project,
        package=package,
        mode=mode,
        writes=paths,
        normalizer=norm,
        ignore=tuple(ignore or ()),
        dry_run_flag=dry_run_flag,
        event_path=event_path,
        broker=broker,
        runs=runs,
        calibration=calibration,
        gate_pairs=gate_pairs,
        timeout=timeout,
        store=store,
        redis=redis,
        command_line=shlex.join(["cronshift", "shadow-run", *sys.argv[2:]])
        if sys.argv[1:2] == ["shadow-run"]
        else None,
    )
    from cronshift.shadow.celery_side import EventPathError  # deferred: only a now-mode run loads the sides

    try:
        with progress_bar(env, "shadow runs") as update:
            res = run_now(j, opts, progress=update)
    except EventPathError as e:
        fail(env, str(e), ExitStatus.ERROR)
    if res.refused:
        env.err.print(
            f"cronshift: {escape(res.refused)}; verdict: insufficient evidence "
            "(--mode dry-run skips side effects)",
            soft_wrap=True,
            highlight=False,
        )
        if json:
            emit_json(env, {"job_id": j.id, "verdict": res.doc, "pairs": []})
        return
    if json:
        emit_json(env, {"job_id": j.id, "verdict": res.doc, "pairs": res.pairs})
    else:
        _render(env, dict(res.doc), res.pairs)
    if res.label == "mismatch":
        raise SystemExit(int(ExitStatus.DIFFERENCES))
