"""A throwaway system user for tests that check privilege dropping; removed whether the test passed or not."""

from __future__ import annotations

import pwd
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.parallel import host_lock


def add_user(name: str, *useradd_args: str) -> None:
    """`useradd ARGS NAME`, one at a time on the host: parallel workers edit the same /etc/passwd."""
    with host_lock("passwd"):
        r = subprocess.run(["useradd", *useradd_args, name], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"useradd {name} failed: {r.stderr.strip()}")


def remove_user(name: str) -> None:
    """`userdel --remove NAME` (home and mail spool too), one at a time on the host; never raises."""
    with host_lock("passwd"):
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@pytest.fixture
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    name = "cs" + uuid.uuid4().hex[:8]
    add_user(name, "--create-home", "--shell", "/bin/sh")
    try:
        yield pwd.getpwnam(name)
    finally:
        remove_user(name)
