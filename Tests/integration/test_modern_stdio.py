"""2026-07-28 (stateless) clients on stdio routes: the official SDK client in `2026-07-28` and
`auto` modes against a legacy-only child (mcp-server-time 2025 release) and a dual-era child (the
current release), plus the transport's header rules. The gateway initializes each child itself and
translates (issue 6, first slice)."""

import sys

import anyio
import httpx
import pytest
from mcp import Client

from conftest import LEGACY_TIME_SERVER, SERVERS, Subscription, modern_body, modern_headers, wait_until


def config(time_command: str) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    routers:
      time:
        rule: "PathPrefix(`/time`)"
        service: time
        auth: none
      kit:
        rule: "PathPrefix(`/kit`)"
        service: kit
        auth: none
    services:
      time:
        stdio:
          command: "{time_command}"
          args: ["--local-timezone=UTC"]
      kit:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'stdio_server.py'}"]
    """


async def list_and_call(url: str, mode: str):
    async with Client(url, mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("get_current_time", {"timezone": "UTC"})
        return names, result.content[0].text


@pytest.mark.parametrize("child", ["legacy-only", "dual-era"])
@pytest.mark.parametrize("mode", ["2026-07-28", "auto", "legacy"])
def test_every_client_mode_reaches_every_child_era(start_gateway, child, mode):
    command = str(LEGACY_TIME_SERVER) if child == "legacy-only" else "mcp-server-time"
    gateway = start_gateway(config(command))
    names, text = anyio.run(list_and_call, gateway.url("/time/mcp"), mode)
    assert names == {"get_current_time", "convert_time"}
    assert '"timezone": "UTC"' in text


def test_discover_call_and_header_rules(start_gateway):
    gateway = start_gateway(config("mcp-server-time"))
    url = gateway.url("/kit/mcp")
    discover = httpx.post(url, json=modern_body("server/discover"), headers=modern_headers("server/discover"), timeout=30)
    assert discover.status_code == 200, discover.text
    result = discover.json()["result"]
    assert result["resultType"] == "complete" and result["supportedVersions"] == ["2026-07-28"]
    assert "tools" in result["capabilities"] and result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"]

    call = httpx.post(url, json=modern_body("tools/call", {"name": "echo", "arguments": {"text": "héllo"}}, id=7),
                      headers=modern_headers("tools/call", "echo"), timeout=30)
    assert call.status_code == 200 and call.json()["id"] == 7
    assert call.json()["result"]["resultType"] == "complete" and call.json()["result"]["content"][0]["text"] == "héllo"
    # Base64-sentinel encoded Mcp-Name decodes to the same name.
    encoded = httpx.post(url, json=modern_body("tools/call", {"name": "echo", "arguments": {"text": "x"}}),
                         headers=modern_headers("tools/call", "=?base64?ZWNobw==?="), timeout=30)
    assert encoded.status_code == 200, encoded.text

    mismatched = httpx.post(url, json=modern_body("tools/call", {"name": "echo", "arguments": {"text": "x"}}),
                            headers=modern_headers("tools/call", "pid"), timeout=10)
    assert mismatched.status_code == 400 and mismatched.json()["error"]["code"] == -32020
    wrong_method = httpx.post(url, json=modern_body("tools/list"), headers=modern_headers("tools/call"), timeout=10)
    assert wrong_method.status_code == 400 and wrong_method.json()["error"]["code"] == -32020
    missing = httpx.post(url, json=modern_body("tools/list"), headers={"MCP-Protocol-Version": "2026-07-28"}, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == -32020
    body = modern_body("tools/list")
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2027-01-01"
    assert httpx.post(url, json=body, headers=modern_headers("tools/list"), timeout=10).json()["error"]["code"] == -32020
    unsupported = httpx.post(url, json=modern_body("tools/list"), headers={**modern_headers("tools/list"), "MCP-Protocol-Version": "2031-01-01"}, timeout=10)
    assert unsupported.status_code == 400 and unsupported.json()["error"]["code"] == -32022
    assert "2026-07-28" in unsupported.json()["error"]["data"]["supported"]
    for method in ("GET", "DELETE"):
        assert httpx.request(method, url, headers=modern_headers("tools/list"), timeout=10).status_code == 405
    # Session headers are ignored for modern requests.
    ignored = httpx.post(url, json=modern_body("tools/list"), headers={**modern_headers("tools/list"), "Mcp-Session-Id": "nonexistent"}, timeout=10)
    assert ignored.status_code == 200 and ignored.json()["result"]["resultType"] == "complete"


def test_progress_reaches_a_modern_client(start_gateway):
    gateway = start_gateway(config("mcp-server-time"))

    async def run():
        updates = []

        async def on_progress(progress, total, message):
            updates.append(progress)

        async with Client(gateway.url("/kit/mcp"), mode="2026-07-28") as client:
            result = await client.call_tool("count", {"steps": 3, "delay_seconds": 0.01}, progress_callback=on_progress)
            return result.content[0].text, updates

    text, updates = anyio.run(run)
    assert text == "counted 3" and updates == [1, 2, 3]


def test_closing_the_stream_cancels_the_request_in_the_child(start_gateway, tmp_path):

    gateway = start_gateway(config("mcp-server-time"))
    url = gateway.url("/kit/mcp")
    marker = tmp_path / "cancelled.txt"
    body = modern_body("tools/call", {"name": "wait_for_cancel", "arguments": {"marker": str(marker)}})
    # Warm the child first, so the request below is in the child when the client goes away.
    assert httpx.post(url, json=modern_body("tools/list"), headers=modern_headers("tools/list"), timeout=30).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=modern_headers("tools/call", "wait_for_cancel"), timeout=httpx.Timeout(10, read=1.0))
    wait_until(lambda: marker.exists(), timeout=10, what="the child saw notifications/cancelled")
    assert "request cancelled" in gateway.managed.log()
    # The child is still usable afterwards.
    again = httpx.post(url, json=modern_body("tools/call", {"name": "echo", "arguments": {"text": "still here"}}),
                       headers=modern_headers("tools/call", "echo"), timeout=30)
    assert again.json()["result"]["content"][0]["text"] == "still here"


def pid_of(url: str, token: str | None = None) -> int:
    headers = modern_headers("tools/call", "pid")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    answer = httpx.post(url, json=modern_body("tools/call", {"name": "pid", "arguments": {}}), headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["result"]["content"][0]["text"])


def test_warm_pool_and_shared_isolation(start_gateway):

    text = config("mcp-server-time").replace(f'''      kit:
        stdio:
          command: "{sys.executable}"''', f'''      kit:
        stdio:
          isolation: shared
          pool: {{ min: 2, max: 2 }}
          command: "{sys.executable}"''')
    gateway = start_gateway(text)
    # Two children are started and initialized before any request arrives.
    wait_until(lambda: gateway.readiness()["stdio"].get("kit", {}).get("sessions") == 2, what="two warm children")
    url = gateway.url("/kit/mcp")
    first = pid_of(url)
    assert pid_of(url) == first  # an idle child is reused, not another spawned
    # Shared children count toward the minimum: still two children, none spawned on the request path.
    assert gateway.readiness()["stdio"]["kit"]["sessions"] == 2
    assert gateway.managed.log().count("session started") == 2


def test_user_isolation_never_shares_a_child(start_gateway, redis_server, fake_github, local_password_hash):
    from oauth_helpers import access_token_for
    from test_oauth import config as oauth_config

    text = oauth_config(redis_server.url, fake_github, local_password_hash).replace('''      time:
        stdio:
          command: "mcp-server-time"''', f'''      time:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'stdio_server.py'}"]
          pool: {{ min: 1, max: 1 }}''')
    gateway = start_gateway(text)
    resource = gateway.url("/time/mcp")

    alice = access_token_for(gateway, fake_github, "octocat", 1, resource)
    bob = access_token_for(gateway, fake_github, "carol", 2, resource)
    alice_pid = pid_of(resource, alice)
    bob_pid = pid_of(resource, bob)
    assert alice_pid != bob_pid
    for _ in range(5):
        assert pid_of(resource, bob) == bob_pid and pid_of(resource, alice) == alice_pid


def modern_only_config() -> str:
    return config("mcp-server-time").replace(f'''      kit:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'stdio_server.py'}"]''', f'''      kit:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'modern_stdio_server.py'}"]''')


def test_modern_client_reaches_a_modern_only_child_directly(start_gateway):
    gateway = start_gateway(modern_only_config())

    async def run():
        updates = []

        async def on_progress(progress, total, message):
            updates.append(progress)

        async with Client(gateway.url("/kit/mcp"), mode="2026-07-28") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            echoed = await client.call_tool("echo", {"text": "direct"})
            counted = await client.call_tool("count", {"steps": 2}, progress_callback=on_progress)
            return names, echoed.content[0].text, counted.content[0].text, updates

    names, echoed, counted, updates = anyio.run(run)
    assert {"echo", "pid", "count", "whoami"} <= names
    assert echoed == "direct" and counted == "counted 2" and updates == [1, 2]
    discover = httpx.post(gateway.url("/kit/mcp"), json=modern_body("server/discover"), headers=modern_headers("server/discover"), timeout=30).json()
    assert discover["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "modern-stdio"


def test_session_based_client_reaches_a_modern_only_child(start_gateway):
    import mcp_types as types

    gateway = start_gateway(modern_only_config())

    async def run(mode):
        async with Client(gateway.url("/kit/mcp"), mode=mode, client_info=types.Implementation(name="legacy-client", version="1")) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            echoed = await client.call_tool("echo", {"text": "translated"})
            who = await client.call_tool("whoami", {})
            return names, echoed.content[0].text, who.content[0].text

    for mode in ("legacy", "auto"):
        names, echoed, who = anyio.run(run, mode)
        assert {"echo", "whoami"} <= names and echoed == "translated"
        # The gateway stamped the client's own identity from initialize into _meta.
        assert who == "legacy-client"


def test_a_legacy_childs_asks_become_multi_round_trip_requests(start_gateway):
    """A session-based child asks the client (elicitation, sampling) in the middle of a tool call;
    a 2026-07-28 client gets an InputRequiredResult, answers it on its retry, and receives the
    original call's result. The SDK client drives the retries itself."""
    import mcp_types as types

    text = config("mcp-server-time").replace(f"args: [\"{SERVERS / 'stdio_server.py'}\"]", f"args: [\"{SERVERS / 'raw_stdio_server.py'}\"]")
    gateway = start_gateway(text)

    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="test-model")

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async def run():
        async with Client(gateway.url("/kit/mcp"), mode="2026-07-28", sampling_callback=sampling, elicitation_callback=elicitation) as client:
            liked = await client.call_tool("ask_user", {})
            said = await client.call_tool("ask_llm", {})
            return liked.content[0].text, said.content[0].text

    liked, said = anyio.run(run)
    assert liked == "user likes teal" and said == "model said: 42"

    # A client that declared no elicitation: the gateway refuses the ask to the child instead.
    body = modern_body("tools/call", {"name": "ask_user", "arguments": {}})
    refused = httpx.post(gateway.url("/kit/mcp"), json=body, headers=modern_headers("tools/call", "ask_user"), timeout=30).json()
    assert "did not declare support for elicitation/create" in refused["result"]["content"][0]["text"]
    # A forged requestState is refused.
    forged = modern_body("tools/call", {"name": "ask_user", "arguments": {}, "requestState": "0" * 48, "inputResponses": {}})
    answer = httpx.post(gateway.url("/kit/mcp"), json=forged, headers=modern_headers("tools/call", "ask_user"), timeout=30).json()
    assert answer["error"]["code"] == -32602


