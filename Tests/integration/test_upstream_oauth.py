"""Upstream MCP servers that need each user's own OAuth (services.<s>.http.oauth), for real: the
upstream is a second mcp-gateway (its own config, Redis database and local accounts) in front of
an SDK server that says whom it was told is calling. The official SDK client signs in to the
first gateway, calls a tool of the upstream, gets the URL elicitation, the user follows the
connect URL in headless Chromium through both gateways' sign-ins, and the call goes through with
that user's upstream token; another user needs a connection of their own. Then an expired
upstream token is refreshed unseen, a refused one refreshed on the 401, a revoked grant leads back
to the connect step, and the stored tokens are unreadable without the key."""

import base64
import hashlib
import json
import os
import re
import subprocess
import textwrap
import time
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mcp import Client, MCPError, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from cdp import Chromium
from conftest import Gateway, _start_python_server, free_port, gateway_binary, start_process, wait_until
from oauth_helpers import form_for, jwt_claims, query_of
from test_browser_pages import ARTIFACTS
from test_sdk_oauth import BrowserAgent, MemoryStorage, provider_for

PASSWORD = "correct horse battery staple"
KEY = base64.b64encode(bytes(range(32))).decode()
WRONG_KEY = base64.b64encode(bytes(range(1, 33))).decode()


def upstream_config(redis_url: str, password_hash: str, backend: str, access_ttl: str = "1h") -> str:
    """The upstream: an OAuth-protected MCP server (a gateway with local accounts ann and ben)."""
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_url}"
        keyPrefix: "upstream:"
    auth:
      local:
        users:
          ann: "{password_hash}"
          ben: "{password_hash}"
      allow:
        users: ["ann", "ben"]
      accessTokenTTL: "{access_ttl}"
    routers:
      tools:
        rule: "PathPrefix(`/tools`)"
        service: tools
    services:
      tools:
        http:
          url: "{backend}"
    """


def gateway_config(redis_url: str, password_hash: str, upstream_mcp: str) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_url}"
        keyPrefix: "gw:"
      encryptionKey: "env://MCPGW_STORE_KEY"
    auth:
      local:
        users:
          alice: "{password_hash}"
          bob: "{password_hash}"
      allow:
        users: ["alice", "bob"]
    audit:
      file: "audit.jsonl"
    log:
      level: trace
    routers:
      linear:
        rule: "PathPrefix(`/linear`)"
        service: linear
    services:
      linear:
        http:
          url: "{upstream_mcp}"
          oauth:
            scopes: []
    """


def launch(processes, tmp_path: Path, name: str, config: str, env: dict | None = None, verify=True) -> Gateway:
    directory = tmp_path / name
    directory.mkdir()
    port = free_port()
    path = directory / "gateway.yaml"
    path.write_text(textwrap.dedent(config).replace("{port}", str(port)))
    managed = start_process(name, [gateway_binary(), "serve", "--config", str(path), "--watch-interval", "0.2"], directory, env={**os.environ, **(env or {})})
    processes.append(managed)
    gateway = Gateway(managed, port, path)
    if "tls:" in config:
        gateway.base = f"https://127.0.0.1:{port}"

    def healthy():
        if managed.process.poll() is not None:
            raise AssertionError(f"{name} exited:\n{managed.log()}")
        try:
            return httpx.get(gateway.url("/healthz"), timeout=1, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, what=f"{name} /healthz")
    return gateway


