"""One CLI voice: --version, -h everywhere, readable help with choices, one exit code table, JSON errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main

from cronshift import __version__
from cronshift.__main__ import main
from cronshift.cli.app import app

from .conftest import FIXTURES

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"cronshift {__version__}\n", "")


def test_top_level_help_offers_completion_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-h")
    assert code == 0
    assert "--install-completion" in out and "--version" in out
    flat = " ".join(out.split())
    assert "0 ok, 1 the operation failed, 2 usage error or unknown job" in flat.replace("│ ", "")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "record"])
def test_every_command_has_dash_h_and_help_without_python_types(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = run(capsys, command, "-h")
    assert code == 0, err
    assert "Usage: cronshift " + command in out
    for python_type in ("<bool>", "<str>", "<int>", "<path>", "<list[", "<float>", "<Path"):
        assert python_type not in out, (command, python_type)


def test_record_has_its_own_dash_h(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capfd, "record", "-h")  # record writes to the file descriptors itself
    assert code == 0
    assert "usage: cronshift record" in out + err


def test_fixed_choices_and_now_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    _, gen, _ = run(capsys, "generate", "-h")
    assert "celery|streams" in gen and "celery|redbeat" in gen
    _, shadow, _ = run(capsys, "shadow-run", "-h")
    assert "sandbox|allow|dry-run" in shadow and "local|celery" in shadow
    _, scan, _ = run(capsys, "scan", "-h")
    assert "--now" in scan and "ISO 8601" in scan


def test_a_bad_choice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "generate", "x", "--target", "kafka", "--root", str(FIXTURES / "debian"))
    assert code == 2
    assert "kafka" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "no-such-job"],
        ["wrap", "no-such-job"],
        ["unwrap", "no-such-job"],
        ["retire", "no-such-job"],
        ["generate", "no-such-job", "--out", "OUT"],
        ["shadow-run", "no-such-job"],
    ],
    ids=lambda a: a[0],
)
def test_no_such_job_exits_2_everywhere_and_is_json_under_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    argv = [a if a != "OUT" else str(tmp_path / "out") for a in argv]
    root = ["--root", str(FIXTURES / "debian")]
    code, out, err = run(capsys, *argv, *root)
    assert code == 2, err
    assert err.startswith("cronshift: ") and err.count("\n") == 1 and "no-such-job" in err
    assert out == ""
    code, out, err = run(capsys, *argv, *root, "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["error"]["exit_status"] == 2 and "no-such-job" in doc["error"]["message"]
    assert doc["schema_version"] >= 1
    assert "Traceback" not in err


def test_a_usage_error_under_json_is_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "scan", "--json", "--no-such-option")
    assert code == 2
    assert json.loads(out)["error"]["exit_status"] == 2


def on_terminal(argv: list[str], width: int) -> str:
    """What a person sees: the command's stdout on a terminal `width` columns wide (no colours)."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(width), "TERM": "dumb"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cronshift", *argv], stdout=follower, stderr=subprocess.DEVNULL, env=env
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    return seen.decode().replace("\r\n", "\n")


@pytest.mark.parametrize("width", [80, 100])
def test_the_scan_table_fits_the_terminal_and_never_cuts_an_id(width: int) -> None:
    import subprocess
    import sys

    args = ["scan", "--root", str(FIXTURES / "debian"), "--now", "2026-11-24T10:10:00+01:00"]
    out = subprocess.check_output([sys.executable, "-m", "cronshift", *args, "--json"], text=True)
    ids = [j["id"] for j in json.loads(out)["jobs"]]
    lines = on_terminal(args, width).splitlines()
    assert max(len(line) for line in lines) <= width
    shown = [line.split("│")[2].strip() for line in lines if line.startswith("│")]
    assert shown == ids  # every row's id whole, in rank order
    assert "score" in "\n".join(lines) and "top reason" in "\n".join(lines)


