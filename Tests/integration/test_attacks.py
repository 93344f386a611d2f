"""The attack suite: what an attacker tries against a gateway with several users, protected and
`auth: none` routers on one upstream, stdio children and a proxy in front, each asserting the
secure outcome. One gateway (with Redis, an echo upstream and stdio children) serves the module;
tests that need other settings start their own. docs/security.md lists what is covered where."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import websocket
import jwt
import pytest

from conftest import SERVERS, free_port, gateway_binary, modern_body, modern_headers, port_open, start_process, wait_until
from oauth_helpers import Browser, exchange_code, pkce_pair, raw_refreshes, register, token_request

PASSWORD = "correct horse battery staple"
LEGACY = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}}}


def gateway_config(redis_url: str, raw_upstream: str, password_hash: str, extra_entry: str = "", extra_auth: str = "",
                   extra_stdio: str = "") -> str:
    python = sys.executable
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
        allowedHosts: ["mcp.allowed.example", "*.tenants.example"]{extra_entry}
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_url}"
        keyPrefix: "atk:"
    auth:
      allow:
        users: ["alice", "bob", "carol"]
      # No grace for repeated refresh tokens: any second presentation is reuse.
      refreshReuseGrace: 0s
      local:
        users:
          alice: "{password_hash}"
          bob: "{password_hash}"
          carol: "{password_hash}"
        rateLimit:
          perAddress: 1000{extra_auth}
      clientMetadata:
        fetchTimeout: "2s"
    routers:
      alpha:
        rule: "PathPrefix(`/alpha`)"
        service: echo
        allow:
          users: ["alice"]
      beta:
        rule: "PathPrefix(`/beta`)"
        service: echo
      pub:
        rule: "PathPrefix(`/pub`)"
        service: echo
        auth: none
      custom:
        rule: "PathPrefix(`/custom`)"
        service: echo
        identityHeaders:
          user: "X-Remote-User"
      bearer:
        rule: "PathPrefix(`/bearer`)"
        service: echo-own-auth
        auth: none
      kids:
        rule: "PathPrefix(`/kids`)"
        service: kids
      kidspub:
        rule: "PathPrefix(`/kidspub`)"
        service: kids
        auth: none
      shared:
        rule: "PathPrefix(`/shared`)"
        service: shared
    services:
      echo:
        http:
          url: "{raw_upstream}/echo"
      echo-own-auth:
        http:
          url: "{raw_upstream}/echo"
          passAuthorization: true
      kids:
        stdio:
          command: "{python}"
          args: ["{SERVERS / 'raw_stdio_server.py'}"]
          maxSessions: 20{extra_stdio}
      shared:
        stdio:
          command: "{python}"
          args: ["{SERVERS / 'modern_stdio_server.py'}"]
          isolation: shared
    """


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_password_hash):
    """Redis, the echo upstream and the gateway, shared by the module's tests."""
    tmp = tmp_path_factory.mktemp("attacks")
    started = []
    try:
        redis_port = free_port()
        redis = start_process("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], tmp)
        started.append(redis)
        upstream_port = free_port()
        upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
        started.append(upstream)
        wait_until(lambda: port_open(redis_port) and port_open(upstream_port), what="redis and the echo upstream")
        gateway = start_gateway(tmp, gateway_config(f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{upstream_port}", local_password_hash))
        started.append(gateway.managed)
        world = World(gateway, redis_port, f"http://127.0.0.1:{upstream_port}", tmp, local_password_hash)
        yield world
    finally:
        for managed in reversed(started):
            managed.stop()


class StartedGateway:
    def __init__(self, managed, port: int):
        self.managed, self.port = managed, port
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path


def start_gateway(tmp: Path, config: str, name: str = "gateway", extra_args: list[str] | None = None, env: dict | None = None) -> StartedGateway:
    import textwrap

    port = free_port()
    config_path = tmp / f"{name}.yaml"
    config_path.write_text(textwrap.dedent(config).replace("{port}", str(port)))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    managed = start_process(name, [gateway_binary(), "serve", "--config", str(config_path), *(extra_args or [])], tmp,
                            env={**os.environ, "PATH": path, **(env or {})})
    gateway = StartedGateway(managed, port)

    def healthy():
        if managed.process.poll() is not None:
            raise AssertionError(f"gateway exited:\n{managed.log()}")
        return httpx.get(gateway.url("/healthz"), timeout=1).status_code == 200

    wait_until(healthy, what="gateway /healthz")
    return gateway


class World:
    def __init__(self, gateway: StartedGateway, redis_port: int, upstream: str, tmp: Path, password_hash: str):
        self.gateway, self.redis_port, self.upstream, self.tmp, self.password_hash = gateway, redis_port, upstream, tmp, password_hash
        self._tokens: dict[tuple[str, str], dict] = {}

    def url(self, path: str) -> str:
        return self.gateway.url(path)

    def sign_in(self, user: str, router: str) -> dict:
        """Fresh tokens (and the client) of `user` for `router`'s MCP endpoint."""
        resource = self.url(f"/{router}/mcp")
        browser = Browser(self.gateway)
        try:
            client = register(self.gateway)
            verifier, challenge = pkce_pair()
            result = browser.sign_in(client["client_id"], challenge, provider="local", resource=resource, username=user, password=PASSWORD)
            code = result.params["code"]
            tokens = exchange_code(self.gateway, client["client_id"], code, verifier, resource=resource).json()
            return {**tokens, "client": client, "code": code, "verifier": verifier, "resource": resource}
        finally:
            browser.close()

    def token(self, user: str, router: str) -> str:
        if (user, router) not in self._tokens:
            self._tokens[(user, router)] = self.sign_in(user, router)
        return self._tokens[(user, router)]["access_token"]

    def redis(self, *args: str) -> str:
        import subprocess

        return subprocess.run(["redis-cli", "-p", str(self.redis_port), "--raw", *args], capture_output=True, text=True, timeout=10).stdout


def bearer(token: str | None, **extra) -> dict:
    headers = {**LEGACY, **extra}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def rpc_result(response: httpx.Response) -> dict:
    """The JSON-RPC answer of a response, JSON or SSE (the last data event)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        return events[-1]
    return response.json()


def legacy_session(world: World, path: str, token: str | None) -> str:
    response = httpx.post(world.url(path), json=INITIALIZE, headers=bearer(token), timeout=20)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


# --- 1. stdio children inherit nothing but stdin, stdout and stderr ------------------------------

def test_children_hold_only_descriptors_0_1_2(world):
    token = world.token("alice", "kids")
    session = legacy_session(world, "/kids/mcp", token)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "pid", "arguments": {}}}
    pid = int(rpc_result(httpx.post(world.url("/kids/mcp"), json=call, headers=bearer(token, **{"Mcp-Session-Id": session}), timeout=20))["result"]["content"][0]["text"])
    # While a client connection is open (the one serving this request is), the child sees none
    # of the gateway's sockets: not the listener, not the client's, not Redis.
    assert sorted(os.listdir(f"/proc/{pid}/fd"), key=int) == ["0", "1", "2"]
    # A 2026-07-28 pool child likewise.
    modern = httpx.post(world.url("/shared/mcp"), json=modern_body("tools/call", {"name": "pid", "arguments": {}}),
                        headers={**modern_headers("tools/call", "pid"), "Authorization": f"Bearer {world.token('alice', 'shared')}"}, timeout=20)
    pool_pid = int(rpc_result(modern)["result"]["content"][0]["text"])
    assert sorted(os.listdir(f"/proc/{pool_pid}/fd"), key=int) == ["0", "1", "2"]


# --- 2. sessions are bound to router and caller -----------------------------------------------------

def test_another_users_http_session_is_not_found_through_any_router(world):
    alice = world.token("alice", "alpha")
    session = legacy_session(world, "/alpha/mcp", alice)
    ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
    # The owner, through the router that created it.
    assert httpx.post(world.url("/alpha/mcp"), json=ping, headers=bearer(alice, **{"Mcp-Session-Id": session}), timeout=10).status_code == 200
    bob_beta = world.token("bob", "beta")
    alice_beta = world.token("alice", "beta")
    attempts = [
        ("/beta/mcp", bob_beta),   # another user, through a router both may use
        ("/beta/mcp", alice_beta),  # the owner herself, through another router
        ("/pub/mcp", None),         # anonymously, through the auth: none router
    ]
    for path, token in attempts:
        headers = bearer(token, **{"Mcp-Session-Id": session})
        assert httpx.post(world.url(path), json=ping, headers=headers, timeout=10).status_code == 404, path
        assert httpx.get(world.url(path), headers={**headers, "Accept": "text/event-stream"}, timeout=10).status_code == 404, path
        assert httpx.delete(world.url(path), headers=headers, timeout=10).status_code == 404, path
    # None of that reached the upstream session or ended it.
    assert httpx.post(world.url("/alpha/mcp"), json=ping, headers=bearer(alice, **{"Mcp-Session-Id": session}), timeout=10).status_code == 200


def test_bindings_hold_on_another_instance_and_fail_closed_when_missing(world):
    """A second gateway on the same Redis (as after a restart, or behind a load balancer) knows
    whose a session is; with the binding gone, the session is not found rather than open."""
    import hashlib

    first = (world.tmp / "gateway.yaml").read_text()
    second = start_gateway(world.tmp, first.replace(f'address: "127.0.0.1:{world.gateway.port}"', 'address: "127.0.0.1:{port}"'), name="second")
    try:
        alice, bob = world.token("alice", "alpha"), world.token("bob", "beta")
        kept, lost = legacy_session(world, "/alpha/mcp", alice), legacy_session(world, "/alpha/mcp", alice)
        world.redis("DEL", "atk:session:" + hashlib.sha256(lost.encode()).hexdigest())
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        assert httpx.post(second.url("/alpha/mcp"), json=ping, headers=bearer(alice, **{"Mcp-Session-Id": kept}), timeout=10).status_code == 200
        assert httpx.post(second.url("/beta/mcp"), json=ping, headers=bearer(bob, **{"Mcp-Session-Id": kept}), timeout=10).status_code == 404
        assert httpx.post(second.url("/alpha/mcp"), json=ping, headers=bearer(alice, **{"Mcp-Session-Id": lost}), timeout=10).status_code == 404
    finally:
        second.managed.stop()


def test_another_users_stdio_session_is_not_found(world):
    alice = world.token("alice", "kids")
    session = legacy_session(world, "/kids/mcp", alice)
    bob = world.token("bob", "kids")
    ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
    for path, token in [("/kids/mcp", bob), ("/kidspub/mcp", None)]:
        headers = bearer(token, **{"Mcp-Session-Id": session})
        assert httpx.post(world.url(path), json=ping, headers=headers, timeout=10).status_code == 404, path
        assert httpx.get(world.url(path), headers={**headers, "Accept": "text/event-stream"}, timeout=10).status_code == 404, path
        assert httpx.delete(world.url(path), headers=headers, timeout=10).status_code == 404, path
    assert httpx.post(world.url("/kids/mcp"), json=ping, headers=bearer(alice, **{"Mcp-Session-Id": session}), timeout=10).status_code == 200


def test_another_users_request_state_cannot_be_completed(world):
    """On a child several users share (isolation: shared), a requestState handed to one user
    cannot be presented by another, nor forged, nor stripped of the gateway's tag."""
    alice, bob = world.token("alice", "shared"), world.token("bob", "shared")

    def ask(token: str, state: str | None = None) -> dict:
        params = {"name": "ask", "arguments": {}}
        if state is not None:
            params["requestState"] = state
            params["inputResponses"] = {"colour": {"action": "accept", "content": {"colour": "red"}}}
        response = httpx.post(world.url("/shared/mcp"), json=modern_body("tools/call", params),
                              headers={**modern_headers("tools/call", "ask"), "Authorization": f"Bearer {token}"}, timeout=20)
        return rpc_result(response)

    state = ask(alice)["result"]["requestState"]
    # Routed to the instance that issued it (mcpgw@<instance>~), then the child's tag.
    routing, tagged = state.split("~", 1)
    assert routing.startswith("mcpgw@") and tagged.startswith("mcpgw~")
    assert ask(bob, state)["error"]["code"] == -32602
    prefix, child, mac, original = tagged.split("~", 3)
    assert ask(alice, f"{routing}~{prefix}~{child}~{'0' * len(mac)}~{original}")["error"]["code"] == -32602
    assert ask(alice, original)["error"]["code"] == -32602  # untagged: never handed out by the gateway
    # Routed to an instance that does not exist: refused here, never forwarded anywhere.
    elsewhere = ask(alice, f"mcpgw@{'f' * 32}~{tagged}")["error"]
    assert elsewhere["code"] == -32602 and "no longer running" in elsewhere["message"]
    assert "user likes red" in ask(alice, state)["result"]["content"][0]["text"]


# --- 3. paths are read as the proxy in front reads them ---------------------------------------------

TRAVERSALS = ["/pub/../alpha/mcp", "/pub/%2e%2e/alpha/mcp", "/pub/%2E%2E/alpha/mcp", "/pub/..%2Falpha/mcp",
              "/pub%2F..%2Falpha/mcp", "/pub/./../alpha/mcp", "//alpha/mcp", "/pub/mcp/../../alpha/mcp", "/alpha/mcp/../../pub/mcp"]


@pytest.mark.parametrize("uri", TRAVERSALS)
def test_forward_auth_never_approves_a_path_that_leads_elsewhere(world, uri):
    response = httpx.get(world.url("/verify"), headers={"X-Forwarded-Method": "POST", "X-Forwarded-Host": "127.0.0.1",
                                                        "X-Forwarded-Uri": uri, "X-Forwarded-Proto": "http"}, timeout=10)
    # Refused as ambiguous, or decided for the router the normalized path reaches (which wants a
    # token): never the public router's 200.
    assert response.status_code in (400, 401), (uri, response.status_code, response.text)


@pytest.mark.parametrize("uri", TRAVERSALS)
def test_the_gateways_own_routing_reads_paths_one_way(world, uri):
    raw = socket.create_connection(("127.0.0.1", world.gateway.port), timeout=10)
    with raw:
        body = json.dumps(INITIALIZE).encode()
        raw.sendall(f"POST {uri} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        status = int(raw.recv(65536).split(b" ", 2)[1])
    assert status in (400, 401, 404), (uri, status)


# --- 4. one body, one meaning ------------------------------------------------------------------------

def test_a_body_with_two_readings_is_refused_at_once(world):
    token = world.token("alice", "shared")
    headers = {**modern_headers("tools/call", "echo"), "Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"x","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}'
    bodies = [
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"exit",' + meta + '}}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",' + meta + '},"params":{"name":"exit"}}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\\u0061me":"exit",' + meta + '}}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","\\ud800name":"exit",' + meta + '}}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo\\x",' + meta + '}}',
    ]
    for body in bodies:
        started = time.monotonic()
        response = httpx.post(world.url("/shared/mcp"), content=body.encode(), headers=headers, timeout=5)
        assert response.status_code == 400 and response.json()["error"]["code"] == -32700, body
        assert time.monotonic() - started < 2
    invalid_utf8 = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo\xff",' + meta.encode() + b'}}'
    assert httpx.post(world.url("/shared/mcp"), content=invalid_utf8, headers=headers, timeout=5).status_code == 400
    # The same checks on every transport: the HTTP proxy and the session-based stdio bridge.
    duplicate = b'{"jsonrpc":"2.0","id":1,"method":"ping","id":2}'
    assert httpx.post(world.url("/pub/mcp"), content=duplicate, headers=LEGACY, timeout=5).status_code == 400
    assert httpx.post(world.url("/kidspub/mcp"), content=duplicate, headers=LEGACY, timeout=5).status_code == 400


