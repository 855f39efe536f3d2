"""README is tested: its walkthrough runs as written, and every command and option is documented in it.

In the style of sqlite-utils' documentation tests: the `$ ` lines of the walkthrough's `console` blocks are
extracted and run in one bash (so variables and `cd` carry over), from the project root, and each output
line README shows must appear, in order, in what the command really printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import typer.main

from cronshift.cli.app import app

from .conftest import PROJECT
from .support.redis_server import free_port

README = PROJECT / "README.md"
DEMO = "/tmp/cronshift-demo"
PORT = "6390"
SECTION = "## Walkthrough: one job from cron to Celery and back"
# What differs from one run to the next, replaced on both sides before lines are compared.
VOLATILE = [
    (re.compile(r"\d{8}T\d{6}Z\.[0-9a-f]{12}"), "<backup-stamp>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "<date>"),
    (re.compile(r"py-[0-9a-f]{12}"), "py-<python>"),
    (re.compile(r"\d+ KiB"), "<n> KiB"),
    (re.compile(r"fail-sh-[0-9a-f]{8}"), "fail-sh-<id>"),  # its id hashes the folder too
]


def walkthrough() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every `$ ` line of the walkthrough's console blocks."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
    return steps


def normalise(line: str) -> str:
    for pattern, repl in VOLATILE:
        line = pattern.sub(repl, line)
    return line.rstrip()


def run_steps(steps: list[tuple[str, str]], env: dict[str, str]) -> list[tuple[int, str]]:
    """Run the commands in one bash, each one's output and exit status apart (split on a random marker)."""
    mark = uuid.uuid4().hex
    script = "\n".join(f"echo {mark}-start\n{cmd} 2>&1\necho {mark}-rc $?" for cmd, _ in steps)
    p = subprocess.run(["bash", "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True,
                       timeout=300, check=False)  # fmt: skip
    out: list[tuple[int, str]] = []
    for chunk in p.stdout.split(f"{mark}-start\n")[1:]:
        body, _, rc = chunk.rpartition(f"{mark}-rc ")
        out.append((int(rc.split()[0]), body))
    assert len(out) == len(steps), p.stdout[-3000:] + p.stderr[-3000:]
    return out


def stop(pidfile: Path) -> None:
    """SIGTERM the process a pidfile names (a worker then stops its pool), SIGKILL after 10 s."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written() -> None:
    if os.geteuid() != 0:
        pytest.skip("the walkthrough wraps a root job and shadow-runs it in mount namespaces: run as root")
    for tool in ("redis-server", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/test.sh installs redis-server)")
    steps = walkthrough()
    assert len(steps) >= 15, "the walkthrough lost its commands"
    # A folder of the same length as README's, so that tables keep their widths; a port of our own.
    base = f"/tmp/csdemo{uuid.uuid4().hex[:8]}"
    assert len(base) == len(DEMO)
    # Below the ephemeral range: bind(0) hands out a port a client socket may take before redis binds it.
    port = str(free_port())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "COLUMNS": "160"}
    env.pop("CRONSHIFT_REDIS_URL", None)
    readme_id = re.search(r"report-sh-[0-9a-f]{8}", "\n".join(c for c, _ in steps))
    assert readme_id is not None

    def mine(cmd: str, job: str) -> str:
        cmd = cmd.replace(DEMO, base).replace(PORT, port)
        return cmd.replace(readme_id[0], job).replace(readme_id[0].replace("-", "_"), job.replace("-", "_"))

    try:
        first = next(i for i, (c, _) in enumerate(steps) if "cronshift scan" in c)
        results = run_steps([(mine(c, ""), o) for c, o in steps[: first + 1]], env)
        # The job's id hashes the command, which names the folder: learn ours from the scan.
        found = re.search(r"report-sh-[0-9a-f]{8}", results[-1][1])
        assert found, results[-1][1]
        job = found[0]
        # The second shell starts with the variables the first one set (`DEMO=...`).
        for c, _ in steps[: first + 1]:
            m = re.match(r"(\w+)=(\S+)(?: &&|$)", mine(c, job))
            if m:
                env[m[1]] = m[2]
        results += run_steps([(mine(c, job), o) for c, o in steps[first + 1 :]], env)
    finally:
        for name in ("beat", "worker", "redis"):  # README's own `kill` ran unless a step failed
            stop(Path(f"{base}/{name}.pid"))
        # The daemons' logs, kept for the failure message: a flaky step is explained by them or not at all.
        logs = "".join(
            f"\n--- {log.name} (last 40 lines)\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            for log in sorted(Path(base).glob("*.log"))
        )
        shutil.rmtree(base, ignore_errors=True)
    dump = []
    for (cmd, expected), (rc, got) in zip(steps, results, strict=True):
        assert rc == 0, f"$ {cmd}\nexit {rc}\n{got}{logs}"
        theirs = got.replace(base, DEMO).replace(job, readme_id[0])
        theirs = theirs.replace(job.replace("-", "_"), readme_id[0].replace("-", "_"))
        dump.append(f"$ {cmd}\n{theirs}")
        if os.environ.get("CRONSHIFT_README_DUMP"):  # to refresh README's outputs by hand
            Path(os.environ["CRONSHIFT_README_DUMP"]).write_text("".join(dump))
        actual = [normalise(line) for line in theirs.splitlines()]
        k = 0
        for want in (normalise(line) for line in expected):
            if want == "...":
                continue
            while k < len(actual) and actual[k] != want:
                k += 1
            assert k < len(actual), (
                f"$ {cmd}\nREADME shows\n  {want}\nbut it printed\n" + "\n".join(actual) + logs
            )
            k += 1


def test_every_command_and_option_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    command = typer.main.get_command(app)
    missing = []
    for name, sub in sorted(command.commands.items()):  # type: ignore[attr-defined]
        if f"cronshift {name}" not in text:
            missing.append(f"command `cronshift {name}`")
        for param in sub.params:
            missing += [f"{name} {o}" for o in param.opts if o.startswith("--") and o not in text]
    assert missing == [], "not documented in README: " + ", ".join(missing)


def test_the_exit_code_table_in_readme_is_the_one_the_code_uses() -> None:
    from cronshift.cli.output import ExitStatus

    text = README.read_text(encoding="utf-8")
    for status in ExitStatus:
        assert re.search(rf"^\| {int(status)} \|", text, re.M), (
            f"exit status {int(status)} not in README's table"
        )


def test_the_layout_section_names_every_package_once() -> None:
    """README's Layout lists each package and top-level module of cronshift/, one line each, and no other."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed = [ln.split()[0] for ln in block.splitlines() if ln.startswith("  ") and not ln.startswith("   ")]
    pkg = PROJECT / "cronshift"
    tree = {p.name + "/" for p in pkg.iterdir() if (p / "__init__.py").exists()}
    tree |= {p.name for p in pkg.glob("*.py") if p.name != "__init__.py"}
    assert sorted(listed) == sorted(tree)
