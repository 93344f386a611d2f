#!/usr/bin/env bash
# One entry point for a fresh machine: installs what the project needs (Debian packages, a
# project-local .venv with the Python test dependencies and `just`), then runs a just recipe.
#   ./bootstrap.sh run    # build and run the gateway with gateway.yaml and the example services
#   ./bootstrap.sh test   # build and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages every recipe may need; recipes ask for their own extras (e.g. bench).
bash scripts/ensure-apt.sh python3-venv curl ca-certificates pkg-config libhiredis-dev redis-server

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

exec .venv/bin/just "$@"
