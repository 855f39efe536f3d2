#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine and runs it. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v crontab >/dev/null 2>&1 || need+=(cron)          # the real crontab(1), for spool-install tests
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # tests start their own server
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)  # event-source tests: a database they create
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the HTML report test renders the page headless
command -v openssl >/dev/null 2>&1 || need+=(openssl)            # a TLS (rediss://) Redis for one test
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing from Debian's packages: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]} (run as root to install them); the tests that need them will skip"
  fi
fi
# RabbitMQ: two tests run a generated project on it. Start it when it is installed but not running;
# without it those tests skip, each saying so in one line.
port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! port_open && command -v rabbitmq-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "starting rabbitmq-server for the RabbitMQ tests"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 60); do port_open && break; sleep 1; done
fi
# PostgreSQL on 127.0.0.1:5432 (trust for local TCP, as Debian's default cluster has it for these tests):
# start the installed cluster when it is not running; without it the postgres tests skip, saying so.
pg_open() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_open && command -v pg_lsclusters >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  pg_lsclusters -h | while read -r ver name _; do pg_ctlcluster "$ver" "$name" start || true; done
  for _ in $(seq 30); do pg_open && break; sleep 1; done
fi
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
# Several pytest-xdist workers: most tests wait (Celery workers starting, cron minute boundaries), so more
# workers than cores. Tests that share something one at a time carry an xdist_group mark (loadgroup keeps
# a group on one worker). CRONSHIFT_TEST_WORKERS overrides the count; `-n 0` runs in one process.
# In CI (CI set, a clean clone) pytest writes no .pytest_cache into the checkout.
cache=()
[ -n "${CI:-}" ] && cache=(-p no:cacheprovider)
exec .venv/bin/python -m pytest -n "${CRONSHIFT_TEST_WORKERS:-4}" --dist loadgroup "${cache[@]}" "$@"