def test_quiet_sse_streams_get_keep_alive_comments(start_gateway):
    text = config("mcp-server-time").replace(f"args: [\"{SERVERS / 'stdio_server.py'}\"]", f"args: [\"{SERVERS / 'raw_stdio_server.py'}\"]\n          sseKeepAlive: \"200ms\"")
    gateway = start_gateway(text)
    body = modern_body("tools/call", {"name": "slow", "arguments": {"seconds": 1.2}})
    body["params"]["_meta"]["progressToken"] = "p1"
    with httpx.stream("POST", gateway.url("/kit/mcp"), json=body, headers=modern_headers("tools/call", "slow"), timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = "".join(response.iter_text())
    assert ": keep-alive" in stream
    assert stream.index("notifications/progress") < stream.index(": keep-alive") < stream.index("slow done")
    assert '"resultType":"complete"' in stream.replace(" ", "")


def test_subscriptions_listen_delivers_a_translated_childs_list_changes(start_gateway):
    text = config("mcp-server-time").replace(f"args: [\"{SERVERS / 'stdio_server.py'}\"]", f"args: [\"{SERVERS / 'raw_stdio_server.py'}\"]")
    gateway = start_gateway(text)
    url = gateway.url("/kit/mcp")
    subscription = Subscription(url, {"toolsListChanged": True, "promptsListChanged": True}, 41, close_after=2)
    events = subscription.wait_for(1)
    ack = events[0]
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 41
    # The child announces tool changes only: prompts are not acknowledged.
    assert ack["params"]["notifications"] == {"toolsListChanged": True}
    call = httpx.post(url, json=modern_body("tools/call", {"name": "add_tool", "arguments": {}}), headers=modern_headers("tools/call", "add_tool"), timeout=30)
    assert call.json()["result"]["content"][0]["text"] == "added"
    events = subscription.wait_for(2)
    assert events[1]["method"] == "notifications/tools/list_changed"
    assert events[1]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 41
    subscription.join()


def test_input_required_from_a_modern_only_child_is_a_precise_error_for_a_session_based_client(start_gateway):
    from mcp.shared.exceptions import MCPError

    gateway = start_gateway(modern_only_config())

    async def run():
        async with Client(gateway.url("/kit/mcp"), mode="legacy") as client:
            try:
                await client.call_tool("ask", {})
            except MCPError as error:
                return str(error)
            return "no error"

    message = anyio.run(run)
    assert "asked for elicitation/create" in message and "session-based client" in message


def test_a_modern_only_childs_input_request_reaches_a_session_based_client_as_an_ask(start_gateway):
    import mcp_types as types

    gateway = start_gateway(modern_only_config())

    async def elicitation(context, params):
        assert params.message == "Favourite colour?"
        return types.ElicitResult(action="accept", content={"colour": "indigo"})

    async def run():
        async with Client(gateway.url("/kit/mcp"), mode="legacy", elicitation_callback=elicitation) as client:
            return (await client.call_tool("ask", {})).content[0].text

    # The gateway relayed the child's InputRequiredResult as elicitation/create on the client's
    # stream, retried with the answer and the child's requestState, and returned the final result.
    assert anyio.run(run) == "user likes indigo (state opaque)"


def test_a_retry_returns_to_the_child_that_asked(start_gateway, tmp_path):
    # A dual-era SDK child seals its requestState with a key of its own process: with two children
    # in the pool, the retry must reach the child that asked, even when that one is busy and a
    # request would otherwise go to (or start) another.
    import json
    import threading

    import mcp_types as types

    text = config("mcp-server-time").replace(f'''      kit:
        stdio:
          command: "{sys.executable}"''', f'''      kit:
        stdio:
          pool: {{ max: 2 }}
          command: "{sys.executable}"''')
    gateway = start_gateway(text)
    url = gateway.url("/kit/mcp")
    busy_started, release = threading.Event(), threading.Event()
    marker = tmp_path / "busy-call-ended"

    def keep_the_asking_child_busy():
        # A call that runs until this test closes its stream (which cancels it in the child).
        body = modern_body("tools/call", {"name": "wait_for_cancel", "arguments": {"marker": str(marker)}})
        body["params"]["_meta"]["progressToken"] = "busy"
        with httpx.stream("POST", url, json=body, headers=modern_headers("tools/call", "wait_for_cancel"), timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("method") == "notifications/progress":
                    busy_started.set()
                    release.wait(30)
                    return

    async def on_elicit(context, params):
        # The only child (it answered the first round) gets a long call before the retry is sent.
        threading.Thread(target=keep_the_asking_child_busy, daemon=True).start()
        assert await anyio.to_thread.run_sync(busy_started.wait, 20)
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async def run():
        async with Client(url, mode="2026-07-28", elicitation_callback=on_elicit) as client:
            return (await client.call_tool("ask", {})).content[0].text

    # Without the affinity the retry reaches another child, which cannot unseal the state.
    try:
        assert anyio.run(run) == "user likes teal"
    finally:
        release.set()
    # The busy call was still running when the retry was answered: it ends only now.
    wait_until(marker.exists, timeout=15, what="the busy call cancelled in the child")


def test_a_modern_childs_listen_stream_and_requests_end_cleanly_when_it_goes(start_gateway):
    # The child holds a subscriptions/listen stream open; when its process ends, the stream ends
    # with a completion result and an unanswered request with a retryable error, not a cut stream.
    gateway = start_gateway(modern_only_config())
    url = gateway.url("/kit/mcp")
    subscription = Subscription(url, {"toolsListChanged": True}, 77)
    subscription.wait_for(1)
    # A list change the child names the subscription for reaches the listen stream, not the
    # stream of the call that caused it.
    announce = httpx.post(url, json=modern_body("tools/call", {"name": "announce", "arguments": {}}, id=79), headers=modern_headers("tools/call", "announce"), timeout=30)
    assert announce.headers["content-type"].startswith("application/json") and announce.json()["result"]["content"][0]["text"] == "announced to 1"
    events = subscription.wait_for(2)
    assert events[1]["method"] == "notifications/tools/list_changed"
    assert events[1]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 77
    died = httpx.post(url, json=modern_body("tools/call", {"name": "exit", "arguments": {}}, id=78), headers=modern_headers("tools/call", "exit"), timeout=30)
    assert died.json()["id"] == 78 and died.json()["error"]["code"] == -32603 and "process ended" in died.json()["error"]["message"]
    subscription.join()
    # The acknowledgment names the client's own request id (the child saw a gateway-assigned one).
    assert events[0]["method"] == "notifications/subscriptions/acknowledged"
    assert events[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 77
    assert events[-1] == {"jsonrpc": "2.0", "id": 77, "result": {"resultType": "complete"}}
    # The next request gets a new child.
    again = httpx.post(url, json=modern_body("tools/call", {"name": "echo", "arguments": {"text": "back"}}), headers=modern_headers("tools/call", "echo"), timeout=30)
    assert again.json()["result"]["content"][0]["text"] == "back"


def test_session_based_clients_reach_an_sdk_server_that_speaks_only_2026_07_28(start_gateway):
    """An SDK 2.x server that refuses initialize binds its process to the handshake era on that
    first request, so server/discover on the same process fails: the gateway starts a fresh child
    with server/discover, and starts every later child of the service that way."""
    from mcp import Client

    gateway = start_gateway(f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    routers:
      modern:
        rule: "PathPrefix(`/modern`)"
        service: modern
        auth: none
    services:
      modern:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'sdk_modern_stdio_server.py'}"]
    """)

    async def session() -> tuple[set[str], str]:
        async with Client(gateway.url("/modern/mcp"), mode="legacy") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            echoed = await client.call_tool("echo", {"text": "both eras"})
            return names, echoed.content[0].text

    for _ in range(2):
        names, echoed = anyio.run(session)
        assert {"echo", "pid"} <= names and echoed == "both eras"
    log = gateway.managed.log()
    # One refused initialize, once: the second session's child got server/discover first.
    assert log.count("speaks 2026-07-28 only: its children are started with server/discover") == 1, log
