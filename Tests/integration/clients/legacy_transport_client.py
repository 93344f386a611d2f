"""The official mcp 1.x SDK client over an old transport (the 2024-11-05 HTTP+SSE `sse_client`,
or `websocket_client`), run with .venv-legacy's interpreter: lists tools, calls `echo`, calls
`count` with a progress callback, and answers the `ask` tool's elicitation. Prints one JSON object
with what it saw, for the test to check."""

import argparse
import json

import anyio
from mcp import ClientSession, types
from mcp.client.sse import sse_client


async def run(transport: str, url: str, token: str | None, steps: int) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    if transport == "sse":
        connection = sse_client(url, headers=headers)
    else:
        from mcp.client.websocket import websocket_client

        connection = websocket_client(url)
    seen: dict = {"progress": []}

    async def elicit(context, params: types.ElicitRequestParams):
        seen["elicitation"] = params.message
        return types.ElicitResult(action="accept", content={"colour": "green"})

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen["progress"].append([done, total])

    async with connection as (read, write):
        async with ClientSession(read, write, elicitation_callback=elicit) as session:
            initialized = await session.initialize()
            seen["server"] = initialized.serverInfo.name
            seen["protocol"] = initialized.protocolVersion
            seen["tools"] = sorted(tool.name for tool in (await session.list_tools()).tools)
            echoed = await session.call_tool("echo", {"text": "hello over " + transport})
            seen["echo"] = echoed.content[0].text
            counted = await session.call_tool("count", {"steps": steps}, progress_callback=progress)
            seen["count"] = counted.content[0].text
            asked = await session.call_tool("ask", {})
            seen["ask"] = asked.content[0].text
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["sse", "websocket"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token")
    parser.add_argument("--steps", type=int, default=2)
    arguments = parser.parse_args()
    print(json.dumps(anyio.run(run, arguments.transport, arguments.url, arguments.token, arguments.steps)))


if __name__ == "__main__":
    main()
