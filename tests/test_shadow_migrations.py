"""Faithful and broken migrations through `cronshift shadow-run`, with the generated code as the event path.

Each broken migration is a generated task module edited the way a migration goes wrong (it changes the
working directory, never runs the command, sleeps, returns something else, raises, loses an env var, runs as
another user, appends twice, differs past 4 KiB of output or 64 KiB of a file, differs in a binary file,
does not delete, does not rewrite a file with the bytes it already holds, changes a pid-shaped or
hash-shaped value that never varied): none may get parity, and the report names the cause. The faithful
ones (the same modules, untouched) must never get a mismatch. Every test hashes the real files before and
after: no job may write outside its sandbox.

Both event paths: `local` (the task applied in-process, in the side's sandbox) and `celery` (a real worker
started per event run in the side's sandbox, on a test-owned Redis)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cronshift.cli.generate import generate
from cronshift.cli.shadow_run import shadow_run
from cronshift.discover.lookup import find_job
from cronshift.discover.scan import scan
from cronshift.generate.common import slug
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 - fixture

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "shadow_matrix"
PKG = "mx"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox mode needs root (namespaces, overlayfs)")

REPORT, FAIL, APPEND, BIGOUT, RENAME, BIGFILE, DELETE, STABLE, REWRITE = range(5, 14)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("shadow-run")(shadow_run)
    app.command("generate")(generate)
    return app


@pytest.fixture(scope="module")
def matrix() -> Iterator[tuple[Path, Path]]:
    """A copy of fixtures/shadow_matrix outside /tmp and the project `cronshift generate` wrote for it."""
    base = Path(tempfile.mkdtemp(prefix="cronshift-matrix-", dir="/var/tmp"))
    base.chmod(0o755)
    root = base / "root"
    shutil.copytree(FIXTURE, root, symlinks=True)
    tab = root / "etc/cron.d/jobs"
    tab.write_text(tab.read_text().replace("@ROOT@", str(root)))
    out = base / "project"
    r = CliRunner().invoke(
        _cli(),
        ["generate", "--all", "--root", str(root), "--out", str(out), "--package", PKG, "--no-history"],
    )
    assert r.exit_code == 0, r.output
    try:
        yield root, out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def tree_digest(root: Path) -> dict[str, str]:
    """Every real file under the root (cronshift's own state directory aside), by content and mode."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.startswith("var/lib/cronshift"):
            dirs[:] = []
            continue
        for n in files + dirs:
            p = os.path.join(dirpath, n)
            if os.path.relpath(p, root).startswith("var/lib"):
                continue
            st = os.lstat(p)
            h = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else "dir"  # noqa: SIM115
            out[os.path.relpath(p, root)] = f"{h} {st.st_mode:o}"
    return out


def module_path(root: Path, project: Path, line: int) -> Path:
    job = find_job(scan(root), f"etc/cron.d/jobs:{line}")
    return project / PKG / "jobs" / f"{slug(job.id)}.py"


def broken_project(root: Path, project: Path, tmp: Path, line: int, edit: dict[str, str]) -> Path:
    """A copy of the generated project whose task module for `line` is edited as `edit` says."""
    dest = tmp / "project"
    shutil.copytree(project, dest, ignore=shutil.ignore_patterns("__pycache__"))
    mod = module_path(root, dest, line)
    text = mod.read_text()
    call = "    return run_cron_task(self, SPEC, payload=payload, scheduled_for=scheduled_for)"
    assert call in text
    if "after_spec" in edit:
        marker = "\n# Policies,"
        text = text.replace(marker, "\n" + edit["after_spec"].replace("@ROOT@", str(root)) + "\n" + marker, 1)
    if "body" in edit:
        text = text.replace(call, edit["body"])
    mod.write_text(text)
    return dest


def shadow(
    root: Path, project: Path, line: int, event_path: str, broker: str | None, runs: int, calibration: int = 3
) -> dict[str, Any]:
    args = ["shadow-run", f"etc/cron.d/jobs:{line}", "--root", str(root), "--project", str(project)]
    args += ["--runs", str(runs), "--gate-pairs", str(runs), "--calibration", str(calibration), "--json"]
    # report.sh prints its own elapsed whole seconds: a clock reading calibration cannot judge, so named.
    args += ["--event-path", event_path, "--timeout", "60", "--ignore", r"took \d+s"]
    if broker:
        args += ["--broker", broker]
    before = tree_digest(root)
    r = CliRunner().invoke(_cli(), args)
    assert r.exit_code in (0, 3), r.output
    assert tree_digest(root) == before, "a job wrote outside its sandbox"
    doc = json.loads(r.stdout)
    assert (r.exit_code == 3) == (doc["verdict"]["label"] == "mismatch")
    return doc


def in_command(old: str, new: str) -> str:
    return f"SPEC[{'command'!r}] = SPEC[{'command'!r}].replace({old!r}, {new!r})"


BROKEN: dict[str, tuple[int, dict[str, str], str]] = {
    "chdir": (REPORT, {"after_spec": 'SPEC["command"] = "cd /tmp && " + SPEC["command"]'}, "cwd=/tmp"),
    "never-runs": (
        REPORT,
        {"body": '    return {"exit_status": 0, "signal": None, "output_tail": ""}'},
        "without running the job's command",
    ),
    "sleeps": (
        REPORT,
        {"body": "    import time\n    time.sleep(2)\n" + "    return run_cron_task(self, SPEC)"},
        "much longer",
    ),
    "not-a-dict": (REPORT, {"body": '    run_cron_task(self, SPEC)\n    return "done"'}, "returned str"),
    "raises": (REPORT, {"body": '    raise RuntimeError("generated bug")'}, "generated bug"),
    "lost-env": (
        REPORT,
        {"after_spec": 'SPEC["env"] = [kv for kv in SPEC["env"] if kv[0] != "REPORT_MODE"]'},
        "mode=",
    ),
    "wrong-user": (REPORT, {"after_spec": 'SPEC["user"] = "nobody"'}, "user=nobody"),
    "written-elsewhere": (
        REPORT,
        {
            "after_spec": 'SPEC["env"] = [[k, "@ROOT@/var/log" if k == "OUTDIR" else v] '
            + 'for k, v in SPEC["env"]]'
        },
        "var/out/report.txt: created by cron only",
    ),
    "exit-code": (FAIL, {"after_spec": 'SPEC["command"] += "; exit 3"'}, "exit status 4 (cron) vs 3 (event)"),
    "appends-twice": (
        APPEND,
        {"after_spec": 'SPEC["command"] += " ; echo again >> @ROOT@/var/log/append.log"'},
        "append.log",
    ),
    "output-past-4k": (
        BIGOUT,
        {"after_spec": in_command("seq 1 20000", "seq 1 20000 | sed 15000s/5/6/")},
        "output line 15000",
    ),
    "rename-over-content": (
        RENAME,
        {"after_spec": 'SPEC["command"] = SPEC["command"].replace("v2", "v3")'},
        "conf",
    ),
    "file-past-64k": (
        BIGFILE,
        {"after_spec": in_command("seq 1 30000", "seq 1 30000 | sed 29000s/2/3/")},
        "big.txt line 29000",
    ),
    "binary-file": (
        BIGFILE,
        {"after_spec": 'SPEC["command"] = SPEC["command"].replace("head -c 3000", "head -c 3001")'},
        "blob.bin: bytes differ",
    ),
    "does-not-delete": (DELETE, {"after_spec": 'SPEC["command"] = "true"'}, "old.txt: deleted by cron only"),
    # cron rewrites the file with the bytes it already holds: the write is the effect, even unseen in content
    "does-not-rewrite": (REWRITE, {"after_spec": 'SPEC["command"] = "true"'}, "current: changed by cron"),
    "stable-pid-shaped": (
        STABLE,
        {"after_spec": 'SPEC["command"] = SPEC["command"].replace("batch[41]", "batch[42]")'},
        "'41' (cron) vs '42' (event)",
    ),
    "stable-hex-digest": (
        STABLE,
        {"after_spec": 'SPEC["command"] = SPEC["command"].replace("3f9a0c1e22b7", "3f9a0c1e22b8")'},
        "3f9a0c1e22b7",
    ),
    "stable-epoch": (
        STABLE,
        {"after_spec": 'SPEC["command"] = SPEC["command"].replace("1700000000", "1700000001")'},
        "1700000000",
    ),
}
FAITHFUL = {
    "report": REPORT,
    "failing": FAIL,
    "appender": APPEND,
    "big-output": BIGOUT,
    "rename-over": RENAME,
    "big-and-binary-files": BIGFILE,
    "deleter": DELETE,
    "stable-noise-shapes": STABLE,
    "rewriter": REWRITE,
}


# A stable value shaped like a clock reading proves nothing either way: never parity, never mismatch.
UNJUDGED = {"stable-epoch"}


def _check_broken(doc: dict[str, Any], needle: str, name: str) -> None:
    v = doc["verdict"]
    if name in UNJUDGED:
        assert v["label"] == "insufficient evidence", (v["label"], v["missing"], v["differences"])
        assert any(needle in m and "--ignore" in m for m in v["missing"]), v["missing"]
        return
    assert v["label"] == "mismatch", (v["label"], v["missing"], v["differences"])
    assert any(needle in d for d in v["differences"]), v["differences"]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_migration_is_a_mismatch_naming_it_local(
    matrix: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    root, project = matrix
    line, edit, needle = BROKEN[name]
    doc = shadow(root, broken_project(root, project, tmp_path, line, edit), line, "local", None, runs=2)
    _check_broken(doc, needle, name)


@pytest.mark.parametrize("name", sorted(FAITHFUL))
def test_faithful_migration_reaches_parity_local(matrix: tuple[Path, Path], name: str) -> None:
    root, project = matrix
    doc = shadow(root, project, FAITHFUL[name], "local", None, runs=2)
    v = doc["verdict"]
    assert v["label"] == "parity", (v["missing"], v["differences"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_migration_is_a_mismatch_naming_it_celery(
    matrix: tuple[Path, Path],
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811 - the imported fixture
    name: str,
) -> None:
    root, project = matrix
    line, edit, needle = BROKEN[name]
    proj = broken_project(root, project, tmp_path, line, edit)
    doc = shadow(root, proj, line, "celery", redis_server.url, runs=1, calibration=4)
    _check_broken(doc, needle, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAITHFUL))
def test_faithful_migration_reaches_parity_celery(
    matrix: tuple[Path, Path],
    redis_server: RedisServer,  # noqa: F811 - the imported fixture
    name: str,
) -> None:
    root, project = matrix
    doc = shadow(root, project, FAITHFUL[name], "celery", redis_server.url, runs=1, calibration=4)
    v = doc["verdict"]
    assert v["label"] == "parity", (v["missing"], v["differences"])
    assert doc["pairs"][0]["event"]["meta"]["task_id"]
