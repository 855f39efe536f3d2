"""A large tree is parsed by two processes; the result must be exactly what one process finds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cronshift.discover import scan as scan_mod
from cronshift.discover.scan import scan

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian fixture server plus 2,400 generated cron.d files, some of them broken."""
    root = tmp_path_factory.mktemp("big") / "root"
    shutil.copytree(FIXTURES / "debian", root, symlinks=True)
    for i in range(2400):
        body = [
            b"MAILTO=ops@example.com\n",
            f"*/{i % 7 + 1} * * * * root /srv/app{i}/bin/task --n {i} >/dev/null 2>&1\n".encode(),
            f"#0 4 * * * root /srv/app{i}/bin/old\n".encode(),
            b"0 3 * * * root flock -n /run/lock/x timeout 60 /usr/bin/x\n",
        ]
        if i % 97 == 0:
            body.append(b"61 * * * * root broken\n")
        if i % 101 == 0:
            body.append(b"52 6 1 * * root run-parts --report /etc/cron.monthly\n")
        (root / f"etc/cron.d/app{i}").write_bytes(b"".join(body))
    return root


def _as_data(result: scan_mod.ScanResult) -> tuple:
    return result.jobs, result.disabled, result.problems, result.files


def test_parallel_scan_equals_the_sequential_one(big_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parallel = scan(big_root)
    monkeypatch.setattr(scan_mod, "_PARALLEL_MIN_FILES", 10**9)
    sequential = scan(big_root)
    assert len(parallel.jobs) > 4800
    assert any(j.triggers for j in parallel.jobs)  # run-parts triggers crossed the process boundary
    assert _as_data(parallel) == _as_data(sequential)


def test_a_failing_child_loses_nothing(big_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = scan(big_root)

    def broken(found: object) -> object:
        raise RuntimeError("the child dies before it sends anything")

    monkeypatch.setattr(scan_mod, "_pack", broken)  # inherited by the forked child
    assert _as_data(scan(big_root)) == _as_data(expected)
