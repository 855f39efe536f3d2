"""Where shadow evidence lives: the ledger (observations, the verdict) and the verdict file retire reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cronshift.history.ledger_schema import private_dir
from cronshift.retire import SHADOW_DIR, VERDICT_KIND, verdict_path

__all__ = ["OBSERVATION_KIND", "VERDICT_KIND", "read_report", "write_verdict_file"]

OBSERVATION_KIND = "shadow-observation"


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
