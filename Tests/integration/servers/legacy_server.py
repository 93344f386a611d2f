"""A session-based-only MCP server: the mcp 1.x SDK (FastMCP), run with the project's .venv-legacy
interpreter, over Streamable HTTP (`--port`) or stdio (no `--port`).

Tools: echo, count (progress), ask / ask_user (elicitation of a colour)."""

import argparse

import anyio
from pydantic import BaseModel
from mcp.server.fastmcp import Context, FastMCP

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
args = parser.parse_args()

server = FastMCP("legacy-server", host="127.0.0.1", port=args.port or 0, log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Report progress after each step, then return."""
    for done in range(1, steps + 1):
        await ctx.report_progress(done, steps)
        await anyio.sleep(0.01)
    return f"counted {steps}"


class Favourite(BaseModel):
    colour: str


@server.tool()
async def ask(ctx: Context) -> str:
    """Ask the user (elicitation) for a colour."""
    answer = await ctx.elicit("What is your favourite colour?", Favourite)
    if answer.action == "accept" and answer.data is not None:
        return f"user likes {answer.data.colour}"
    return f"user chose {answer.action}"


server.add_tool(ask, name="ask_user", description="Ask the user (elicitation) for a colour.")

server.run(transport="streamable-http" if args.port else "stdio")
