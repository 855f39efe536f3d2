"""`cronshift report --html FILE`: one self-contained page a team reads before deciding what to move.

The page has the pain ranking with its evidence, a timeline of each job's runs over the history window
(failures and overlapping runs in their own colours), each job's durations against its interval, and the
migration board. The charts are Vega-Lite specs built with altair; the Vega, Vega-Lite and vega-embed
JavaScript is inlined from `vl-convert-python` (bundled in its wheel), so the page opens with no network.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronshift.board import BoardRow
from cronshift.history import logfiles
from cronshift.history.evidence import Evidence
from cronshift.model import CronJob, RunRecord, Score
from cronshift.rank import Metrics

__all__ = ["MAX_JOBS", "MAX_RUNS_PER_JOB", "collect_runs", "render_html", "run_rows"]

MAX_JOBS = 15  # the timeline and duration charts show the most painful jobs that have runs
MAX_RUNS_PER_JOB = 2000  # the newest runs of each job (a */1 job over a month would be 43,200)


def collect_runs(
    root: Path,
    jobs: Sequence[CronJob],
    now: datetime,
    ev: Evidence,
    *,
    extra_logs: Sequence[Path] = (),
    last: int = MAX_RUNS_PER_JOB,
) -> dict[str, list[RunRecord]]:
    """Every job's runs with start and end, from cron's logs and the ledger (a ledger run is preferred to
    the log line of the same start: it has the exit status)."""
    by_job: dict[str, list[RunRecord]] = {}
    if ev.history is not None and ev.log_paths:
        paths = logfiles.find_logs(Path(root), extra_logs)
        by_job = logfiles.runs_by_job(paths, jobs, now, last=last, since=ev.since, until=ev.until)
    for jid, recorded in ev.ledger_runs.items():
        starts = [r.start for r in recorded]
        logged = [r for r in by_job.get(jid, []) if not any(abs(r.start - s) <= 2 for s in starts)]
        by_job[jid] = sorted([*recorded, *logged], key=lambda r: r.start)[-last:]
    return by_job


def _iso(t: float, tz: Any) -> str:
    return datetime.fromtimestamp(t, UTC).astimezone(tz).isoformat()


def run_rows(job_id: str, runs: Sequence[RunRecord], tz: Any) -> list[dict[str, Any]]:
    """Chart rows: one per run, its outcome, and whether it started while the previous one still ran."""
    rows: list[dict[str, Any]] = []
    busy_until = float("-inf")
    for r in runs:
        failed = r.signal is not None or (r.exit_status is not None and r.exit_status != 0)
        overlapping = r.start < busy_until
        outcome = (
            "failed"
            if failed
            else "overlapped the previous run"
            if overlapping
            else "ok"
            if r.exit_status == 0
            else "outcome not logged"
        )
        end = r.end if r.end is not None else r.start + 1
        rows.append(
            {
                "job_id": job_id,
                "start": _iso(r.start, tz),
                "end": _iso(end, tz),
                "duration_s": None if r.end is None else round(r.end - r.start, 3),
                "outcome": outcome,
                "exit_status": r.exit_status,
                "signal": r.signal,
                "source": r.source,
            }
        )
        if r.end is not None:
            busy_until = max(busy_until, r.end)
    return rows


OUTCOME_COLOURS = {
    "ok": "#4c9f70",
    "outcome not logged": "#9aa5b1",
    "overlapped the previous run": "#e0a030",
    "failed": "#d64545",
}


def _charts(rows: list[dict[str, Any]], intervals: list[dict[str, Any]], order: list[str]) -> Any:
    import altair as alt  # deferred: ~0.3 s to import (measured), and only the HTML report needs it

    colour = alt.Color(
        "outcome:N",
        scale=alt.Scale(domain=list(OUTCOME_COLOURS), range=list(OUTCOME_COLOURS.values())),
        legend=alt.Legend(title="run", orient="top"),
    )
    y = alt.Y("job_id:N", sort=order, title=None)
    data = alt.Data(values=rows)
    timeline = (
        alt.Chart(data, title="Every run over the history window (overlaps and failures in colour)")
        # A stroke of the same colour keeps a 2-second run visible at a two-day scale.
        .mark_bar(height=10, strokeWidth=1)
        .encode(
            x=alt.X("start:T", title="time"),
            x2="end:T",
            y=y,
            color=colour,
            stroke=alt.Stroke(
                "outcome:N",
                scale=alt.Scale(domain=list(OUTCOME_COLOURS), range=list(OUTCOME_COLOURS.values())),
                legend=alt.Legend(title="run", orient="top"),  # the same legend as colour: merged into one
            ),
            tooltip=["job_id:N", "start:T", "duration_s:Q", "outcome:N", "exit_status:Q", "signal:Q"],
        )
        .properties(width=900)
    )
    timed = [r for r in rows if r["duration_s"] is not None and r["duration_s"] > 0]
    ticks = (
        alt.Chart(alt.Data(values=timed))
        .mark_tick(thickness=1, opacity=0.6)
        .encode(
            x=alt.X("duration_s:Q", scale=alt.Scale(type="log"), title="run duration (s, log scale)"),
            y=y,
            color=colour,
            tooltip=["job_id:N", "start:T", "duration_s:Q", "outcome:N"],
        )
    )
    interval = (
        alt.Chart(alt.Data(values=intervals))
        .mark_tick(color="black", thickness=3, size=18)
        .encode(x="interval_s:Q", y=y, tooltip=["job_id:N", "interval_s:Q"])
    )
    durations = (ticks + interval).properties(
        width=900, title="Durations against the interval (black: the time between two scheduled starts)"
    )
    return alt.vconcat(timeline, durations).resolve_scale(x="independent")


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1f2933; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #cbd2d9; padding: 0.25em 0.5em; vertical-align: top; text-align: left; }
th { background: #f0f4f8; } td.num { text-align: right; } code { font-size: 0.95em; }
.muted { color: #7b8794; }
"""


