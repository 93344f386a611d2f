"""The stdio bridge with real child processes, driven by the official MCP client in legacy
(session-based) mode, plus raw HTTP for the transport's edges."""

import json
import os
import signal
import sys
import time

import anyio
import httpx
import pytest
from mcp import Client, types

from conftest import LEGACY_TIME_SERVER, SERVERS, wait_until

STDIO_SERVER = str(SERVERS / "stdio_server.py")
RAW_STDIO_SERVER = str(SERVERS / "raw_stdio_server.py")


def config(extra_service_keys: str = "", args: str = "[]", routers_extra: str = "") -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    routers:
      kit:
        rule: "PathPrefix(`/kit`)"
        service: kit
        auth: none
      time:
        rule: "PathPrefix(`/time`)"
        service: time
        auth: none
      raw:
        rule: "PathPrefix(`/raw`)"
        service: raw
        auth: none
      legacytime:
        rule: "PathPrefix(`/legacy-time`)"
        service: legacytime
        auth: none
{routers_extra}
    services:
      kit:
        stdio:
          command: "{sys.executable}"
          args: ["{STDIO_SERVER}"]
          env:
            KIT_FLAVOUR: "test"
{extra_service_keys}
      time:
        stdio:
          command: "mcp-server-time"
          args: ["--local-timezone=UTC"]
      raw:
        stdio:
          command: "{sys.executable}"
          args: ["{RAW_STDIO_SERVER}"]
      legacytime:
        stdio:
          command: "{LEGACY_TIME_SERVER}"
          args: ["--local-timezone=UTC"]
    """


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once reaped by the gateway.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) children of `pid`, whichever of its threads spawned them."""
    children = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += [int(child) for child in handle.read().split()]
        except FileNotFoundError:
            continue
    return sorted(child for child in children if alive(child))


@pytest.fixture
def gateway(start_gateway):
    return start_gateway(config(), env={"GATEWAY_SECRET": "must-not-leak"})


def run(coroutine_function, *args):
    return anyio.run(coroutine_function, *args)


def test_mcp_server_time_over_stdio(gateway):
    async def scenario():
        async with Client(gateway.url("/time/mcp"), mode="legacy") as client:
            assert client.protocol_version == "2025-11-25"
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names == {"get_current_time", "convert_time"}
            result = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert json.loads(result.content[0].text)["timezone"] == "UTC"

    run(scenario)
    # The client's DELETE on exit ended the child.
    wait_until(lambda: children_of(gateway.managed.pid) == [], timeout=10, what="child reaped after DELETE")


def test_legacy_only_mcp_server_time(gateway):
    assert LEGACY_TIME_SERVER.exists(), "run scripts/legacy-venv.sh (just test does)"

    async def scenario():
        async with Client(gateway.url("/legacy-time/mcp"), mode="legacy") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names == {"get_current_time", "convert_time"}
            result = await client.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"})
            assert "Europe/Paris" in result.content[0].text

    run(scenario)


def test_progress_arrives_before_the_result(gateway):
    async def scenario():
        times = []

        async def on_progress(progress, total, message):
            times.append(time.monotonic())

        async with Client(gateway.url("/kit/mcp"), mode="legacy") as client:
            result = await client.call_tool("count", {"steps": 4, "delay_seconds": 0.25}, progress_callback=on_progress)
            done = time.monotonic()
            assert result.content[0].text == "counted 4"
            assert len(times) == 4
            assert done - times[0] > 0.6

    run(scenario)


def test_sampling_and_elicitation_round_trips(gateway):
    async def sampling(context, params):
        question = params.messages[0].content.text
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=f"42 ({question})"), model="test-model")

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async def scenario():
        async with Client(gateway.url("/kit/mcp"), mode="legacy", sampling_callback=sampling, elicitation_callback=elicitation) as client:
            answer = await client.call_tool("ask_llm", {"question": "meaning of life?"})
            assert answer.content[0].text == "model said: 42 (meaning of life?)"
            liked = await client.call_tool("ask_user", {})
            assert liked.content[0].text == "user likes teal"

    run(scenario)


def test_list_changed_reaches_the_client(gateway):
    async def scenario():
        received = anyio.Event()

        async def handler(message):
            if isinstance(message, types.ServerNotification) and isinstance(message, types.ToolListChangedNotification):
                received.set()
            elif getattr(message, "method", None) == "notifications/tools/list_changed":
                received.set()

        async with Client(gateway.url("/kit/mcp"), mode="legacy", message_handler=handler) as client:
            result = await client.call_tool("add_tool", {"name": "shiny"})
            assert result.content[0].text == "added shiny"
            with anyio.fail_after(10):
                await received.wait()
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "shiny" in names

    run(scenario)


