"""A session-based-only MCP server: the mcp 1.x SDK (FastMCP), run with the project's .venv-legacy
interpreter, over Streamable HTTP (`--port`), the 2024-11-05 HTTP+SSE transport (`--port` and
`--sse`: GET /sse, POST /messages/) or stdio (no `--port`).

Tools: request_header (a header of the HTTP request that carried the call), echo, count (progress), ask / ask_user (elicitation of a colour), wait_for_cancel, add_tool
(registers a tool and announces tools/list_changed), touch (resources/updated for a URI),
subscriptions (the URIs subscribed to). Resource memo://one can be subscribed to."""

import argparse

import anyio
from pydantic import BaseModel
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.lowlevel.server import NotificationOptions

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
parser.add_argument("--sse", action="store_true")
args = parser.parse_args()

server = FastMCP("legacy-server", host="127.0.0.1", port=args.port or 0, log_level="WARNING")
# FastMCP 1.x declares neither listChanged nor resource subscriptions: declare tools/list_changed
# (add_tool sends it) and resources.subscribe (touch sends resources/updated).
_initialization_options = server._mcp_server.create_initialization_options


def _declared(notification_options=None, experimental_capabilities=None):
    options = _initialization_options(NotificationOptions(tools_changed=True), experimental_capabilities)
    if options.capabilities.resources is not None:
        options.capabilities.resources.subscribe = True
    return options


server._mcp_server.create_initialization_options = _declared
subscribed: set[str] = set()


@server._mcp_server.subscribe_resource()
async def _subscribe(uri) -> None:
    subscribed.add(str(uri))


@server._mcp_server.unsubscribe_resource()
async def _unsubscribe(uri) -> None:
    subscribed.discard(str(uri))


@server.resource("memo://one")
def memo_one() -> str:
    """A resource that can be subscribed to."""
    return "one"


@server.tool()
async def touch(uri: str, ctx: Context) -> str:
    """Announce that a resource changed (resources/updated)."""
    await ctx.session.send_resource_updated(uri)
    return f"touched {uri}"


@server.tool()
def subscriptions() -> str:
    """The resource URIs subscribed to in this process, comma-separated."""
    return ",".join(sorted(subscribed))


@server.tool()
def request_header(name: str, ctx: Context) -> str:
    """A header of the HTTP request that carried this call ("" over stdio or when absent)."""
    request = getattr(ctx.request_context, "request", None)
    return request.headers.get(name, "") if request is not None else ""


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Report progress after each step, then return."""
    for done in range(1, steps + 1):
        await ctx.report_progress(done, steps)
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
async def wait_for_cancel(marker: str, ctx: Context) -> str:
    """Report progress once, then wait until cancelled; write `marker` (a file path) when cancelled."""
    await ctx.report_progress(0, 1)
    try:
        await anyio.sleep(3600)
    except anyio.get_cancelled_exc_class():
        with open(marker, "w") as handle:
            handle.write("cancelled")
        raise
    return "unreachable"


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new tool and announce it (tools/list_changed, on the session's GET stream)."""

    def extra() -> str:
        return name

    server.add_tool(extra, name=name, description="added at run time")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


server.add_tool(ask, name="ask_user", description="Ask the user (elicitation) for a colour.")

server.run(transport=("sse" if args.sse else "streamable-http") if args.port else "stdio")
