"""Tool, resource and prompt policies per router (`tools`, `resources`, `prompts`, `policies`):
callers with different identities see different lists from one router and one server, in both
protocol eras, through a stdio child and an HTTP upstream, with the official SDK client; a
hidden tool is refused exactly like one that does not exist; 2026-07-28 headers cannot smuggle
another call past a policy; filtered pages never come back empty while the server has more; a
team named by a policy is read from GitHub; policies reload live."""

from __future__ import annotations

import json
import sys

import anyio
import httpx
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import SERVERS, free_port, modern_body, modern_headers, port_open, start_process, wait_until
from oauth_helpers import Browser, exchange_code, pkce_pair, register
from test_attacks import LEGACY, World, bearer, rpc_result, start_gateway

POLICY = """
        tools: {allow: ["get_*", "list_*", "count"], deny: ["*_secret"]}
        resources: {deny: ["file:///private/*"]}
        prompts: {allow: ["public_*"]}
        policies:
          - teams: ["acme/sre"]
            allow: ["*"]
          - users: ["alice"]
            tools: {allow: ["restart_*"]}
            prompts: {allow: ["secret_plan"]}
          - users: ["bob"]
            deny: ["count", "list_*"]"""


def config(catalogue: str, paged: str, github, password_hash: str, policy: str = POLICY) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow: {{anyone: true}}
      github:
        clientID: "fake-github-client"
        clientSecret: "fake-github-secret"
        webURL: "{github}"
        apiURL: "{github}/api/v3"
      local:
        users:
          alice: "{password_hash}"
          bob: "{password_hash}"
          carol: "{password_hash}"
    routers:
      stdio:
        rule: "PathPrefix(`/stdio`)"
        service: catalogue-stdio{policy}
      http:
        rule: "PathPrefix(`/http`)"
        service: catalogue-http{policy}
      open:
        rule: "PathPrefix(`/open`)"
        service: catalogue-http
        auth: none
        tools: {{allow: ["get_*", "list_*", "count"], deny: ["*_secret"]}}
      grouped:
        rule: "PathPrefix(`/grouped`)"
        service: catalogue-group
      paged:
        rule: "PathPrefix(`/paged`)"
        service: paged
        auth: none
        tools: {{allow: ["visible_*"]}}
    services:
      catalogue-stdio:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'catalogue_server.py'}"]
      catalogue-http:
        http:
          url: "{catalogue}/mcp"
      paged:
        http:
          url: "{paged}"
      catalogue-group:
        group:
          members: [catalogue-http]
    """


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("policies")
    started = []
    try:
        catalogue_port, github_port, paged_port = free_port(), free_port(), free_port()
        started.append(start_process("catalogue", [sys.executable, str(SERVERS / "catalogue_server.py"), "--port", str(catalogue_port)], tmp))
        started.append(start_process("fake-github", [sys.executable, str(SERVERS / "fake_github.py"), "--port", str(github_port)], tmp))
        started.append(start_process("paged", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(paged_port)], tmp))
        wait_until(lambda: port_open(catalogue_port) and port_open(github_port) and port_open(paged_port), what="catalogue, fake GitHub, paged upstream")
        text = config(f"http://127.0.0.1:{catalogue_port}", f"http://127.0.0.1:{paged_port}/paged", f"http://127.0.0.1:{github_port}", local_password_hash)
        gateway = start_gateway(tmp, text, name="gateway")
        started.append(gateway.managed)
        world = World(gateway, 0, f"http://127.0.0.1:{paged_port}", tmp, local_password_hash)
        world.github = f"http://127.0.0.1:{github_port}"
        world.config_text = text
        yield world
    finally:
        for managed in reversed(started):
            managed.stop()


def github_token(world: World, login: str, user_id: int, teams: list[str], router: str) -> str:
    httpx.post(world.github + "/_control", json={"user": {"login": login, "id": user_id, "orgs": ["acme"], "teams": teams}}, timeout=5)
    resource = world.url(f"/{router}/mcp")
    browser = Browser(world.gateway)
    try:
        client = register(world.gateway)
        verifier, challenge = pkce_pair()
        code = browser.sign_in(client["client_id"], challenge, resource=resource).params["code"]
        return exchange_code(world.gateway, client["client_id"], code, verifier, resource=resource).json()["access_token"]
    finally:
        browser.close()


async def view_of(url: str, token: str | None, mode: str) -> dict:
    """What one caller sees and gets through the official SDK client."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    progress = []

    async def on_progress(value, total, message):
        progress.append(value)

    async def attempt(call):
        try:
            return ("ok", await call)
        except MCPError as error:
            return ("error", error.error.code, error.error.message)

    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            seen = {
                "tools": sorted(tool.name for tool in (await client.list_tools()).tools),
                "resources": sorted(str(resource.uri) for resource in (await client.list_resources()).resources),
                "templates": sorted(template.uri_template for template in (await client.list_resource_templates()).resource_templates),
                "prompts": sorted(prompt.name for prompt in (await client.list_prompts()).prompts),
            }
            seen["get_time"] = await attempt(client.call_tool("get_time", {}))
            seen["count"] = await attempt(client.call_tool("count", {"steps": 2}, progress_callback=on_progress))
            seen["progress"] = progress
            seen["get_secret"] = await attempt(client.call_tool("get_secret", {}))
            seen["no_such_tool"] = await attempt(client.call_tool("no_such_tool", {}))
            seen["private"] = await attempt(client.read_resource("file:///private/key"))
            seen["secret_plan"] = await attempt(client.get_prompt("secret_plan", {}))
    return seen