def test_ten_megabyte_result(gateway):
    async def scenario():
        async with Client(gateway.url("/kit/mcp"), mode="legacy") as client:
            result = await client.call_tool("big", {"megabytes": 10})
            assert len(result.content[0].text) == 10 * 1024 * 1024

    run(scenario)


def test_child_environment_is_minimal(gateway):
    async def scenario():
        async with Client(gateway.url("/kit/mcp"), mode="legacy") as client:
            result = await client.call_tool("environment", {})
            return json.loads(result.content[0].text) if result.content[0].text.startswith("[") else [c.text for c in result.content]

    names = set(run(scenario))
    assert "GATEWAY_SECRET" not in names
    assert "KIT_FLAVOUR" in names
    assert names <= {"PATH", "HOME", "LANG", "KIT_FLAVOUR", "LC_CTYPE"}


def test_noisy_stderr_does_not_block_the_child(gateway):
    async def scenario():
        async with Client(gateway.url("/kit/mcp"), mode="legacy") as client:
            noisy = await client.call_tool("spam_stderr", {"lines": 50_000})
            assert noisy.content[0].text == "wrote 50000 lines"
            assert (await client.call_tool("echo", {"text": "after"})).content[0].text == "after"

    run(scenario)
    log = gateway.managed.log()
    assert "child stderr" in log and "service=kit" in log
    # The suppressed count is reported when the rate window closes, even after the burst ended.
    wait_until(lambda: "lines suppressed" in gateway.managed.log(), timeout=15, what="suppressed-lines report")


def test_non_json_stdout_line_is_logged_and_skipped(gateway):
    async def scenario():
        async with Client(gateway.url("/raw/mcp"), mode="legacy") as client:
            garbage = await client.call_tool("garbage", {})
            assert garbage.content[0].text == "still fine"
            assert (await client.call_tool("echo", {"text": "after"})).content[0].text == "after"

    run(scenario)
    log = gateway.managed.log()
    assert "not a JSON-RPC message; skipped" in log and "this is not JSON" in log


def test_crash_mid_request_errors_the_request_and_ends_the_session(gateway):
    from mcp.shared.exceptions import MCPError

    async def scenario():
        async with Client(gateway.url("/kit/mcp"), mode="legacy") as client:
            child = int((await client.call_tool("pid", {})).content[0].text)
            with pytest.raises(MCPError) as failure:
                await client.call_tool("crash", {})
            assert failure.value.error.code == -32603
            assert "exit status 3" in failure.value.error.message
            return child

    child_pid = run(scenario)
    wait_until(lambda: not alive(child_pid), timeout=10, what="crashed child reaped")
    log = gateway.managed.log()
    assert "child exited" in log and "exit status 3" in log and "service=kit" in log


def raw_initialize(gateway, path="/kit/mcp", version="2025-11-25"):
    body = {"jsonrpc": "2.0", "id": "init-1", "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    response = httpx.post(gateway.url(path), json=body, headers={"Accept": "application/json, text/event-stream"}, timeout=30)
    return response


def raw_session(gateway, version="2025-11-25") -> dict:
    """Initializes a session over raw HTTP (including notifications/initialized); returns the
    headers for requests in it."""
    init = raw_initialize(gateway, version=version)
    assert init.status_code == 200
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": version}
    assert httpx.post(gateway.url("/kit/mcp"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers).status_code == 202
    return headers


def test_transport_edges_over_raw_http(gateway):
    url = gateway.url("/kit/mcp")
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    missing = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=accept)
    assert missing.status_code == 400
    unknown = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={**accept, "Mcp-Session-Id": "f" * 32})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == -32001

    init = raw_initialize(gateway)
    assert init.status_code == 200 and init.headers["content-type"].startswith("application/json")
    session = init.headers["mcp-session-id"]
    assert len(session) >= 32 and all(33 <= ord(c) <= 126 for c in session)
    assert init.json()["id"] == "init-1"
    headers = {**accept, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}

    assert httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers).status_code == 202
    listed = httpx.post(url, json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"}, headers=headers)
    assert listed.status_code == 200 and listed.json()["id"] == 99
    # Client ids are restored exactly, whatever their form, even ones the gateway might use itself.
    for client_id in [1, "1", "x\"y", 0, -5]:
        answer = httpx.post(url, json={"jsonrpc": "2.0", "id": client_id, "method": "ping"}, headers=headers)
        assert answer.json()["id"] == client_id
    parse_error = httpx.post(url, content=b"{not json", headers=headers)
    assert parse_error.status_code == 400 and parse_error.json()["error"]["code"] == -32700
    not_rpc = httpx.post(url, content=b'{"hello": 1}', headers=headers)
    assert not_rpc.status_code == 400 and not_rpc.json()["error"]["code"] == -32600
    batch = httpx.post(url, content=b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', headers=headers)
    assert batch.status_code == 400
    bad_version = httpx.post(url, json={"jsonrpc": "2.0", "id": 5, "method": "ping"}, headers={**headers, "MCP-Protocol-Version": "1999-01-01"})
    assert bad_version.status_code == 400
    again = httpx.post(url, json={"jsonrpc": "2.0", "id": 6, "method": "initialize", "params": {}}, headers=headers)
    assert again.status_code == 400

    with httpx.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}, timeout=10) as first_stream:
        assert first_stream.status_code == 200
        second = httpx.get(url, headers={**headers, "Accept": "text/event-stream"}, timeout=10)
        assert second.status_code == 409
    assert httpx.get(url, headers={**headers, "Accept": "application/json"}).status_code == 406

    deleted = httpx.delete(url, headers=headers)
    assert deleted.status_code == 204
    assert httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "ping"}, headers=headers).status_code == 404
    assert httpx.delete(url, headers=headers).status_code == 404


