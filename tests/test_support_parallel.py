"""The test support that keeps parallel workers (pytest-xdist, or another test run on the host) apart."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.redis_server import PORTS, free_port, start_redis

PROJECT = Path(__file__).resolve().parent.parent


def test_a_redis_that_cannot_bind_its_port_is_never_mistaken_for_the_one_there(tmp_path: Path) -> None:
    """Another worker's server took the port first: its PONG must not pass for ours (a test would then stop
    or flush a server that is not its own)."""
    theirs = start_redis(tmp_path / "theirs")
    try:
        with pytest.raises(RuntimeError, match="did not start"):
            start_redis(tmp_path / "ours", port=theirs.port)
    finally:
        theirs.stop()


def test_free_ports_come_from_below_the_ephemeral_range() -> None:
    """bind(0) and outgoing connections take ports from 32768 up: a port of ours is not handed out there."""
    assert all(free_port() in PORTS for _ in range(20))
    assert PORTS.stop <= 32768


HOLD = """
import sys, time
from tests.support.parallel import host_lock
with host_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_host_lock_admits_one_process_at_a_time() -> None:
    from tests.support.parallel import host_lock

    name = f"selftest-{time.monotonic_ns()}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, name, "1.5"], cwd=PROJECT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        t0 = time.monotonic()
        with host_lock(name):
            waited = time.monotonic() - t0
            assert holder.poll() is not None or waited > 0.5  # we got it only once the holder let go
    finally:
        holder.wait(timeout=10)
        Path(f"/var/tmp/cronshift-test-{name}.lock").unlink(missing_ok=True)


def test_a_json_invocation_leaves_no_json_mode_for_the_next_one_in_the_process(tmp_path: Path) -> None:
    """Under xdist a worker runs tests in another order: a `--json` command run in-process (test_cli_voice)
    must not turn the errors of whatever runs next in that process (test_generate) into JSON."""
    from cronshift.__main__ import main
    from cronshift.cli.output import Env, fail

    with pytest.raises(SystemExit):
        main(["scan", "--root", str(tmp_path / "missing"), "--json"])
    stdout = io.StringIO()
    with pytest.raises(SystemExit):
        fail(Env(stdout=stdout, stderr=io.StringIO()), "refused")
    assert stdout.getvalue() == ""  # one line on stderr only, as without --json
