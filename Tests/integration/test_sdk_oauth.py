"""The official MCP Python SDK's OAuthClientProvider, given only an MCP URL, completes the whole
flow the way Claude.ai does: 401 → protected-resource metadata → authorization-server metadata →
dynamic registration → /authorize → consent (submitted by the test's browser) → fake GitHub →
/token → MCP requests; then a transparent refresh after the access token expires; then the user is
removed from gateway.yaml and the next call is refused."""

import time

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from oauth_helpers import CALLBACK, Browser, access_token_for, exchange_code, jwt_claims, pkce_pair, register
from test_oauth import config as oauth_config


class MemoryStorage:
    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None
        self.token_history: list[OAuthToken] = []

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens
        self.token_history.append(tokens)

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


class BrowserAgent:
    """Plays the user: opens the authorization URL, approves with GitHub, hands the code back."""

    def __init__(self, gateway, provider: str = "github", **login):
        self.browser = Browser(gateway)
        self.provider = provider
        self.login = login
        self.result: dict | None = None
        self.authorizations = 0

    async def redirect(self, url: str) -> None:
        self.authorizations += 1

        def run():
            page = self.browser.open(url)
            return self.browser.follow(self.browser.approve(page, self.provider, **self.login), stop_prefix=CALLBACK).params

        self.result = await anyio.to_thread.run_sync(run)

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result and "code" in self.result, self.result
        return AuthorizationCodeResult(code=self.result["code"], state=self.result.get("state"), iss=self.result.get("iss"))


def provider_for(url: str, agent: BrowserAgent, storage: MemoryStorage, client_metadata_url: str | None = None) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(
        client_name="SDK end-to-end", redirect_uris=[CALLBACK], grant_types=["authorization_code", "refresh_token"],
        response_types=["code"], token_endpoint_auth_method="none",
    )
    return OAuthClientProvider(
        server_url=url, client_metadata=metadata, storage=storage, redirect_handler=agent.redirect,
        callback_handler=agent.callback, client_metadata_url=client_metadata_url,
    )


async def call_tools(url: str, provider: OAuthClientProvider, mode: str = "legacy") -> tuple[set[str], str]:
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            if "get_current_time" in names:
                result = await client.call_tool("get_current_time", {"timezone": "UTC"})
            else:
                result = await client.call_tool("echo", {"text": "through the gate"})
            return names, result.content[0].text


@pytest.fixture
def gateway(start_gateway, redis_server, fake_github, local_password_hash, mcp_upstream):
    text = oauth_config(redis_server.url, fake_github, local_password_hash).replace("""      notes:
        http:
          url: "http://127.0.0.1:9/mcp\"""", f"""      notes:
        http:
          url: "{mcp_upstream}\"""").replace('users: ["bob"]', 'users: ["octocat", "carol"]')
    return start_gateway(text)


def test_sdk_client_signs_in_uses_both_route_kinds_refreshes_and_is_cut_off(gateway, redis_server, fake_github, local_password_hash, mcp_upstream):
    agent = BrowserAgent(gateway)
    storage = MemoryStorage()
    time_url = gateway.url("/time/mcp")
    try:
        time_provider = provider_for(time_url, agent, storage)  # one client, kept across connections
        names, text = anyio.run(call_tools, time_url, time_provider)
        assert names == {"get_current_time", "convert_time"} and '"timezone": "UTC"' in text
        assert agent.authorizations == 1 and storage.client.client_id.startswith("mcpgw-")
        first = storage.tokens
        assert jwt_claims(first.access_token)["aud"] == time_url and first.refresh_token

        # The HTTP route needs its own token (audience), so the SDK signs in again for it.
        notes_url = gateway.url("/notes/mcp")
        notes_storage = MemoryStorage()
        names, text = anyio.run(call_tools, notes_url, provider_for(notes_url, agent, notes_storage))
        assert "echo" in names and text == "through the gate"
        assert jwt_claims(notes_storage.tokens.access_token)["aud"] == notes_url

        # Expiry, then a transparent refresh (no browser). The client is told its token expired
        # rather than the test waiting out a real lifetime; the gateway's own expiry check is
        # covered by the unit tests (AccessTokenTests.expiryAllowsOnlySmallSkew).
        time_provider.context.token_expiry_time = time.time() - 1
        names, _ = anyio.run(call_tools, time_url, time_provider)
        assert "get_current_time" in names and agent.authorizations == 2  # 1 for time, 1 for notes
        assert storage.tokens.refresh_token != first.refresh_token and storage.tokens.access_token != first.access_token

        # octocat removed from gateway.yaml: the next call is refused, no restart.
        removed = oauth_config(redis_server.url, fake_github, local_password_hash, allow_users=("someone-else",))
        removed = removed.replace('orgs: ["acme"]', "orgs: []").replace("{port}", str(gateway.port))
        gateway.rewrite_config(removed)
        gateway.wait_for_generation(2)
        response = httpx.post(time_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                              headers={"Authorization": f"Bearer {storage.tokens.access_token}", "Accept": "application/json, text/event-stream",
                                       "Content-Type": "application/json"}, timeout=10)
        assert response.status_code == 403 and response.json()["error"] == "access_denied"
    finally:
        agent.browser.close()


