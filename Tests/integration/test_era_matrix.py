"""The protocol-era matrix of docs/compatibility.md, one test per cell: the official `mcp` SDK
client in each mode (`legacy`, `2026-07-28`, `auto`) against a server of each era (session-based
only, dual-era, 2026-07-28 only), as a stdio child and as an HTTP upstream. Every cell lists tools,
calls a tool, receives progress and completes one elicitation round trip through the gateway."""

import sys

import anyio
import mcp_types as types
import pytest
from mcp import Client

from conftest import REPO, SERVERS, Subscription, free_port, gateway_binary, modern_body, modern_headers, port_open, start_process, wait_until

LEGACY_PYTHON = str(REPO / ".venv-legacy" / "bin" / "python")
SERVER_ERAS = ("legacy", "dual", "modern")
SERVERS_BY_ERA = {
    # era: (interpreter, arguments of the `count` tool)
    "legacy": (LEGACY_PYTHON, {"steps": 2}),
    "dual": (sys.executable, {"steps": 2, "delay_seconds": 0.01}),
    "modern": (sys.executable, {"steps": 2}),
}
STDIO_SCRIPTS = {"legacy": SERVERS / "legacy_server.py", "dual": SERVERS / "stdio_server.py", "modern": SERVERS / "modern_stdio_server.py"}
HTTP_SCRIPTS = {"legacy": SERVERS / "legacy_server.py", "dual": SERVERS / "mcp_http_server.py", "modern": SERVERS / "modern_http_server.py"}


@pytest.fixture(scope="module")
def matrix_gateway(tmp_path_factory):
    """One gateway with a route per (transport, server era): /stdio-<era>/mcp and /http-<era>/mcp."""
    from conftest import Gateway

    import httpx

    tmp_path = tmp_path_factory.mktemp("era-matrix")
    started = []
    try:
        upstream_ports = {}
        for era, script in HTTP_SCRIPTS.items():
            port = free_port()
            managed = start_process(f"http-{era}", [SERVERS_BY_ERA[era][0], str(script), "--port", str(port)], tmp_path)
            started.append(managed)
            upstream_ports[era] = port
        for era, port in upstream_ports.items():
            wait_until(lambda: port_open(port), what=f"{era} HTTP upstream")
        routers, services = [], []
        for era in SERVER_ERAS:
            routers.append(f"""
      stdio-{era}:
        rule: "PathPrefix(`/stdio-{era}`)"
        service: stdio-{era}
        auth: none
      http-{era}:
        rule: "PathPrefix(`/http-{era}`)"
        service: http-{era}
        auth: none""")
            services.append(f"""
      stdio-{era}:
        stdio:
          command: "{SERVERS_BY_ERA[era][0]}"
          args: ["{STDIO_SCRIPTS[era]}"]
      http-{era}:
        http:
          url: "http://127.0.0.1:{upstream_ports[era]}/mcp\"""")
        port = free_port()
        config_path = tmp_path / "gateway.yaml"
        config_path.write_text(f"""
entryPoints:
  web:
    address: "127.0.0.1:{port}"
publicURL: "http://127.0.0.1:{port}"
routers:{''.join(routers)}
services:{''.join(services)}
""")
        managed = start_process("gateway", [gateway_binary(), "serve", "--config", str(config_path)], tmp_path)
        started.append(managed)
        gateway = Gateway(managed, port, config_path)
        wait_until(lambda: httpx.get(gateway.url("/healthz"), timeout=1).status_code == 200, what="gateway /healthz")
        yield gateway
    finally:
        for managed in reversed(started):
            managed.stop()


