"""`cronshift show JOB`: everything known about one job."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cronshift.advice import Advice, advise
from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan, undo_hint
from cronshift.cli.evidence import (
    LogOpt,
    NoHistoryOpt,
    RedisOpt,
    SinceOpt,
    StoreOpt,
    UntilOpt,
    history_to_dict,
    load_evidence,
    untrusted_text,
)
from cronshift.cli.output import Env, ExitStatus, emit_json, fail, job_to_dict, text
from cronshift.discover.lookup import JobNotFound, find_job
from cronshift.discover.timing import describe_schedule, upcoming
from cronshift.edit.retire import retirement, trace_id
from cronshift.history.evidence import last_runs
from cronshift.history.triggers import trigger_records
from cronshift.model import RunRecord
from cronshift.rank import Metrics, metrics, score

LastOpt = Annotated[int, typer.Option("--last", min=0, help="How many of the last runs to list.")]


def show(
    job: Annotated[str, typer.Argument(help="Job id (or a unique prefix), or PATH:LINE.")],
    root: RootOpt = Path("/"),
    json: JsonOpt = False,
    dialect: DialectOpt = None,
    now: NowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    log: LogOpt = None,
    store: StoreOpt = None,
    redis: RedisOpt = None,
    no_history: NoHistoryOpt = False,
    last: LastOpt = 20,
) -> None:
    """Print everything known about one job: its line, its score with the evidence, and its last runs."""
    env = Env()
    result = do_scan(env, root, dialect)
    try:
        j = find_job(result, job)
    except JobNotFound as e:
        went = trace_id(Path(result.root), job)
        fail(env, f"{e}: {went}" if went else str(e), ExitStatus.USAGE)
    t = clock(now, result.system_timezone)
    d = describe_schedule(j.schedule, result.dialect)
    nxt = upcoming(j, t, result.system_timezone, 5, result.dialect)
    ev = load_evidence(env, result, t, since, until, log, store, redis, no_history)
    m, unknown = metrics(j, ev.for_job(j.id), ev, result.system_timezone, result.dialect)
    sc = score(j, m, unknown, ev.window[1] if ev.window else ev.end)
    adv = advise(j, m, sc, ev.for_job(j.id).ledger)
    runs = last_runs(Path(result.root), result.jobs, j.id, t, ev, extra_logs=log or (), n=last)
    fired = trigger_records(Path(result.root), ev.ledger_where, j.id, ev.for_job(j.id).ledger, n=last)
    gone = retirement(Path(result.root), j.id) if j.retired else None
    if json:
        emit_json(
            env,
            {
                "root": result.root,
                "now": t.isoformat(),
                "history": history_to_dict(ev, t),
                "job": job_to_dict(j, d, nxt, score=sc, metrics=m.to_dict()) | {"advice": adv.to_dict()},
                "runs": [_run_dict(r, t) for r in runs],
                "triggers": fired,
                "skipped": [_skip_dict(r, t) for r in ev.skipped_runs.get(j.id, [])[-last:]],
                "retirement": gone.to_dict() if gone else None,
            },
        )
        return
    tab = Table(show_header=False, title=f"job {j.id}", title_justify="left")
    tab.add_column("field", style="bold")
    tab.add_column("value", overflow="fold")
    tab.add_row("source", f"{j.source} ({j.format})")
    tab.add_row("user", j.user)
    tab.add_row("schedule", f"{j.schedule}  —  {d}")
    tab.add_row("time zone", j.timezone or f"{result.system_timezone or 'system'} (system)")
    tab.add_row("next runs", "\n".join(x.isoformat(sep=" ") for x in nxt) or "—")
    tab.add_row("command", text(j.command) or "")
    if j.stdin is not None:
        tab.add_row("stdin", repr(j.stdin))
    if j.wrappers:
        tab.add_row(
            "guards", "\n".join(f"{w.kind}: {w.meaning}  [dim]({text(w.text)})[/dim]" for w in j.wrappers)
        )
        tab.add_row("inner command", text(j.inner_command) or "")
    tab.add_row("shell", j.shell)
    tab.add_row("environment", "\n".join(f"{k}={text(v)}" for k, v in j.env) or "(cron's defaults only)")
    if j.triggers or j.anacron:
        tab.add_row("run by", "\n".join([*j.triggers, *([j.anacron] if j.anacron else [])]))
    tab.add_row("runs", "yes" if j.runs else "NO: " + "; ".join(j.why_not))
    if gone:
        where = f", to {gone.to}" if gone.to else ""
        backup = f", backup {gone.backup_path}" if gone.backup_path else ""
        tab.add_row("retired", f"{gone.date}{where}{backup}; undo: {undo_hint(j.id, result.root)}")
    for w in j.warnings:
        tab.add_row("warning", w)
    env.out.print(tab)
    _breakdown(env, sc.value, sc.reasons, sc.unknown)
    _metrics(env, m, t)
    _advice(env, adv)
    _runs(env, runs, t)
    if forged := untrusted_text(ev.history):
        env.out.print(f"{forged}: not among these runs, see --json")
    if fired:
        _triggers(env, fired, t)
    _skips(env, ev.skipped_runs.get(j.id, [])[-last:], t)


def _when(ts: float | None, now: datetime) -> str:
    return "—" if ts is None else datetime.fromtimestamp(ts, UTC).astimezone(now.tzinfo).isoformat(sep=" ")


def _iso(ts: float, now: datetime) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone(now.tzinfo).isoformat()


def _secs(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f} s" if x < 120 else f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.1f} h"


def _breakdown(env: Env, value: float, reasons: Any, unknown: Any) -> None:
    tab = Table(title=f"pain score {value:g} / 100", title_justify="left")
    tab.add_column("points", justify="right")
    tab.add_column("reason (evidence)", overflow="fold")
    for r in reasons:
        tab.add_row(f"+{r.points:g}", escape(r.text) + f" [dim]({r.evidence})[/dim]")
    if not reasons:
        tab.add_row("0", "no pain found in the evidence")
    for u in unknown:
        tab.add_row("?", f"[yellow]{escape(u)}[/yellow]")
    env.out.print(tab)


def _metrics(env: Env, m: Metrics, now: datetime) -> None:
    tab = Table(show_header=False, title="metrics", title_justify="left")
    tab.add_column("metric", style="bold")
    tab.add_column("value", overflow="fold")
    w = m.window
    tab.add_row("evidence window", "—" if w is None else f"{_when(w[0], now)} .. {_when(w[1], now)}")
    tab.add_row("sources", ", ".join(m.sources) or "none")
    seen = "unknown" if m.runs_seen is None else str(m.runs_seen)
    exp = "" if m.runs_expected is None else f" of {m.runs_expected} expected ({m.missed} missed)"
    tab.add_row("runs seen", seen + exp)
    if m.missed_at:
        more = "" if m.missed and len(m.missed_at) >= m.missed else ", ..."
        tab.add_row("missed at", ", ".join(_when(x, now)[:16] for x in m.missed_at[:10]) + more)
    if m.failures is None:
        tab.add_row("failures", "unknown (no exit statuses)")
    else:
        rate = f" ({100 * (m.failure_rate or 0):.1f}%)" if m.status_known else ""
        how = ", ".join(
            [f"exit {k} x{v}" for k, v in sorted(m.exit_statuses.items())]
            + [f"signal {k} x{v}" for k, v in sorted(m.signals.items())]
        )
        tab.add_row(
            "failures",
            f"{m.failures} of {m.status_known} with a known status{rate}" + (f": {how}" if how else ""),
        )
    tab.add_row(
        "duration p50 / p95 / max",
        " / ".join(_secs(x) for x in (m.duration_p50, m.duration_p95, m.duration_max)),
    )
    if m.interval:
        ratio = "" if m.p95_over_interval is None else f" (p95 is {100 * m.p95_over_interval:.0f}%)"
        tab.add_row("interval", _secs(m.interval) + ratio)
    if m.overlaps is not None:
        tab.add_row("overlapping runs", f"{m.overlaps} ({m.overlap_basis})")
    if m.since_last_success is not None:
        tab.add_row("last success", f"{_when(m.last_success, now)} ({_secs(m.since_last_success)} ago)")
    out = []
    if m.output_bytes is not None:
        out.append(f"{m.output_bytes} bytes (ledger)")
    if m.output_lines:
        out.append(f"{m.output_lines} CMDOUT lines")
    if m.output_discarded:
        out.append(f"discarded {m.output_discarded}x (No MTA)")
    if m.mail_failures:
        out.append(f"mail failed {m.mail_failures}x")
    tab.add_row("output", "; ".join(out) or "—")
    tab.add_row("silent-failure risk", escape(m.silent_risk or "no"))
    tab.add_row("polling", "yes: fires every 15 min or more often" if m.polls else "no")
    tab.add_row("DST exposure", m.dst or "no")
    env.out.print(tab)


def _advice(env: Env, a: Advice) -> None:
    tab = Table(show_header=False, title=f"advice: {a.kind} -> {a.action}", title_justify="left")
    tab.add_column("what", style="bold")
    tab.add_column("value", overflow="fold")
    tab.add_row("advice", escape(a.summary))
    tab.add_row("evidence", "\n".join(escape(e) for e in a.evidence) or "—")
    tab.add_row("would change it", "\n".join(escape(c) for c in a.would_change) or "—")
    env.out.print(tab)


def _triggers(env: Env, fired: list[dict[str, Any]], now: datetime) -> None:
    tab = Table(title=f"last {len(fired)} event triggers (one run each)", title_justify="left")
    for col in ("sent", "sources", "events", "coalesced", "why now", "event -> start"):
        tab.add_column(col)
    for d in fired:
        f = d.get("freshness")
        tab.add_row(
            _when(d.get("sent_at"), now),
            ", ".join(d.get("sources") or ()),
            str(d.get("events")),
            str(d.get("coalesced")),
            escape(str(d.get("reason") or "")),
            "—" if f is None else f"{f * 1000:.0f} ms",
        )
    env.out.print(tab)


def _status(r: RunRecord) -> str:
    if r.signal is not None:
        return f"[red]signal {r.signal}[/red]"
    if r.exit_status is None:
        return "[dim]unknown[/dim]"
    return "ok" if r.exit_status == 0 else f"[red]exit {r.exit_status}[/red]"


def _runs(env: Env, runs: list[RunRecord], now: datetime) -> None:
    tab = Table(title=f"last {len(runs)} runs", title_justify="left")
    for col in ("start", "duration", "status", "output", "source, end paired"):
        tab.add_column(col)
    for r in runs:
        size = _size(r)
        src = r.source + _pairing(r)
        tab.add_row(_when(r.start, now), _secs(r.duration), _status(r), size, src)
    if not runs:
        tab.add_row("no runs in the evidence", "", "", "", "")
    env.out.print(tab)


def _size(r: RunRecord) -> str:
    """Bytes out+err; a stream the line sent straight to a file was not captured: say so, not "silent"."""
    if r.stdout_bytes is None:
        return ""
    size = f"{r.stdout_bytes}+{r.stderr_bytes or 0} B"
    to_file = [n for n in ("stdout", "stderr") if r.extra.get(f"{n}_file")]
    if to_file:
        size = f"≈{size}, {'+'.join(to_file)} to a file (not captured)"
    return size


def _pairing(r: RunRecord) -> str:
    """How the run's end was tied to its start: a pid link, or the oldest open run of its command."""
    how = r.extra.get("pairing")
    if how == "inferred":
        n = r.extra.get("open_runs", "1")
        return ", inferred (only open run)" if n == "1" else f", inferred (oldest of {n} open)"
    return ", exact (pid)" if how == "exact" else ""


