"""`cronshift scan`: every cron job under a root, ranked by the pain its history shows, each with why."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from cronshift.advice import Advice, advise
from cronshift.cli.common import DialectOpt, JsonOpt, NowOpt, RootOpt, clock, do_scan
from cronshift.cli.evidence import (
    LogOpt,
    NoHistoryOpt,
    RedisOpt,
    SinceOpt,
    StoreOpt,
    UntilOpt,
    history_to_dict,
    iso,
    load_evidence,
    untrusted_text,
)
from cronshift.cli.output import (
    Env,
    emit_json,
    job_to_dict,
    say_problem,
    text,
)
from cronshift.discover.timing import describe_schedule, upcoming
from cronshift.history.evidence import Evidence
from cronshift.model import ScanResult
from cronshift.rank import rank

# Column widths that keep the table within 160 columns (5 for the score, 19 for borders and padding).
WIDTHS = (("id", 24), ("schedule", 13), ("command", 28), ("source", 26), ("top reason", 45))


def short(s: str, n: int) -> str:
    """One line of at most `n` characters, an ellipsis where it was cut (the full text is in `show`)."""
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def scan(
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
) -> None:
    """Find every cron job and rank them by operational pain, most painful first, with the evidence."""
    env = Env()
    result = do_scan(env, root, dialect)
    t = clock(now, result.system_timezone)
    for p in result.problems:
        say_problem(env, p)
    ev = load_evidence(env, result, t, since, until, log, store, redis, no_history)
    ranked = rank(result.jobs, ev, result.system_timezone, result.dialect)
    advice = {j.id: advise(j, m, s, ev.for_job(j.id).ledger) for j, m, s in ranked}
    if json:
        emit_json(
            env,
            {
                "root": result.root,
                "dialect": result.dialect,
                "timezone": result.system_timezone,
                "now": t.isoformat(),
                "history": history_to_dict(ev, t),
                "jobs": [
                    job_to_dict(
                        j,
                        describe_schedule(j.schedule, result.dialect),
                        upcoming(j, t, result.system_timezone, 3, result.dialect),
                        score=s,
                        metrics=m.to_dict(),
                    )
                    | {"advice": advice[j.id].to_dict()}
                    for j, m, s in ranked
                ],
                "disabled": [
                    job_to_dict(j, describe_schedule(j.schedule, result.dialect), []) for j in result.disabled
                ],
                "problems": [
                    {"path": p.path, "line": p.line, "message": text(p.message), "severity": p.severity}
                    for p in result.problems
                ],
                "files": list(result.files),
            },
        )
        return
    _table(env, result, ranked, ev, t)
    advice_lines(env, [(j.id, advice[j.id]) for j, _m, _s in ranked])


def scan_columns(width: int, id_width: int) -> list[tuple[str, int]]:
    """The columns that fit in `width`, most important first kept: the id is never cut (the next command
    needs it), then the top reason, the schedule, the command, the source; the reason takes what is left."""
    budget = width - 5 - 3 * (len(WIDTHS) + 1)  # score column, then borders and padding
    chosen: dict[str, int] = {"id": id_width, "top reason": 20}
    budget -= id_width + 20 - 3 * (len(WIDTHS) - 2)
    for col in ("schedule", "command", "source"):
        w = dict(WIDTHS)[col]
        if budget >= w + 3:
            chosen[col] = w
            budget -= w + 3
    chosen["top reason"] = max(20, min(dict(WIDTHS)["top reason"], 20 + budget))
    return [(c, chosen[c]) for c, _ in WIDTHS if c in chosen]


def _table(env: Env, result: ScanResult, ranked: list, ev: Evidence, t: datetime) -> None:
    table = Table(title=f"cron jobs under {result.root}, most painful first", expand=False)
    out = env.out
    cols = scan_columns(out.width, max((len(j.id) for j, _m, _s in ranked), default=2))
    table.add_column("score", justify="right", no_wrap=True, min_width=5)
    for col, width in cols:
        table.add_column(
            col, no_wrap=True, overflow="ellipsis", max_width=width, min_width=width if col == "id" else None
        )
    for j, _m, s in ranked:
        if s.reasons:
            r0 = s.reasons[0]
            top = f"+{r0.points:g} {r0.text}" if r0.points else r0.text  # the points are said once, in front
        else:
            top = s.unknown[0] if s.unknown else "no pain found"
        style = "red" if s.value >= 50 else "yellow" if s.value >= 20 else ""
        score = f"{s.value:.0f}" + ("?" if s.unknown else "")
        cells = {
            "id": j.id,
            "schedule": j.schedule,
            "command": text(j.inner_command or j.command) or "",
            "source": str(j.source),
            "top reason": top,
        }
        table.add_row(
            f"[{style}]{score}[/{style}]" if style else score,
            *(escape(cells[c] if c == "id" else short(cells[c], w)) for c, w in cols),
        )
    env.out.print(table)
    never = sum(1 for j in result.jobs if not j.runs)
    env.out.print(
        f"{len(result.jobs)} jobs ({never} never run), {len(result.disabled)} commented out, "
        f"{len(result.problems)} problems in {len(result.files)} files"
    )
    w = ev.window
    if w is not None and ev.history is not None:
        h = ev.history
        led = f", {sum(len(v) for v in ev.ledger_runs.values())} ledger runs" if ev.ledger_where else ""
        names = ", ".join(Path(x.path).name for x in h.sources)
        dup = f", {h.duplicates_dropped} duplicate lines dropped" if h.duplicates_dropped else ""
        env.out.print(
            f"history {iso(w[0], t)} .. {iso(w[1], t)}: "
            f"{h.cron_lines} cron lines in {len(h.sources)} log(s) ({escape(names)}){dup}{led}"
        )
        loose = []
        if forged := untrusted_text(h):
            loose.append(forged)
        if h.orphan_ends:
            loose.append(f"{h.orphan_ends} end line(s) whose start is not in the logs read")
        if h.unattributed_notes:
            loose.append(f"{h.unattributed_notes} No MTA/MAIL/CMDOUT line(s) tied to no job")
        if loose:
            env.out.print("; ".join(loose) + ": see --json")
        if h.unmatched:
            n = sum(u.count for u in h.unmatched.values())
            env.out.print(
                f"{n} runs of {len(h.unmatched)} commands match no job (gone from the crontabs?): see --json"
            )
    for note in ev.notes:
        env.out.print(f"[dim]{escape(note)}[/dim]")
    env.out.print("[dim]'?' after a score: some evidence was missing (see `cronshift show JOB`)[/dim]")


ADVICE_NAMES = 12  # job ids named per advice line, in rank order


def advice_lines(env: Env, advice: list[tuple[str, Advice]]) -> None:
    """Below the table: the jobs worth moving to an event or a consumer, and those fine on cron."""
    for action, label in (
        ("event-source", "move to an event source"),
        ("streams-consumer", "move to a Streams consumer"),
        ("keep-on-cron", "fine on cron"),
    ):
        ids = [(i, a) for i, a in advice if a.action == action]
        if ids:
            names = ", ".join(i + (f" ({a.trigger})" if a.trigger else "") for i, a in ids[:ADVICE_NAMES])
            more = f" and {len(ids) - ADVICE_NAMES} more (--json)" if len(ids) > ADVICE_NAMES else ""
            env.out.print(f"advice: {label}: {escape(names)}{more}")
    if any(a.action in ("event-source", "streams-consumer", "keep-on-cron") for _, a in advice):
        env.out.print(
            "[dim]the evidence for each advice, and what would change it: `cronshift show JOB`[/dim]"
        )
