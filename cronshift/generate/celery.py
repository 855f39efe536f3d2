"""Write a Celery project for cron jobs: app.py with a proved beat schedule, one task module per job,
triggers.py, a README per job, and a manifest so a re-run never overwrites a file the user edited."""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from cronshift.discover.schedule import CronExpr, Dialect, ScheduleError, parse
from cronshift.generate.equivalence import BeatEntry, Translation, translate
from cronshift.generate.plan import Plan, plan_for
from cronshift.model import CronJob, Format

__all__ = ["DEFAULT_BROKER", "GenerateResult", "JobOutput", "generate_project", "render_project"]

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
MANIFEST = ".cronshift-manifest.json"
STARTING_DEADLINE = 120  # seconds
VISIBILITY_MARGIN = 3600  # seconds above the longest hard limit

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("cronshift.generate", "templates"),
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
    autoescape=False,
)
_env.filters["pyrepr"] = lambda v: pyrepr(v)
_env.filters["chunks"] = lambda v: string_chunks(v)
_env.filters["comment"] = lambda v, indent="": comment_lines(v, indent)
_env.filters["docstring"] = lambda v, indent="": docstring_lines(v, indent)
_env.filters["call"] = lambda v, prefix, indent: call_lines(v, prefix, indent)
_env.filters["wrap"] = lambda v: "\n".join(
    __import__("textwrap").wrap(v, LINE, break_long_words=False, break_on_hyphens=False)
)
_env.filters["natural"] = lambda v, attr: sorted(v, key=lambda x: natural_key(x[attr]))

LINE = 110  # the generated project's line length (its ruff.toml): files are written formatted, no ruff needed


