"""The line model: every byte kept, every line read the way cron reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronshift.discover.crontab_file import Kind, parse_file, split_lines
from cronshift.model import Dialect, Format

from .conftest import CORPUS, FIXTURES


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(list(Format)))
def test_arbitrary_bytes_round_trip(data: bytes, fmt: Format) -> None:
    f = parse_file(data, "x", fmt)
    assert f.render() == data
    assert [ln.number for ln in f.lines] == list(range(1, len(f.lines) + 1))


_line = st.one_of(
    st.sampled_from(
        [
            b"*/5 * * * * /bin/true",
            b'MAILTO=""',
            b"# comment",
            b"",
            b"@reboot x",
            b"0 0 31 2 * y",
            b"\t0\t1 * *  mon-fri  a %b%c",
            b"caf\xe9 \xff",
            b"x" * 3000,
            b"  PATH = /bin:/usr/bin  ",
        ]
    ),
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_line, max_size=30), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_crontab_like_round_trip(lines: list[bytes], nl: bytes, final: bool) -> None:
    data = nl.join(lines) + (nl if final and lines else b"")
    assert parse_file(data, "x", Format.USER).render() == data


def _all_files(base: Path) -> list[Path]:
    return [p for p in sorted(base.rglob("*")) if p.is_file() and not p.is_symlink()]


@pytest.mark.parametrize("base", [FIXTURES, CORPUS / "root"], ids=["fixtures", "corpus"])
def test_every_real_file_round_trips(base: Path) -> None:
    files = _all_files(base) if base.exists() else []
    if not files:
        pytest.skip(f"{base} not present")
    for p in files:
        data = p.read_bytes()
        assert parse_file(data, str(p), Format.SYSTEM).render() == data, p


def test_split_keeps_line_endings() -> None:
    assert split_lines(b"a\r\nb\nc") == [b"a\r\n", b"b\n", b"c"]
    assert split_lines(b"") == []
    assert split_lines(b"\n\n") == [b"\n", b"\n"]


def kinds(data: bytes, fmt: Format = Format.USER, dialect: Dialect = Dialect.DEBIAN) -> list[str]:
    return [str(ln.kind) for ln in parse_file(data, "x", fmt, dialect).lines]


def test_line_kinds() -> None:
    data = b"# m h dom mon dow command\n\nSHELL=/bin/bash\n*/5 * * * * run\n#0 3 * * * old-job\n{CRON} x\n"
    assert kinds(data) == ["comment", "blank", "env", "job", "disabled", "problem"]


def test_env_values_follow_cron() -> None:
    f = parse_file(b'MAILTO=""\n  PATH = /usr/bin:/bin  \nA=\'x y\'\n"B C"=1\nD=a=b\n', "x", Format.USER)
    assert [(ln.name, ln.value) for ln in f.lines] == [
        ("MAILTO", ""),
        ("PATH", "/usr/bin:/bin"),
        ("A", "x y"),
        ("B C", "1"),
        ("D", "a=b"),
    ]


def test_job_with_equals_sign_is_not_env() -> None:
    (ln,) = parse_file(b"* * * * * php --define apc.enable_cli=1 cron.php\n", "x", Format.USER).lines
    assert ln.kind is Kind.JOB
    assert ln.command == "php --define apc.enable_cli=1 cron.php"


def test_system_line_keeps_user_and_exact_command() -> None:
    (ln,) = parse_file(
        b"17 *\t* * *\troot    cd / && run-parts --report /etc/cron.hourly\n", "x", Format.SYSTEM
    ).lines
    assert (ln.schedule, ln.user) == ("17 * * * *", "root")
    assert ln.command.strip() == "cd / && run-parts --report /etc/cron.hourly"


def test_crlf_keeps_cr_in_command() -> None:
    (ln,) = parse_file(b"0 1 * * * backup.sh\r\n", "x", Format.USER).lines
    assert ln.command == "backup.sh\r"
    assert ln.ending == b"\r\n"


def test_macros_and_problems() -> None:
    f = parse_file(b"@reboot start\n@every 5m x\n61 * * * * y\n* * * *\n0 0 * * *\n", "x", Format.USER)
    assert [ln.kind for ln in f.lines] == [Kind.JOB, Kind.PROBLEM, Kind.PROBLEM, Kind.PROBLEM, Kind.PROBLEM]
    assert "61" in f.lines[2].message


def test_cronie_dash_prefix() -> None:
    data = b"-*/5 * * * * root quiet-job\n"
    (deb,) = parse_file(data, "x", Format.SYSTEM, Dialect.DEBIAN).lines
    (rh,) = parse_file(data, "x", Format.SYSTEM, Dialect.CRONIE).lines
    assert deb.kind is Kind.PROBLEM
    assert rh.kind is Kind.JOB and rh.no_log and rh.command == "quiet-job"


def test_anacrontab_lines() -> None:
    data = (
        b"START_HOURS_RANGE=3-22\n1\t5\tcron.daily\t\tnice run-parts /etc/cron.daily\n"
        b"@monthly 45 m run-parts x\nbad\n"
    )
    f = parse_file(data, "etc/anacrontab", Format.ANACRONTAB)
    assert [ln.kind for ln in f.lines] == [Kind.ENV, Kind.JOB, Kind.JOB, Kind.PROBLEM]
    assert (f.lines[1].schedule, f.lines[1].job_id) == ("1 5", "cron.daily")
    assert f.lines[2].schedule == "@monthly 45"
