"""Shadow comparison logic: calibrate, then normalise. A rule masks only what varied between cron runs;
whole outputs and whole files are compared; what calibration cannot judge is never parity nor mismatch."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path
from typing import Any

import pytest

from cronshift.shadow.compare import (
    MIN_STABLE_RUNS,
    NoiseFloor,
    SideRun,
    compare_pair,
    duration_outlier,
    learn_noise,
)
from cronshift.shadow.normalize import RULE_NAMES, RuleError, build_normalizer
from cronshift.shadow.verdict import PairResult, judge

ALL = build_normalizer(hosts=["web-01", "web-01.example.com"], ignore=[r"session=\S+"])
_n = itertools.count()


def run(
    tmp: Path,
    out: str,
    files: dict[str, str | bytes] | None = None,
    exit_status: int = 0,
    side: str = "cron",
    duration: float = 0.01,
    deleted: tuple[str, ...] = (),
    mode: int = 0o644,
    uid: int = 0,
    started: float | None = None,
) -> SideRun:
    changes: list[dict[str, Any]] = []
    for p, content in (files or {}).items():
        data = content.encode() if isinstance(content, str) else content
        copy = tmp / f"f{next(_n)}"
        copy.write_bytes(data)
        changes.append(
            {"path": p, "change": "created", "type": "file", "mode": mode, "uid": uid, "gid": 0,
             "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "copy": str(copy)}
        )  # fmt: skip
    changes += [{"path": p, "change": "deleted"} for p in deleted]
    o = tmp / f"o{next(_n)}"
    o.write_text(out)
    return SideRun(
        side, exit_status, None, out[-4096:], len(out), duration, changes, output_path=str(o), started=started
    )


@pytest.mark.parametrize(
    ("a", "b", "rule"),
    [
        ("at 2025-11-24T10:05:01.123+01:00 ok", "at 2026-01-02T23:59:59Z ok", "iso-timestamp"),
        ("Nov 24 10:05:01 host x", "Dec  1 00:00:09 host x", "syslog-timestamp"),
        ("Mon Nov 24 10:05:01 UTC 2025 start", "Tue Nov 25 11:00:00 UTC 2025 start", "date-output"),
        ("epoch=1732442701 done", "epoch=1732442999 done", "epoch"),
        ("worker pid=4242 up", "worker pid=17 up", "pid"),
        ("cron[1234]: ok", "cron[99]: ok", "pid"),
        ("id 123e4567-e89b-12d3-a456-426614174000", "id 00000000-1111-2222-3333-abcdefabcdef", "uuid"),
        ("req 3f9a0c1e22b7", "req 0c0ffee12345", "hex-id"),
        ("req 3f9a0c1e22b7a001", "req 8316402957301124", "hex-id"),  # a random hex id that drew no letter
        ("tmp /tmp/tmp.Xk3J9aQ2 used", "tmp /tmp/tmp.b8Zq11Lm used", "tmp-path"),
        ("backup took 1.23s", "backup took 15.8s", "duration"),
        ("served by web-01", "served by web-01.example.com", "hostname"),
    ],
)
def test_a_rule_masks_a_span_only_where_cron_runs_varied_there(a: str, b: str, rule: str) -> None:
    assert ALL(a) == ALL(b)  # the rule recognises the shape ...
    off = build_normalizer(disabled=[rule], hosts=["web-01", "web-01.example.com"])
    assert off(a) != off(b), f"with {rule} off the difference shows"


def test_noise_shaped_values_that_never_varied_are_compared(tmp_path: Path) -> None:
    """batch[41] vs batch[42], a content digest, an epoch: noise-shaped, yet stable between cron runs."""
    line = "batch[41] digest 3f9a0c1e22b7 epoch=1700000000 at {t}\n"
    times = [f"2025-01-01T00:0{k}:01" for k in range(MIN_STABLE_RUNS)]
    cron = [run(tmp_path, line.format(t=t), started=float(k)) for k, t in enumerate(times)]
    floor = learn_noise(cron, ALL)
    assert floor.masks.describe() == ["output: iso-timestamp varies at 1 place(s) (masked)"]
    for changed, needle, real_one in [
        ("batch[42] digest 3f9a0c1e22b7 epoch=1700000000", "'41' (cron) vs '42' (event)", True),
        ("batch[41] digest 3f9a0c1e22b8 epoch=1700000000", "3f9a0c1e22b7", True),
        ("batch[41] digest 3f9a0c1e22b7 epoch=1700000001", "1700000000", False),  # a clock: unjudged
    ]:
        ev = run(tmp_path, changed + " at 2026-06-06T06:06:06\n", side="event")
        masked: tuple[dict[str, int], dict[str, int]] = ({}, {})
        (d,) = compare_pair(cron[0], ev, ALL, floor, masked)
        assert d.explained is None and needle in d.what, d
        assert (d.unjudged is None) is real_one, d
        assert masked == ({"iso-timestamp": 1}, {"iso-timestamp": 1})


def test_a_stable_noise_shaped_value_seen_only_in_quick_runs_is_unjudged(tmp_path: Path) -> None:
    """A pid-shaped value in runs less than a second apart proves nothing; a clock reading never does."""
    quick = [run(tmp_path, "worker[41] ok\n", started=k * 0.1) for k in range(MIN_STABLE_RUNS)]
    ev = run(tmp_path, "worker[42] ok\n", side="event")
    (d,) = compare_pair(quick[0], ev, ALL, learn_noise(quick, ALL))
    assert d.unjudged and "looks like pid noise" in d.unjudged
    spread = [run(tmp_path, "worker[41] ok\n", started=float(k)) for k in range(MIN_STABLE_RUNS)]
    (d,) = compare_pair(spread[0], ev, ALL, learn_noise(spread, ALL))
    assert d.unjudged is None and d.explained is None  # stable over 4 s and 5 runs: a real difference
    took = [run(tmp_path, "done, took 0s\n", started=float(k)) for k in range(8)]
    ev = run(tmp_path, "done, took 1s\n", side="event")
    (d,) = compare_pair(took[0], ev, ALL, learn_noise(took, ALL))
    assert d.unjudged and "clock reading" in d.unjudged and "--ignore" in d.unjudged


def test_too_few_cron_runs_to_call_a_number_stable_is_unjudged_not_parity(tmp_path: Path) -> None:
    cron = [run(tmp_path, "load 0.52 rows 42\n") for _ in range(3)]
    floor = learn_noise(cron, ALL)
    (d,) = compare_pair(cron[0], run(tmp_path, "load 0.61 rows 42\n", side="event"), ALL, floor)
    assert d.unjudged and "--calibration" in d.unjudged and d.explained is None
    v = judge([PairResult(i, [d]) for i in range(1, 6)], floor, 3, [])
    assert v.label == "insufficient evidence"
    assert len([m for m in v.missing if "cannot judge" in m]) == 1, "each difference once, not per pair"
    assert "5 of 5 pairs" in v.missing[0]


def test_whole_output_and_whole_files_are_compared(tmp_path: Path) -> None:
    big = "".join(f"{i}\n" for i in range(1, 20001))
    late = big.replace("\n15000\n", "\n15001\n")
    blob = "".join(f"row {i}\n" for i in range(30000))  # ~250 KiB of text
    cron = [run(tmp_path, big, {"/srv/b.txt": blob}) for _ in range(MIN_STABLE_RUNS)]
    floor = learn_noise(cron, ALL)
    (d,) = compare_pair(cron[0], run(tmp_path, late, {"/srv/b.txt": blob}, side="event"), ALL, floor)
    assert d.kind == "output" and "output line 15000: '15000' (cron) vs '15001'" in d.what
    assert "@@ -" in d.diff
    other = blob.replace("row 29000\n", "row 29001\n")
    (d,) = compare_pair(cron[0], run(tmp_path, big, {"/srv/b.txt": other}, side="event"), ALL, floor)
    assert d.kind == "file-content" and "/srv/b.txt line 29001" in d.what


def test_binary_that_varies_between_cron_runs_is_unjudged_never_noise(tmp_path: Path) -> None:
    cron = [run(tmp_path, "", {"/b": bytes([0, k])}) for k in range(3)]
    floor = learn_noise(cron, ALL)
    (d,) = compare_pair(cron[0], run(tmp_path, "", {"/b": b"\0zz"}, side="event"), ALL, floor)
    assert d.explained is None and d.unjudged and "binary" in d.unjudged
    stable = [run(tmp_path, "", {"/b": b"\0same"}) for _ in range(3)]
    (d,) = compare_pair(
        stable[0], run(tmp_path, "", {"/b": b"\0diff"}, side="event"), ALL, learn_noise(stable, ALL)
    )
    assert d.kind == "file-content" and d.explained is None and d.unjudged is None


def test_deletions_mode_owner_and_line_endings(tmp_path: Path) -> None:
    a = [run(tmp_path, "", {"/x": "same\n"}) for _ in range(2)]
    floor = learn_noise(a, ALL)
    b = run(tmp_path, "", {"/x": "same\n"}, side="event", mode=0o600, uid=7, deleted=("/etc/keep",))
    whats = {d.kind: d.what for d in compare_pair(a[0], b, ALL, floor)}
    assert whats["file-extra"] == "/etc/keep: deleted by the event side only (cron left it as it was)"
    assert {"file-mode", "file-owner"} <= set(whats)
    crlf = run(tmp_path, "", {"/x": "same\r\n"}, side="event")
    (d,) = compare_pair(a[0], crlf, ALL, floor)
    assert d.kind == "file-content"


def test_user_rule_always_masks_and_unknown_names_are_refused(tmp_path: Path) -> None:
    cron = [run(tmp_path, "session=abc rows 1\n") for _ in range(3)]
    floor = learn_noise(cron, ALL)
    assert compare_pair(cron[0], run(tmp_path, "session=zzz rows 1\n", side="event"), ALL, floor) == []
    with pytest.raises(RuleError, match="no rule named nope"):
        build_normalizer(disabled=["nope"])
    with pytest.raises(RuleError, match="not a regular expression"):
        build_normalizer(ignore=["(unclosed"])
    assert set(RULE_NAMES) >= {"uuid", "iso-timestamp", "pid", "hex-id", "tmp-path", "duration", "epoch"}


def test_duration_flagged_both_ways_and_a_tiny_job_ten_times_slower() -> None:
    assert duration_outlier(0.02, [0.01, 0.012]) is None
    assert "much longer" in (duration_outlier(5.0, [1.0, 1.2]) or "")
    assert "much shorter" in (duration_outlier(0.1, [2.0, 2.5]) or "")
    assert duration_outlier(0.001, [0.01]) is None  # jitter of a fast job says nothing
    assert "10x slower" in (duration_outlier(0.5, [0.05, 0.05, 0.048]) or "")


def test_gate_wording_and_labels(tmp_path: Path) -> None:
    floor = learn_noise([run(tmp_path, "x\n") for _ in range(3)], ALL)
    ok = [PairResult(i, []) for i in range(1, 6)]
    assert judge(ok, floor, 3, []).label == "parity"
    assert judge(ok[:4], floor, 3, []).label == "insufficient evidence"
    flaky = dataclasses.replace(floor, exit_unstable=True)
    v = judge(ok, flaky, 3, [])
    assert v.label == "insufficient evidence" and "exit status varies" in v.missing[0]
    v = judge(ok, NoiseFloor(), 2, ["refused", "refused"])
    assert "0 of 2 completed" in " ".join(v.missing), v.missing


def test_one_slow_event_run_is_not_a_mismatch_a_slow_event_path_is(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cronshift.shadow.session import run_session

    job: Any = SimpleNamespace(id="j", command="c")

    def session(event_durations: list[float]) -> Any:
        durations = iter(event_durations)
        return run_session(
            job,
            cron_side=lambda label: run(tmp_path, "ok\n", duration=0.01),
            event_side=lambda label: run(tmp_path, "ok\n", side="event", duration=next(durations)),
            runs=len(event_durations),
            normalizer=ALL,
            evidence={},
            clock=lambda: 0.0,
        )

    spike = session([0.01, 0.5, 0.01, 0.01, 0.01])
    assert spike.verdict.label == "parity", spike.verdict
    slow = session([0.5] * 5)
    assert slow.verdict.label == "mismatch"
    assert slow.verdict.differences == ["5 of 5 pairs: event side took 0.500s; cron runs took 0.010s..0.010s "
                                        "(50x slower) (end to end)"]  # fmt: skip