def _skips(env: Env, skips: list[RunRecord], now: datetime) -> None:
    if not skips:
        return
    tab = Table(title=f"last {len(skips)} runs a policy skipped", title_justify="left")
    for col in ("scheduled for", "decided", "why"):
        tab.add_column(col)
    for r in skips:
        sf = "—" if r.scheduled_for is None else _when(r.scheduled_for, now)
        tab.add_row(sf, _when(r.start, now), escape(str(r.extra.get("skipped", ""))))
    env.out.print(tab)


def _skip_dict(r: RunRecord, now: datetime) -> dict[str, Any]:
    """A run a policy decided not to start (missed window, overlap, duplicate, redelivery)."""
    sf = r.scheduled_for
    return {"at": _iso(r.start, now), "scheduled_for": None if sf is None else _iso(sf, now),
            "reason": r.extra.get("skipped", "")}  # fmt: skip


def _run_dict(r: RunRecord, now: datetime) -> dict[str, Any]:
    return {
        "start": _iso(r.start, now),
        "end": None if r.end is None else _iso(r.end, now),
        "duration": r.duration,
        "exit_status": r.exit_status,
        "signal": r.signal,
        "failed": r.failed,
        "source": r.source,
        "pid": r.pid,
        "stdout_bytes": r.stdout_bytes,
        "stderr_bytes": r.stderr_bytes,
        "output_to_file": [n for n in ("stdout", "stderr") if r.extra.get(f"{n}_file")],
        "guessed_pairing": bool(r.extra.get("guessed")),
        "pairing": r.extra.get("pairing"),  # "exact" | "inferred" | None (no end)
        "open_runs": int(r.extra["open_runs"]) if "open_runs" in r.extra else None,
    }