def string_chunks(text: str, width: int = LINE - 8) -> list[str]:
    """`text` as Python string literals of at most `width` characters, to concatenate implicitly.

    Cut between characters of the value, never inside an escape, so each piece is a valid literal."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + width)
        while end > start + 1 and len(pyrepr(text[start:end])) > width:
            end -= max(1, (len(pyrepr(text[start:end])) - width + 1) // 2)
        out.append(pyrepr(text[start:end]))
        start = end
    return out or ['""']


def comment_lines(text: str, indent: str = "") -> str:
    """A # comment wrapped at the line length (continuation lines indented, as the templates write)."""
    import textwrap

    first = indent + "# "
    lead = len(text) - len(text.lstrip(" "))
    return "\n".join(
        textwrap.wrap(
            text.strip(),
            LINE,
            initial_indent=first + " " * lead,
            subsequent_indent=indent + "#   ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def docstring_lines(text: str, indent: str = "") -> str:
    """A docstring: one line if it fits, else its first sentence, a blank line, the rest wrapped, and the
    closing quotes alone (ruff format joins a one-paragraph docstring back onto one line)."""
    import textwrap

    one = f'{indent}"""{text}"""'
    if len(one) <= LINE:
        return one
    summary, _, rest = text.partition(". ")
    body = textwrap.wrap(rest, LINE - len(indent), break_long_words=False, break_on_hyphens=False)
    lines = [f'{indent}"""{summary}.', "", *(indent + b for b in body)]
    return "\n".join([*lines, f'{indent}"""'])


def call_lines(call: str, prefix: str, indent: str) -> str:
    """`prefix + call + ","` laid out as ruff format lays it out at the line length.

    `call` is `name(arg, arg, ...)` with simple arguments (no nested commas outside quotes)."""
    one = f"{indent}{prefix}{call},"
    if len(one) <= LINE:
        return one
    name, _, rest = call.partition("(")
    args = rest[:-1]
    inner = indent + "    "
    if len(inner + args) <= LINE:
        return f"{indent}{prefix}{name}(\n{inner}{args}\n{indent}),"
    parts = _split_args(args)
    return f"{indent}{prefix}{name}(\n" + "".join(f"{inner}{p},\n" for p in parts) + f"{indent}),"


def _split_args(args: str) -> list[str]:
    out, cur, quote = [], "", ""
    for ch in args:
        if quote:
            cur += ch
            if ch == quote and not cur.endswith("\\" + quote):
                quote = ""
        elif ch in "\"'":
            quote, cur = ch, cur + ch
        elif ch == ",":
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*out, cur.strip()] if cur.strip() else out


def natural_key(s: str) -> list[Any]:
    """isort's (and ruff's) natural order: digit runs compare as numbers ('x_6a' before 'x_58')."""
    # natord, which ruff uses: a digit run with a leading zero compares digit by digit, before the others
    return [
        (t[:1] != "0", int(t) if t[:1] != "0" else t) if t.isdigit() else t for t in re.split(r"(\d+)", s)
    ]


def pyrepr(value: Any) -> str:
    """A Python literal for a str/int; strings double-quoted like ruff format writes them."""
    if isinstance(value, str):
        r = repr(value)
        if r.startswith("'") and '"' not in value:
            r = '"' + r[1:-1].replace("\\'", "'") + '"'
        return r
    return repr(value)


@dataclass(frozen=True, slots=True)
class JobOutput:
    id: str
    task: str
    module: str
    translation: Translation
    entries: tuple[BeatEntry, ...]
    messages: tuple[str, ...]
    policies: dict[str, Any] | None = field(default=None, hash=False, compare=False)  # value + why each
    warnings: tuple[str, ...] = ()  # what the scan knows that changes or doubts the job (also in messages)


@dataclass
class GenerateResult:
    package: str
    out: str
    files: list[dict[str, str]] = field(default_factory=list)  # {"path", "status"}
    jobs: list[JobOutput] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # edited by the user, left alone

    @property
    def proofs_differ(self) -> bool:
        return any(j.translation.proof is not None and not j.translation.proof.identical for j in self.jobs)


def unknown_zone(zone: str) -> str | None:
    """One line when `zone` (a CRON_TZ) is no time zone this system knows; None when it is fine."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if zone in ("UTC", "Etc/UTC", ""):
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"CRON_TZ '{one_line(zone)}' is not a time zone this system knows"
    return None


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


def slug(job_id: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z_]", "_", job_id).lower()
    if not s or s[0].isdigit() or keyword.iskeyword(s):
        s = "job_" + s
    return s


def expr_for(job: CronJob, dialect: Dialect) -> tuple[CronExpr | None, tuple[str, ...]]:
    """The cron expression beat should follow, and what is lost for anacron and run-parts jobs."""
    notes: list[str] = []
    if job.format is Format.ANACRONTAB:
        period, _, delay = job.schedule.partition(" ")
        minute = int(delay) if delay.strip().isdigit() and int(delay) < 60 else 0
        text = {"1": f"{minute} 0 * * *", "7": f"{minute} 0 * * 0", "@daily": f"{minute} 0 * * *",
                "@weekly": f"{minute} 0 * * 0", "@monthly": f"{minute} 0 1 * *"}.get(period)  # fmt: skip
        if text is None:
            return None, (f"anacron period '{period}' has no beat equivalent",)
        notes.append(
            f"anacron job (period {period}, delay {delay} min): beat fires at {text!r}; what is lost is "
            "anacron's catch-up after downtime (a run missed while the machine was off)."
        )
        return parse(text, dialect), tuple(notes)
    if job.format is Format.RUN_PARTS:
        notes.append(
            "run-parts script: beat fires at the crontab time of its folder; "
            + (
                f"anacron ({job.anacron}) also ran it after downtime, which beat does not."
                if job.anacron
                else "order relative to the folder's other scripts is no longer kept."
            )
        )
    return parse(job.schedule, dialect), tuple(notes)


def job_spec(
    job: CronJob, plan: Any, schedule: dict[str, str] | None = None, dialect: str = "debian"
) -> dict[str, Any]:
    policy = dict(plan.policy()) if hasattr(plan, "policy") else {}
    if schedule:
        policy["schedule"] = schedule  # catch-up sends one run per missed instant of this schedule
    return {
        "policy": policy,
        "kill_grace": getattr(plan, "kill_grace", None),
        "id": job.id,
        "user": job.user,
        "shell": job.shell,
        "env": [list(kv) for kv in job.env],
        "command": job.shell_command or job.command,
        "stdin": job.stdin,
        "overlap": plan.overlap,
        "time_limit": plan.time_limit,
        "source": str(job.source),
        "dialect": str(dialect),  # the runtime builds the environment as this cron does
    }


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
        files[f"{package}/jobs/{name}.py"] = _env.get_template("job.py.j2").render(**_safe_doc(ctx))
        files[f"{package}/jobs/{name}.md"] = _env.get_template("README.md.j2").render(**ctx)
        outs.append(JobOutput(job.id, task, module, tr, entries, messages, _plan_json(plan), warns))
    uses = {e.kind for o in outs for e in o.entries}
    files[f"{package}/__init__.py"] = '"""Celery tasks generated by cronshift from cron jobs."""\n'
    files[f"{package}/jobs/__init__.py"] = '"""One module per cron job."""\n'
    files[f"{package}/app.py"] = _env.get_template("app.py.j2").render(
        package=package, broker=broker, backend=_backend(broker), jobs=[_safe_doc(c) for c in ctx_jobs],
        timezone=timezone, uses_crontab="crontab" in uses, uses_cronsim="cronsim" in uses,
        longest_limit=longest, visibility_timeout=longest + VISIBILITY_MARGIN,
        deadline=STARTING_DEADLINE if all(p == "skip" for p in policies) else None,
        concurrency=max(1, sum(p.concurrency for p in used_plans)),
        concurrency_why=f"{len(used_plans)} job(s)",
        reboot_jobs=reboot, redbeat=beat == "redbeat", state_redis=state_redis,
        redbeat_cronsim=beat == "redbeat" and "cronsim" in uses,
    )  # fmt: skip
    files[f"{package}/triggers.py"] = _env.get_template("triggers.py.j2").render(jobs=ctx_jobs)
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


RUFF_TOML = """# Lint and format settings for this generated project (cronshift writes code that passes them).
line-length = 110
extend-exclude = ["*.md"]

[lint]
select = ["E4", "E7", "E9", "F", "I"]

[lint.isort]
known-third-party = ["cronshift"]
"""


def _ruff() -> list[str] | None:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    return [exe] if Path(exe).exists() else None


def ruff_format(files: dict[str, str], package: str) -> dict[str, str]:
    """Sort imports and format with ruff (deterministic for one ruff version); unchanged if ruff is absent."""
    cmd = _ruff()
    if cmd is None:
        return files
    with tempfile.TemporaryDirectory(prefix="cronshift-gen-") as tmp:
        base = Path(tmp)
        for rel, text in files.items():
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_text(text, encoding="utf-8")
        py = [rel for rel in files if rel.endswith(".py")]
        common = ["--no-cache", "--config", str(base / "ruff.toml")]
        subprocess.run([*cmd, "check", "--fix", "--quiet", *common, *py], cwd=base, capture_output=True)
        subprocess.run([*cmd, "format", "--quiet", *common, *py], cwd=base, capture_output=True)
        return {rel: (base / rel).read_text(encoding="utf-8") for rel in files}


def _plan_json(plan: Plan) -> dict[str, Any]:
    """`generate --json`: each policy with its value and the reason it was chosen."""
    return {
        "overlap": {"value": plan.overlap, "why": plan.overlap_why, "lock_expiry": plan.lock_expiry},
        "time_limit": {"soft": plan.time_limit, "hard": plan.hard_limit, "why": plan.limit_why},
        "missed": {"value": plan.missed, "why": plan.missed_why, "starting_deadline": plan.starting_deadline},
        "retries": {"retry_on": list(plan.retry_on), "max_retries": plan.max_retries, "why": plan.retry_why},
        "max_deliveries": {"value": plan.max_deliveries, "why": plan.delivery_why},
        "concurrency": {"value": plan.concurrency, "why": plan.concurrency_why},
        "overridden": list(plan.overridden),
    }


def _plan_ctx(plan: Plan) -> dict[str, Any]:
    """The plan's values and reasons, each reason safe inside a # comment."""
    out: dict[str, Any] = {k: getattr(plan, k) for k in plan.__slots__ if not k.endswith("_why")}  # type: ignore[attr-defined]
    for k in ("overlap_why", "limit_why", "missed_why", "retry_why", "delivery_why", "concurrency_why"):
        out[k] = one_line(getattr(plan, k))
    out["hard_limit"], out["retry_on"] = plan.hard_limit, list(plan.retry_on)
    return out


def one_line(s: str) -> str:
    """Text safe inside a # comment or a docstring: one line, no quotes that could end the docstring."""
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return s.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').replace("\r", "\\r").replace("\n", "\\n")


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


def sha_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def write_files(files: dict[str, str], out: Path, result: GenerateResult, force: bool) -> None:
    """Write generated files under `out`, keeping any file the user edited since generate last wrote it
    (its hash is no longer the one in the manifest) unless `force`; every target shares this rule."""
    mpath = out / MANIFEST
    try:
        manifest: dict[str, str] = json.loads(mpath.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        manifest = {}
    new_manifest = dict(manifest)
    for rel in sorted(files):
        text, path = files[rel], out / rel
        status = "written"
        if path.exists():
            current = sha_text(path.read_bytes().decode("utf-8", "surrogateescape"))
            if current == sha_text(text):
                status = "unchanged"
            elif manifest.get(rel) != current and not force:
                result.kept.append(rel)
                result.files.append({"path": rel, "status": "kept-edited"})
                continue
        if status != "unchanged":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        new_manifest[rel] = sha_text(text)
        result.files.append({"path": rel, "status": status})
    out.mkdir(parents=True, exist_ok=True)
    mpath.write_text(json.dumps({"files": dict(sorted(new_manifest.items()))}, indent=2) + "\n")