def test_upstream_never_sees_the_token_and_gets_identity_headers(start_gateway, redis_server, fake_github, local_password_hash, raw_upstream):
    text = oauth_config(redis_server.url, fake_github, local_password_hash).replace(
        'url: "http://127.0.0.1:9/mcp"', f'url: "{raw_upstream}/echo"', 1).replace('users: ["bob"]', 'users: ["octocat"]\n        identityHeaders:\n          user: X-Remote-User')
    gateway = start_gateway(text)
    fake_github.set_user("octocat", email="octocat@example.com")
    browser = Browser(gateway)
    try:
        client = register(gateway)
        verifier, challenge = pkce_pair()
        resource = gateway.url("/notes/mcp")
        code = browser.sign_in(client["client_id"], challenge, resource=resource).params["code"]
        token = exchange_code(gateway, client["client_id"], code, verifier, resource=resource).json()["access_token"]
        echoed = httpx.post(resource, content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}', headers={
            "Authorization": f"Bearer {token}", "Cookie": "mcpgw-browser=secret", "X-Forwarded-User": "admin", "X-Remote-User": "admin",
            "X-Forwarded-Email": "admin@evil.example",
        }, timeout=10).json()
        headers = {k.lower(): v for k, v in echoed["headers"]}
        assert "authorization" not in headers and "cookie" not in headers
        # The router renamed the user header; spoofed copies of every identity header are gone.
        assert headers["x-remote-user"] == "octocat" and "x-forwarded-user" not in headers
        assert headers["x-forwarded-email"] == "octocat@example.com" and headers["x-forwarded-client-id"] == client["client_id"]
        # A token for another router is refused (audience).
        time_token = access_token_for(gateway, fake_github, "octocat", 583231, gateway.url("/time/mcp"))
        wrong = httpx.post(resource, content=b"{}", headers={"Authorization": f"Bearer {time_token}"}, timeout=10)
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    finally:
        browser.close()


def test_sdk_client_with_a_client_id_metadata_document(start_gateway, redis_server, fake_github, local_password_hash, metadata_documents):
    extra = f"""
      clientMetadata:
        allowPrivateAddresses: true
        caFile: "{metadata_documents.ca_file}"
"""
    gateway = start_gateway(oauth_config(redis_server.url, fake_github, local_password_hash, extra_auth=extra))
    agent = BrowserAgent(gateway)
    storage = MemoryStorage()
    time_url = gateway.url("/time/mcp")
    document = metadata_documents.url("/client.json")
    try:
        names, _ = anyio.run(call_tools, time_url, provider_for(time_url, agent, storage, client_metadata_url=document))
        assert "get_current_time" in names
        # No registration happened: the client id is the document's URL.
        assert storage.client.client_id == document
        assert jwt_claims(storage.tokens.access_token)["client_id"] == document
        assert metadata_documents.counts()["/client.json"] == 1
    finally:
        agent.browser.close()


