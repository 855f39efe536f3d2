"""The migration board: where every job stands on the path scan -> wrap -> generate -> shadow -> retire,
and the one command to run next.

Read-only: it reads the crontabs (a scan), the ledger (runs recorded by `cronshift record`, shadow
observations, verdicts and live-shadow setups), the retire journal, and generated projects (their
`.cronshift-manifest.json`). It never creates a ledger that does not exist yet, so `cronshift status` on a
server that has never been touched writes nothing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shlex
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cronshift.edit.retire import list_retired
from cronshift.ledger import store as ledger_mod
from cronshift.ledger.kinds import LIVE_KIND, OBSERVATION_KIND, VERDICT_KIND
from cronshift.model import MANIFEST, WRAPPER_KIND, CronJob, ScanResult
from cronshift.shadow.verdict import parse_verdict_doc

__all__ = ["STAGES", "BoardRow", "GeneratedProject", "build_board", "host_name", "read_project"]

# In migration order; a job's stage is the furthest one it has reached.
STAGES = ("not-run", "cron", "wrapped", "generated", "shadowing", "differences", "parity", "retired")


@dataclass(frozen=True)
class GeneratedProject:
    """One `cronshift generate` output directory: which jobs it holds and which files were edited since."""

    out: str
    jobs: dict[str, list[str]]  # job id -> its files (relative to out)
    changed: list[str]  # files whose bytes no longer match the manifest (edited, or deleted)


@dataclass
class BoardRow:
    """One job on the board. `next_command` is the one command that moves it on (None: nothing to do)."""

    host: str
    job_id: str
    source: str
    schedule: str
    user: str
    stage: str
    detail: str
    next_command: str | None
    runs_recorded: int = 0
    project: str | None = None
    project_changed: list[str] = field(default_factory=list)
    shadow: dict[str, Any] | None = None
    undo_command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host_name(root: Path) -> str:
    """The host the crontabs belong to: the root's etc/hostname when it has one (a copied server keeps its
    name), else this machine's name."""
    try:
        name = (Path(root) / "etc" / "hostname").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        name = ""
    return name.split()[0] if name else socket.gethostname()


def _sha(data: bytes) -> str:
    return hashlib.sha256(
        data.decode("utf-8", "surrogateescape").encode("utf-8", "surrogateescape")
    ).hexdigest()


