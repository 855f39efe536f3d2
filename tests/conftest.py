"""Shared test fixtures: copies of the fixture servers and the corpus, so no test writes to the originals."""

from __future__ import annotations

import os
import shutil
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