def test_session_header_variants_name_the_session_exactly_or_not_at_all(gateway):
    """Through the fast relay (a ready session on one instance): a header name in another case is
    the same header; an underscore variant is another header (no session named: 400); the id sent
    twice, even the same id, names no session (404), as the full pipeline reads it."""
    url = gateway.url("/kit/mcp")
    headers = raw_session(gateway)
    session = headers.pop("Mcp-Session-Id")
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    lower = httpx.post(url, json=ping, headers={**headers, "mcp-session-id": session})
    assert lower.status_code == 200 and lower.json()["id"] == 1
    underscore = httpx.post(url, json=ping, headers={**headers, "Mcp_Session_Id": session})
    assert underscore.status_code == 400
    twice = httpx.post(url, json=ping, headers=[*headers.items(), ("Mcp-Session-Id", session), ("Mcp-Session-Id", session)])
    assert twice.status_code == 404 and twice.json()["error"]["code"] == -32001
    # The session still serves its own client.
    assert httpx.post(url, json=ping, headers={**headers, "Mcp-Session-Id": session}).status_code == 200


def test_batches_are_accepted_for_2025_03_26(gateway):
    url = gateway.url("/kit/mcp")
    init = raw_initialize(gateway, version="2025-03-26")
    assert init.json()["result"]["protocolVersion"] == "2025-03-26"
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-03-26"}
    # The batch carries notifications/initialized itself, so this test does not use raw_session.
    batch = [{"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": "a", "method": "ping"}, {"jsonrpc": "2.0", "id": "b", "method": "tools/list"}]
    response = httpx.post(url, json=batch, headers=headers, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    ids = sorted(json.loads(line[6:])["id"] for line in response.text.splitlines() if line.startswith("data: "))
    assert ids == ["a", "b"]


def test_broken_stream_resumes_with_last_event_id(gateway):
    url = gateway.url("/kit/mcp")
    headers = raw_session(gateway)
    call = {"jsonrpc": "2.0", "id": "c1", "method": "tools/call",
            "params": {"name": "count", "arguments": {"steps": 4, "delay_seconds": 0.3}, "_meta": {"progressToken": "tok"}}}
    last_id = None
    with httpx.stream("POST", url, json=call, headers=headers, timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("id: "):
                last_id = line[4:]
            if line.startswith("data: "):
                break  # drop the connection after the first event
    assert last_id
    resumed = httpx.get(url, headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last_id}, timeout=10)
    events = [json.loads(line[6:]) for line in resumed.text.splitlines() if line.startswith("data: ")]
    progress = [e["params"]["progress"] for e in events if e.get("method") == "notifications/progress"]
    assert progress == [2, 3, 4]
    assert events[-1]["id"] == "c1" and events[-1]["result"]["content"][0]["text"] == "counted 4"


def test_silent_child_times_out_with_504_and_is_killed(start_gateway):
    gateway = start_gateway(config(routers_extra="""
      silent:
        rule: "PathPrefix(`/silent`)"
        service: silent
        auth: none
    """).replace("    services:\n", f"""    services:
      silent:
        stdio:
          command: "{sys.executable}"
          args: ["{STDIO_SERVER}", "--silent-start"]
          startTimeout: "1s"
          shutdownGrace: "1s"
"""))
    started = time.monotonic()
    response = raw_initialize(gateway, path="/silent/mcp")
    assert response.status_code == 504
    assert 0.9 < time.monotonic() - started < 10
    assert response.json()["error"]["data"]["service"] == "silent"
    wait_until(lambda: children_of(gateway.managed.pid) == [], timeout=10, what="silent child killed")


def test_child_that_cannot_start(start_gateway):
    gateway = start_gateway(config(routers_extra="""
      broken:
        rule: "PathPrefix(`/broken`)"
        service: broken
        auth: none
      missing:
        rule: "PathPrefix(`/missing`)"
        service: missing
        auth: none
    """).replace("    services:\n", f"""    services:
      broken:
        stdio:
          command: "{sys.executable}"
          args: ["{STDIO_SERVER}", "--crash-on-start"]
      missing:
        stdio:
          command: "no-such-mcp-server-anywhere"
"""))
    crashed = raw_initialize(gateway, path="/broken/mcp")
    assert crashed.status_code == 502
    assert "exit status 7" in crashed.json()["error"]["message"]
    missing = raw_initialize(gateway, path="/missing/mcp")
    assert missing.status_code == 502
    assert "not found in PATH" in missing.json()["error"]["message"]


def test_max_sessions_gives_503_with_retry_after(start_gateway):
    gateway = start_gateway(config("          maxSessions: 2"))
    first, second = raw_initialize(gateway), raw_initialize(gateway)
    assert first.status_code == 200 and second.status_code == 200
    third = raw_initialize(gateway)
    assert third.status_code == 503
    assert third.headers["retry-after"]
    # Ending one session frees a slot.
    headers = {"Mcp-Session-Id": first.headers["mcp-session-id"]}
    assert httpx.delete(gateway.url("/kit/mcp"), headers=headers).status_code == 204
    assert raw_initialize(gateway).status_code == 200


def test_idle_sessions_are_reaped(start_gateway):
    gateway = start_gateway(config('          idleTimeout: "1s"'))
    init = raw_initialize(gateway)
    session = init.headers["mcp-session-id"]
    assert len(children_of(gateway.managed.pid)) == 1
    wait_until(lambda: children_of(gateway.managed.pid) == [], timeout=15, what="idle child reaped")
    gone = httpx.post(gateway.url("/kit/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"Mcp-Session-Id": session})
    assert gone.status_code == 404
    assert "idle for" in gateway.managed.log()


def test_spares_serve_initialize_without_a_new_spawn(start_gateway):
    gateway = start_gateway(config("          spares: 2"))
    wait_until(lambda: gateway.readiness()["stdio"]["kit"]["spares"] == 2, timeout=30, what="two spares started")
    spares = set(children_of(gateway.managed.pid))
    assert len(spares) == 2
    init = raw_initialize(gateway)
    assert init.status_code == 200
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    answer = httpx.post(gateway.url("/kit/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "pid", "arguments": {}}}, headers=headers, timeout=30)
    serving_pid = int(answer.json()["result"]["content"][0]["text"])
    # The session runs on a child that was already waiting, and the spare it used is replaced.
    assert serving_pid in spares
    wait_until(lambda: gateway.readiness()["stdio"]["kit"] == {"sessions": 1, "spares": 2}, timeout=30, what="spare replenished")
    assert len(children_of(gateway.managed.pid)) == 3


def test_gateway_shutdown_ends_every_child(start_gateway):
    gateway = start_gateway(config())
    sessions = [raw_initialize(gateway) for _ in range(3)]
    assert all(response.status_code == 200 for response in sessions)
    pids = children_of(gateway.managed.pid)
    assert len(pids) == 3
    os.kill(gateway.managed.pid, signal.SIGTERM)
    assert gateway.managed.process.wait(timeout=30) == 0
    for pid in pids:
        wait_until(lambda: not alive(pid), timeout=5, what=f"child {pid} gone")


def test_request_timeout_errors_the_request_and_cancels_it_in_the_child(start_gateway):
    from mcp.shared.exceptions import MCPError

    gateway = start_gateway(config('          requestTimeout: "1s"'))

    async def scenario():
        async with Client(gateway.url("/kit/mcp"), mode="legacy") as client:
            started = time.monotonic()
            with pytest.raises(MCPError) as failure:
                await client.call_tool("hang", {})
            assert 0.9 < time.monotonic() - started < 10
            assert "timed out" in failure.value.error.message
            # The session survives: the next request is answered.
            assert (await client.call_tool("echo", {"text": "still here"})).content[0].text == "still here"

    run(scenario)
    assert "request timed out; cancelled" in gateway.managed.log()


def test_list_changed_goes_to_the_get_stream_not_the_request_stream(gateway):
    url = gateway.url("/kit/mcp")
    headers = raw_session(gateway)
    with httpx.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}, timeout=10) as get_stream:
        assert get_stream.status_code == 200
        call = {"jsonrpc": "2.0", "id": "add", "method": "tools/call", "params": {"name": "add_tool", "arguments": {"name": "fresh"}}}
        posted = httpx.post(url, json=call, headers=headers, timeout=10)
        # The POST carries only its result (JSON), the notification went elsewhere.
        assert posted.headers["content-type"].startswith("application/json")
        assert posted.json()["result"]["content"][0]["text"] == "added fresh"
        lines = get_stream.iter_lines()
        event = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))
        assert event["method"] == "notifications/tools/list_changed"