def _ranking_html(ranked: Sequence[tuple[CronJob, Metrics, Score]]) -> str:
    out = [
        "<table id='ranking'><tr><th>score</th><th>job_id</th><th>schedule</th><th>source</th>"
        "<th>why (points: evidence)</th></tr>"
    ]
    for j, _m, s in ranked:
        reasons = (
            "<br>".join(
                f"+{r.points:g} {html.escape(r.text)}"
                + (f" <span class='muted'>({html.escape(r.evidence)})</span>" if r.evidence else "")
                for r in s.reasons
            )
            or "<span class='muted'>no pain found</span>"
        )
        if s.unknown:
            reasons += "<br><span class='muted'>unknown: " + html.escape("; ".join(s.unknown)) + "</span>"
        out.append(
            f"<tr><td class='num'>{s.value:.0f}{'?' if s.unknown else ''}</td>"
            f"<td><code>{html.escape(j.id)}</code></td><td><code>{html.escape(j.schedule)}</code></td>"
            f"<td>{html.escape(str(j.source))}</td><td>{reasons}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _board_html(rows: Sequence[BoardRow]) -> str:
    out = [
        "<table id='board'><tr><th>host</th><th>job_id</th><th>stage</th><th>where it stands</th>"
        "<th>next command</th></tr>"
    ]
    for r in rows:
        nxt = r.next_command or (f"done; undo: {r.undo_command}" if r.undo_command else "")
        out.append(
            f"<tr><td>{html.escape(r.host)}</td><td><code>{html.escape(r.job_id)}</code></td>"
            f"<td>{html.escape(r.stage)}</td><td>{html.escape(r.detail)}</td>"
            f"<td><code>{html.escape(nxt)}</code></td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def render_html(
    *,
    host: str,
    root: str,
    now: datetime,
    window: tuple[float, float] | None,
    ranked: Sequence[tuple[CronJob, Metrics, Score]],
    runs: dict[str, list[RunRecord]],
    board: Sequence[BoardRow],
    max_jobs: int = MAX_JOBS,
) -> str:
    """The whole page as one string (charts, data and JavaScript inline)."""
    tz = now.tzinfo
    charted = [(j, m) for j, m, _s in ranked if runs.get(j.id)][:max_jobs]
    order = [j.id for j, _m in charted]
    rows = [row for j, _m in charted for row in run_rows(j.id, runs[j.id], tz)]
    intervals = [{"job_id": j.id, "interval_s": m.interval} for j, m in charted if m.interval]
    chart = _charts(rows, intervals, order)
    page = chart.to_html(inline=True, output_div="charts", embed_options={"actions": False})
    span = (
        "no cron log lines were read"
        if window is None
        else f"history {_iso(window[0], tz)} .. {_iso(window[1], tz)}"
    )
    n_runs = sum(len(v) for v in runs.values())
    head = (
        f"<h1>cronshift report: {html.escape(host)}</h1>"
        f"<p class='muted'>root {html.escape(root)}; made {html.escape(now.isoformat())}; "
        f"{html.escape(span)}; "
        f"{n_runs} runs; {len(ranked)} jobs. Charts show the {len(order)} most painful jobs that ran.</p>"
        "<h2>Runs and durations</h2>"
    )
    tail = (
        "<h2>Pain ranking, with the evidence</h2>"
        + _ranking_html(ranked)
        + "<h2>Migration board</h2>"
        + _board_html(board)
    )
    page = page.replace(
        "<style>", f"<title>cronshift report: {html.escape(host)}</title>\n<style>{PAGE_STYLE}", 1
    )
    # The inlined JavaScript itself contains "<body>": insert at the page's own (last) tags.
    before, _, after = page.rpartition("<body>")
    page = before + "<body>\n" + head + after
    before, _, after = page.rpartition("</body>")
    return before + tail + "\n</body>" + after
