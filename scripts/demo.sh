#!/usr/bin/env bash
# Installs cronshift into .venv and scans the bundled Debian fixture server. README's first command.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
exec .venv/bin/cronshift scan --root fixtures/debian "$@"
