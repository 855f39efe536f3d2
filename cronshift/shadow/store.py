"""Where shadow evidence lives: the ledger (observations, the verdict) and the verdict file retire reads."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cronshift.ledger.kinds import OBSERVATION_KIND, VERDICT_KIND
from cronshift.ledger.schema import private_dir
from cronshift.ledger.state import STATE_DIR

__all__ = [
    "OBSERVATION_KIND",
    "SHADOW_DIR",
    "VERDICT_KIND",
    "project_digests",
    "read_report",
    "verdict_path",
    "write_verdict_file",
]

SHADOW_DIR = (*STATE_DIR, "shadow")


def verdict_path(root: Path, job_id: str) -> Path:
    return Path(root).joinpath(*SHADOW_DIR, f"{job_id}.json")


def project_digests(path: Path, package: str) -> dict[str, str]:
    """sha256 of every module of the generated package: what a verdict binds itself to (retire's gate)."""
    out: dict[str, str] = {}
    base = path / package
    for p in sorted(base.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        out[p.relative_to(path).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_verdict_file(root: Path, job_id: str, doc: dict[str, Any]) -> str:
    """Atomically write var/lib/cronshift/shadow/<job-id>.json under the root; return its relative path."""
    path = verdict_path(root, job_id)
    private_dir(str(path.parent))  # verdicts quote job output: 0700/0600 from creation
    tmp = path.with_suffix(".json.tmp")
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    old = os.umask(0o077)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    finally:
        os.umask(old)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return "/".join((*SHADOW_DIR, f"{job_id}.json"))


def read_report(led: Any, job_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The latest verdict and every observation of the job so far (all sessions), in key order."""
    return led.get(VERDICT_KIND, job_id), led.list(OBSERVATION_KIND, prefix=f"{job_id}/")