def text_of(outcome) -> str:
    assert outcome[0] == "ok", outcome
    return outcome[1].content[0].text


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
@pytest.mark.parametrize("router", ["stdio", "http"])
def test_two_users_see_different_tools_on_one_router(world, router, mode):
    url = world.url(f"/{router}/mcp")
    alice = anyio.run(view_of, url, world.token("alice", router), mode)
    bob = anyio.run(view_of, url, world.token("bob", router), mode)

    assert alice["tools"] == ["count", "get_time", "list_zones", "restart_service"]
    assert bob["tools"] == ["get_time"]
    assert alice["prompts"] == ["public_greeting", "secret_plan"] and bob["prompts"] == ["public_greeting"]
    assert alice["resources"] == bob["resources"] == ["file:///docs/readme"]
    assert alice["templates"] == ["file:///docs/{name}"]

    assert text_of(alice["get_time"]) == text_of(bob["get_time"]) == "12:00"
    assert text_of(alice["count"]) == "counted 2" and alice["progress"] == [1, 2], "progress passes a policed route"
    # Hidden is indistinguishable from absent: the same code, the message naming the tool.
    assert bob["count"] == ("error", -32602, "Unknown tool: count")
    assert bob["get_secret"] == alice["get_secret"] == ("error", -32602, "Unknown tool: get_secret")
    assert bob["no_such_tool"] == ("error", -32602, "Unknown tool: no_such_tool"), "a name no pattern allows is unknown, existing or not"
    expected_resource_code = -32602 if mode == "2026-07-28" else -32002
    assert alice["private"][0] == "error" and alice["private"][1] == expected_resource_code, alice["private"]
    assert bob["secret_plan"] == ("error", -32602, "Unknown prompt: secret_plan")
    assert alice["secret_plan"][0] == "ok"


def test_a_team_named_by_a_policy_is_read_from_github(world):
    url = world.url("/http/mcp")
    sre = anyio.run(view_of, url, github_token(world, "octo-sre", 4242, ["acme/sre"], "http"), "legacy")
    assert sre["tools"] == ["count", "get_time", "list_zones", "restart_service"], "the team's allow, the router's deny"
    dev = anyio.run(view_of, url, github_token(world, "octo-dev", 4343, ["acme/dev"], "http"), "legacy")
    assert dev["tools"] == ["count", "get_time", "list_zones"]


def test_anonymous_callers_get_the_routers_own_rules(world):
    seen = anyio.run(view_of, world.url("/open/mcp"), None, "legacy")
    assert seen["tools"] == ["count", "get_time", "list_zones"]
    assert seen["get_secret"] == ("error", -32602, "Unknown tool: get_secret")


