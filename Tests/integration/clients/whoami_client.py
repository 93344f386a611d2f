"""The official mcp 1.x SDK client over the 2024-11-05 HTTP+SSE transport (run with
.venv-legacy's interpreter) calling `whoami` once, without elicitation support: prints
{"result": text} or {"error": {"code", "message"}} as one JSON line."""

import argparse
import json

import anyio
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.shared.exceptions import McpError


async def run(url: str, token: str) -> dict:
    async with sse_client(url, headers={"Authorization": f"Bearer {token}"}) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            try:
                result = await session.call_tool("whoami", {})
            except McpError as error:
                return {"error": {"code": error.error.code, "message": error.error.message, "data": error.error.data}}
            return {"result": result.content[0].text}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    arguments = parser.parse_args()
    print(json.dumps(anyio.run(run, arguments.url, arguments.token)))


if __name__ == "__main__":
    main()
