"""Shared test fixtures: copies of the fixture servers and the corpus, so no test writes to the originals."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import uuid
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT / "fixtures"
CORPUS = PROJECT.parent / "shared" / "corpus"


# Jobs get the signal dispositions cron's children get: the defaults. A suite started in the background
# (`cmd &`) or under nohup inherits SIGINT or SIGHUP ignored, passes that on to every process it starts, and
# a shell cannot trap a signal ignored on entry: the signal tests' jobs then never end. Python resets its own
# handlers to the defaults across exec, so these reach every subprocess as SIG_DFL.
if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for _sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(_sig, signal.SIG_DFL)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture
def debian_root(tmp_path: Path) -> Path:
    return copy_tree(FIXTURES / "debian", tmp_path / "debian")


@pytest.fixture
def rhel_root(tmp_path: Path) -> Path:
    return copy_tree(FIXTURES / "rhel", tmp_path / "rhel")


@pytest.fixture
def corpus_root(tmp_path: Path) -> Path:
    if not (CORPUS / "root").is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return copy_tree(CORPUS / "root", tmp_path / "corpus")


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist workers, the slow end-to-end tests first (their written order kept): their long waits
    then overlap from the start, and no worker is left running one alone at the end. Every worker sorts
    the same way, as xdist requires; in one process the written order stays."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if config.getvalue("loadgroup"):
        for item in items:
            _mark_xdist_group(item)


def _mark_xdist_group(item: pytest.Item) -> None:
    """`--dist loadgroup` tells the scheduler a test's xdist_group by suffixing its node id (ID@GROUP).
    pytest-xdist 3.8 writes the suffix into the old `_nodeid` field, which pytest 9.2 no longer reads
    (pytest-dev/pytest-xdist#1386, open): every group is then silently ignored. Until a fixed xdist is
    released, put the suffix where this pytest keeps the id; a no-op where xdist's own one took effect."""
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})  # fmt: skip
    if not groups or item.nodeid.endswith("@" + "_".join(groups)):
        return
    node_id = getattr(item, "_id", None)
    if node_id is not None and hasattr(node_id, "parse"):
        item._id = type(node_id).parse(f"{item.nodeid}@{'_'.join(groups)}")  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    """Name this test run, before xdist starts its workers (they inherit the environment): what the run's
    workers build once and share (tests/support/install.py) is found by this name."""
    os.environ.setdefault("CRONSHIFT_TEST_RUN", uuid.uuid4().hex[:12])


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run is over (in the process that started it, not on a worker): remove what its workers shared."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        from tests.support.install import run_install_dir

        shutil.rmtree(run_install_dir(), ignore_errors=True)
        (run_install_dir().parent / f"cronshift-test-{run_install_dir().name}.lock").unlink(missing_ok=True)
