"""Guards and monitors in front of a command are found; the inner command is cut from the original text."""

from __future__ import annotations

import pytest

from cronshift.discover.wrappers import peel


@pytest.mark.parametrize(
    ("command", "kinds", "inner"),
    [
        ("flock -n /run/lock/sync.lock /usr/local/bin/sync --full", ["flock"], "/usr/local/bin/sync --full"),
        ("/usr/bin/flock -w 10 /tmp/l -c 'pg_dump db > /b/db.sql'", ["flock"], "pg_dump db > /b/db.sql"),
        ("timeout 3600 /opt/backup.sh", ["timeout"], "/opt/backup.sh"),
        (
            "timeout -k 30s 1h nice -n 19 ionice -c3 /usr/bin/reindex",
            ["timeout", "nice", "ionice"],
            "/usr/bin/reindex",
        ),
        ("chronic /usr/local/bin/report", ["chronic"], "/usr/local/bin/report"),
        ("run-one /usr/bin/fetchmail", ["run-one"], "/usr/bin/fetchmail"),
        (
            "cronitor exec d3x0c1 /usr/bin/php artisan schedule:run",
            ["cronitor"],
            "/usr/bin/php artisan schedule:run",
        ),
        ("runitor -uuid 2f9-a5c -- /usr/local/bin/backup", ["runitor"], "/usr/local/bin/backup"),
        ("sentry-cli monitors run my-job -- python manage.py sync", ["sentry-cli"], "python manage.py sync"),
        ("cronshift record --job sync-1 -- /usr/bin/sync", ["cronshift-record"], "/usr/bin/sync"),
        (
            "test -x /usr/sbin/e2scrub_all && /usr/sbin/e2scrub_all -A -r",
            ["test-x"],
            "/usr/sbin/e2scrub_all -A -r",
        ),
        (
            "[ -x /usr/bin/munin-cron ] && /usr/bin/munin-cron >/dev/null",
            ["test-x"],
            "/usr/bin/munin-cron >/dev/null",
        ),
        (
            "/opt/app/bin/cleanup && curl -fsS -m 10 --retry 5 -o /dev/null https://hc-ping.com/1f0e",
            ["healthcheck-ping"],
            "/opt/app/bin/cleanup",
        ),
        ("/usr/bin/plain --arg", [], "/usr/bin/plain --arg"),
        ("echo timeout; ls", [], "echo timeout; ls"),
    ],
)
def test_peel(command: str, kinds: list[str], inner: str) -> None:
    wrappers, rest = peel(command)
    assert [w.kind for w in wrappers] == kinds
    assert rest == inner


def test_flock_modes_and_timeout_seconds_are_kept() -> None:
    (f,), _ = peel("flock -n /run/x.lock job")
    assert dict(f.args) == {"lock": "/run/x.lock", "mode": "skip"}
    (t,), _ = peel("timeout 2h job")
    assert dict(t.args)["seconds"] == "7200"
