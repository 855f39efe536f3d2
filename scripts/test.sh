#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine and runs it. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v crontab >/dev/null 2>&1 || need+=(cron)          # the real crontab(1), for spool-install tests
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # tests start their own server
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing from Debian's packages: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]} (run as root to install them); the tests that need them will skip"
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
