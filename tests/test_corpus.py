"""Scan agrees with the hand-checked reading of real crontabs written by other people (shared/corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cronshift.discover.scan import scan

from .conftest import CORPUS


@pytest.fixture(scope="module")
def expected() -> dict:
    p = CORPUS / "expected.json"
    if not p.exists():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return json.loads(p.read_text())["files"]


def test_corpus_jobs_found_exactly(corpus_root: Path, expected: dict) -> None:
    result = scan(corpus_root)
    got = {(j.source.path, j.source.line): j for j in result.jobs}
    want = {(p, j["line"]): j for p, f in expected.items() for j in f["jobs"]}
    assert sorted(want.keys() - got.keys(), key=str) == []
    live = {k for k, j in got.items() if j.runs}
    assert sorted(live - want.keys(), key=str) == []
    for key, w in want.items():
        j = got[key]
        assert j.schedule == w["schedule"], key
        if w.get("user") is not None:
            assert j.user == w["user"], key
        assert j.command.lstrip(" \t").rstrip("\r").startswith(w["command_prefix"].strip()), key


def test_corpus_malformed_lines_reported(corpus_root: Path, expected: dict) -> None:
    result = scan(corpus_root)
    said = {(p.path, p.line) for p in result.problems if p.severity == "error"}
    bad = {(p, n) for p, f in expected.items() for n in f.get("malformed_lines", [])}
    assert sorted(bad - said, key=str) == []


def test_corpus_whole_file_ignored_when_debian_would(corpus_root: Path, expected: dict) -> None:
    result = scan(corpus_root)
    by_file: dict[str, list] = {}
    for j in result.jobs:
        by_file.setdefault(j.source.path, []).append(j)
    for path, f in expected.items():
        if f.get("file_ignored_by_debian_cron") and f["jobs"]:
            assert by_file.get(path), path
            assert all(not j.runs for j in by_file[path]), path


def test_corpus_environment(corpus_root: Path, expected: dict) -> None:
    result = scan(corpus_root)
    for j in result.jobs:
        f = expected.get(j.source.path)
        if not f or j.source.line is None:
            continue
        lines = f.get("env_lines", {})
        in_force = {k: v for k, v in f["env"].items() if lines.get(k, 0) < j.source.line}
        assert {k: v for k, v in j.env if k in in_force} == in_force, j.source


def test_corpus_run_parts_triggers(corpus_root: Path, expected: dict) -> None:
    result = scan(corpus_root)
    for path, f in expected.items():
        if f["format"] != "run-parts-script":
            continue
        (w,) = f["jobs"]
        (j,) = [j for j in result.jobs if j.source.path == path]
        runners = {*j.triggers, *([j.anacron] if j.anacron else [])}
        assert runners == {t.split()[0] for t in w["triggers"]}
        assert j.schedule == w["schedule"]