def _spec_ids(source: bytes) -> list[str]:
    """Job ids of the SPECs a generated module holds: each SPEC is a JSON string literal with an "id"
    (celery: one module per job; streams: one module for all). Parsed, never imported or run."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    ids: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("{"):
            try:
                doc = json.loads(node.value)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("id"), str) and "command" in doc:
                ids.append(doc["id"])
    return ids


def read_project(out: Path) -> GeneratedProject | None:
    """What a generate output directory holds, from its manifest; None when it has none (not a project)."""
    try:
        files: dict[str, str] = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    jobs: dict[str, list[str]] = {}
    changed: list[str] = []
    for rel, digest in sorted(files.items()):
        try:
            data = (Path(out) / rel).read_bytes()
        except OSError:
            changed.append(rel)
            continue
        if _sha(data) != digest:
            changed.append(rel)
        if rel.endswith(".py"):
            for jid in _spec_ids(data):
                jobs.setdefault(jid, []).append(rel)
    for rels in jobs.values():
        # A job's own .md beside its module belongs to it too.
        for rel in list(rels):
            md = rel[:-3] + ".md"
            if md in files and md not in rels:
                rels.append(md)
    return GeneratedProject(str(out), jobs, changed)


def _ledger_facts(
    root: Path, store: str | None, redis_url: str | None
) -> tuple[dict[str, int], dict[str, dict[str, Any]], dict[str, dict[str, Any]], set[str]]:
    """Runs per job, verdicts, live setups and jobs with shadow observations; empty when no ledger exists."""
    db = store or os.path.join(str(root), ledger_mod.DEFAULT_STORE)
    if not redis_url and not os.path.exists(db) and not ledger_mod.has_spooled(root, store=store):
        return {}, {}, {}, set()
    runs: dict[str, int] = {}
    with ledger_mod.open_ledger(root, store=store, redis_url=redis_url) as led:
        for r in led.runs():
            if r.job_id and r.source == "record":
                runs[r.job_id] = runs.get(r.job_id, 0) + 1
        verdicts = {d.get("job", ""): d for d in led.list(VERDICT_KIND)}
        lives = {d.get("job", ""): d for d in led.list(LIVE_KIND)}
        observed = {str(d.get("job") or "") for d in led.list(OBSERVATION_KIND)}
    return runs, verdicts, lives, observed


def _verdict_files(root: Path) -> dict[str, dict[str, Any]]:
    """Verdicts shadow-run wrote as var/lib/cronshift/shadow/<job>.json (retire's gate reads them too)."""
    found: dict[str, dict[str, Any]] = {}
    folder = Path(root).joinpath("var", "lib", "cronshift", "shadow")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return found
    for name in names:
        if not name.endswith(".json") or (folder / name).is_symlink():  # a link may point out of the root
            continue
        try:
            doc = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            found[str(doc.get("job") or name[:-5])] = doc
    return found


def _cmd(*words: str, root: Path) -> str:
    extra = [] if Path(root).resolve() == Path("/") else ["--root", str(root)]
    return shlex.join(["cronshift", *words, *extra])


def _shadow_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The verdict as retire's gate reads it (the versioned contract), so the board never shows a parity
    the gate would refuse; `problems` says why a document cannot be trusted as written."""
    read = parse_verdict_doc(doc, "the verdict")
    gate = doc.get("gate") if isinstance(doc.get("gate"), dict) else {}
    patterns = doc.get("patterns") if isinstance(doc.get("patterns"), dict) else {}
    return {
        "verdict": None if read.problems else read.verdict,
        "mode": "live" if read.live else "now",
        "runs_compared": read.runs_compared or 0,
        "matched_consecutive": doc.get("matched_consecutive", 0),
        "gate_pairs": gate.get("consecutive_pairs"),
        "patterns_unseen": [p for p, seen in patterns.items() if not seen],
        "differences": read.differences,
        "missing": list(doc.get("missing") or []),
        "problems": read.problems,
    }


def build_board(
    result: ScanResult,
    root: Path,
    *,
    projects: list[Path] = (),  # type: ignore[assignment]
    store: str | None = None,
    redis_url: str | None = None,
    host: str | None = None,
) -> list[BoardRow]:
    """Every job of the scan (commented-out lines apart, retired ones included) with its stage and next
    command. Projects named in shadow evidence are read too, so a user need not repeat `--project`."""
    host = host or host_name(root)
    runs, verdicts, lives, observed = _ledger_facts(root, store, redis_url)
    for jid, doc in _verdict_files(root).items():
        verdicts.setdefault(jid, doc)  # the ledger's copy wins, as in retire's gate
    retired = {r.job_id: r for r in list_retired(root)}
    dirs = list(projects)
    for d in verdicts.values():
        p = (d.get("evidence") or {}).get("project")
        if p:
            dirs.append(Path(p))
    gen: dict[str, GeneratedProject] = {}
    for d in dirs:
        proj = read_project(d)
        if proj is not None:
            for jid in proj.jobs:
                gen.setdefault(jid, proj)
    rows: list[BoardRow] = []
    jobs: list[CronJob] = list(result.jobs) + [j for j in result.disabled if j.retired]
    seen: set[str] = set()
    for j in jobs:
        if j.id in seen or (j.disabled and not j.retired):
            continue
        seen.add(j.id)
        rows.append(_row(j, root, host, runs, verdicts, lives, observed, retired, gen))
    return rows


def _row(
    j: CronJob,
    root: Path,
    host: str,
    runs: dict[str, int],
    verdicts: dict[str, dict[str, Any]],
    lives: dict[str, dict[str, Any]],
    observed: set[str],
    retired: dict[str, Any],
    gen: dict[str, GeneratedProject],
) -> BoardRow:
    row = BoardRow(
        host=host,
        job_id=j.id,
        source=str(j.source),
        schedule=j.schedule,
        user=j.user,
        stage="cron",
        detail="",
        next_command=None,
        runs_recorded=runs.get(j.id, 0),
    )
    proj = gen.get(j.id)
    if proj is not None:
        row.project = proj.out
        mine = set(proj.jobs[j.id])
        row.project_changed = [c for c in proj.changed if c in mine or "/jobs/" not in c]
    if j.retired or j.id in retired:
        r = retired.get(j.id)
        row.stage = "retired"
        row.detail = f"retired {r.date}" if r is not None else "retired"
        if r is not None and r.to:
            row.detail += f", replaced by {r.to}"
        row.undo_command = _cmd("retire", j.id, "--undo", root=root)
        return row
    if not j.runs:
        row.stage = "not-run"
        row.detail = "; ".join(j.why_not)
        row.next_command = _cmd("show", j.id, root=root)
        return row
    verdict = verdicts.get(j.id)
    wrapped = any(w.kind == WRAPPER_KIND for w in j.wrappers)
    if verdict is not None:
        s = row.shadow = _shadow_summary(verdict)
        gate = f"{s['matched_consecutive']} of {s['gate_pairs']} matched in a row"
        again = (
            _cmd("shadow-run", j.id, "--report", root=root)
            if s["mode"] == "live"
            else _cmd("shadow-run", j.id, *(["--project", proj.out] if proj else []), root=root)
        )
        if s["problems"]:  # retire's gate would refuse it: never a parity here
            row.stage = "shadowing"
            row.detail = "verdict unreadable: " + "; ".join(s["problems"])
            row.next_command = again
        elif s["verdict"] == "parity":
            row.stage = "parity"
            row.detail = f"parity: {gate}"
            row.next_command = _cmd("retire", j.id, root=root)
        elif s["verdict"] == "differences":
            row.stage = "differences"
            row.detail = f"differences found ({len(s['differences'])}): {gate}"
            row.next_command = _cmd("shadow-run", j.id, "--report", root=root)
        else:
            row.stage = "shadowing"
            row.detail = gate
            if s["patterns_unseen"]:
                row.detail += "; not yet seen: " + ", ".join(s["patterns_unseen"])
            row.next_command = again
        return row
    if j.id in lives or j.id in observed:
        row.stage = "shadowing"
        row.detail = "live shadowing set up; no verdict yet" if j.id in lives else "observations, no verdict"
        row.next_command = _cmd("shadow-run", j.id, "--report", root=root)
        return row
    if proj is not None:
        row.stage = "generated"
        row.detail = f"in {proj.out}" + (
            f"; edited since: {', '.join(row.project_changed)}" if row.project_changed else "; unchanged"
        )
        row.next_command = _cmd("shadow-run", j.id, "--project", proj.out, root=root)
        return row
    if wrapped or row.runs_recorded:
        row.stage = "wrapped" if wrapped else "cron"
        row.detail = f"{row.runs_recorded} run(s) recorded" + ("" if wrapped else " (no longer wrapped)")
        row.next_command = _cmd("generate", j.id, "--out", "OUT", root=root)
        return row
    row.detail = "no runs recorded yet (wrap records them)"
    row.next_command = _cmd("wrap", j.id, root=root)
    return row


def stage_counts(rows: list[BoardRow]) -> dict[str, int]:
    return {s: n for s in STAGES if (n := sum(1 for r in rows if r.stage == s))}
