"""An MCP server over Streamable HTTP, written with the official SDK (serves both protocol eras)."""

import argparse
import os
from typing import Annotated

import anyio
from pydantic import BaseModel
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve

server = MCPServer("integration-http")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
async def count(steps: int, delay_seconds: float, ctx: Context) -> str:
    """Report progress after each step, then return."""
    for done in range(1, steps + 1):
        await ctx.report_progress(done, steps, f"step {done}")
        await anyio.sleep(delay_seconds)
    return f"counted {steps}"


class Colour(BaseModel):
    colour: str


def favourite_colour() -> Elicit[Colour]:
    return Elicit("What is your favourite colour?", Colour)


@server.tool()
async def ask(choice: Annotated[Colour, Resolve(favourite_colour)]) -> str:
    """Ask the user (elicitation) for a colour, in either era: a resolver's ask is sent mid-call
    to a session-based client and returned as an InputRequiredResult to a 2026-07-28 one."""
    return f"user likes {choice.colour}"


@server.tool()
async def ask_user(ctx: Context) -> str:
    """Ask the user (elicitation) for a colour on the call's own stream (related to the request)."""
    answer = await ctx.elicit("What is your favourite colour?", Colour)
    if answer.action == "accept" and answer.data is not None:
        return f"user likes {answer.data.colour}"
    return f"user chose {answer.action}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    anyio.run(lambda: server.run_streamable_http_async(host="127.0.0.1", port=args.port))
