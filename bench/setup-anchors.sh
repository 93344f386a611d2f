#!/usr/bin/env bash
# The bridges this gateway is measured against, each in its own venv (benchmarks only).
set -euo pipefail
cd "$(dirname "$0")/.."
install() {
  local venv=$1; shift
  local want="$*"
  if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$want" ]; then return; fi
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  echo "$want" > "$venv/.installed"
}
install .venv-bench-streamablehttp "mcp-streamablehttp-proxy==0.2.0"
install .venv-bench-mcpproxy "mcp-proxy==0.13.0" "mcp<2"
# The gateways a user would install instead (bench/peers.py).
install .venv-bench-contextforge "mcp-contextforge-gateway==1.0.7.post20260921"
install .venv-bench-fastmcp "fastmcp==4.2.3"