class World:
    def __init__(self, processes, tmp_path, redis_server, local_password_hash, access_ttl="1h"):
        backend_port = _start_python_server(processes, tmp_path, "identity_server.py", "identity-backend")
        # Its own Redis database (1), as another deployment would have its own Redis.
        self.upstream = launch(processes, tmp_path, "upstream", upstream_config(
            f"redis://127.0.0.1:{redis_server.port}/1", local_password_hash, f"http://127.0.0.1:{backend_port}/mcp", access_ttl
        ))
        self.upstream_mcp = self.upstream.url("/tools/mcp")
        self.gateway = launch(processes, tmp_path, "gateway", gateway_config(redis_server.url, local_password_hash, self.upstream_mcp), env={"MCPGW_STORE_KEY": KEY})
        self.redis = redis_server
        self.tmp_path = tmp_path
        self.mcp_url = self.gateway.url("/linear/mcp")
        self.connect_url = self.gateway.url("/connect/linear")

    # What the store holds.

    @staticmethod
    def subject_hash(subject: str) -> str:
        return hashlib.sha256(("upstream-subject:" + subject).encode()).hexdigest()

    def raw_grant(self, login: str) -> str:
        return self.redis.cli("-n", "0", "GET", f"gw:upstream-grant:linear:{self.subject_hash('local:' + login)}").strip()

    def grant(self, login: str, key: str = KEY) -> dict:
        raw = self.raw_grant(login)
        version, _key_id, sealed = raw.split(".", 2)
        assert version == "v1"
        blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        aad = f"upstream-grant|linear|{self.subject_hash('local:' + login)}".encode()
        return json.loads(AESGCM(base64.b64decode(key)).decrypt(blob[:12], blob[12:], aad))

    def wait_until_refused(self, token: str) -> None:
        """Until the upstream refuses `token` (it caches verified tokens for a few seconds)."""
        def refused():
            response = httpx.post(self.upstream_mcp, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25",
            }, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=5)
            return response.status_code == 401

        wait_until(refused, what="the upstream refuses the revoked token", timeout=30)

    # The user's browser, in headless Chromium: both gateways' consent pages, local accounts.

    def connect_in_browser(self, url: str, gateway_login: str, upstream_login: str, browser: Chromium | None = None) -> str:
        own = browser is None
        browser = browser or Chromium(self.tmp_path / f"browser-{gateway_login}-{time.monotonic_ns()}")
        try:
            browser.navigate(url)
            # The gateway's own sign-in (its consent page for its connections page).
            assert browser.url().startswith(self.gateway.url("/authorize")), browser.url()
            browser.submit("#password", username=gateway_login, password=PASSWORD)
            # Then the upstream's authorization server: its consent page, its own accounts.
            assert browser.url().startswith(self.upstream.url("/authorize")), (browser.url(), browser.html())
            assert "mcp-gateway at 127.0.0.1" in browser.html()
            browser.submit("#password", username=upstream_login, password=PASSWORD)
            assert browser.url().startswith(self.gateway.url("/connect/callback")), browser.url()
            return browser.evaluate("document.getElementById('title').textContent")
        finally:
            if own:
                browser.close()

    def signed_in_browser(self, login: str) -> tuple[httpx.Client, str]:
        """A plain HTTP browser signed in to the gateway's connections pages as `login`, stopped
        where the gateway sends it to the upstream: (browser, the upstream authorization URL)."""
        client = httpx.Client(follow_redirects=False, timeout=15)
        response = client.get(self.connect_url)
        for _ in range(10):
            if response.status_code in (302, 303):
                location = response.headers["location"]
                if location.startswith(self.upstream.url("/authorize")):
                    return client, location
                response = client.get(location if location.startswith("http") else self.gateway.url(location))
                continue
            fields = form_for(response.text, "approve", "local")
            response = client.post(self.gateway.url("/authorize/consent"), data={**fields, "username": login, "password": PASSWORD})
        raise AssertionError(f"no way to the upstream: {response.status_code} {response.text[:300]}")

    async def whoami(self, login: str, elicitations: list, upstream_login: str | None, answer: str = "accept", mode: str = "legacy", storage=None) -> str:
        agent = BrowserAgent(self.gateway, provider="local", username=login, password=PASSWORD)
        storage = storage or MemoryStorage()
        world = self

        async def elicitation(context, params):
            elicitations.append(params)
            if answer == "accept" and upstream_login:
                title = await anyio.to_thread.run_sync(lambda: world.connect_in_browser(params.url, login, upstream_login))
                assert title == "Connected to linear", title
            return types.ElicitResult(action=answer)

        async with create_mcp_http_client(auth=provider_for(self.mcp_url, agent, storage)) as http:
            async with Client(streamable_http_client(self.mcp_url, http_client=http), mode=mode, elicitation_callback=elicitation) as client:
                try:
                    result = await client.call_tool("whoami", {})
                except MCPError as error:
                    return f"error {error.code}: {error}"
                assert not result.is_error, result
                return result.content[0].text


