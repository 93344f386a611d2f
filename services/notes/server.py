"""Example HTTP MCP server behind the default gateway.yaml's `notes` route.

It trusts only requests that carry its API key in `X-Api-Key` (the gateway adds it from
NOTES_API_KEY; clients never see it). Notes live in memory.
"""

import argparse
import hmac
import os

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("notes", instructions="Example service of mcp-gateway: a small in-memory notebook.")
NOTES: list[str] = []


@server.tool()
def add_note(text: str) -> str:
    """Store a note and return its number."""
    NOTES.append(text)
    return f"note {len(NOTES)} stored"


@server.tool()
def list_notes() -> list[str]:
    """Return every stored note."""
    return list(NOTES)


def require_api_key(app, expected: str):
    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            presented = headers.get(b"x-api-key", b"").decode("latin-1")
            if not hmac.compare_digest(presented, expected):
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error":"missing or wrong X-Api-Key"}'})
                return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    app = server.streamable_http_app(host=args.host)
    key = os.environ.get("NOTES_API_KEY", "")
    if key:
        app = require_api_key(app, key)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve)


if __name__ == "__main__":
    main()
