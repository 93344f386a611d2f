"""Machine ways in. API keys (`auth: apiKey`, `auth.apiKeys`): a key reaches a protected route as
X-API-Key or as a bearer token, never reaches the upstream, is refused on a route that does not
take keys, is matched by its user against allow-lists and policies (the official SDK client with a
key), and stops working at once when a reload removes it; `hash-key` and `new-key` print what
gateway.yaml needs. Machine clients (`auth.clients`, the `client_credentials` grant): the SDK's
ClientCredentialsOAuthProvider discovers the gateway and calls tools as the client's user, with
the TTL of `auth.clientOverrides`; wrong secrets, unknown clients and users off the allow-list are
refused; a removed client's tokens stop at once. No key, secret or token in the log."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys

import anyio
import httpx
import jwt
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import SERVERS, free_port, port_open, start_process, wait_until
from test_attacks import LEGACY, World, gateway_binary, start_gateway
from test_sdk_oauth import MemoryStorage

CI_KEY = "mcpgw_ci-bot-key-for-tests-0123456789abcdef"
MALLORY_KEY = "mcpgw_mallory-key-for-tests-0123456789abcd"
RUNNER_SECRET = "mcpgw_ci-runner-client-secret-0123456789ab"
INTRUDER_SECRET = "mcpgw_intruder-client-secret-0123456789abc"
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def config(upstream: str, password_hash: str, keys: dict[str, tuple[str, str]]) -> str:
    entries = "".join(f"""
        {name}: {{ hash: "{sha256(key)}", user: "{user}" }}""" for name, (key, user) in keys.items())
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow:
        users: ["alice", "ci-bot"]
      local:
        users:
          alice: "{password_hash}"
      apiKeys:{entries}
      clients:
        ci-runner: {{ secretHash: "{sha256(RUNNER_SECRET)}", user: "ci-bot" }}
        intruder: {{ secretHash: "{sha256(INTRUDER_SECRET)}", user: "mallory" }}
      clientOverrides:
        - {{ clientID: "ci-runner", accessTokenTTL: 24h }}
    routers:
      keyed: {{ rule: "PathPrefix(`/keyed`)", service: echo, auth: apiKey }}
      both: {{ rule: "PathPrefix(`/both`)", service: echo, auth: [oauth, apiKey] }}
      oauth-only: {{ rule: "PathPrefix(`/oauth-only`)", service: echo }}
      catalogue:
        rule: "PathPrefix(`/catalogue`)"
        service: catalogue
        auth: [apiKey, oauth]
        tools: {{ allow: ["get_*"] }}
        policies:
          - users: ["ci-bot"]
            allow: ["list_*"]
    services:
      echo:
        http:
          url: "{upstream}/echo"
      catalogue:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'catalogue_server.py'}"]
    """


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("api-keys")
    started = []
    try:
        upstream_port = free_port()
        started.append(start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp))
        wait_until(lambda: port_open(upstream_port), what="the echo upstream")
        upstream = f"http://127.0.0.1:{upstream_port}"
        gateway = start_gateway(tmp, config(upstream, local_password_hash, {"ci-bot": (CI_KEY, "ci-bot"), "mallory": (MALLORY_KEY, "mallory")}), name="gateway",
                                extra_args=["--log-level", "trace"])
        started.append(gateway.managed)
        world = World(gateway, 0, upstream, tmp, local_password_hash)
        yield world
    finally:
        for managed in reversed(started):
            managed.stop()


def post(world: World, router: str, **headers) -> httpx.Response:
    return httpx.post(world.url(f"/{router}/mcp"), json=CALL, headers={**LEGACY, **headers}, timeout=20)


def test_a_key_reaches_its_routes_in_either_header_and_never_the_upstream(world):
    for router in ("keyed", "both"):
        for headers in ({"X-API-Key": CI_KEY}, {"Authorization": f"Bearer {CI_KEY}"}, {"x-api-key": CI_KEY}):
            answer = post(world, router, **headers)
            assert answer.status_code == 200, (router, headers, answer.text)
            seen = {name.lower(): value for name, value in answer.json()["headers"]}
            assert "x-api-key" not in seen and "authorization" not in seen
            assert seen["x-forwarded-user"] == "ci-bot"
            assert CI_KEY not in answer.text


