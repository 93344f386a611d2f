"""A session-based-only MCP server: the mcp 1.x SDK (FastMCP), run with the project's .venv-legacy
interpreter, over Streamable HTTP (`--port`) or stdio (no `--port`).

Tools: echo, count (progress), ask / ask_user (elicitation of a colour), add_tool (registers a tool
and announces tools/list_changed, which the server declares)."""

import argparse

import anyio
from pydantic import BaseModel
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.lowlevel.server import NotificationOptions

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
args = parser.parse_args()

server = FastMCP("legacy-server", host="127.0.0.1", port=args.port or 0, log_level="WARNING")
# FastMCP 1.x declares no listChanged capability: declare tools/list_changed, which add_tool sends.
_initialization_options = server._mcp_server.create_initialization_options
server._mcp_server.create_initialization_options = lambda notification_options=None, experimental_capabilities=None: _initialization_options(
    NotificationOptions(tools_changed=True), experimental_capabilities)


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


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new tool and announce it (tools/list_changed, on the session's GET stream)."""

    def extra() -> str:
        return name

    server.add_tool(extra, name=name, description="added at run time")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


server.add_tool(ask, name="ask_user", description="Ask the user (elicitation) for a colour.")

server.run(transport="streamable-http" if args.port else "stdio")
