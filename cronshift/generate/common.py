"""What both generate targets (Celery, Redis Streams) and the event sources share: the job spec, the
templates and the filters that lay code out as ruff format would, the result types, and writing files under
the manifest rule (a file the user edited is kept).
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from cronshift.discover.schedule import CronExpr, parse
from cronshift.generate.equivalence import BeatEntry, Translation
from cronshift.generate.plan import Plan
from cronshift.model import MANIFEST, CronJob, Dialect, Format
from cronshift.runtime import RUNTIME_API_VERSION
from cronshift.runtime.spec import SPEC_VERSION, JobSpec

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("cronshift.generate", "templates"),
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
    autoescape=False,
)
templates.filters["pyrepr"] = lambda v: pyrepr(v)
templates.filters["chunks"] = lambda v: string_chunks(v)
templates.filters["comment"] = lambda v, indent="": comment_lines(v, indent)
templates.filters["docstring"] = lambda v, indent="": docstring_lines(v, indent)
templates.filters["call"] = lambda v, prefix, indent: call_lines(v, prefix, indent)
templates.filters["wrap"] = lambda v: "\n".join(
    textwrap.wrap(v, LINE, break_long_words=False, break_on_hyphens=False)
)
templates.filters["natural"] = lambda v, attr: sorted(v, key=lambda x: natural_key(x[attr]))
# Generated code names the runtime API version it was written for (cronshift.runtime.require_api).
templates.globals["runtime_api"] = RUNTIME_API_VERSION

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
    beat_zone: str = ""  # the Celery app's timezone (cron's, or UTC where that keeps more crontabs stock)
    beat_zone_why: str = ""

    @property
    def proofs_differ(self) -> bool:
        return any(j.translation.proof is not None and not j.translation.proof.identical for j in self.jobs)


def unknown_zone(zone: str) -> str | None:
    """One line when `zone` (a CRON_TZ) is no time zone this system knows; None when it is fine."""
    if zone in ("UTC", "Etc/UTC", ""):
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"CRON_TZ '{one_line(zone)}' is not a time zone this system knows"
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
    job: CronJob, plan: Any, schedule: dict[str, str] | None = None, dialect: Dialect = Dialect.DEBIAN
) -> JobSpec:
    """The SPEC both targets embed (the one place it is built; its type and version: runtime.spec)."""
    policy = dict(plan.policy()) if hasattr(plan, "policy") else {}
    if schedule:
        policy["schedule"] = schedule  # catch-up sends one run per missed instant of this schedule
    return {
        "version": SPEC_VERSION,
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


def plan_json(plan: Plan) -> dict[str, Any]:
    """`generate --json`: each policy with its value and the reason it was chosen."""
    return {
        "overlap": {"value": plan.overlap, "why": plan.overlap_why, "lock_expiry": plan.lock_expiry},
        "time_limit": {"soft": plan.time_limit, "hard": plan.hard_limit, "why": plan.limit_why},
        "missed": {"value": plan.missed, "why": plan.missed_why, "starting_deadline": plan.starting_deadline},
        "retries": {"retry_on": list(plan.retry_on), "max_retries": plan.max_retries, "why": plan.retry_why},
        "max_deliveries": {"value": plan.max_deliveries, "why": plan.delivery_why},
        "concurrency": {
            "value": plan.concurrency,
            "why": plan.concurrency_why,
            "history_max": plan.peak_runs,  # most runs at once in the history (null: no start/end pairs)
        },
        "overridden": list(plan.overridden),
    }


def one_line(s: str) -> str:
    """Text safe inside a # comment or a docstring: one line, no quotes that could end the docstring."""
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return s.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').replace("\r", "\\r").replace("\n", "\\n")


def sha_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