@pytest.fixture
def world(processes, tmp_path, redis_server, local_password_hash):
    return World(processes, tmp_path, redis_server, local_password_hash)


def test_a_user_connects_through_url_elicitation_and_the_upstream_sees_their_own_token(world):
    alice_asked, bob_asked = [], []
    # Alice (session-based SDK client) is not connected: her call brings a URL elicitation on the
    # call's stream; she connects as the upstream's "ann" and the gateway retries the call itself.
    assert anyio.run(world.whoami, "alice", alice_asked, "ann") == "ann"
    assert len(alice_asked) == 1 and alice_asked[0].mode == "url" and alice_asked[0].url == world.connect_url, alice_asked
    # Connected now: the next session calls at once, in either era.
    assert anyio.run(world.whoami, "alice", alice_asked, None) == "ann"
    assert anyio.run(lambda: world.whoami("alice", alice_asked, None, mode="2026-07-28")) == "ann"
    assert len(alice_asked) == 1

    # Bob is not served with Alice's connection: he is asked to connect his own. Declining gets
    # an error naming the connect page; nothing reaches the upstream.
    declined = anyio.run(lambda: world.whoami("bob", bob_asked, None, answer="decline"))
    assert declined.startswith("error -32010:") and world.connect_url in declined, declined
    # A 2026-07-28 client gets the ask as an input_required result, and retries once connected.
    assert anyio.run(lambda: world.whoami("bob", bob_asked, "ben", mode="2026-07-28")) == "ben"
    assert [asked.url for asked in bob_asked] == [world.connect_url, world.connect_url]
    assert anyio.run(world.whoami, "alice", alice_asked, None) == "ann"

    # At rest: sealed (AES-256-GCM), unreadable without the key, bound to its user.
    raw = world.raw_grant("alice")
    grant = world.grant("alice")
    token = grant["accessToken"]
    assert raw.startswith("v1.") and token not in raw and grant["refreshToken"] not in raw
    assert base64.b64encode(token.encode()).decode()[:40] not in raw
    with pytest.raises(InvalidTag):
        world.grant("alice", key=WRONG_KEY)
    # The upstream token is the upstream's own, issued to ann for the upstream's MCP endpoint.
    claims = jwt_claims(token)
    assert claims["sub"] == "local:ann" and claims["aud"] == world.upstream_mcp and claims["iss"] == world.upstream.base
    assert jwt_claims(world.grant("bob")["accessToken"])["sub"] == "local:ben"

    # Counted, never named.
    assert world.gateway.readiness()["connections"] == {"linear": 2}
    # No token of either side in the gateway's log (at trace) or its audit log.
    log = world.gateway.managed.log() + (world.gateway.config_path.parent / "audit.jsonl").read_text()
    for secret in (token, grant["refreshToken"], world.grant("bob")["accessToken"]):
        assert secret not in log
        # Nor the first bytes of one as the HTTP client's trace output would show a body part (hex).
        assert secret[:12].encode().hex() not in log
    assert "ahc-http-part" not in log
    audit = [json.loads(line) for line in (world.gateway.config_path.parent / "audit.jsonl").read_text().splitlines()]
    assert [e["user"] for e in audit if e["event"] == "connection.created"] == ["alice", "bob"]
    # The calls are audited like any HTTP route's, with the user and the tool.
    calls = [e for e in audit if e["event"] == "mcp.request" and e.get("tool") == "whoami"]
    assert calls and {e["transport"] for e in calls} == {"http"} and {e["service"] for e in calls} == {"linear"}
    assert {e["user"] for e in calls} == {"alice", "bob"}


