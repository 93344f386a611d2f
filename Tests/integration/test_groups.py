"""Virtual servers (`services.<s>.group`): a stdio child and two HTTP servers (each written with
the official SDK) behind one MCP endpoint, listed with prefixed names in each `prefix` mode,
called through the official SDK client in both eras with progress and an elicitation through a
member; broadcast tools over tagged members with one member down; a session-based client's
session gets member sessions of its own (a stdio child, an upstream session), opened at first use
and ended with it."""

from __future__ import annotations

import sys

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client, MCPError

from conftest import REPO, SERVERS, Subscription, free_port, modern_body, modern_headers, port_open, start_process, wait_until
from test_attacks import start_gateway

LEGACY_PYTHON = str(REPO / ".venv-legacy" / "bin" / "python")
CATALOGUE_TOOLS = ["count", "get_secret", "get_time", "list_zones", "restart_service"]
MATRIX_TOOLS = ["ask", "ask_user", "count", "echo", "pid"]


def config(catalogue: str, matrix: str, closed_port: int, legacy: str) -> str:
    groups = "".join(f"""
      everything-{mode}:
        group:
          members: [catalogue-stdio, catalogue-http, matrix-http]
          prefix: {mode}""" for mode in ("always", "conditional", "never"))
    routers = "".join(f"""
      {name}: {{rule: "PathPrefix(`/{name}`)", service: {name}, auth: none}}""" for name in
                      ("everything-always", "everything-conditional", "everything-never", "fanout", "dynamic", "per-session"))
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    routers:{routers}
      policed:
        rule: "PathPrefix(`/policed`)"
        service: everything-always
        auth: none
        tools: {{deny: ["*__get_secret", "matrix-http__*"]}}
    services:
      catalogue-stdio:
        tags: [prod, local]
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'catalogue_server.py'}"]
      catalogue-http:
        tags: [prod]
        http:
          url: "{catalogue}/mcp"
      matrix-http:
        http:
          url: "{matrix}/mcp"
      broken-http:
        tags: [prod]
        http:
          url: "http://127.0.0.1:{closed_port}/mcp"
          connectTimeout: 1s{groups}
      kit-stdio:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'raw_stdio_server.py'}"]
      dynamic:
        group:
          members: [kit-stdio, catalogue-http]
      pid-stdio:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'stdio_server.py'}"]
      legacy-http:
        http:
          url: "{legacy}/mcp"
      per-session:
        group:
          members: [pid-stdio, legacy-http]
          prefix: always
      fanout:
        group:
          members: [catalogue-stdio, catalogue-http, broken-http]
          broadcast: true
          broadcastTimeout: 5s
    """


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("groups")
    started = []
    try:
        catalogue_port, matrix_port, legacy_port = free_port(), free_port(), free_port()
        started.append(start_process("catalogue", [sys.executable, str(SERVERS / "catalogue_server.py"), "--port", str(catalogue_port)], tmp))
        started.append(start_process("matrix", [sys.executable, str(SERVERS / "mcp_http_server.py"), "--port", str(matrix_port)], tmp))
        started.append(start_process("legacy", [LEGACY_PYTHON, str(SERVERS / "legacy_server.py"), "--port", str(legacy_port)], tmp))
        wait_until(lambda: port_open(catalogue_port) and port_open(matrix_port) and port_open(legacy_port), what="the HTTP members")
        gateway = start_gateway(tmp, config(f"http://127.0.0.1:{catalogue_port}", f"http://127.0.0.1:{matrix_port}", free_port(),
                                            f"http://127.0.0.1:{legacy_port}"))
        started.append(gateway.managed)
        yield gateway
    finally:
        for managed in reversed(started):
            managed.stop()


async def session_of(url: str, mode: str, calls):
    asked, progress = [], []

    async def on_elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"colour": "saffron"})

    async def on_progress(value, total, message):
        progress.append(value)

    async with Client(url, mode=mode, elicitation_callback=on_elicit) as client:
        names = sorted(tool.name for tool in (await client.list_tools()).tools)
        results = {}
        for key, (tool, arguments) in calls.items():
            try:
                result = await client.call_tool(tool, arguments, progress_callback=on_progress)
                results[key] = " ".join(part.text for part in result.content) if result.content else result
            except MCPError as error:
                results[key] = ("error", error.error.code, error.error.message)
        prompts = sorted(prompt.name for prompt in (await client.list_prompts()).prompts)
        readme = (await client.read_resource("file:///docs/readme")).contents[0].text
    return names, results, progress, asked, prompts, readme


MODES = ["legacy", "2026-07-28"]


@pytest.mark.parametrize("mode", MODES)
def test_always_prefixes_every_name_and_calls_reach_each_member(gateway, mode):
    names, results, progress, asked, prompts, readme = anyio.run(session_of, gateway.url("/everything-always/mcp"), mode, {
        "stdio": ("catalogue-stdio__get_time", {}),
        "http": ("catalogue-http__list_zones", {}),
        "count": ("matrix-http__count", {"steps": 2, "delay_seconds": 0.01}),
        "ask": ("matrix-http__ask", {}),
        "bare": ("get_time", {}),
    })
    expected = sorted([f"catalogue-stdio__{name}" for name in CATALOGUE_TOOLS] + [f"catalogue-http__{name}" for name in CATALOGUE_TOOLS]
                      + [f"matrix-http__{name}" for name in MATRIX_TOOLS])
    assert names == expected
    assert results["stdio"] == "12:00"
    assert "Europe/Paris" in results["http"]
    assert results["count"] == "counted 2" and progress == [1, 2], "progress from a member reaches the client live"
    assert results["ask"].startswith("user likes saffron") and len(asked) == 1, "an elicitation through a member"
    assert results["bare"] == ("error", -32602, "Unknown tool: get_time")
    assert prompts == sorted(["catalogue-stdio__public_greeting", "catalogue-stdio__secret_plan", "catalogue-http__public_greeting", "catalogue-http__secret_plan"])
    assert readme == "read me"


@pytest.mark.parametrize("mode", MODES)
def test_conditional_prefixes_only_names_that_clash(gateway, mode):
    names, results, progress, asked, _, _ = anyio.run(session_of, gateway.url("/everything-conditional/mcp"), mode, {
        "echo": ("echo", {"text": "through the group"}),
        "count": ("catalogue-http__count", {"steps": 2}),
    })
    shared = [f"{member}__{name}" for member in ("catalogue-stdio", "catalogue-http") for name in CATALOGUE_TOOLS]
    assert names == sorted(shared + ["matrix-http__count", "ask", "ask_user", "echo", "pid"])
    assert results["echo"] == "through the group"
    assert results["count"] == "counted 2" and progress == [1, 2]


@pytest.mark.parametrize("mode", MODES)
def test_never_keeps_names_and_the_first_member_wins_a_clash(gateway, mode):
    names, results, progress, _, _, _ = anyio.run(session_of, gateway.url("/everything-never/mcp"), mode, {
        "count": ("count", {"steps": 2}),
        "echo": ("echo", {"text": "x"}),
    })
    assert names == sorted(set(CATALOGUE_TOOLS + MATRIX_TOOLS))
    # `count` is catalogue-stdio's (first in members): its arguments are {steps} only.
    assert results["count"] == "counted 2" and progress == [1, 2]
    assert results["echo"] == "x"
    assert "group members clash" in gateway.managed.log()


@pytest.mark.parametrize("mode", MODES)
def test_a_broadcast_reaches_every_tagged_member_and_reports_the_one_that_failed(gateway, mode):
    async def run():
        async with Client(gateway.url("/fanout/mcp"), mode=mode) as client:
            names = sorted(tool.name for tool in (await client.list_tools()).tools)
            by_tag = await client.call_tool("broadcast__by_tag__prod", {"tool": "get_time", "arguments": {}})
            shared = await client.call_tool("broadcast__get_time", {})
            return names, by_tag, shared

    names, by_tag, shared = anyio.run(run)
    assert "broadcast__by_tag__prod" in names and "broadcast__by_tag__local" in names and "broadcast__get_time" in names
    # The broken member is down: left out of the lists, so a shared tool is broadcast to the two that have it.
    assert not any(name.startswith("broken-http") for name in names)
    results = {entry["member"]: entry for entry in by_tag.structured_content["results"]}
    assert set(results) == {"catalogue-stdio", "catalogue-http", "broken-http"}
    assert results["catalogue-stdio"]["ok"] and results["catalogue-stdio"]["result"]["content"][0]["text"] == "12:00"
    assert results["catalogue-http"]["ok"]
    assert not results["broken-http"]["ok"] and "broken-http" in results["broken-http"]["error"]
    assert all(isinstance(entry["durationMs"], int) for entry in results.values())
    assert not by_tag.is_error and "2 succeeded" in by_tag.content[0].text
    assert [entry["member"] for entry in shared.structured_content["results"]] == ["catalogue-stdio", "catalogue-http"]


def test_a_down_member_and_clashes_are_named_in_the_log_and_readyz(gateway):
    httpx.post(gateway.url("/fanout/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}, headers={
        "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}, timeout=20)
    wait_until(lambda: "group member left out of the lists" in gateway.managed.log() and "broken-http" in gateway.managed.log(), what="the down member logged")
    ready = httpx.get(gateway.url("/readyz"), timeout=10).json()
    assert ready["groups"]["fanout"]["down"] == ["broken-http"]
    # Its tools answer an error naming it.
    call = httpx.post(gateway.url("/fanout/mcp"), json=modern_body("tools/call", {"name": "broken-http__get_time", "arguments": {}}),
                      headers=modern_headers("tools/call", "broken-http__get_time"), timeout=20).json()
    assert call["error"]["code"] == -32603 and "member broken-http" in call["error"]["message"], call
    # `never` keeps the first member's names and reports the clashes.
    httpx.post(gateway.url("/everything-never/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}, headers={
        "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}, timeout=20)
    ready = httpx.get(gateway.url("/readyz"), timeout=10).json()
    assert "count" in ready["groups"]["everything-never"]["clashes"] and "get_time" in ready["groups"]["everything-never"]["clashes"]


@pytest.mark.parametrize("mode", MODES)
def test_policies_apply_to_the_names_a_group_exposes(gateway, mode):
    names, results, _, _, _, _ = anyio.run(session_of, gateway.url("/policed/mcp"), mode, {
        "hidden": ("catalogue-http__get_secret", {}),
        "visible": ("catalogue-http__get_time", {}),
    })
    assert names == sorted(f"{member}__{name}" for member in ("catalogue-stdio", "catalogue-http") for name in CATALOGUE_TOOLS if name != "get_secret")
    assert results["hidden"] == ("error", -32602, "Unknown tool: catalogue-http__get_secret")
    assert results["visible"] == "12:00"


def test_a_session_based_cancellation_ends_the_members_call(gateway):
    import json
    import time

    url = gateway.url("/everything-always/mcp")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "canceller", "version": "1"}}}
    started = httpx.post(url, json=init, headers=headers, timeout=20)
    assert started.status_code == 200, started.text
    assert started.json()["result"]["serverInfo"]["name"] == "everything-always"
    headers["Mcp-Session-Id"] = started.headers["mcp-session-id"]
    httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=20)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "matrix-http__count", "arguments": {"steps": 100, "delay_seconds": 0.1}, "_meta": {"progressToken": "p"}}}
    progress = 0
    began = time.monotonic()
    with httpx.Client(timeout=httpx.Timeout(30)) as client, client.stream("POST", url, json=call, headers=headers) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("method") == "notifications/progress":
                progress += 1
                if progress == 1:
                    cancelled = httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "test"}},
                                           headers=headers, timeout=20)
                    assert cancelled.status_code == 202
    # The call would take 10 s; cancelled, the stream ends at once.
    assert time.monotonic() - began < 5 and progress < 30, (progress, time.monotonic() - began)


def rpc_of(response: httpx.Response) -> dict:
    from test_attacks import rpc_result

    return rpc_result(response)


def test_a_members_list_change_reaches_session_and_2026_clients(gateway):
    """A member announces a new tool: a session-based client's GET stream and a 2026-07-28
    client's subscriptions/listen on the group both hear of it, and the next list has it."""
    from test_policies import StreamListener

    url = gateway.url("/dynamic/mcp")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "listener", "version": "1"}}}
    started = httpx.post(url, json=init, headers=headers, timeout=20)
    headers["Mcp-Session-Id"] = started.headers["mcp-session-id"]
    httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=20)
    listener = StreamListener(url, headers)
    subscription = Subscription(url, {"toolsListChanged": True, "promptsListChanged": True}, 41, close_after=2)
    try:
        ack = subscription.wait_for(1)[0]
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 41
        assert ack["params"]["notifications"] == {"toolsListChanged": True, "promptsListChanged": True}
        # Listening takes a moment to reach the member: announce changes until one is heard
        # (the member announces a change at each add_tool call).
        def heard():
            answer = httpx.post(url, json=modern_body("tools/call", {"name": "add_tool", "arguments": {}}),
                                headers=modern_headers("tools/call", "add_tool"), timeout=20)
            assert answer.status_code == 200, answer.text
            return "notifications/tools/list_changed" in listener.methods() and len(subscription.events) >= 2
        wait_until(heard, interval=0.5, what="the list change on both streams")
        change = subscription.events[1]
        assert change["method"] == "notifications/tools/list_changed"
        assert change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 41
        # The merged list is read again after a change (the member's tools are still there).
        listed = httpx.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=headers, timeout=20)
        assert "add_tool" in [tool["name"] for tool in rpc_of(listed)["result"]["tools"]]
        subscription.join()
    finally:
        listener.close()


