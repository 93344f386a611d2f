"""A 2026-07-28-only stdio MCP server written with the official SDK (2.x): `initialize` is refused
with -32022 (UnsupportedProtocolVersion), as a server that dropped the session-based era does.

Like every SDK 2.x server, its connection takes the era of the first request it sees: after an
`initialize` (even a refused one) it serves the handshake era and refuses 2026-07-28 requests, so a
client that wants it must send `server/discover` first on a fresh process.

Tools: echo (text), pid."""

import os

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError


async def refuse_initialize(ctx, call_next):
    if ctx.method == "initialize":
        raise MCPError(code=-32022, message="this server speaks 2026-07-28 only", data={"supported": ["2026-07-28"]})
    return await call_next(ctx)


server = MCPServer("sdk-modern-only", middleware=[refuse_initialize])


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


server.run()
