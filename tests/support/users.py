"""A throwaway system user for tests that check privilege dropping; removed whether the test passed or not."""

from __future__ import annotations

import pwd
import subprocess
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    name = "cs" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
