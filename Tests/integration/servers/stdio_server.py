"""A stdio MCP server written with the official SDK, exercising every path of the stdio bridge.

Flags: --silent-start (never answers anything: a child that hangs at initialize),
--crash-on-start (exits before reading anything).
"""

import argparse
import os
import sys
import time
from typing import Annotated

import anyio
from pydantic import BaseModel
from mcp import types
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve

server = MCPServer("integration-stdio")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def getenv(name: str) -> str:
    """The value of one environment variable, or an empty string."""
    return os.environ.get(name, "")


@server.tool()
def environment() -> list[str]:
    """Names of the environment variables the server sees."""
    return sorted(os.environ)


@server.tool()
async def count(steps: int, delay_seconds: float, ctx: Context) -> str:
    """Report progress after each step, then return."""
    for done in range(1, steps + 1):
        await ctx.report_progress(done, steps, f"step {done}")
        await anyio.sleep(delay_seconds)
    return f"counted {steps}"


@server.tool()
async def ask_llm(question: str, ctx: Context) -> str:
    """Ask the client's model (sampling) and return its answer."""
    result = await ctx.session.create_message(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=question))],
        max_tokens=50,
        related_request_id=ctx.request_id,
    )
    return f"model said: {result.content.text}"


class Favourite(BaseModel):
    colour: str


@server.tool()
async def ask_user(ctx: Context) -> str:
    """Ask the user (elicitation) for a colour."""
    answer = await ctx.elicit("What is your favourite colour?", Favourite)
    if answer.action == "accept" and answer.data is not None:
        return f"user likes {answer.data.colour}"
    return f"user chose {answer.action}"


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new tool and announce it (tools/list_changed)."""

    def extra() -> str:
        return name

    server.add_tool(extra, name=name, description="added at run time")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


@server.tool()
def big(megabytes: int) -> str:
    """A large result."""
    return "x" * (megabytes * 1024 * 1024)


@server.tool()
async def crash(ctx: Context) -> str:
    """Exit mid-request with status 3."""
    await ctx.report_progress(1, 2, "about to crash")
    await anyio.sleep(0.1)
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never return."""
    await anyio.sleep(3600)
    return "unreachable"


@server.tool()
async def wait_for_cancel(marker: str, ctx: Context) -> str:
    """Report progress once (the call is running), wait until cancelled, then write `marker` (a
    file path) to prove the cancellation arrived."""
    await ctx.report_progress(0, 1)
    try:
        await anyio.sleep(3600)
    except anyio.get_cancelled_exc_class():
        with open(marker, "w") as handle:
            handle.write("cancelled")
        raise
    return "unreachable"


@server.tool()
def spam_stderr(lines: int) -> str:
    """Write many lines to stderr, then return."""
    for index in range(lines):
        sys.stderr.write(f"noise line {index} " + "z" * 100 + "\n")
    sys.stderr.flush()
    return f"wrote {lines} lines"


@server.tool()
def garbage_then_answer() -> str:
    """Write a non-JSON line to stdout before answering."""
    # The SDK redirects sys.stdout; write to the real descriptor.
    os.write(1, b"this is not JSON\n")
    return "still fine"


class Colour(BaseModel):
    colour: str


def favourite_colour() -> Elicit[Colour]:
    return Elicit("What is your favourite colour?", Colour)


@server.tool()
async def ask(choice: Annotated[Colour, Resolve(favourite_colour)]) -> str:
    """Ask the user (elicitation) for a colour, in either era: a resolver's ask is sent mid-call
    to a session-based client and returned as an InputRequiredResult to a 2026-07-28 one."""
    return f"user likes {choice.colour}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--silent-start", action="store_true")
    parser.add_argument("--crash-on-start", action="store_true")
    args = parser.parse_args()
    if args.crash_on_start:
        sys.exit(7)
    if args.silent_start:
        while sys.stdin.readline():
            pass
        time.sleep(3600)
    server.run()
