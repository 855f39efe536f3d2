"""cronshift installed as users install it: a regular (not editable) `pip install` of this checkout into a
fresh venv of the system Python, in a folder every user can read, so that a job run as another user can
start it. Built once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.parallel import host_lock

PROJECT = Path(__file__).resolve().parent.parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def build_install(base: Path, python: str = SYSTEM_PYTHON) -> Path:
    """Build a wheel of the checkout and install it (no dependencies: the wrapper needs none) into
    base/venv; return the venv's python."""
    wheels = base / "wheels"
    with host_lock("wheel-build"):  # setuptools builds in the checkout (build/, *.egg-info): one at a time
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(PROJECT)],
            check=True,
            capture_output=True,
        )
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    (wheel,) = wheels.glob("cronshift-*.whl")
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True)
    return venv / "bin/python"


def run_install_dir() -> Path:
    """Where this test run keeps its install: one for all its xdist workers (conftest names the run and
    removes the folder when the run ends)."""
    return Path("/var/tmp") / f"cs-install-{os.environ['CRONSHIFT_TEST_RUN']}"


@pytest.fixture(scope="session")
def installed_python() -> Iterator[str]:
    """Built by the first worker that needs it; the others (and other modules) wait for it and reuse it."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"no {SYSTEM_PYTHON} to make a venv every user can run")
    base = run_install_dir()
    with host_lock(base.name):
        if not (base / "built").exists():
            shutil.rmtree(base, ignore_errors=True)  # a build cut short
            base.mkdir(mode=0o755)
            base.chmod(0o755)
            build_install(base)
            (base / "built").touch()
    yield str(base / "venv/bin/python")


@contextmanager
def shared_tmp(prefix: str) -> Iterator[Path]:
    """A temp folder every user can traverse (pytest's own is 0700), so that what another user does there
    (a job run as cron runs it, an attacker) meets only the permissions cronshift set."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
