"""Dynamic client registration (RFC 7591) and client self-management (RFC 7592), with a real
redis-server as the store."""

import hashlib

import httpx
import pytest

from conftest import wait_until

CLAUDE = {
    "client_name": "Claude",
    "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
}


def config(redis_url: str, rate_limit: int = 60) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_url}"
        keyPrefix: "gwtest:"
    auth:
      allow:
        anyone: true
      registration:
        rateLimit: {rate_limit}
    routers:
      status:
        rule: "PathPrefix(`/status`)"
        service: status
        auth: none
    services:
      status:
        http:
          url: "http://127.0.0.1:9/mcp"
    """


@pytest.fixture
def gateway(start_gateway, redis_server):
    return start_gateway(config(redis_server.url))


def register(gateway, body):
    return httpx.post(gateway.url("/register"), json=body, timeout=10)


def test_claude_registers_as_a_public_client(gateway, redis_server):
    response = register(gateway, CLAUDE)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["client_id"].startswith("mcpgw-")
    assert isinstance(body["client_id_issued_at"], int)
    assert "client_secret" not in body and "client_secret_expires_at" not in body
    assert body["token_endpoint_auth_method"] == "none"
    assert body["redirect_uris"] == CLAUDE["redirect_uris"]
    assert body["registration_client_uri"] == f"{gateway.base}/register/{body['client_id']}"
    assert len(body["registration_access_token"]) >= 40
    # Stored under the configured prefix, with an expiry (unused clients go away).
    assert int(redis_server.cli("PTTL", f"gwtest:client:{body['client_id']}")) > 0


def test_confidential_client_gets_a_secret_stored_only_as_a_hash(gateway, redis_server):
    response = register(gateway, {"redirect_uris": ["https://app.example.com/cb"], "token_endpoint_auth_method": "client_secret_post"})
    assert response.status_code == 201
    body = response.json()
    secret, token = body["client_secret"], body["registration_access_token"]
    assert body["client_secret_expires_at"] == 0
    stored = redis_server.cli("GET", f"gwtest:client:{body['client_id']}")
    assert secret not in stored and token not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored


@pytest.mark.parametrize("uri", [
    "http://localhost.evil.com/cb", "javascript:alert(1)", "data:text/html,x", "https://a.example/cb#frag",
    "http://example.com/cb", "myapp:/cb",
])
def test_hostile_redirect_uris_are_refused(gateway, uri):
    response = register(gateway, {"redirect_uris": [uri]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"
    assert response.headers["cache-control"] == "no-store"


def test_bad_bodies(gateway):
    not_json = httpx.post(gateway.url("/register"), content=b"{oops", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"] == "invalid_client_metadata"
    bad_grant = register(gateway, {"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]})
    assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "invalid_client_metadata"
    assert httpx.get(gateway.url("/register")).status_code == 405


def test_rfc7592_read_update_delete(gateway):
    created = register(gateway, CLAUDE).json()
    uri, token = created["registration_client_uri"], created["registration_access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    read = httpx.get(uri, headers=auth)
    assert read.status_code == 200
    assert read.json()["client_name"] == "Claude" and "client_secret" not in read.json()

    update = {**CLAUDE, "client_id": created["client_id"], "client_name": "Claude (renamed)"}
    updated = httpx.put(uri, json=update, headers=auth)
    assert updated.status_code == 200 and updated.json()["client_name"] == "Claude (renamed)"
    # Updates are validated like registrations (no sneaking in other grant types).
    sneaky = httpx.put(uri, json={**update, "grant_types": ["authorization_code", "client_credentials"]}, headers=auth)
    assert sneaky.status_code == 400
    wrong_id = httpx.put(uri, json={**update, "client_id": "someone-else"}, headers=auth)
    assert wrong_id.status_code == 400
    assert httpx.get(uri, headers=auth).json()["client_name"] == "Claude (renamed)"

    # Becoming confidential issues a secret, once.
    confidential = httpx.put(uri, json={**update, "token_endpoint_auth_method": "client_secret_basic"}, headers=auth)
    assert confidential.status_code == 200 and confidential.json()["client_secret"]

    deleted = httpx.delete(uri, headers=auth)
    assert deleted.status_code == 204
    assert httpx.get(uri, headers=auth).status_code == 401


def test_rfc7592_authentication_reveals_nothing(gateway):
    first, second = register(gateway, CLAUDE).json(), register(gateway, CLAUDE).json()
    missing = httpx.get(first["registration_client_uri"])
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    malformed = httpx.get(first["registration_client_uri"], headers={"Authorization": "Basic abc"})
    assert malformed.status_code == 401
    wrong = httpx.get(first["registration_client_uri"], headers={"Authorization": "Bearer wrong"})
    others = httpx.get(first["registration_client_uri"], headers={"Authorization": f"Bearer {second['registration_access_token']}"})
    unknown = httpx.get(gateway.url("/register/mcpgw-doesnotexist"), headers={"Authorization": f"Bearer {first['registration_access_token']}"})
    # Wrong token, another client's token and an unknown client look exactly alike.
    assert wrong.status_code == others.status_code == unknown.status_code == 401
    assert wrong.json() == others.json() == unknown.json()
    assert httpx.delete(first["registration_client_uri"], headers={"Authorization": f"Bearer {second['registration_access_token']}"}).status_code == 401
    assert httpx.get(first["registration_client_uri"], headers={"Authorization": f"Bearer {first['registration_access_token']}"}).status_code == 200


def test_registration_is_rate_limited_per_ip(start_gateway, redis_server):
    gateway = start_gateway(config(redis_server.url, rate_limit=3))
    statuses = [register(gateway, CLAUDE).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    limited = register(gateway, CLAUDE)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"] == "rate_limited"


def test_redis_outage_gives_503_and_recovers_without_restart(gateway, redis_server, tmp_path):
    assert gateway.readiness()["store"] == "reachable"
    redis_server.stop()
    response = register(gateway, CLAUDE)
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    ready = httpx.get(gateway.url("/readyz"), timeout=10)
    assert ready.status_code == 503 and ready.json()["store"] == "unreachable"
    redis_server.restart(tmp_path)
    wait_until(lambda: register(gateway, CLAUDE).status_code == 201, timeout=20, what="registration after Redis returned")
    assert httpx.get(gateway.url("/readyz")).status_code == 200