@pytest.mark.parametrize("mode", MODES)
def test_sampling_through_a_member_reaches_the_client(gateway, mode):
    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="test-model")

    async def run():
        async with Client(gateway.url("/dynamic/mcp"), mode=mode, sampling_callback=sampling) as client:
            return (await client.call_tool("ask_llm", {})).content[0].text

    assert anyio.run(run) == "model said: 42"


def test_a_client_session_gets_member_sessions_of_its_own_ended_with_it(gateway):
    url = gateway.url("/per-session/mcp")

    async def identities(client) -> tuple[str, str]:
        pid = await client.call_tool("pid-stdio__pid", {})
        upstream_session = await client.call_tool("legacy-http__request_header", {"name": "mcp-session-id"})
        return pid.content[0].text, upstream_session.content[0].text

    async def scenario():
        async with Client(url, mode="legacy") as first:
            a1 = await identities(first)
            a2 = await identities(first)
            async with Client(url, mode="legacy") as second:
                b = await identities(second)
        return a1, a2, b

    (pid_a, session_a), again, (pid_b, session_b) = anyio.run(scenario)
    assert again == (pid_a, session_a), "a client session keeps its member sessions"
    assert pid_a != pid_b and session_a != session_b, "another client session gets its own"
    assert session_a and session_b
    # Both client sessions ended (the client deletes its session on leaving): so did their children.
    def gone(pid: str) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split()[2] == "Z"
        except FileNotFoundError:
            return True

    wait_until(lambda: gone(pid_a) and gone(pid_b), what="the member children of ended client sessions")