def test_an_expired_or_refused_upstream_token_is_refreshed_and_a_revoked_grant_leads_back_to_connect(processes, tmp_path, redis_server, local_password_hash):
    world = World(processes, tmp_path, redis_server, local_password_hash, access_ttl="3s")
    asked = []
    title = world.connect_in_browser(world.connect_url, "alice", "ann")
    assert title == "Connected to linear"
    storage = MemoryStorage()
    assert anyio.run(lambda: world.whoami("alice", asked, None, storage=storage)) == "ann"
    first = world.grant("alice")
    # The upstream's access token lives 3 s: once it has expired, the next call refreshes it
    # before sending, and the client notices nothing.
    wait_until(lambda: time.time() > first["expiresAt"] + 0.2, what="the upstream token expired", timeout=10)
    assert anyio.run(lambda: world.whoami("alice", asked, None, storage=storage)) == "ann"
    second = world.grant("alice")
    assert second["accessToken"] != first["accessToken"] and second["refreshToken"] != first["refreshToken"]

    # The upstream refuses the access token (revoked there): the gateway refreshes on the 401 and
    # sends the call once more.
    revoked = httpx.post(world.upstream.url("/revoke"), data={"token": second["accessToken"], "client_id": second["clientID"]}, timeout=10)
    assert revoked.status_code == 200
    world.wait_until_refused(second["accessToken"])
    assert anyio.run(lambda: world.whoami("alice", asked, None, storage=storage, mode="2026-07-28")) == "ann"
    third = world.grant("alice")
    assert third["accessToken"] != second["accessToken"]

    # The whole grant revoked at the upstream: the refresh is refused, the connection is gone,
    # and the user is sent back to connect.
    for token in (third["refreshToken"], third["accessToken"]):
        assert httpx.post(world.upstream.url("/revoke"), data={"token": token, "client_id": third["clientID"]}, timeout=10).status_code == 200
    world.wait_until_refused(third["accessToken"])
    declined = anyio.run(lambda: world.whoami("alice", asked, None, answer="decline", storage=storage))
    assert declined.startswith("error -32010:") and world.connect_url in declined, declined
    assert len(asked) == 1 and asked[0].url == world.connect_url
    assert world.raw_grant("alice") == ""
    assert world.gateway.readiness()["connections"] == {"linear": 0}


def test_the_connections_page_lists_disconnects_and_revokes_at_the_upstream(world):
    browser = Chromium(world.tmp_path / "browser-page")
    try:
        assert world.connect_in_browser(world.connect_url, "alice", "ann", browser=browser) == "Connected to linear"
        grant = world.grant("alice")
        browser.navigate(world.gateway.url("/connections"))
        status = browser.evaluate("document.getElementById('status-linear').textContent")
        assert "connected since" in status and grant["accessToken"] not in browser.html()
        assert browser.evaluate("document.getElementById('login').textContent") == "alice"
        browser.screenshot(ARTIFACTS / "connections.png")
        browser.submit("#disconnect-linear")
        assert browser.evaluate("document.getElementById('done').textContent") == "Disconnected."
        assert "not connected" in browser.evaluate("document.getElementById('status-linear').textContent")
    finally:
        browser.close()
    assert world.raw_grant("alice") == ""
    # Revoked at the upstream too: its refresh token is dead there.
    refreshed = httpx.post(world.upstream.url("/token"), data={
        "grant_type": "refresh_token", "refresh_token": grant["refreshToken"], "client_id": grant["clientID"],
    }, timeout=10)
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", refreshed.text
    audit = [json.loads(line) for line in (world.gateway.config_path.parent / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("reason")) for e in audit if e["event"].startswith("connection.")] == [("connection.created", None), ("connection.ended", "disconnected")]


