"""Shared test fixtures: copies of the fixture servers and the corpus, so no test writes to the originals."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT / "fixtures"
CORPUS = PROJECT.parent / "shared" / "corpus"


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist workers, the slow end-to-end tests first (their written order kept): their long waits
    then overlap from the start, and no worker is left running one alone at the end. Every worker sorts
    the same way, as xdist requires; in one process the written order stays."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
