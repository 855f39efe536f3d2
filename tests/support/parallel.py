"""What tests share with each other when the suite runs in parallel (pytest-xdist workers, or two helpers'
suites on one machine): host-wide locks for what only one process may do at a time, and this worker's name.

Per-test resources are unique by construction (tmp_path, uuid package names, a test-owned Redis on a free
port, a uuid PostgreSQL database). What is not (the real crontab spool, /etc/passwd, a build folder inside
the checkout) is either serialised with `host_lock` or kept on one xdist worker with
`pytest.mark.xdist_group`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR = Path("/var/tmp")  # the same for every process on the host, whatever its TMPDIR


def worker_id() -> str:
    """This xdist worker's name (gw0, gw1, ...), or "main" when the suite runs in one process."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@contextmanager
def host_lock(name: str) -> Iterator[None]:
    """Hold an exclusive flock on /var/tmp/cronshift-test-NAME.lock: one holder on the whole host at a time
    (xdist workers and other test runs alike). The kernel drops it if the holder dies."""
    path = LOCK_DIR / f"cronshift-test-{name}.lock"
    try:  # read-only and without O_CREAT: flock needs neither, and another user may own the file
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
