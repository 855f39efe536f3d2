"""Collect the runtime's modules from the cronshift source tree into this build (setuptools cannot take
files from outside the project directory), so the wheel holds exactly what a worker imports."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "cronshift"
FILES = [
    "__init__.py",
    "model.py",
    "record.py",
    "py.typed",
    "runtime/*.py",
    "history/__init__.py",
    "history/ledger.py",
    "history/ledger_resp.py",
    "history/ledger_schema.py",
    "history/spool.py",
]

if SOURCE.is_dir():  # building from the repository (an sdist already carries its copy)
    dest = HERE / "src" / "cronshift"
    shutil.rmtree(dest, ignore_errors=True)
    for pattern in FILES:
        for f in SOURCE.glob(pattern):
            target = dest / f.relative_to(SOURCE)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)

setup()