def test_one_json_vocabulary_job_id_everywhere(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = ["--root", str(FIXTURES / "debian"), "--now", "2026-11-24T10:10:00+01:00"]
    _, out, _ = run(capsys, "scan", *root, "--json", "--no-history")
    scan = json.loads(out)
    assert scan["schema_version"] == 2
    assert all(j["job_id"] == j["id"] for j in scan["jobs"])
    job = "reindex-search-e299beff"
    assert job in {j["job_id"] for j in scan["jobs"]}
    _, out, _ = run(capsys, "show", job, *root, "--json", "--no-history")
    assert json.loads(out)["job"]["job_id"] == job
    _, out, _ = run(capsys, "generate", job, *root, "--json", "--no-history", "--out", str(tmp_path / "g"))
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [job]
    _, out, _ = run(capsys, "retire", job, *root, "--json", "--dry-run")
    assert json.loads(out)["job_id"] == job
    _, out, _ = run(capsys, "status", "--root", str(FIXTURES / "debian"), "--json")
    assert job in {r["job_id"] for r in json.loads(out)["jobs"]}


def stderr_on_terminal(argv: list[str]) -> tuple[int, str]:
    """The command's stderr on a terminal (stdout to a pipe, thrown away): where progress is drawn."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cronshift", *argv], stdout=subprocess.DEVNULL, stderr=follower
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.wait(timeout=300), seen.decode(errors="replace")


def test_generate_and_shadow_run_show_progress_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from .conftest import copy_tree

    debian = ["--root", str(FIXTURES / "debian"), "--no-history", "--now", "2026-11-24T10:10:00+01:00"]
    gen = ["generate", "reindex-search-e299beff", *debian]
    code, err = stderr_on_terminal([*gen, "--out", str(tmp_path / "a")])
    assert code == 0 and "proving each schedule" in err
    code, _, err = run(capsys, *gen, "--out", str(tmp_path / "b"))
    assert code == 0 and "proving" not in err  # a pipe: nothing but what the command says

    root = copy_tree(FIXTURES / "shadow", tmp_path / "sh")
    cron = root / "etc/cron.d/shadow"
    cron.write_text(cron.read_text().replace("@ROOT@", str(root)))
    proj = tmp_path / "proj"
    assert run(capsys, "generate", "etc/cron.d/shadow:5", "--root", str(root), "--out", str(proj))[0] == 0
    shadow = [
        "shadow-run",
        "etc/cron.d/shadow:5",
        "--root",
        str(root),
        "--mode",
        "allow",
        "--project",
        str(proj),
    ]
    code, err = stderr_on_terminal([*shadow, "--runs", "1", "--calibration", "2", "--gate-pairs", "1"])
    assert code == 0, err
    assert "shadow runs" in err and "4/4" in err  # 2 calibration runs, then one run of each side


def test_shell_completion_completes_commands_and_choices() -> None:
    import os
    import subprocess
    import sys

    def complete(words: str, cword: int) -> list[str]:
        env = {
            **os.environ,
            "_CRONSHIFT_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
        cmd = [sys.executable, "-c", "import sys; from cronshift.__main__ import main; main(sys.argv[1:])"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60).stdout.split()

    assert complete("cronshift sta", 1) == ["status"]
    assert complete("cronshift generate --target ", 3) == ["celery", "streams"]


def test_a_retired_job_says_so_as_its_top_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    from .conftest import copy_tree

    root = str(copy_tree(FIXTURES / "debian", tmp_path / "d"))
    cli = [sys.executable, "-m", "cronshift"]
    subprocess.run([*cli, "retire", "reindex-search-e299beff", "--root", root, "--force", "--reason", "t"],
                   check=True, capture_output=True)  # fmt: skip
    out = subprocess.run([*cli, "scan", "--root", root], check=True, capture_output=True, text=True).stdout
    row = next(line for line in out.splitlines() if "reindex-search-e299beff" in line)
    assert "retired by cronshift" in row and "+0" not in row