def test_a_connection_cannot_be_planted_replayed_or_forged(world):
    alice, alice_authorize = world.signed_in_browser("alice")
    bob, _ = world.signed_in_browser("bob")
    state = query_of(alice_authorize)["state"]
    # The flow under way is sealed in the store like the tokens: no verifier, no user in clear.
    flow_key = "gw:connect-flow:" + hashlib.sha256(state.encode()).hexdigest()
    flow = world.redis.cli("-n", "0", "GET", flow_key).strip()
    assert flow.startswith("v1.") and "alice" not in flow and "verifier" not in flow, flow
    assert query_of(alice_authorize)["code_challenge_method"] == "S256" and query_of(alice_authorize)["resource"] == world.upstream_mcp
    # Bob is lured to the gateway's callback with Alice's state (and a code of his choosing):
    # the flow is Alice's, so nothing is stored under either name, and the state is spent.
    planted = bob.get(world.gateway.url("/connect/callback"), params={"state": state, "code": "attacker-code"})
    assert planted.status_code == 403, planted.text
    replayed = alice.get(world.gateway.url("/connect/callback"), params={"state": state, "code": "whatever"})
    assert replayed.status_code == 400 and "expired or was already used" in replayed.text
    assert world.raw_grant("alice") == "" and world.raw_grant("bob") == ""
    # Without any session, or with a made-up state.
    assert httpx.get(world.gateway.url("/connect/callback"), params={"state": "x" * 32, "code": "c"}, timeout=5).status_code == 400
    # Unknown services and encoded paths are not found, whatever the spelling.
    for path in ("/connect/nope", "/connect/linear%2F..%2Fadmin", "/connect/LINEAR", "/connect/linear/../admin"):
        assert alice.get(world.gateway.url(path)).status_code in (400, 404), path
    # Disconnecting takes the page's form token and comes from the gateway's own origin.
    assert alice.post(world.gateway.url("/connections/disconnect"), data={"service": "linear"}).status_code == 403
    page = alice.get(world.gateway.url("/connections"))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and csrf is None  # nothing connected: no form to forge
    # The pages' own client cannot get a token for an MCP route.
    refused = httpx.get(world.gateway.url("/authorize"), params={
        "response_type": "code", "client_id": "mcp-gateway-connections", "redirect_uri": world.gateway.url("/connections/callback"),
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256", "state": "s",
        "resource": world.mcp_url,
    }, timeout=5)
    assert refused.status_code == 400 and "invalid_target" in refused.text
    # The gateway's Client ID Metadata Document names its callback.
    document = httpx.get(world.gateway.url("/.well-known/mcp-gateway-client.json"), timeout=5).json()
    assert document["client_id"] == world.gateway.url("/.well-known/mcp-gateway-client.json")
    assert document["redirect_uris"] == [world.gateway.url("/connect/callback")] and document["token_endpoint_auth_method"] == "none"