def modern_call(world: World, router: str, token: str, name: str, header_name: str | None, method: str = "tools/call", params: dict | None = None):
    headers = {**modern_headers(method, header_name), "Authorization": f"Bearer {token}"}
    if header_name is None:
        headers.pop("Mcp-Name", None)
    body = modern_body(method, params if params is not None else {"name": name, "arguments": {}})
    return httpx.post(world.url(f"/{router}/mcp"), json=body, headers=headers, timeout=20)


@pytest.mark.parametrize("router", ["stdio", "http"])
def test_a_2026_header_cannot_smuggle_another_call_past_the_policy(world, router):
    bob = world.token("bob", router)
    # The header names an allowed tool, the body a hidden one (and the reverse): refused before
    # any decision, as the spec's HeaderMismatch.
    for body_name, header_name in [("restart_service", "get_time"), ("get_time", "restart_service"), ("get_time", None)]:
        answer = modern_call(world, router, bob, body_name, header_name)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == -32020 and "Mcp-Name" in answer.json()["error"]["message"]
    resource = modern_call(world, router, bob, "", "file:///docs/readme", method="resources/read", params={"uri": "file:///private/key"})
    assert resource.status_code == 400 and resource.json()["error"]["code"] == -32020
    method = httpx.post(world.url(f"/{router}/mcp"), json=modern_body("tools/call", {"name": "get_time", "arguments": {}}),
                        headers={**modern_headers("tools/list"), "Authorization": f"Bearer {bob}"}, timeout=20)
    assert method.status_code == 400 and method.json()["error"]["code"] == -32020
    allowed = modern_call(world, router, bob, "get_time", "get_time")
    assert allowed.status_code == 200 and rpc_result(allowed)["result"]["content"][0]["text"] == "12:00"


