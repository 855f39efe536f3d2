"""Find one job by the names a user types: its id, a unique id prefix, or PATH:LINE."""

from __future__ import annotations

from cronshift.model import CronJob, ScanResult


class JobNotFound(LookupError):
    pass


def find_job(result: ScanResult, ref: str) -> CronJob:
    candidates = list(result.jobs) + list(result.disabled)
    exact = [j for j in candidates if j.id == ref]
    if exact:
        return exact[0]
    path, sep, line = ref.rpartition(":")
    if sep and (line.isdigit() or line == ""):
        want = path.removeprefix(result.root.rstrip("/")).lstrip("/")
        n = int(line) if line else None
        hits = [j for j in candidates if j.source.path == want and j.source.line == n]
        if hits:
            return hits[0]
    rel = ref.removeprefix(result.root.rstrip("/")).lstrip("/")
    hits = [j for j in candidates if j.source.line is None and j.source.path == rel]
    if hits:
        return hits[0]
    pre = [j for j in candidates if j.id.startswith(ref)]
    if len(pre) == 1:
        return pre[0]
    if len(pre) > 1:
        raise JobNotFound(f"'{ref}' matches {len(pre)} jobs: {', '.join(j.id for j in pre[:5])}")
    raise JobNotFound(f"no job '{ref}' (give an id from `cronshift scan`, or PATH:LINE)")
