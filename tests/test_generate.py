"""`cronshift generate`: deterministic output, hostile commands embedded exactly, manifest, JSON."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cronshift.cli.generate import generate
from cronshift.discover.scan import scan
from cronshift.generate.celery import render_project
from cronshift.generate.plan import CONCURRENCY_CAP, max_at_once, plan_for
from cronshift.history.evidence import JobInput
from cronshift.model import CronJob, Dialect, Format, RunRecord, SourceRef
from cronshift.rank import Metrics

PROJECT = Path(__file__).resolve().parent.parent
RUFF = str(Path(sys.executable).with_name("ruff"))
NOW = ["--now", "2026-03-01T00:00"]

HOSTILE = [
    """echo '\"\"\"' "''' \\\\ \\n" > "$HOME/a" """.strip(),
    "echo '{{ app }}' {% raw %} \\%d > /tmp/b",
    "printf 'résumé ✓ %s\\n' ünïcode",
    'python3 -c \'import os; print("__import__(\\"os\\").system(\\"id\\")")\'',
    "echo done # ); import os; os.system('id') #",
    "cat %line one%line two%",
]


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("generate")(generate)
    app.command("noop")(lambda: None)  # keeps "generate" a subcommand
    return app


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(_cli(), ["generate", *args])
    return r.exit_code, r.stdout, r.stderr


def one_file_root(tmp_path: Path, name: str, crontab: str, zone: str = "UTC") -> Path:
    """A root holding root's passwd line, a zone and one cron.d file: what a generated-worker test needs."""
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/timezone").write_text(f"{zone}\n")
    (root / "etc/cron.d" / name).write_text(crontab)
    return root


def generate_for_worker(root: Path, out: Path, package: str, broker: str) -> None:
    """`cronshift generate --all` of `root` into `out` for a real worker on `broker`, at a fixed now."""
    args = ["--all", "--root", str(root), "--out", str(out), "--package", package, "--broker", broker]
    code, _out, err = run(*args, "--now", "2026-03-01T00:00")
    assert code == 0, err


def hostile_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/timezone").write_text("UTC\n")
    lines = [f"{k} 3 * * * root {cmd}" for k, cmd in enumerate(HOSTILE)]
    (root / "etc/cron.d/hostile").write_text(
        'SHELL=/bin/bash\nGREETING="it\'s {{x}}"\n' + "\n".join(lines) + "\n"
    )
    return root


