"""Shadow comparison logic: noise rules explain noise, and never a real difference (every rule on)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from cronshift.shadow.compare import (
    FileState,
    NoiseFloor,
    SideRun,
    compare_pair,
    duration_outlier,
    learn_noise,
)
from cronshift.shadow.normalize import RULE_NAMES, RuleError, build_normalizer
from cronshift.shadow.verdict import PairResult, judge

ALL = build_normalizer(hosts=["web-01", "web-01.example.com"], ignore=[r"session=\S+"])


def fs(text: str, mode: int = 0o644, uid: int = 0) -> FileState:
    return FileState(hashlib.sha256(text.encode()).hexdigest(), mode, len(text), uid, 0, text)


def run(
    out: str,
    files: dict[str, str] | None = None,
    exit_status: int = 0,
    side: str = "cron",
    duration: float = 0.01,
) -> SideRun:
    return SideRun(
        side, exit_status, None, out, len(out), duration, {}, {p: fs(t) for p, t in (files or {}).items()}
    )


@pytest.mark.parametrize(
    ("a", "b", "rule"),
    [
        ("at 2025-11-24T10:05:01.123+01:00 ok", "at 2026-01-02T23:59:59Z ok", "iso-timestamp"),
        ("Nov 24 10:05:01 host x", "Dec  1 00:00:09 host x", "syslog-timestamp"),
        ("Mon Nov 24 10:05:01 UTC 2025 start", "Tue Nov 25 11:00:00 UTC 2025 start", "date-output"),
        ("epoch=1732442701 done", "epoch=1732442999 done", "epoch"),
        ("ts=1732442701123", "ts=1732442799999", "epoch"),
        ("worker pid=4242 up", "worker pid=17 up", "pid"),
        ("cron[1234]: ok", "cron[99]: ok", "pid"),
        ("id 123e4567-e89b-12d3-a456-426614174000", "id 00000000-1111-2222-3333-abcdefabcdef", "uuid"),
        ("req 3f9a0c1e22b7", "req 0c0ffee12345", "hex-id"),
        ("tmp /tmp/tmp.Xk3J9aQ2 used", "tmp /tmp/tmp.b8Zq11Lm used", "tmp-path"),
        ("backup took 1.23s", "backup took 15.8s", "duration"),
        ("real\t0m0.003s", "real\t0m1.250s", "duration"),
        ("served by web-01", "served by web-01.example.com", "hostname"),
    ],
)
def test_each_rule_explains_its_noise_and_can_be_turned_off(a: str, b: str, rule: str) -> None:
    assert ALL(a) == ALL(b)
    off = build_normalizer(disabled=[rule], hosts=["web-01", "web-01.example.com"])
    assert off(a) != off(b), f"with {rule} off the difference shows"


def test_user_ignore_rule_and_unknown_names() -> None:
    assert ALL("session=abc rows 1") == ALL("session=zzz rows 1")
    with pytest.raises(RuleError, match="no rule named nope"):
        build_normalizer(disabled=["nope"])
    with pytest.raises(RuleError, match="not a regular expression"):
        build_normalizer(ignore=["(unclosed"])
    assert set(RULE_NAMES) >= {"uuid", "iso-timestamp", "pid", "hex-id", "tmp-path", "duration", "epoch"}


@pytest.mark.parametrize(
    "text",
    ["rows: 42", "count 1732442701", "total 12345678", "exit 3", "/tmp/report.txt", "deadbeef", "v1.2.3"],
)
def test_rules_leave_plain_values_alone(text: str) -> None:
    assert ALL(text) == text


REPORT = "report {t} pid={p}\nrows: {rows}\nrequest {h}\ndraw {d}\n"


def _cron_runs() -> list[SideRun]:
    vals = [
        ("2025-01-01T00:00:01", 11, "a1b2c3d4e5", 381734),
        ("2025-01-01T00:05:01", 12, "ffee00112233", 99121),
        ("2025-01-01T00:10:01", 13, "0a0b0c0d0e0f", 554433),
    ]
    return [
        run(REPORT.format(t=t, p=p, rows=42, h=h, d=d), {"/srv/out/r.txt": f"at {t}\nrows 42\n"})
        for t, p, h, d in vals
    ]


def _floor() -> NoiseFloor:
    return learn_noise(_cron_runs(), ALL)


def _event(
    rows: int = 42,
    draw: int = 777777,
    file_text: str = "at 2025-02-02T02:02:02\nrows 42\n",
    exit_status: int = 0,
    files: bool = True,
) -> SideRun:
    out = REPORT.format(t="2025-02-02T02:02:02", p=999, rows=rows, h="deadbe0f1234", d=draw)
    return run(out, {"/srv/out/r.txt": file_text} if files else {}, exit_status, side="event")


def test_calibration_learns_the_random_draw_as_noise_and_shows_it() -> None:
    floor = _floor()
    assert floor.positions["output"] == {(3, 2, "number")}
    assert floor.describe() == ["output: line 4 token 3 (number) varies"]
    diffs = compare_pair(_cron_runs()[0], _event(), ALL, floor)
    assert [d.explained for d in diffs] == ["A/A calibration noise floor"]


@pytest.mark.parametrize(
    ("event", "kind", "needle"),
    [
        (_event(rows=43), "output", "line 2: '42' (cron) vs '43' (event)"),
        (_event(file_text="at 2025-02-02T02:02:02\nrows 43\n"), "file-content", "/srv/out/r.txt line 2"),
        (_event(exit_status=3), "exit", "exit status 0 (cron) vs 3 (event)"),
        (
            _event(files=False),
            "file-missing",
            "/srv/out/r.txt: written by cron, not written by the event side",
        ),
        (_event(draw="x1"), "output", "line 4"),  # type: ignore[arg-type] - a number turned into a word
    ],
)
def test_real_differences_are_caught_with_every_rule_on(event: SideRun, kind: str, needle: str) -> None:
    diffs = compare_pair(_cron_runs()[0], event, ALL, _floor())
    real = [d for d in diffs if d.explained is None]
    assert [d.kind for d in real] == [kind], diffs
    assert needle in real[0].what


def test_file_mode_owner_and_binary_bytes_are_real() -> None:
    a = run("", {"/x": "same\n"})
    b = dataclasses.replace(
        a, side="event", files_after={"/x": dataclasses.replace(fs("same\n"), mode=0o600, uid=7)}
    )
    kinds = {d.kind for d in compare_pair(a, b, ALL, learn_noise([a, a], ALL))}
    assert kinds == {"file-mode", "file-owner"}
    bin_a = dataclasses.replace(a, files_after={"/b": FileState("1" * 64, 0o644, 3, 0, 0, None)})
    bin_b = dataclasses.replace(a, files_after={"/b": FileState("2" * 64, 0o644, 3, 0, 0, None)})
    (d,) = compare_pair(bin_a, bin_b, ALL, learn_noise([bin_a, bin_a], ALL))
    assert d.kind == "file-content" and d.explained is None


def test_a_diff_is_shown_like_git_diff() -> None:
    (d,) = compare_pair(_cron_runs()[0], _event(rows=43), ALL, _floor())
    assert "--- a/output (cron)" in d.diff and "+++ b/output (event)" in d.diff
    assert "-rows: 42" in d.diff and "+rows: 43" in d.diff


def test_duration_flagged_both_ways() -> None:
    assert duration_outlier(0.02, [0.01, 0.012]) is None
    assert "much longer" in (duration_outlier(5.0, [1.0, 1.2]) or "")
    assert "much shorter" in (duration_outlier(0.1, [2.0, 2.5]) or "")
    assert duration_outlier(0.001, [0.01]) is None  # jitter of a fast job says nothing


def test_gate_parity_mismatch_and_insufficient_evidence() -> None:
    floor = _floor()
    ok = [PairResult(i, []) for i in range(1, 6)]
    assert judge(ok, floor, 3, []).label == "parity"
    assert judge(ok[:4], floor, 3, []).label == "insufficient evidence"
    bad = compare_pair(_cron_runs()[0], _event(exit_status=1), ALL, floor)
    v = judge([*ok, PairResult(6, bad)], floor, 3, [])
    assert v.label == "mismatch" and "exit status 0 (cron) vs 1 (event)" in v.differences[0]
    flaky = dataclasses.replace(floor, exit_unstable=True)
    v = judge(ok, flaky, 3, [])
    assert v.label == "insufficient evidence" and "exit status varies" in v.missing[0]
    v = judge([*ok, PairResult(6, [], event_error="no worker answered")], floor, 3, [])
    assert v.label == "insufficient evidence" and any("no worker answered" in m for m in v.missing)
    assert judge(ok, floor, 1, []).label == "insufficient evidence"
