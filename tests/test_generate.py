"""`cronshift generate`: deterministic output, hostile commands embedded exactly, manifest, JSON."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from cronshift.cli.generate import generate
from cronshift.discover.scan import scan

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
    assert gap["schedule_proof"]["window"] == ["2026-01-01T00:00:00+01:00", "2027-01-01T00:00:00+01:00"]
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
    args = ["sync-orders", "backup-etc", "--root", str(debian_root), "--out", str(out), *NOW]
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
