"""Example HTTP MCP server behind the default gateway.yaml's public `status` route.

Serves both protocol eras (the official SDK's Streamable HTTP app): `echo`, `status`, and
`countdown`, which streams progress notifications before its result.
"""

import argparse
import datetime
import platform

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("status", instructions="Example service of mcp-gateway: echo, status and a countdown with progress.")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def status() -> dict:
    """Report that the service is up, with its host and the current UTC time."""
    return {
        "service": "status",
        "host": platform.node(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }


@server.tool()
async def countdown(steps: int = 5, delay_seconds: float = 0.2, ctx: Context | None = None) -> str:
    """Count down, reporting progress after every step."""
    for done in range(1, steps + 1):
        if ctx is not None:
            await ctx.report_progress(done, steps, f"step {done} of {steps}")
        await anyio.sleep(delay_seconds)
    return f"countdown of {steps} finished"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args()
    anyio.run(lambda: server.run_streamable_http_async(host=args.host, port=args.port))


if __name__ == "__main__":
    main()
