#!/usr/bin/env bash
# A second venv holding a legacy-only (2025, session-based) stdio MCP server: mcp-server-time
# pinned to a 2025 release with the SDK held below 2.x (SDK 2.x would make it dual-era), and the
# SDK 1.x clients of the old transports (`sse_client`, `websocket_client`: the `ws` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
want="mcp[ws]<2 mcp-server-time==2025.9.25"
stamp=.venv-legacy/.installed
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
python3 -m venv .venv-legacy
.venv-legacy/bin/python -m pip install -q --disable-pip-version-check "mcp[ws]<2" "mcp-server-time==2025.9.25"
echo "$want" > "$stamp"