def test_a_batch_with_a_hidden_call_is_refused_whole(world):
    token = world.token("bob", "http")
    headers = {**bearer(token), "MCP-Protocol-Version": "2025-03-26"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "batcher", "version": "1"}}}
    started = httpx.post(world.url("/http/mcp"), json=init, headers=headers, timeout=20)
    assert started.status_code == 200, started.text
    headers["Mcp-Session-Id"] = started.headers["mcp-session-id"]
    httpx.post(world.url("/http/mcp"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=20)
    batch = [{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_time", "arguments": {}}},
             {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "restart_service", "arguments": {"name": "db"}}}]
    answer = httpx.post(world.url("/http/mcp"), json=batch, headers=headers, timeout=20)
    assert answer.status_code == 200
    errors = {item["id"]: item["error"] for item in answer.json()}
    assert errors[3] == {"code": -32602, "message": "Unknown tool: restart_service"}
    assert errors[2]["code"] == -32600 and "not run" in errors[2]["message"]


def test_a_filtered_page_is_never_empty_while_the_server_has_more(world):
    """The paged upstream lists hidden tools on its first pages: the gateway fetches on, under
    ids of its own, and the client gets the first page with something it may see."""
    def listing(cursor=None, id=7):
        params = {"cursor": cursor} if cursor else {}
        answer = httpx.post(world.url("/paged/mcp"), json={"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params},
                            headers={**LEGACY, "MCP-Protocol-Version": "2025-11-25"}, timeout=20)
        assert answer.status_code == 200, answer.text
        return rpc_result(answer)

    httpx.post(world.upstream + "/paged/reset", timeout=5)
    first = listing()
    assert first["id"] == 7
    assert [tool["name"] for tool in first["result"]["tools"]] == ["visible_a"]
    assert first["result"]["nextCursor"] == "page-3"
    seen = httpx.get(world.upstream + "/paged/seen", timeout=5).json()
    assert [request["cursor"] for request in seen] == [None, "page-1", "page-2"]
    assert seen[0]["id"] == 7 and all(str(request["id"]).startswith("mcpgw-page-") for request in seen[1:])
    last = listing("page-3", id="last")
    assert last["id"] == "last" and [tool["name"] for tool in last["result"]["tools"]] == ["visible_b"]
    assert "nextCursor" not in last["result"]
    # As an event stream, the same.
    httpx.post(world.upstream + "/paged/reset?sse=1", timeout=5)
    streamed = listing()
    assert [tool["name"] for tool in streamed["result"]["tools"]] == ["visible_a"]


def open_session(world: World, router: str, token: str) -> dict:
    headers = {**bearer(token), "MCP-Protocol-Version": "2025-11-25"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "listener", "version": "1"}}}
    started = httpx.post(world.url(f"/{router}/mcp"), json=init, headers=headers, timeout=20)
    assert started.status_code == 200, started.text
    headers["Mcp-Session-Id"] = started.headers["mcp-session-id"]
    httpx.post(world.url(f"/{router}/mcp"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=20)
    return headers


class StreamListener:
    """A session's GET stream read in a thread: the JSON-RPC messages that arrive on it."""

    def __init__(self, url: str, headers: dict):
        import threading

        self.messages: list[dict] = []
        self.open = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._thread = threading.Thread(target=self._run, args=(url, {**headers, "Accept": "text/event-stream"}), daemon=True)
        self._thread.start()
        assert self.open.wait(20), "the GET stream did not open"

    def _run(self, url, headers):
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                self.open.set()
                for line in response.iter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        self.messages.append(json.loads(line[5:]))
        except Exception:
            pass

    def methods(self) -> list[str]:
        return [message.get("method") for message in self.messages]

    def close(self):
        self._client.close()


def test_a_reload_that_changes_what_a_user_sees_tells_their_open_sessions(world):
    import signal

    config_path = world.tmp / "gateway.yaml"
    original = config_path.read_text()
    streams = {}
    try:
        for user in ("alice", "bob"):
            for router in ("stdio", "http"):
                headers = open_session(world, router, world.token(user, router))
                streams[(user, router)] = (StreamListener(world.url(f"/{router}/mcp"), headers), headers)
        # bob's denial of count and list_* goes; alice's rules stay as they were.
        assert original.count('deny: ["count", "list_*"]') == 2
        config_path.write_text(original.replace('deny: ["count", "list_*"]', 'deny: ["nothing_at_all"]'))
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        for router in ("stdio", "http"):
            listener = streams[("bob", router)][0]
            wait_until(lambda: "notifications/tools/list_changed" in listener.methods(), what=f"bob's list_changed on {router}")
            # The next list is the new one, on the same session.
            listed = httpx.post(world.url(f"/{router}/mcp"), json={"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
                                headers=streams[("bob", router)][1], timeout=20)
            assert sorted(tool["name"] for tool in rpc_result(listed)["result"]["tools"]) == ["count", "get_time", "list_zones"]
        log = world.gateway.managed.log()
        assert "list_changed sent to open session streams" in log and "notifications=2" in log, log[-2000:]
        assert all("notifications/tools/list_changed" not in streams[("alice", router)][0].methods() for router in ("stdio", "http"))
    finally:
        for listener, _ in streams.values():
            listener.close()
        config_path.write_text(original)
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        wait_until(lambda: world.gateway.managed.log().count("configuration reloaded") >= 2, what="the configuration restored")


def test_another_users_group_session_is_not_found_through_any_router(world):
    """A group's sessions are the gateway's own: bound to the router and caller that made them."""
    alice = open_session(world, "grouped", world.token("alice", "grouped"))
    listing = {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}
    own = httpx.post(world.url("/grouped/mcp"), json=listing, headers=alice, timeout=20)
    assert own.status_code == 200 and "get_time" in own.text
    session = {"Mcp-Session-Id": alice["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
    bob = httpx.post(world.url("/grouped/mcp"), json=listing, headers={**bearer(world.token("bob", "grouped")), **session}, timeout=20)
    assert bob.status_code == 404, bob.text
    elsewhere = httpx.post(world.url("/http/mcp"), json=listing, headers={**bearer(world.token("alice", "http")), **session}, timeout=20)
    assert elsewhere.status_code == 404, elsewhere.text
    ended = httpx.delete(world.url("/grouped/mcp"), headers={**bearer(world.token("bob", "grouped")), **session}, timeout=20)
    assert ended.status_code == 404
    assert httpx.post(world.url("/grouped/mcp"), json=listing, headers=alice, timeout=20).status_code == 200