def test_keys_are_refused_where_they_do_not_belong(world):
    wrong = post(world, "keyed", **{"X-API-Key": CI_KEY + "x"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_token"
    assert wrong.headers["www-authenticate"].startswith('Bearer realm="mcp-gateway"')
    missing = post(world, "keyed")
    assert missing.status_code == 401 and "API key" in missing.json()["error_description"]
    # Where OAuth is among the kinds, the challenge still names the gateway's sign-in.
    assert "resource_metadata=" in post(world, "both", **{"X-API-Key": "nope-nope-nope-nope-nope"}).headers["www-authenticate"]
    # A route that takes only the gateway's tokens does not take keys, in either header.
    assert post(world, "oauth-only", **{"X-API-Key": CI_KEY}).status_code == 401
    assert post(world, "oauth-only", **{"Authorization": f"Bearer {CI_KEY}"}).status_code == 401
    # Header spellings a proxy might fold into X-API-Key are not the key's header here.
    for name in ("X_API_KEY", "X-Api_Key", "XAPIKEY"):
        smuggled = post(world, "keyed", **{name: CI_KEY})
        assert smuggled.status_code == 401, (name, smuggled.text)
    # A key's user is on no allow-list: 403, as for a user who signed in.
    denied = post(world, "keyed", **{"X-API-Key": MALLORY_KEY})
    assert denied.status_code == 403 and denied.json()["error"] == "access_denied"


def test_oauth_tokens_work_only_where_oauth_is_accepted(world):
    token = world.token("alice", "both")
    assert post(world, "both", Authorization=f"Bearer {token}").status_code == 200
    assert post(world, "keyed", Authorization=f"Bearer {token}").status_code == 401
    # Nor does the authorization server hand out tokens for a keys-only route.
    metadata = httpx.get(world.url("/.well-known/oauth-protected-resource/keyed/mcp"), timeout=10)
    assert metadata.status_code == 404


def test_the_official_client_with_a_key_sees_what_the_keys_user_may(world):
    async def tools(key: str) -> list[str]:
        async with create_mcp_http_client(headers={"X-API-Key": key}) as http:
            async with Client(streamable_http_client(world.url("/catalogue/mcp"), http_client=http), mode="legacy") as client:
                return sorted(tool.name for tool in (await client.list_tools()).tools)

    assert anyio.run(tools, CI_KEY) == ["get_secret", "get_time", "list_zones"]


def test_a_removed_key_stops_working_at_once(world):
    assert post(world, "keyed", **{"X-API-Key": CI_KEY}).status_code == 200
    config_path = world.tmp / "gateway.yaml"
    original = config_path.read_text()
    try:
        config_path.write_text(original.replace(sha256(CI_KEY), sha256("mcpgw_a-different-key-entirely-000000")))
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        wait_until(lambda: post(world, "keyed", **{"X-API-Key": CI_KEY}).status_code == 401, what="the removed key refused")
    finally:
        config_path.write_text(original)
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        wait_until(lambda: post(world, "keyed", **{"X-API-Key": CI_KEY}).status_code == 200, what="the key back")


def test_hash_key_and_new_key_print_what_gateway_yaml_needs(world):
    hashed = subprocess.run([gateway_binary(), "hash-key"], input=CI_KEY + "\n", capture_output=True, text=True, timeout=30)
    assert hashed.returncode == 0 and hashed.stdout.strip() == sha256(CI_KEY)
    short = subprocess.run([gateway_binary(), "hash-key"], input="short\n", capture_output=True, text=True, timeout=30)
    assert short.returncode == 2 and "at least 20 characters" in short.stderr
    fresh = subprocess.run([gateway_binary(), "new-key"], capture_output=True, text=True, timeout=30)
    lines = dict(line.split(":", 1) for line in fresh.stdout.splitlines())
    key, digest = lines["key"].strip(), lines["hash"].strip()
    assert key.startswith("mcpgw_") and len(key) >= 40 and digest == sha256(key)


# --- machine clients (client_credentials) --------------------------------------------------------

def client_token(world: World, client_id: str, secret: str, basic: bool = True, **form) -> httpx.Response:
    data = {"grant_type": "client_credentials", "resource": world.url("/both/mcp"), **form}
    if basic:
        return httpx.post(world.url("/token"), data=data, auth=(client_id, secret), timeout=10)
    return httpx.post(world.url("/token"), data={**data, "client_id": client_id, "client_secret": secret}, timeout=10)


def test_a_machine_client_gets_a_token_for_its_user_with_its_ttl(world):
    metadata = httpx.get(world.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert "client_credentials" in metadata["grant_types_supported"]
    for basic in (True, False):
        answer = client_token(world, "ci-runner", RUNNER_SECRET, basic=basic)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert "refresh_token" not in body and body["scope"] == "mcp"
        assert body["expires_in"] == 86400, "auth.clientOverrides gives this client a day"
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["gty"] == "client_credentials" and claims["sub"] == "client:ci-runner" and claims["login"] == "ci-bot"
        assert claims["exp"] - claims["iat"] == 86400 and claims["aud"] == world.url("/both/mcp")
        reached = post(world, "both", Authorization=f"Bearer {body['access_token']}")
        assert reached.status_code == 200
        seen = {name.lower(): value for name, value in reached.json()["headers"]}
        assert seen["x-forwarded-user"] == "ci-bot" and "authorization" not in seen
    # The token is for the resource it named, not another route.
    assert post(world, "catalogue", Authorization=f"Bearer {client_token(world, 'ci-runner', RUNNER_SECRET).json()['access_token']}").status_code == 401


def test_machine_clients_are_refused_what_they_may_not_have(world):
    for client_id, secret in (("ci-runner", RUNNER_SECRET + "x"), ("nobody", RUNNER_SECRET), ("ci-runner", "")):
        refused = client_token(world, client_id, secret)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", (client_id, refused.text)
    # A registered (public) client cannot use the grant: it is not in auth.clients.
    registered = httpx.post(world.url("/register"), json={"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}, timeout=10).json()
    assert client_token(world, registered["client_id"], "", basic=False).status_code == 401
    missing = httpx.post(world.url("/token"), data={"grant_type": "client_credentials"}, auth=("ci-runner", RUNNER_SECRET), timeout=10)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request" and "resource" in missing.json()["error_description"]
    elsewhere = client_token(world, "ci-runner", RUNNER_SECRET, resource="http://elsewhere.example/mcp")
    assert elsewhere.status_code == 400 and elsewhere.json()["error"] == "invalid_target"
    keys_only = client_token(world, "ci-runner", RUNNER_SECRET, resource=world.url("/keyed/mcp"))
    assert keys_only.status_code == 400 and keys_only.json()["error"] == "invalid_target"
    # Its user is on no allow-list.
    intruder = client_token(world, "intruder", INTRUDER_SECRET)
    assert intruder.status_code == 400 and intruder.json()["error"] == "unauthorized_client" and "mallory" in intruder.json()["error_description"]


def test_the_official_client_credentials_provider_calls_tools_as_the_clients_user(world):
    async def tools() -> list[str]:
        provider = ClientCredentialsOAuthProvider(
            server_url=world.url("/catalogue/mcp"), storage=MemoryStorage(), client_id="ci-runner", client_secret=RUNNER_SECRET,
            issuer=world.url(""),
        )
        async with create_mcp_http_client(auth=provider) as http:
            async with Client(streamable_http_client(world.url("/catalogue/mcp"), http_client=http), mode="legacy") as client:
                return sorted(tool.name for tool in (await client.list_tools()).tools)

    # The policy for ci-bot applies to the machine client's user as to its key.
    assert anyio.run(tools) == ["get_secret", "get_time", "list_zones"]


def test_a_removed_machine_client_is_refused_at_once(world):
    token = client_token(world, "ci-runner", RUNNER_SECRET).json()["access_token"]
    assert post(world, "both", Authorization=f"Bearer {token}").status_code == 200
    config_path = world.tmp / "gateway.yaml"
    original = config_path.read_text()
    try:
        config_path.write_text(original.replace("ci-runner: {", "ci-runner-renamed: {"))
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        wait_until(lambda: post(world, "both", Authorization=f"Bearer {token}").status_code == 401, what="the removed client's token refused")
        refused = post(world, "both", Authorization=f"Bearer {token}")
        assert "no longer configured" in refused.headers["www-authenticate"]
        assert client_token(world, "ci-runner", RUNNER_SECRET).status_code == 401
    finally:
        config_path.write_text(original)
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        wait_until(lambda: post(world, "both", Authorization=f"Bearer {token}").status_code == 200, what="the client back")


def test_no_key_secret_or_token_reaches_the_log_even_at_trace(world):
    post(world, "keyed", **{"X-API-Key": CI_KEY})
    post(world, "keyed", **{"X-API-Key": MALLORY_KEY})
    post(world, "both", Authorization=f"Bearer {world.token('alice', 'both')}")
    machine_token = client_token(world, "ci-runner", RUNNER_SECRET).json()["access_token"]
    post(world, "both", Authorization=f"Bearer {machine_token}")
    client_token(world, "ci-runner", RUNNER_SECRET + "-wrong")
    log = world.gateway.managed.log()
    assert "trace" in log, "the gateway logs at trace in this module"
    for secret in (CI_KEY, MALLORY_KEY, world.token("alice", "both"), RUNNER_SECRET, machine_token):
        assert secret not in log