def test_huge_batches_are_refused_without_stalling_anyone(world):
    init = {**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": "2025-03-26"}}
    response = httpx.post(world.url("/kidspub/mcp"), json=init, headers=LEGACY, timeout=20)
    session = response.headers["mcp-session-id"]
    headers = {**LEGACY, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-03-26"}
    batch = [{"jsonrpc": "2.0", "id": n, "method": "ping"} for n in range(20_000)]
    started = time.monotonic()
    refused = httpx.post(world.url("/kidspub/mcp"), json=batch, headers=headers, timeout=10)
    assert refused.status_code == 400 and "at most 100" in refused.json()["error"]["message"]
    assert time.monotonic() - started < 3
    small = httpx.post(world.url("/kidspub/mcp"), json=batch[:100], headers=headers, timeout=20)
    answers = rpc_result(small) if small.headers["content-type"].startswith("application/json") else None
    assert small.status_code == 200 and (answers is None or len(answers) == 100)


# --- 5. DNS rebinding ------------------------------------------------------------------------------------

def test_a_rebinding_page_cannot_drive_the_gateway(world):
    port = world.gateway.port
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with raw:
        body = json.dumps(INITIALIZE).encode()
        raw.sendall(f"POST /pub/mcp HTTP/1.1\r\nHost: rebind.attacker.example:{port}\r\nOrigin: http://rebind.attacker.example:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        assert int(raw.recv(65536).split(b" ", 2)[1]) == 421
    # Without an Origin (a non-browser client naming a host the gateway does not serve): also 421.
    assert httpx.post(world.url("/pub/mcp"), json=INITIALIZE, headers={**LEGACY, "Host": "rebind.attacker.example"}, timeout=10).status_code == 421
    # An Origin equal to http:// + the Host is no longer a pass, unless that host is served here.
    assert httpx.post(world.url("/pub/mcp"), json=INITIALIZE, headers={**LEGACY, "Origin": f"http://127.0.0.1:{port}"}, timeout=10).status_code == 200
    for host in ("mcp.allowed.example", "a.tenants.example"):
        assert httpx.post(world.url("/pub/mcp"), json=INITIALIZE, headers={**LEGACY, "Host": host, "Origin": f"https://{host}"}, timeout=10).status_code == 200
    assert httpx.post(world.url("/pub/mcp"), json=INITIALIZE, headers={**LEGACY, "Origin": "https://tenants.example.evil"}, timeout=10).status_code == 403
    # Forward auth applies the same rule to the host it is asked about.
    verify = httpx.get(world.url("/verify"), headers={"X-Forwarded-Host": "rebind.attacker.example", "X-Forwarded-Uri": "/pub/mcp"}, timeout=10)
    assert verify.status_code == 403


# --- 6. headers that reach upstreams -----------------------------------------------------------------

def echoed_headers(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.text
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def test_forged_identity_and_credentials_never_reach_upstreams(world):
    forged = {
        "X_Forwarded_User": "admin", "x-forwarded_email": "admin@example.com", "X-Remote-User": "admin", "X_Remote_User": "admin",
        "X-Forwarded-Client-Id": "admin-app", "Authorization": "Bearer stolen", "Cookie": "mcpgw-browser-abc=secret; theme=dark; __Host-mcpgw-browser-x=s",
    }
    public = echoed_headers(httpx.post(world.url("/pub/mcp"), json=INITIALIZE, headers={**LEGACY, **forged}, timeout=10))
    for name in ("x_forwarded_user", "x-forwarded-user", "x-forwarded_email", "x-remote-user", "x_remote_user", "x-forwarded-client-id", "authorization"):
        assert name not in public, name
    assert public["cookie"] == ["theme=dark"]
    # On a protected router: the gateway's own identity headers, under the router's names only.
    token = world.token("alice", "custom")
    custom = echoed_headers(httpx.post(world.url("/custom/mcp"), json=INITIALIZE, headers={**bearer(token), **{k: v for k, v in forged.items() if k != "Authorization"}}, timeout=10))
    assert custom["x-remote-user"] == ["alice"]
    assert "x_remote_user" not in custom and "x_forwarded_user" not in custom and "authorization" not in custom and "cookie" not in custom
    # A service that checks credentials of its own may ask for the client's Authorization.
    own = echoed_headers(httpx.post(world.url("/bearer/mcp"), json=INITIALIZE, headers={**LEGACY, "Authorization": "Bearer upstream-own"}, timeout=10))
    assert own["authorization"] == ["Bearer upstream-own"]


# --- 8. tokens and the authorization server ----------------------------------------------------------

def mcp_status(world: World, router: str, token: str) -> int:
    return httpx.post(world.url(f"/{router}/mcp"), json=INITIALIZE, headers=bearer(token), timeout=10).status_code


def test_replaying_a_code_revokes_what_it_was_exchanged_for(world):
    signed = world.sign_in("alice", "alpha")
    assert mcp_status(world, "alpha", signed["access_token"]) == 200
    replay = exchange_code(world.gateway, signed["client"]["client_id"], signed["code"], signed["verifier"], resource=signed["resource"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # The token cache remembers a verified token for up to 5 s.
    wait_until(lambda: mcp_status(world, "alpha", signed["access_token"]) == 401, timeout=10, what="the first token revoked")
    refresh = token_request(world.gateway, {"grant_type": "refresh_token", "refresh_token": signed["refresh_token"], "client_id": signed["client"]["client_id"]})
    assert refresh.status_code == 400


def test_reusing_a_rotated_refresh_token_revokes_the_sign_ins_access_token(world):
    signed = world.sign_in("alice", "alpha")
    client_id = signed["client"]["client_id"]
    rotated = token_request(world.gateway, {"grant_type": "refresh_token", "refresh_token": signed["refresh_token"], "client_id": client_id}).json()
    assert mcp_status(world, "alpha", rotated["access_token"]) == 200
    reuse = token_request(world.gateway, {"grant_type": "refresh_token", "refresh_token": signed["refresh_token"], "client_id": client_id})
    assert reuse.status_code == 400
    for token in (signed["access_token"], rotated["access_token"]):
        wait_until(lambda: mcp_status(world, "alpha", token) == 401, timeout=10, what="the family's access tokens revoked")
        introspection = httpx.post(world.url("/introspect"), data={"token": token, "client_id": client_id}, timeout=10).json()
        assert introspection == {"active": False}


def test_revocation_is_no_existence_oracle(world):
    signed = world.sign_in("bob", "beta")
    other = register(world.gateway)
    for token in (signed["access_token"], signed["refresh_token"], "no-such-token"):
        response = httpx.post(world.url("/revoke"), data={"token": token, "client_id": other["client_id"]}, timeout=10)
        assert response.status_code == 200 and response.content == b""
    assert mcp_status(world, "beta", signed["access_token"]) == 200


def test_the_browser_binding_cookie_is_always_minted(world):
    client = register(world.gateway)
    _, challenge = pkce_pair()
    browser = Browser(world.gateway)
    try:
        planted = "a" * 43
        browser.client.cookies.set("mcpgw-browser", planted)
        page = browser.open(browser.authorize_url(client["client_id"], challenge, resource=world.url("/alpha/mcp")))
        set_cookie = page.headers["set-cookie"]
        assert planted not in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        # A consent posted with the planted value (and not the minted one) is refused.
        from oauth_helpers import form_for

        form = form_for(page.text, "approve", "local")
        attacker = httpx.Client(cookies={set_cookie.split("=", 1)[0]: planted})
        refused = attacker.post(world.url("/authorize/consent"), data={**form, "username": "alice", "password": PASSWORD}, timeout=10)
        assert refused.status_code == 403
    finally:
        browser.close()


@pytest.mark.parametrize("uri", ["https://app.example:0/cb", "https://app.example:99999/cb", "https://app.example:/cb", "http://127.0.0.1:65536/cb"])
def test_redirect_uris_with_invalid_ports_are_refused(world, uri):
    response = httpx.post(world.url("/register"), json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri"


def test_registration_fields_are_bounded(world):
    response = httpx.post(world.url("/register"), json={"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none",
                                                         "contacts": ["x" * 100_000]}, timeout=10)
    assert response.status_code == 400


def test_authorize_errors_never_redirect_to_a_registered_uri(world):
    client = register(world.gateway, redirect_uris=["https://attacker.example/landing"])
    browser = Browser(world.gateway)
    try:
        for params in ({"response_type": "token"}, {"code_challenge": None}, {"resource": "https://elsewhere.example/mcp"}):
            url = browser.authorize_url(client["client_id"], pkce_pair()[1], redirect_uri="https://attacker.example/landing", **{k: v for k, v in params.items() if k != "response_type"})
            if "response_type" in params:
                url = url.replace("response_type=code", "response_type=token")
            response = browser.open(url)
            assert response.status_code == 400 and "location" not in response.headers, params
    finally:
        browser.close()


# --- attacks that already failed before this suite, kept failing ---------------------------------

def test_token_confusion_is_refused(world):
    token = world.token("alice", "alpha")
    claims = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    forged = [
        jwt.encode({**claims}, None, algorithm="none"),
        jwt.encode({**claims}, key="s" * 32, algorithm="HS256", headers={"kid": header["kid"]}),
        token.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1][::-1],
    ]
    for bad in forged:
        assert mcp_status(world, "alpha", bad) == 401
    # A token for one router is refused by another, even with the same upstream and user.
    assert mcp_status(world, "beta", token) == 401


def test_smuggling_and_oversized_requests_are_refused(world):
    for request in (
        b"POST /pub/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /pub/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", world.gateway.port), timeout=10) as raw:
            raw.sendall(request)
            answer = raw.recv(65536)
            assert answer == b"" or int(answer.split(b" ", 2)[1]) >= 400


def test_consent_pages_refuse_framing_and_escape_client_metadata(world):
    client = register(world.gateway, client_name='<script>alert(1)</script>"><img src=x onerror=alert(2)>')
    browser = Browser(world.gateway)
    try:
        page = browser.open(browser.authorize_url(client["client_id"], pkce_pair()[1], resource=world.url("/alpha/mcp")))
        assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
        assert page.headers["x-frame-options"] == "DENY" or "frame-ancestors 'none'" in page.headers.get("content-security-policy", "")
    finally:
        browser.close()


# --- 7. limits that hold behind a proxy and cannot be walked around -------------------------------

LIMITS = """
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
        trustedProxies: ["127.0.0.1/32"]
        headerTimeout: "1s"
        idleTimeout: "2s"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow:
        users: ["alice", "bob"]
      registration:
        rateLimit: 2
        globalRateLimit: 5
      local:
        users:
          alice: "{hash}"
          bob: "{hash}"
        rateLimit:
          perAddress: 100
          perAccount: 3
          global: 7
    routers:
      kids:
        rule: "PathPrefix(`/kids`)"
        service: kids
        auth: none
      secured:
        rule: "PathPrefix(`/secured`)"
        service: kids
    services:
      kids:
        stdio:
          command: "{python}"
          args: ["{server}"]
          maxSessions: 10
          maxSessionsPerUser: 2
    """


@pytest.fixture(scope="module")
def limited(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("limits")
    gateway = start_gateway(tmp, LIMITS.format(hash=local_password_hash, python=sys.executable, server=SERVERS / "raw_stdio_server.py"))
    yield gateway
    gateway.managed.stop()


def register_from(gateway: StartedGateway, forwarded_for: str) -> int:
    return httpx.post(gateway.url("/register"), json={"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"},
                      headers={"X-Forwarded-For": forwarded_for}, timeout=10).status_code


def test_registration_limits_count_the_client_behind_the_proxy(limited):
    assert [register_from(limited, "203.0.113.1") for _ in range(3)] == [201, 201, 429]
    # Another client behind the same proxy is not locked out by the first.
    assert register_from(limited, "203.0.113.2") == 201
    # The client's own X-Forwarded-For entries (left of the proxy's) prove nothing.
    assert register_from(limited, "198.51.100.7, 203.0.113.1") == 429
    # IPv6 clients count per /64: a new address in the same /64 is the same client.
    assert [register_from(limited, "2001:db8:1:2::1"), register_from(limited, "2001:db8:1:2::2"), register_from(limited, "2001:db8:1:2:ffff::3")] == [201, 201, 429]
    # And the whole gateway has a budget (5 a minute), whatever the addresses.
    assert register_from(limited, "203.0.113.50") == 429


def local_attempt(gateway: StartedGateway, user: str, password: str, forwarded_for: str) -> int:
    from oauth_helpers import form_for

    client = httpx.post(gateway.url("/register"), json={"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"},
                        headers={"X-Forwarded-For": f"192.0.2.{abs(hash(forwarded_for)) % 200 + 1}"}, timeout=10)
    browser = Browser(gateway)
    browser.client.headers["X-Forwarded-For"] = forwarded_for
    try:
        client_id = client.json()["client_id"] if client.status_code == 201 else None
        assert client_id, client.text
        page = browser.open(browser.authorize_url(client_id, pkce_pair()[1], redirect_uri="https://app.example/cb", resource=gateway.url("/secured/mcp")))
        form = form_for(page.text, "approve", "local")
        return browser.client.post(gateway.url("/authorize/consent"), data={**form, "username": user, "password": password}).status_code
    finally:
        browser.close()


def test_password_guessing_is_throttled_per_account_and_in_all(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("guessing")
    config = LIMITS.format(hash=local_password_hash, python=sys.executable, server=SERVERS / "raw_stdio_server.py").replace(
        "rateLimit: 2\n        globalRateLimit: 5", "rateLimit: 100\n        globalRateLimit: 1000")
    gateway = start_gateway(tmp, config, name="guessing")
    try:
        # Three wrong guesses for alice, each from another address: her sign-in pauses, even with
        # the right password, while bob's does not.
        assert [local_attempt(gateway, "alice", "wrong", f"203.0.113.{n}") for n in (1, 2, 3)] == [401, 401, 401]
        assert local_attempt(gateway, "alice", PASSWORD, "203.0.113.4") == 429
        assert local_attempt(gateway, "bob", "wrong", "203.0.113.5") == 401
        # The gateway checks at most 7 passwords a minute in all (each costs ~270 ms of CPU).
        assert [local_attempt(gateway, "bob", "wrong", f"198.51.100.{n}") for n in (1, 2, 3)] == [401, 401, 429]
    finally:
        gateway.managed.stop()


def test_one_caller_cannot_take_every_stdio_session(limited):
    def initialize(forwarded_for: str) -> httpx.Response:
        return httpx.post(limited.url("/kids/mcp"), json=INITIALIZE, headers={**LEGACY, "X-Forwarded-For": forwarded_for}, timeout=20)

    first, second, third = initialize("203.0.113.10"), initialize("203.0.113.10"), initialize("203.0.113.10")
    assert first.status_code == 200 and second.status_code == 200
    assert third.status_code == 429 and third.json()["error"]["data"]["reason"] == "user_session_limit" and third.headers["retry-after"]
    assert initialize("203.0.113.11").status_code == 200
    # Ending a session frees its place.
    assert httpx.delete(limited.url("/kids/mcp"), headers={"Mcp-Session-Id": first.headers["mcp-session-id"], "X-Forwarded-For": "203.0.113.10"}).status_code == 204
    assert initialize("203.0.113.10").status_code == 200


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (fails if it stays open longer than `seconds`)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except socket.timeout:
        raise AssertionError(f"the connection stayed open for more than {seconds} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_slow_headers_and_idle_connections_are_closed(limited):
    slow = socket.create_connection(("127.0.0.1", limited.port))
    idle = socket.create_connection(("127.0.0.1", limited.port))
    with slow, idle:
        slow.sendall(b"POST /kids/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        assert closed_within(slow, 4) < 3  # headerTimeout 1 s
        assert closed_within(idle, 6) < 5  # idleTimeout 2 s
    # A client that sends its request promptly is served, and its kept-alive connection is
    # closed once it has been idle for idleTimeout.
    with socket.create_connection(("127.0.0.1", limited.port)) as prompt:
        prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        prompt.settimeout(5)
        assert prompt.recv(4096).startswith(b"HTTP/1.1 200")
        assert closed_within(prompt, 6) < 5


# --- 10. pool children are not pinned forever ------------------------------------------------------

def test_pool_children_idle_out_by_last_client_use(tmp_path_factory, local_password_hash):
    """2026-07-28 clients of a session-based stdio server: each identity gets a child whose
    notification stream the gateway holds open. Three users, one call each, used to fill
    maxSessions for good."""
    tmp = tmp_path_factory.mktemp("pool")
    config = f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow:
        users: ["alice", "bob", "carol"]
      local:
        users:
          alice: "{local_password_hash}"
          bob: "{local_password_hash}"
          carol: "{local_password_hash}"
    routers:
      kids:
        rule: "PathPrefix(`/kids`)"
        service: kids
    services:
      kids:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'raw_stdio_server.py'}"]
          maxSessions: 2
          idleTimeout: "1s"
    """
    gateway = start_gateway(tmp, config, name="pool")
    world = World(gateway, 0, "", tmp, local_password_hash)
    try:
        def list_tools(user: str) -> httpx.Response:
            return httpx.post(gateway.url("/kids/mcp"), json=modern_body("tools/list"),
                              headers={**modern_headers("tools/list"), "Authorization": f"Bearer {world.token(user, 'kids')}"}, timeout=20)

        # Tokens first (a sign-in takes a password hash's time): the two calls then come within the
        # 1 s idle timeout of each other, whatever the machine's load.
        for user in ("alice", "bob", "carol"):
            world.token(user, "kids")
        assert list_tools("alice").status_code == 200 and list_tools("bob").status_code == 200
        assert httpx.get(gateway.url("/readyz")).json()["stdio"]["kids"]["sessions"] == 2
        # Carol finds the service full now, and served once the others' children idle out.
        wait_until(lambda: list_tools("carol").status_code == 200, timeout=15, what="a pool child idled out")
    finally:
        gateway.managed.stop()


# --- no secret in any log, at any level ------------------------------------------------------------

def test_no_secret_reaches_the_log_even_at_trace(tmp_path_factory, local_password_hash, redis_server):
    """Sign-in, token exchange, refresh and racing refreshes (on Redis), a proxied call with a
    configured upstream key, a confidential client, and calls the fast relay carries through a rate limit with the audit log
    and metrics on: the log at --log-level trace (and the audit log) holds none of the secrets
    involved."""
    tmp = tmp_path_factory.mktemp("trace")
    upstream_port = free_port()
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the echo upstream")
    config = f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    # Redis: its commands are logged at trace too, and a refresh race's answer is held there.
    store:
      redis:
        url: "{redis_server.url}"
        keyPrefix: "trace:"
    auth:
      allow:
        users: ["alice"]
      local:
        users:
          alice: "{local_password_hash}"
    audit:
      file: "{tmp / 'audit.log'}"
      arguments: full
    metrics:
      prometheus: {{}}
    middlewares:
      traced:
        rateLimit: {{ average: 1000, period: 1s }}
    routers:
      alpha:
        rule: "PathPrefix(`/alpha`)"
        service: echo
        middlewares: [traced]
      kids:
        rule: "PathPrefix(`/kids`)"
        service: child
    services:
      echo:
        http:
          url: "http://127.0.0.1:{upstream_port}/echo"
          headers:
            X-Api-Key: "${{TRACE_UPSTREAM_KEY}}"
      child:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'stdio_server.py'}"]
          env:
            CHILD_API_KEY: "${{TRACE_CHILD_KEY}}"
    """
    upstream_key = "upstream-key-" + os.urandom(8).hex()
    # A stdio service's env holds keys too: the child gets it, the log never shows it.
    child_key = "child-key-" + os.urandom(8).hex()
    # A secret only in the environment: the loader holds the whole environment for ${VAR}, and
    # service-lifecycle prints its services' descriptions at debug.
    unused_secret = "env-only-secret-" + os.urandom(8).hex()
    gateway = start_gateway(tmp, config, name="trace", extra_args=["--log-level", "trace"],
                            env={"TRACE_UPSTREAM_KEY": upstream_key, "TRACE_CHILD_KEY": child_key, "SOME_OTHER_SECRET": unused_secret})
    try:
        world = World(gateway, 0, "", tmp, local_password_hash)
        signed = world.sign_in("alice", "alpha")
        confidential = register(gateway, token_endpoint_auth_method="client_secret_basic")
        session = legacy_session(world, "/alpha/mcp", signed["access_token"])
        echoed = httpx.post(world.url("/alpha/mcp"), json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
                            headers=bearer(signed["access_token"], **{"Mcp-Session-Id": session}), timeout=10)
        assert echoed.status_code == 200 and upstream_key in echoed.text  # the key did reach the upstream
        # 2026-07-28 calls on one connection: the fast relay carries them (route memo, token memo,
        # rate limit decided at once, audit line, metrics) after the first one learns the era.
        with httpx.Client() as client:
            for index in range(4):
                modern = client.post(world.url("/alpha/mcp"), json=modern_body("tools/call", {"name": "echo", "arguments": {"n": index}}),
                                     headers={**modern_headers("tools/call", "echo"), "Authorization": f"Bearer {signed['access_token']}"}, timeout=10)
                assert modern.status_code == 200, modern.text
        # A WebSocket session with the token as a `bearer.` subprotocol: its frames, its inner
        # requests and the inner GET the fast relay carries on its connection are logged at trace.
        socket_session = websocket.create_connection(world.url("/alpha/mcp").replace("http://", "ws://"), timeout=20, suppress_origin=True,
                                                     subprotocols=["mcp", f"bearer.{signed['access_token']}"])
        try:
            socket_session.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "trace", "version": "1"}}}))
            assert upstream_key in socket_session.recv()  # the echo upstream answered, with the key it was sent
        finally:
            socket_session.close()
        child_token = world.sign_in("alice", "kids")["access_token"]
        child_session = legacy_session(world, "/kids/mcp", child_token)
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "getenv", "arguments": {"name": "CHILD_API_KEY"}}}
        seen = rpc_result(httpx.post(world.url("/kids/mcp"), json=call, headers=bearer(child_token, **{"Mcp-Session-Id": child_session}), timeout=20))
        assert seen["result"]["content"][0]["text"] == child_key  # the key did reach the child
        refreshed = token_request(gateway, {"grant_type": "refresh_token", "refresh_token": signed["refresh_token"],
                                            "client_id": signed["client"]["client_id"]}).json()
        assert "access_token" in refreshed
        # Presentations racing each other: one is rotated, the others get its held answer.
        raced = raw_refreshes(gateway, signed["client"], refreshed["refresh_token"], 3)
        assert [status for status, _ in raced] == [200, 200, 200], raced
        raced_pair = json.loads(raced[0][1])
    finally:
        gateway.managed.stop()
        upstream.stop()
    log = gateway.managed.log()
    assert " trace mcp-gateway:" in log and " debug mcp-gateway:" in log  # the levels really were on
    assert "relay=fast" in log  # the fast relay's own logging was exercised at trace
    assert "WebSocket session opened" in log and "WebSocket session closed" in log
    assert "a refresh raced an earlier presentation" in log  # a racer was given the held answer
    audit = (tmp / "audit.log").read_text()
    assert '"mcp_method":"tools/call"' in audit
    secrets = {
        "access token": signed["access_token"], "refresh token": signed["refresh_token"], "code": signed["code"],
        "PKCE verifier": signed["verifier"], "password": PASSWORD, "upstream key": upstream_key,
        "client secret": confidential["client_secret"], "registration token": confidential["registration_access_token"],
        "refreshed access token": refreshed["access_token"], "rotated refresh token": refreshed["refresh_token"],
        "environment-only secret": unused_secret, "stdio env key": child_key,
        "raced access token": raced_pair["access_token"], "raced refresh token": raced_pair["refresh_token"],
        # A session id lets whoever holds it act as its owner's client: logs name it by hash.
        "stdio session id": child_session,
    }
    for what, secret in secrets.items():
        assert secret not in log, f"the {what} is in the log"
        assert secret not in audit, f"the {what} is in the audit log"