async def exercise(url: str, mode: str, count_arguments: dict):
    asked = []

    async def on_elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"colour": "saffron"})

    progress = []

    async def on_progress(value, total, message):
        progress.append(value)

    async with Client(url, mode=mode, elicitation_callback=on_elicit) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        echoed = await client.call_tool("echo", {"text": "across eras"})
        counted = await client.call_tool("count", count_arguments, progress_callback=on_progress)
        answered = await client.call_tool("ask", {})
    return names, echoed.content[0].text, counted.content[0].text, progress, asked, answered.content[0].text


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
@pytest.mark.parametrize("server", SERVER_ERAS)
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_cell(matrix_gateway, transport, server, mode):
    url = matrix_gateway.url(f"/{transport}-{server}/mcp")
    names, echoed, counted, progress, asked, answered = anyio.run(exercise, url, mode, SERVERS_BY_ERA[server][1])
    assert {"echo", "count", "ask"} <= names
    assert echoed == "across eras"
    assert counted == "counted 2"
    assert progress == [1, 2]
    assert len(asked) == 1 and "colour" in asked[0].lower()
    assert answered.startswith("user likes saffron"), answered


def test_listen_through_a_session_based_http_upstream_relays_its_list_changes(matrix_gateway):
    # The upstream announces list changes on its session's GET stream; the gateway relays them to
    # a 2026-07-28 client's subscriptions/listen stream, stamped with the subscription's id.
    import httpx

    url = matrix_gateway.url("/http-legacy/mcp")

    def subscribe_and_add(subscription_id: int, tool: str) -> list[dict]:
        # The client closes its subscription after the first list change.
        subscription = Subscription(url, {"toolsListChanged": True, "promptsListChanged": True}, subscription_id, close_after=2)
        subscription.wait_for(1)
        added = httpx.post(url, json=modern_body("tools/call", {"name": "add_tool", "arguments": {"name": tool}}, 6), headers=modern_headers("tools/call", "add_tool"), timeout=30)
        assert f"added {tool}" in added.text
        events = subscription.wait_for(2)
        subscription.join()
        return events

    events = subscribe_and_add(5, "late")
    assert events[0]["method"] == "notifications/subscriptions/acknowledged"
    # The upstream declares tools.listChanged only: prompts are not acknowledged.
    assert events[0]["params"]["notifications"] == {"toolsListChanged": True}
    assert events[1]["method"] == "notifications/tools/list_changed"
    assert events[1]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 5
    # The first subscription closed its upstream stream with it; a new one opens another.
    again = subscribe_and_add(9, "later")
    assert again[1]["method"] == "notifications/tools/list_changed" and again[1]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_resource_subscriptions_through_a_session_based_server(matrix_gateway, transport):
    # listen's resourceSubscriptions become resources/subscribe at the session-based server (and
    # resources/unsubscribe when the subscription closes); only the subscribed URI's updates arrive.
    import json

    import httpx

    url = matrix_gateway.url(f"/{transport}-legacy/mcp")

    def call(tool: str, arguments: dict) -> dict:
        answer = httpx.post(url, json=modern_body("tools/call", {"name": tool, "arguments": arguments}, 3), headers=modern_headers("tools/call", tool), timeout=30)
        return next(json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")) if answer.headers["content-type"].startswith("text/event-stream") \
            else answer.json()

    def text_of(answer: dict) -> str:
        return answer["result"]["content"][0]["text"] if answer["result"]["content"] else ""

    subscription = Subscription(url, {"resourceSubscriptions": ["memo://one"]}, 12, close_after=2)
    events = subscription.wait_for(1)
    assert events[0]["params"]["notifications"] == {"resourceSubscriptions": ["memo://one"]}
    assert text_of(call("subscriptions", {})) == "memo://one"
    call("touch", {"uri": "memo://two"})  # not subscribed: not delivered
    call("touch", {"uri": "memo://one"})
    events = subscription.wait_for(2)
    assert events[1]["method"] == "notifications/resources/updated" and events[1]["params"]["uri"] == "memo://one"
    assert events[1]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 12
    subscription.join()
    # The subscription closed: the server is told to stop.
    wait_until(lambda: text_of(call("subscriptions", {})) == "", timeout=15, what="resources/unsubscribe at the server")
