"""An MCP server over Streamable HTTP (official SDK, both eras) that says who the gateway in
front of it says is calling (`X-Forwarded-User`): the upstream of the per-user OAuth tests."""

import argparse

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("identity")


@server.tool()
def whoami(ctx: Context) -> str:
    """The caller, as the gateway in front names them."""
    request = ctx.request_context.request
    return request.headers.get("x-forwarded-user", "") if request is not None else ""


@server.tool()
def bearer(ctx: Context) -> str:
    """The credentials the request came with (what an upstream like GitHub's MCP server checks)."""
    request = ctx.request_context.request
    return request.headers.get("authorization", "") if request is not None else ""


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    anyio.run(lambda: server.run_streamable_http_async(host="127.0.0.1", port=args.port))
