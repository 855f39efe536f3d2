"""`cronshift report --html`: one page, no network, rendered by a real headless Chromium without errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cronshift.cli.app import app

NOW = "2026-11-24T10:10:00+01:00"
# Every request leaves the browser unanswered: the page must need none.
NO_NETWORK = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium: scripts/test.sh installs Debian's chromium (as root)")


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on the page with its console on stderr (one `CONSOLE` line per message), with a
    profile of its own: a Chromium another test run started on this host must not get the page instead."""
    with tempfile.TemporaryDirectory(prefix="cs-chromium-") as profile:
        return subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", NO_NETWORK,
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
             *args, page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


# The page takes seconds of CPU to build: its two tests share one xdist worker, so it is built once.
SAME_PAGE = pytest.mark.xdist_group("report-page")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import FIXTURES, copy_tree

    tmp = tmp_path_factory.mktemp("report")
    root = copy_tree(FIXTURES / "debian", tmp / "debian")
    page = tmp / "report.html"
    res = CliRunner().invoke(app, ["report", "--root", str(root), "--now", NOW, "--html", str(page)])
    assert res.exit_code == 0, res.stderr
    assert f"{page}: 53 jobs" in res.stdout
    return page


@SAME_PAGE
def test_the_page_is_self_contained(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    # No script, stylesheet or image is fetched: the markup (scripts' bodies apart) names no address.
    markup = re.sub(r"(?s)<script[^>]*>.*?</script>", "<script></script>", text)
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", markup, re.I)
    assert "vegaEmbed(" in text and "window.vegaEmbed=" in text  # the library is inline
    for section in ("Runs and durations", "Pain ranking, with the evidence", "Migration board"):
        assert section in text
    assert "reindex-search-e299beff" in text
    assert "failed 78 of 697 runs" in text  # the ranking's evidence


@SAME_PAGE
def test_chromium_renders_it_without_console_errors(report: Path, tmp_path: Path) -> None:
    dom = browse(report, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    # vega-embed drew the charts (a canvas per view) and the tables are there.
    assert 'class="marks"' in dom.stdout
    assert 'id="ranking"' in dom.stdout and 'id="board"' in dom.stdout
    shot = tmp_path / "report.png"
    res = browse(report, "--window-size=1200,1000", f"--screenshot={shot}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_an_unwritable_destination_is_one_line_and_exit_1(tmp_path: Path) -> None:
    from .conftest import FIXTURES

    res = CliRunner().invoke(
        app, ["report", "--root", str(FIXTURES / "debian"), "--now", NOW, "--no-history",
              "--html", str(tmp_path / "missing" / "r.html")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert res.stderr.startswith("cronshift: ") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_each_run_is_classed_for_the_timeline() -> None:
    from datetime import UTC

    from cronshift.model import RunRecord
    from cronshift.report import run_rows

    runs = [
        RunRecord(job_id="j", source="record", start=0, end=400, exit_status=0),
        RunRecord(job_id="j", source="record", start=300, end=350, exit_status=0),  # starts while 1st runs
        RunRecord(job_id="j", source="record", start=600, end=610, exit_status=1),
        RunRecord(job_id="j", source="syslog", start=900, end=None),  # no END line: drawn 1 s wide
        RunRecord(job_id="j", source="record", start=1200, end=1201, signal=9),
    ]
    rows = run_rows("j", runs, UTC)
    assert [r["outcome"] for r in rows] == [
        "ok", "overlapped the previous run", "failed", "outcome not logged", "failed",
    ]  # fmt: skip
    assert rows[3]["duration_s"] is None and rows[3]["end"] == "1970-01-01T00:15:01+00:00"
    assert rows[0]["start"] == "1970-01-01T00:00:00+00:00"  # ISO 8601 with its offset


def test_a_reason_is_shown_whole_with_its_points_once() -> None:
    """A score Reason's text carries no points (they are a number beside it): nothing is cut from it."""
    from cronshift.model import CronJob, Format, Reason, Score, SourceRef
    from cronshift.rank import Metrics
    from cronshift.report import _ranking_html

    job = CronJob("j", SourceRef("etc/crontab", 1), Format.SYSTEM, "root", "* * * * *", "true")
    reason = Reason("echo 'a: +1' fails", 7.0, "logs")
    html = _ranking_html([(job, Metrics(), Score(7.0, (reason,)))])
    assert "+7 echo &#x27;a: +1&#x27; fails" in html