def test_provider_github_sends_the_users_github_token_asked_with_the_services_scopes(processes, tmp_path, redis_server, fake_github):
    backend_port = _start_python_server(processes, tmp_path, "identity_server.py", "identity-backend")
    gateway = launch(processes, tmp_path, "gateway", f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_server.url}"
        keyPrefix: "gh:"
      encryptionKey: "env://MCPGW_STORE_KEY"
    auth:
      github: {fake_github.config}
      allow:
        users: ["octocat"]
    routers:
      copilot:
        rule: "PathPrefix(`/copilot`)"
        service: copilot
    services:
      copilot:
        http:
          url: "http://127.0.0.1:{backend_port}/mcp"
          oauth:
            provider: github
            scopes: ["repo"]
    """, env={"MCPGW_STORE_KEY": KEY})
    fake_github.set_user("octocat", user_id=4242)
    url = gateway.url("/copilot/mcp")

    async def bearer(mode: str) -> str:
        agent = BrowserAgent(gateway, provider="github")
        async with create_mcp_http_client(auth=provider_for(url, agent, MemoryStorage())) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                result = await client.call_tool("bearer", {})
                assert not result.is_error, result
                return result.content[0].text

    seen = anyio.run(bearer, "legacy")
    assert seen.startswith("Bearer gho_"), seen
    # It is octocat's own token at GitHub, never the gateway's.
    assert httpx.get(fake_github.api_url + "/user", headers={"Authorization": seen}, timeout=5).json()["login"] == "octocat"
    # The sign-in asked GitHub for the service's scope.
    authorizations = [r for r in fake_github.requests() if r["path"] == "/login/oauth/authorize"]
    assert authorizations and "repo" in authorizations[-1]["query"]["scope"].split()
    assert anyio.run(bearer, "2026-07-28").startswith("Bearer gho_")
    assert gateway.readiness()["connections"] == {"copilot": 1}
    assert seen.removeprefix("Bearer ") not in gateway.managed.log()
    # Someone the allow-list refuses signs in at GitHub too: refused, and their token is kept
    # nowhere.
    fake_github.set_user("mallory", user_id=666)
    with pytest.raises(BaseException):
        anyio.run(bearer, "legacy")
    assert gateway.readiness()["connections"] == {"copilot": 1}


def test_the_store_key_is_rotated_without_losing_a_connection(world):
    assert world.connect_in_browser(world.connect_url, "alice", "ann") == "Connected to linear"
    old_key_id = world.raw_grant("alice").split(".")[1]

    def registration() -> str:
        """The gateway's client registration at the upstream's authorization server (sealed)."""
        keys = world.redis.cli("-n", "0", "KEYS", "gw:upstream-client:*").split()
        assert len(keys) == 1, keys
        return world.redis.cli("-n", "0", "GET", keys[0]).strip()

    assert registration().split(".")[1] == old_key_id
    new_key = base64.b64encode(bytes(range(100, 132))).decode()
    key_file = world.gateway.config_path.parent / "store-key"
    key_file.write_text(new_key + "\n")
    # The new key in force, the old one kept for opening; the running gateway reloads it live.
    text = world.gateway.config_path.read_text().replace(
        'encryptionKey: "env://MCPGW_STORE_KEY"', f'encryptionKey: "file://{key_file}"\n  previousEncryptionKeys: ["env://MCPGW_STORE_KEY"]'
    )
    generation = world.gateway.readiness()["configGeneration"]
    world.gateway.rewrite_config(text)
    world.gateway.wait_for_generation(generation + 1)
    assert anyio.run(world.whoami, "alice", [], None) == "ann"
    rotated = subprocess.run(
        [gateway_binary(), "admin", "rotate-store-key", "--config", str(world.gateway.config_path), "--json"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "MCPGW_STORE_KEY": KEY},
    )
    assert rotated.returncode == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    assert report["resealed"] == "1" and report["failed"] == "" and report["key"] != old_key_id
    assert report["registrationsResealed"] == "1" and report["registrationsUnchanged"] == "0"
    assert world.raw_grant("alice").split(".")[1] == report["key"]
    resealed_registration = registration()
    assert resealed_registration.split(".")[1] == report["key"]
    assert world.grant("alice", key=new_key)["accessToken"]
    with pytest.raises(InvalidTag):
        world.grant("alice", key=KEY)
    # The old key can go: the connection still serves.
    generation = world.gateway.readiness()["configGeneration"]
    world.gateway.rewrite_config(text.replace('\n  previousEncryptionKeys: ["env://MCPGW_STORE_KEY"]', ""))
    world.gateway.wait_for_generation(generation + 1)
    assert anyio.run(world.whoami, "alice", [], None) == "ann"
    # A new connection uses the same registration: it still opens (registering again would
    # write another one).
    assert world.connect_in_browser(world.connect_url, "bob", "ben") == "Connected to linear"
    assert registration() == resealed_registration
    # The key never appears in the command's output or the gateway's log.
    assert new_key not in rotated.stdout + rotated.stderr + world.gateway.managed.log() and KEY not in world.gateway.managed.log()


def test_a_client_without_url_elicitation_on_the_2024_transport_is_told_where_to_connect(world):
    from conftest import REPO
    from oauth_helpers import Browser, exchange_code, pkce_pair, register

    # Alice's gateway token, from a client of her own (local account).
    browser = Browser(world.gateway)
    client = register(world.gateway)
    verifier, challenge = pkce_pair()
    code = browser.sign_in(client["client_id"], challenge, provider="local", username="alice", password=PASSWORD, resource=world.mcp_url).params["code"]
    token = exchange_code(world.gateway, client["client_id"], code, verifier, resource=world.mcp_url).json()["access_token"]
    browser.close()

    def whoami() -> dict:
        finished = subprocess.run(
            [str(REPO / ".venv-legacy" / "bin" / "python"), str(REPO / "Tests" / "integration" / "clients" / "whoami_client.py"),
             "--url", world.gateway.url("/linear/sse"), "--token", token],
            capture_output=True, text=True, timeout=60,
        )
        assert finished.returncode == 0, finished.stderr[-3000:]
        return json.loads(finished.stdout.strip().splitlines()[-1])

    # The mcp 1.x client over HTTP+SSE declares no URL elicitation: it gets an error that names
    # the page, with the reason and URL as data.
    refused = whoami()
    assert refused["error"]["code"] == -32010 and world.connect_url in refused["error"]["message"], refused
    assert refused["error"]["data"] == {"reason": "upstream_connection_required", "service": "linear", "url": world.connect_url}
    assert world.connect_in_browser(world.connect_url, "alice", "ann") == "Connected to linear"
    assert whoami() == {"result": "ann"}


def test_an_https_gateway_is_known_to_the_upstream_by_its_client_id_metadata_document(processes, tmp_path, redis_server, local_password_hash):
    """No registration: the upstream's authorization server supports Client ID Metadata Documents
    and the gateway is on https, so its client id is its document's URL, which the upstream
    fetches (trusting the test CA)."""
    import ssl

    from pki import make_ca_and_server_cert

    ca_file, cert_file, key_file = make_ca_and_server_cert(tmp_path)
    backend_port = _start_python_server(processes, tmp_path, "identity_server.py", "identity-backend")
    upstream_text = upstream_config(f"redis://127.0.0.1:{redis_server.port}/1", local_password_hash, f"http://127.0.0.1:{backend_port}/mcp")
    upstream_text = upstream_text.replace("      accessTokenTTL:", f'      clientMetadata:\n        allowPrivateAddresses: true\n        caFile: "{ca_file}"\n      accessTokenTTL:')
    upstream = launch(processes, tmp_path, "upstream", upstream_text)
    config = gateway_config(redis_server.url, local_password_hash, upstream.url("/tools/mcp"))
    config = config.replace('publicURL: "http://127.0.0.1:{port}"', 'publicURL: "https://127.0.0.1:{port}"')
    config = config.replace('        address: "127.0.0.1:{port}"', f'        address: "127.0.0.1:{{port}}"\n        tls:\n          certFile: "{cert_file}"\n          keyFile: "{key_file}"')
    verify = ssl.create_default_context(cafile=str(ca_file))
    gateway = launch(processes, tmp_path, "gateway", config, env={"MCPGW_STORE_KEY": KEY}, verify=verify)
    document_url = gateway.url("/.well-known/mcp-gateway-client.json")

    # The user's browser: the gateway's sign-in, then the upstream's, both as local accounts.
    browser = httpx.Client(follow_redirects=False, timeout=15, verify=verify)
    response = browser.get(gateway.url("/connect/linear"))
    consents = []
    for _ in range(20):
        if response.status_code in (302, 303):
            location = str(response.url.join(response.headers["location"]))
            if location.startswith(upstream.url("/authorize")):
                assert query_of(location)["client_id"] == document_url, location
            response = browser.get(location)
            continue
        if 'name="password"' not in response.text:
            break
        origin = f"{response.url.scheme}://{response.url.netloc.decode()}"
        consents.append(origin)
        fields = form_for(response.text, "approve", "local")
        login = "alice" if origin == gateway.base else "ann"
        response = browser.post(origin + "/authorize/consent", data={**fields, "username": login, "password": PASSWORD})
    assert response.status_code == 200 and "Connected to linear" in response.text, response.text[:500]
    assert consents == [gateway.base, upstream.base]
    # The upstream knows the gateway by its document and was never asked to register it.
    assert "path=/register" not in upstream.managed.log()
    # It fetched the document from the gateway instead.
    assert "method=GET path=/.well-known/mcp-gateway-client.json" in gateway.managed.log()
    subject_hash = hashlib.sha256(b"upstream-subject:local:alice").hexdigest()
    raw = redis_server.cli("-n", "0", "GET", f"gw:upstream-grant:linear:{subject_hash}").strip()
    _version, _key_id, sealed = raw.split(".", 2)
    blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    grant = json.loads(AESGCM(base64.b64decode(KEY)).decrypt(blob[:12], blob[12:], f"upstream-grant|linear|{subject_hash}".encode()))
    assert grant["clientID"] == document_url and jwt_claims(grant["accessToken"])["sub"] == "local:ann"