def test_sessions_are_bound_to_the_identity_that_created_them(gateway, fake_github):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    for path in ("/time/mcp", "/notes/mcp"):
        resource = gateway.url(path)
        alice = access_token_for(gateway, fake_github, "octocat", 1, resource)
        mallory = access_token_for(gateway, fake_github, "carol", 2, resource)

        def post(token, body, session=None):
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
            if session:
                headers["Mcp-Session-Id"] = session
            return httpx.post(resource, json=body, headers=headers, timeout=20)

        created = post(alice, initialize)
        assert created.status_code == 200, created.text
        session = created.headers["mcp-session-id"]
        assert post(alice, ping, session).status_code in (200, 202)
        stolen = post(mallory, ping, session)
        assert stolen.status_code == 404, (path, stolen.status_code, stolen.text)
        assert httpx.delete(resource, headers={"Authorization": f"Bearer {mallory}", "Mcp-Session-Id": session}, timeout=10).status_code == 404
        assert post(alice, ping, session).status_code in (200, 202)  # untouched for its owner


def test_pass_identity_env_gives_each_session_its_callers_identity(start_gateway, redis_server, fake_github, local_password_hash):
    import sys
    from pathlib import Path

    server = Path(__file__).resolve().parent / "servers" / "stdio_server.py"
    text = oauth_config(redis_server.url, fake_github, local_password_hash).replace('''      time:
        stdio:
          command: "mcp-server-time"''', f'''      time:
        stdio:
          command: "{sys.executable}"
          args: ["{server}"]
          passIdentity: env''')
    gateway = start_gateway(text)
    resource = gateway.url("/time/mcp")
    seen = {}
    for login, user_id in (("octocat", 1), ("carol", 2)):
        token = access_token_for(gateway, fake_github, login, user_id, resource)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
        init = httpx.post(resource, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}, headers=headers, timeout=30)
        assert init.status_code == 200, init.text
        headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
        httpx.post(resource, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=10)
        values = []
        for name in ("MCP_GATEWAY_USER", "MCP_GATEWAY_SUBJECT"):
            answer = httpx.post(resource, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "getenv", "arguments": {"name": name}}},
                                headers=headers, timeout=30)
            body = answer.text
            values.append(body)
        seen[login] = values
    assert "octocat" in seen["octocat"][0] and "github:1" in seen["octocat"][1]
    assert "carol" in seen["carol"][0] and "github:2" in seen["carol"][1]


def test_org_membership_is_rechecked_with_the_membership_token(start_gateway, redis_server, fake_github, local_password_hash):
    """carol is admitted through the acme org; when GitHub says she left, her next request after
    membershipTTL is refused — no restart, no new sign-in, and her GitHub token was never kept."""
    text = oauth_config(redis_server.url, fake_github, local_password_hash).replace(
        'apiURL: "' + fake_github.api_url + '"',
        'apiURL: "' + fake_github.api_url + '"\n        membershipToken: "membership-token"\n        membershipTTL: "1s"')
    gateway = start_gateway(text)
    resource = gateway.url("/time/mcp")
    token = access_token_for(gateway, fake_github, "carol", 2, resource)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    assert httpx.post(resource, json=initialize, headers=headers, timeout=30).status_code == 200
    checks = [r for r in fake_github.requests() if r["path"] == "/api/v3/orgs/acme/members/carol"]
    assert checks and checks[-1]["authorization"] == "Bearer membership-token"
    fake_github.control(membership={"login": "carol", "orgs": []})
    from conftest import wait_until
    # Within membershipTTL (1 s) plus the verified-token cache (5 s) the gateway asks again.
    wait_until(lambda: httpx.post(resource, json=initialize, headers=headers, timeout=30).status_code == 403, timeout=20, interval=0.5,
               what="carol refused after leaving the org")


def test_a_token_for_another_router_is_refused_before_any_github_call(start_gateway, redis_server, fake_github, local_password_hash):
    """The audience is checked first: a token for /time/mcp shown to /notes/mcp costs no
    membership lookup at GitHub (and a cached org-derived identity of one router never decides
    for another)."""
    text = oauth_config(redis_server.url, fake_github, local_password_hash).replace(
        'apiURL: "' + fake_github.api_url + '"',
        'apiURL: "' + fake_github.api_url + '"\n        membershipToken: "membership-token"\n        membershipTTL: "1s"')
    gateway = start_gateway(text)
    token = access_token_for(gateway, fake_github, "carol", 2, gateway.url("/time/mcp"))
    before = len([r for r in fake_github.requests() if "/members/" in r["path"] or "/memberships/" in r["path"]])
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for _ in range(3):
        refused = httpx.post(gateway.url("/notes/mcp"), json=ping, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]
    after = len([r for r in fake_github.requests() if "/members/" in r["path"] or "/memberships/" in r["path"]])
    assert after == before
