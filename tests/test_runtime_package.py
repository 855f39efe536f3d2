"""Workers install cronshift-runtime, not the CLI: a generated project runs a job in a venv without typer,
rich, jinja2 or cron-descriptor, and requirements.txt pins the runtime."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from tests.test_generate import NOW, run

PROJECT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="runs root's job")
def test_generated_project_runs_on_the_runtime_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/timezone").write_text("Europe/Berlin\n")
    (root / "etc/cron.d/jobs").write_text("30 2 * * * root echo from-the-runtime\n")
    out = tmp_path / "out"
    code, _, err = run("--all", "--root", str(root), "--out", str(out), "--package", "rt", *NOW)
    assert code == 0, err
    reqs = (out / "requirements.txt").read_text().splitlines()
    assert "cronshift-runtime==0.1.0" in reqs and any(x.startswith("celery[redis]==") for x in reqs)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin/python")
    runtime = str(PROJECT / "packaging/cronshift-runtime")
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", runtime],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    job_mod = next(p.stem for p in (out / "rt/jobs").glob("*.py") if p.stem != "__init__")
    script = (
        "import importlib.util, json\n"
        "cli = ('typer', 'rich', 'jinja2', 'cron_descriptor')\n"
        "present = [m for m in cli if importlib.util.find_spec(m)]\n"
        "import rt.app, rt.triggers\n"
        f"from rt.jobs.{job_mod} import SPEC\n"
        "from cronshift.runtime.execute import run_job\n"
        "entry = rt.app.app.conf.beat_schedule\n"
        "print(json.dumps({'present': present, 'out': run_job(SPEC)['output_tail'],"
        " 'kinds': sorted(type(e['schedule']).__name__ for e in entry.values())}))\n"
    )
    r = subprocess.run(
        [py, "-c", script], capture_output=True, text=True, cwd=out, env={"PATH": "/usr/bin:/bin"}
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"present": [], "out": "from-the-runtime\n", "kinds": ["cronsim_schedule"]}