def embedded_spec(path: Path) -> dict[str, object]:
    """The SPEC literal of a generated task module, read by parsing (never importing) the file."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "SPEC":
            call = node.value
            assert isinstance(call, ast.Call)
            return json.loads(ast.literal_eval(call.args[0]))
    raise AssertionError("no SPEC in " + str(path))


def test_hostile_commands_are_embedded_exactly(tmp_path: Path) -> None:
    root = hostile_root(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run("--all", "--root", str(root), "--out", str(out), "--json", *NOW)
    assert code == 0, err
    doc = json.loads(stdout)
    jobs = {j.id: j for j in scan(root).jobs}
    assert len(doc["jobs"]) == len(HOSTILE) == len(jobs)
    for j in doc["jobs"]:
        spec = embedded_spec(out / (j["module"].replace(".", "/") + ".py"))
        job = jobs[j["id"]]
        assert spec["command"] == job.shell_command
        assert spec["stdin"] == job.stdin
        assert spec["env"] == [list(kv) for kv in job.env]
    assert any(
        embedded_spec(p)["stdin"] == "line one\nline two\n" for p in (out / "cronjobs/jobs").glob("[!_]*.py")
    )
    subprocess.run([RUFF, "check", "--no-cache", str(out)], check=True)
    subprocess.run([RUFF, "format", "--check", "--no-cache", str(out)], check=True)
    # every generated module compiles and app.py holds one beat entry per job
    for p in out.rglob("*.py"):
        compile(p.read_text(), str(p), "exec")


def test_output_is_deterministic_and_json_schema(tmp_path: Path, debian_root: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ids = [
        "prune-media-cache-53c48045",
        "backup-etc",
        "sleep-27e8526e",
        "archive-orders",
        "sync-orders",
        "pg-backup",
    ]
    # backup-etc's file is one Debian never reads (a dot in its name) and archive-orders can never fire:
    # cron never runs either, so generating them needs --include-never-run
    code, _, err = run(*ids, "--root", str(debian_root), "--out", str(a), "--json", *NOW)
    assert code == 2 and "backup.sh:2: backup-etc-4b7a190f: cron never runs this job" in err
    ids.append("--include-never-run")
    code, stdout, _ = run(*ids, "--root", str(debian_root), "--out", str(a), "--json", *NOW)
    assert code == 0
    run(*ids, "--root", str(debian_root), "--out", str(b), "--json", *NOW)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    doc = json.loads(stdout)
    assert doc["schema_version"] == 2 and doc["package"] == "cronjobs"
    by_id = {j["id"]: j for j in doc["jobs"]}
    gap = by_id["prune-media-cache-53c48045"]  # 20 2 * * * in Europe/Berlin: the spring gap
    assert [e["kind"] for e in gap["beat_entries"]] == ["cronsim"]
    assert gap["schedule_proof"]["identical"] and gap["schedule_proof"]["zone"] == "Europe/Berlin"
    assert gap["schedule_proof"]["window"] == ["2026-01-01T00:00:00+01:00", "2031-01-01T00:00:00+01:00"]
    daily = by_id["backup-etc-4b7a190f"]
    assert daily["beat_entries"][0]["fields"] == {
        "minute": "30", "hour": "1", "day_of_month": "*", "month_of_year": "*", "day_of_week": "*"
    }  # fmt: skip
    assert by_id["sleep-27e8526e"]["beat_entries"] == [] and by_id["sleep-27e8526e"]["schedule_proof"] is None
    assert any("never fires" in m for m in by_id["archive-orders-db0f90a1"]["messages"])
    assert all(j["schedule_proof"] is None or j["schedule_proof"]["identical"] for j in doc["jobs"])
    app_py = (a / "cronjobs/app.py").read_text()
    assert "@worker_ready.connect" not in app_py  # only with --on-reboot
    assert 'timezone="Europe/Berlin"' in app_py and "task_acks_late=True" in app_py
    sync = (a / "cronjobs/jobs/sync_orders_1cbf50a2.py").read_text()
    assert "Overlap policy: forbid. Why: the cron line is wrapped in `flock" in sync
    pg = (a / "cronjobs/jobs/pg_backup_71c0ddc3.py").read_text()
    assert embedded_spec(a / "cronjobs/jobs/pg_backup_71c0ddc3.py")["time_limit"] == 3600
    assert "timeout 3600" in pg


def test_rerun_keeps_user_edits_unless_forced(tmp_path: Path, debian_root: Path) -> None:
    out = tmp_path / "out"
    args = ["sync-orders", "pg-backup", "--root", str(debian_root), "--out", str(out), *NOW]
    assert run(*args)[0] == 0
    edited = out / "cronjobs/jobs/sync_orders_1cbf50a2.py"
    edited.write_text(edited.read_text() + "# my change\n")
    code, _, err = run(*args)
    assert code == 1
    assert f"cronshift: {edited}: edited since it was generated; left alone (--force overwrites)" in err
    assert edited.read_text().endswith("# my change\n")
    code, _, _ = run(*args, "--force")
    assert code == 0 and not edited.read_text().endswith("# my change\n")
    assert run(*args)[0] == 0  # untouched generated files are refreshed silently


def test_on_reboot_hook_only_when_asked(tmp_path: Path, debian_root: Path) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run(
        "sleep-27e8526e", "--root", str(debian_root), "--out", str(out), "--on-reboot", *NOW
    )
    assert code == 0 and "no beat entry" in stdout
    assert 'app.send_task("cronjobs.sleep_27e8526e")' in (out / "cronjobs/app.py").read_text()


def _warn_root(tmp_path: Path, extra: str = "") -> Path:
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/timezone").write_text("UTC\n")
    (root / "etc/cron.d/warn").write_text(
        "CRON_TZ=Europe/Paris\n0 1#2 * * * root echo truncated\nTZ=Asia/Tokyo\n0 0 * * 1-5-7 root echo tz\n"
        + extra
    )
    (root / "etc/cron.d/never.run").write_text("0 4 * * * root echo never\n")  # a dot: Debian skips the file
    return root


def test_a_job_cron_never_runs_is_refused_unless_asked(tmp_path: Path) -> None:
    root = _warn_root(tmp_path)
    code, out, err = run("etc/cron.d/never.run:1", "--root", str(root), "--out", str(tmp_path / "o"), *NOW)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cron never runs this job" in err and "--include-never-run" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    code, out, err = run(
        "etc/cron.d/never.run:1", "--include-never-run", "--root", str(root), "--out", str(tmp_path / "o"),
        "--json", *NOW,
    )  # fmt: skip
    assert code == 0, err
    (job,) = json.loads(out)["jobs"]
    assert any("cron never runs this job" in w and "bad.file" not in w for w in job["warnings"])
    assert any(m.startswith("warning: cron never runs this job") for m in job["messages"])


def test_scan_warnings_reach_console_json_and_readme(tmp_path: Path) -> None:
    root = _warn_root(tmp_path)
    code, out, err = run("--all", "--root", str(root), "--out", str(tmp_path / "o"), *NOW)
    assert code == 0, err
    assert "warning: hour field '1#2': cron ignores the trailing '#2'" in out
    assert "warning: day-of-week field '1-5-7': cron ignores the trailing '-7'" in out
    assert "warning: TZ=Asia/Tokyo only reaches the job's environment" in out
    assert "Debian cron schedules in the system time zone" in out  # CRON_TZ ignored by Debian
    code, out, err = run("--all", "--root", str(root), "--out", str(tmp_path / "o"), "--json", *NOW)
    by_schedule = {j["beat_entries"][0]["fields"]["hour"]: j for j in json.loads(out)["jobs"]}
    assert any("'1#2'" in w for w in by_schedule["1"]["warnings"])
    readme = next((tmp_path / "o/cronjobs/jobs").glob("*.md")).read_text()
    assert "Warning: " in readme


def test_an_unknown_cron_tz_is_one_problem_line(tmp_path: Path) -> None:
    root = _warn_root(tmp_path, "CRON_TZ=Mars/Olympus\n0 5 * * * root echo mars\n")
    code, out, err = run(
        "--all", "--root", str(root), "--dialect", "cronie", "--out", str(tmp_path / "o"), *NOW
    )
    assert code == 1 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "Mars/Olympus" in x]
    assert line.startswith("cronshift: etc/cron.d/warn:") and "not a time zone" in line
    assert "CRON_TZ 'Mars/Olympus' is not a time zone this system knows: no beat entry" in out
    scan_json = subprocess.run(
        [sys.executable, "-m", "cronshift", "scan", "--root", str(root), "--dialect", "cronie", "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Traceback" not in scan_json.stderr and json.loads(scan_json.stdout)["jobs"]


def test_generated_files_are_formatted_by_construction(tmp_path: Path, debian_root: Path) -> None:
    """No ruff at generation time (a plain install has none): the files come out passing the project's own
    ruff check and ruff format --check, with no line past 110 characters."""
    out = tmp_path / "o"
    env_path = "/usr/bin:/bin"  # no ruff on PATH, none beside the interpreter is used either
    for pkg, root, extra in (
        ("fleet", debian_root, ["--all", "--include-never-run"]),
        ("hostile", hostile_root(tmp_path), ["--all", "--on-reboot", "--beat", "redbeat"]),
        ("warned", _warn_root(tmp_path / "w"), ["--all"]),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "cronshift", "generate", *extra, "--root", str(root), "--out", str(out),
             "--package", pkg, "--no-history", *NOW],
            capture_output=True, text=True, env={"PATH": env_path, "HOME": str(tmp_path)}, cwd=PROJECT,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    cfg = ["--no-cache", "--config", str(out / "ruff.toml")]
    check = subprocess.run([RUFF, "check", *cfg, str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run([RUFF, "format", "--check", *cfg, str(out)], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout
    long = [
        f"{p}:{n}"
        for p in out.rglob("*.py")
        for n, x in enumerate(p.read_text().splitlines(), 1)
        if len(x) > 110
    ]
    assert long == []


def test_each_job_has_its_queue_and_the_pool_a_slot_per_job(tmp_path: Path) -> None:
    """One shared queue with the default pool let one long job make the others miss their window."""
    root = _warn_root(tmp_path)
    out = tmp_path / "o"
    code, _, err = run("--all", "--root", str(root), "--out", str(out), "--package", "qpkg", *NOW)
    assert code == 0, err
    script = (
        "import json\nfrom qpkg.app import app\nc = app.conf\n"
        "print(json.dumps({'queues': sorted(q.name for q in c.task_queues), 'routes': c.task_routes,"
        " 'concurrency': c.worker_concurrency}))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=out,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{out}:{PROJECT}"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    tasks = sorted(got["routes"])
    assert len(tasks) == 2 and got["concurrency"] == 2  # two jobs cron runs, one slot each
    assert got["queues"] == sorted(["qpkg", *tasks])
    assert all(got["routes"][t] == {"queue": t} for t in tasks)  # the job's queue is named like its task


def test_generated_code_imports_only_the_runtime_api_and_names_its_version(
    tmp_path: Path, debian_root: Path
) -> None:
    """Generated code reaches cronshift only through `cronshift.runtime` (the curated API), and the project
    says which API version it was written for, so a runtime that cannot serve it stops at import."""
    import cronshift.runtime as api

    for target in ("celery", "streams"):
        out = tmp_path / target
        code, _out, err = run("--all", "--root", str(debian_root), "--out", str(out), "--package", "p",
                              "--target", target, "--no-history", *NOW)  # fmt: skip
        assert code == 0, err
        imported = set()
        for path in out.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cronshift"):
                    assert node.module == "cronshift.runtime", f"{path}: from {node.module} import ..."
                    imported |= {a.name for a in node.names}
        assert imported <= set(api.__all__)
        assert all(getattr(api, name) is not None for name in imported)
        entry = out / "p" / ("app.py" if target == "celery" else "jobs.py")
        assert f"RUNTIME_API = require_api({api.RUNTIME_API_VERSION})" in entry.read_text()
    with pytest.raises(api.RuntimeAPIError, match=r"generated for cronshift runtime API 99.*upgrade"):
        api.require_api(99)


# -- concurrency: as many runs at once as the history shows, within the overlap policy ------------------


def _cjob(job_id: str = "j-1") -> CronJob:
    return CronJob(
        id=job_id, source=SourceRef("etc/cron.d/x", 1), format=Format.SYSTEM, user="root",
        schedule="*/5 * * * *", command="true", shell_command="true",
    )  # fmt: skip


def _ledger(intervals: list[tuple[float, float | None]]) -> JobInput:
    return JobInput(
        logs=None, ledger=tuple(RunRecord("j-1", "record", a, b, exit_status=0) for a, b in intervals)
    )


def test_max_at_once_counts_runs_that_really_overlap() -> None:
    assert max_at_once([]) == 0
    assert max_at_once([(0, 10), (10, 20), (20, 30)]) == 1  # one ends as the next starts: never two
    assert max_at_once([(0, 100), (10, 20), (15, 30), (50, 60)]) == 3
    assert max_at_once([(0, 10), (5, 5)]) == 2  # a run of no length still runs beside the other


def test_concurrency_is_what_the_history_shows_within_the_overlap_policy() -> None:
    three = _ledger([(0, 100), (10, 20), (15, 30), (50, 60), (200, None)])  # the open run is left out
    overlapping = Metrics(overlaps=3, overlap_basis="start/end pairs", duration_p95=100.0)
    forbid = plan_for(_cjob(), overlapping, three)
    assert forbid.overlap == "forbid" and forbid.concurrency == 1
    assert forbid.peak_runs == 3 and "history shows up to 3 run(s) at once" in forbid.concurrency_why
    allowed = plan_for(_cjob(), overlapping, three, overrides={"overlap": "allow"})
    assert allowed.concurrency == 3 and "history shows up to 3 run(s) at once" in allowed.concurrency_why
    assert "4 run(s) with a start and an end in the ledger" in allowed.concurrency_why
    back = plan_for(_cjob(), overlapping, three, overrides={"overlap": "replace"})
    assert back.concurrency == 1
    pile = _ledger([(0, 1000)] + [(k, k + 500) for k in range(1, 12)])
    capped = plan_for(_cjob(), overlapping, pile, overrides={"overlap": "allow"})
    assert (
        capped.peak_runs == 12
        and capped.concurrency == CONCURRENCY_CAP
        and "capped at" in capped.concurrency_why
    )
    calm = plan_for(_cjob(), Metrics(overlaps=0, duration_p95=5.0), _ledger([(0, 5), (300, 305)]))
    assert calm.overlap == "allow" and calm.concurrency == 1 and "up to 1 run(s)" in calm.concurrency_why
    none = plan_for(_cjob())
    assert none.concurrency == 1 and none.peak_runs is None


def test_concurrency_and_its_evidence_reach_json_app_and_readme(tmp_path: Path) -> None:
    jobs = [_cjob("busy-1"), _cjob("calm-2")]
    three = _ledger([(0, 100), (10, 20), (15, 30)])
    overlapping = Metrics(overlaps=2, overlap_basis="start/end pairs", duration_p95=100.0)
    plans = {
        "busy-1": plan_for(jobs[0], overlapping, three, overrides={"overlap": "allow"}),
        "calm-2": plan_for(jobs[1], Metrics(overlaps=0, duration_p95=5.0), _ledger([(0, 5)])),
    }
    files, outs = render_project(
        jobs, package="p", timezone="UTC", dialect=Dialect.DEBIAN, year=2026, plans=plans
    )
    busy = next(o for o in outs if o.id == "busy-1")
    assert busy.policies is not None and busy.policies["concurrency"]["value"] == 3
    assert busy.policies["concurrency"]["history_max"] == 3
    readme = files["p/jobs/busy_1.md"]
    assert "Concurrency: **3** run(s) at once. history shows up to 3 run(s) at once" in readme
    assert "-Q p.busy_1 -c 3" in readme
    app = files["p/app.py"]
    assert '"CRONSHIFT_CONCURRENCY", "4"' in app  # 3 + 1
    assert "several at once: busy-1 3;" in re.sub(r"\n\s*#\s+", " ", app)


def test_console_shows_the_concurrency_evidence_from_the_history(tmp_path: Path, debian_root: Path) -> None:
    code, out, err = run(
        "reindex-search-e299beff",
        "--root",
        str(debian_root),
        "--out",
        str(tmp_path / "o"),
        "--package",
        "shop",
    )
    assert code == 0, err
    assert (
        "    concurrency 1: overlap policy forbid: one run at a time; history shows up to 2 run(s) at once"
        in out
    )
    code, out, err = run(
        "reindex-search-e299beff", "--root", str(debian_root), "--out", str(tmp_path / "p"),
        "--policy", "overlap=allow",
    )  # fmt: skip
    assert code == 0, err
    assert "    concurrency 2: history shows up to 2 run(s) at once" in out
