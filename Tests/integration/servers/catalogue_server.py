"""An MCP server written with the official SDK whose tools, resources and prompts are named so
that policies can tell them apart: get_/list_ tools for everyone, restart_ tools for operators,
*_secret ones for nobody, a long progress-reporting tool, docs and private resources, a public and
a secret prompt. A stdio child without --port; a Streamable HTTP server with it."""

import argparse

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("catalogue")


@server.tool()
def get_time() -> str:
    """The time (a fixed one: tests compare it)."""
    return "12:00"


@server.tool()
def list_zones() -> list[str]:
    return ["UTC", "Europe/Paris"]


@server.tool()
def restart_service(name: str) -> str:
    return f"restarted {name}"


@server.tool()
def get_secret() -> str:
    return "the secret"


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Report progress after each step, then return."""
    for done in range(1, steps + 1):
        await ctx.report_progress(done, steps, f"step {done}")
    return f"counted {steps}"


@server.resource("file:///docs/readme")
def readme() -> str:
    return "read me"


@server.resource("file:///private/key")
def private_key() -> str:
    return "the private key"


@server.resource("file:///docs/{name}")
def doc(name: str) -> str:
    return f"doc {name}"


@server.prompt()
def public_greeting(name: str) -> str:
    return f"Say hello to {name}."


@server.prompt()
def secret_plan() -> str:
    return "The secret plan."


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.port:
        anyio.run(lambda: server.run_streamable_http_async(host="127.0.0.1", port=args.port))
    else:
        server.run()
