"""The authorization server end to end over HTTP: metadata, JWKS, /authorize with PKCE and consent,
GitHub sign-in against a fake GitHub (Enterprise URL layout), local accounts, /token with code and
refresh rotation, revocation and introspection, with a real redis-server. Each "known hole" of the
project this gateway replaces has a test here that shows it closed."""

import concurrent.futures
import json
import socket
import urllib.parse

import httpx
import jwt
import pytest

from conftest import wait_until
from oauth_helpers import (
    CALLBACK, Browser, error_page_return, exchange_code, form_for, jwt_claims, jwt_header, page_text, pkce_pair, query_of, raw_refreshes, register,
    token_request,
)


def config(redis_url: str, github, password_hash: str, allow_users=("octocat",), extra_auth: str = "", access_ttl: str = "5m") -> str:
    users = ", ".join(f'"{u}"' for u in allow_users)
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
      github:
        clientID: "fake-github-client"
        clientSecret: "fake-github-secret"
        webURL: "{github.web_url}"
        apiURL: "{github.api_url}"
      allow:
        users: [{users}]
        orgs: ["acme"]
        teams: ["Acme/Platform"]
      local:
        users:
          alice: "{password_hash}"
      accessTokenTTL: "{access_ttl}"
{extra_auth}
    routers:
      time:
        rule: "PathPrefix(`/time`)"
        service: time
      notes:
        rule: "PathPrefix(`/notes`)"
        service: notes
        allow:
          users: ["bob"]
      status:
        rule: "PathPrefix(`/status`)"
        service: status
        auth: none
    services:
      time:
        stdio:
          command: "mcp-server-time"
      notes:
        http:
          url: "http://127.0.0.1:9/mcp"
      status:
        http:
          url: "http://127.0.0.1:9/mcp"
    """


@pytest.fixture
def gateway(start_gateway, redis_server, fake_github, local_password_hash):
    return start_gateway(config(redis_server.url, fake_github, local_password_hash))


@pytest.fixture
def browser(gateway):
    b = Browser(gateway)
    yield b
    b.close()


def time_resource(gateway) -> str:
    return gateway.url("/time/mcp")


def signed_in(gateway, browser, client=None, scope=None, resource=None):
    """Registers (unless given) a public client, signs in through fake GitHub, redeems the code."""
    client = client or register(gateway)
    verifier, challenge = pkce_pair()
    result = browser.sign_in(client["client_id"], challenge, resource=resource or time_resource(gateway), scope=scope)
    assert result.params.get("code"), result.params
    response = exchange_code(gateway, client["client_id"], result.params["code"], verifier, resource=resource or time_resource(gateway))
    assert response.status_code == 200, response.text
    return client, response.json()


# --- metadata and keys -------------------------------------------------------------------------

def test_metadata_advertises_exactly_what_exists(gateway):
    document = httpx.get(gateway.url("/.well-known/oauth-authorization-server"), timeout=5).json()
    assert document == httpx.get(gateway.url("/.well-known/openid-configuration"), timeout=5).json()
    assert document["issuer"] == gateway.base  # no trailing slash
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert set(document["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    # private_key_jwt: for Client ID Metadata Documents that declare it (documents are on here).
    assert set(document["token_endpoint_auth_methods_supported"]) == {"none", "client_secret_basic", "client_secret_post", "private_key_jwt"}
    assert set(document["token_endpoint_auth_signing_alg_values_supported"]) == {"RS256", "ES256", "EdDSA"}
    assert document["client_id_metadata_document_supported"] is True
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["scopes_supported"] == ["mcp"]
    for key in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint", "introspection_endpoint", "jwks_uri"):
        assert document[key].startswith(gateway.base + "/"), key
        # Every advertised endpoint answers (GET on a POST endpoint: 405, never 404).
        assert httpx.get(document[key], timeout=5).status_code != 404, key


def test_resource_metadata_at_the_root_is_not_guessed_among_several_endpoints(gateway):
    assert httpx.get(gateway.url("/time/mcp/.well-known/oauth-protected-resource"), timeout=5).json()["resource"] == time_resource(gateway)
    # Two routers here take the gateway's sign-in: the root names neither.
    assert httpx.get(gateway.url("/.well-known/oauth-protected-resource"), timeout=5).status_code == 404


def test_jwks_publishes_the_signing_key_and_tokens_verify_with_it(gateway, browser):
    _, tokens = signed_in(gateway, browser)
    keys = httpx.get(gateway.url("/jwks.json"), timeout=5).json()["keys"]
    header = jwt_header(tokens["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt"
    key = next(k for k in keys if k["kid"] == header["kid"])
    assert "d" not in key  # public part only
    public = jwt.PyJWK(key).key
    claims = jwt.decode(tokens["access_token"], public, algorithms=["ES256"], audience=time_resource(gateway), issuer=gateway.base)
    assert claims["sub"] == "github:583231" and claims["login"] == "octocat"
    assert set(claims) >= {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "login"}
    assert claims["exp"] - claims["iat"] == 300


# --- the authorization code flow --------------------------------------------------------------

def test_github_sign_in_issues_audience_bound_tokens_with_refresh(gateway, browser, fake_github):
    client, tokens = signed_in(gateway, browser)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300 and tokens["scope"] == "mcp"
    assert tokens["refresh_token"]
    claims = jwt_claims(tokens["access_token"])
    assert claims["aud"] == time_resource(gateway) and claims["client_id"] == client["client_id"]
    # GitHub's REST reads: /user, and /user/orgs and /user/teams because the allow-list names both.
    paths = [r["path"] for r in fake_github.requests()]
    assert "/api/v3/user" in paths and "/api/v3/user/orgs" in paths and "/api/v3/user/teams" in paths
    authorize = next(r for r in fake_github.requests() if r["path"] == "/login/oauth/authorize")
    assert authorize["query"]["scope"] == "read:org"
    exchange = next(r for r in fake_github.requests() if r["path"] == "/login/oauth/access_token")
    assert exchange["accept"] == "application/json"


def test_redirect_carries_state_and_issuer(gateway, browser):
    client = register(gateway)
    _, challenge = pkce_pair()
    result = browser.sign_in(client["client_id"], challenge, resource=time_resource(gateway), state="xyz-state")
    assert result.params["state"] == "xyz-state" and result.params["iss"] == gateway.base


def test_consent_page_names_client_redirect_host_and_resource_and_forbids_framing(gateway, browser):
    client = register(gateway, client_name="Notes <b>App</b>")
    _, challenge = pkce_pair()
    page = browser.open(browser.authorize_url(client["client_id"], challenge, resource=time_resource(gateway)))
    assert page.status_code == 200
    assert "Notes &lt;b&gt;App&lt;/b&gt;" in page.text and "<b>App</b>" not in page.text
    assert "127.0.0.1" in page_text(page) and time_resource(gateway) in page_text(page)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text.lower()
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_deny_returns_access_denied_to_the_client(gateway, browser):
    client = register(gateway)
    _, challenge = pkce_pair()
    page = browser.open(browser.authorize_url(client["client_id"], challenge, resource=time_resource(gateway)))
    result = browser.follow(browser.deny(page))
    assert result.params["error"] == "access_denied" and result.params["state"] == "st-123" and result.params["iss"] == gateway.base


def test_consent_requires_the_starting_browser_and_the_forms_csrf_token(gateway, browser):
    client = register(gateway)
    _, challenge = pkce_pair()
    page = browser.open(browser.authorize_url(client["client_id"], challenge, resource=time_resource(gateway)))
    form = form_for(page.text, "approve", "github")
    # Another browser (no cookie) posting the same form: refused.
    assert httpx.post(gateway.url("/authorize/consent"), data=form, timeout=5).status_code == 403
    # The right browser with a forged CSRF token: refused.
    assert browser.client.post(gateway.url("/authorize/consent"), data={**form, "csrf": "forged"}).status_code == 403
    # The genuine submission still works afterwards.
    assert browser.follow(browser.client.post(gateway.url("/authorize/consent"), data=form)).params.get("code")


def test_github_callback_state_is_single_use_and_browser_bound(gateway, browser, fake_github):
    client = register(gateway)
    _, challenge = pkce_pair()
    page = browser.open(browser.authorize_url(client["client_id"], challenge, resource=time_resource(gateway)))
    to_github = browser.approve(page)
    callback = browser.client.get(to_github.headers["location"]).headers["location"]
    assert callback.startswith(gateway.url("/oauth/github/callback"))
    # Replayed in another browser first: refused, and that consumes it.
    assert httpx.get(callback, timeout=10).status_code == 403
    again = browser.client.get(callback)
    assert again.status_code == 400 and "expired or was already used" in page_text(again)


def test_github_error_with_status_200_is_handled(gateway, browser, fake_github):
    fake_github.control(exchange_error="bad_verification_code")
    client = register(gateway)
    _, challenge = pkce_pair()
    result = browser.sign_in(client["client_id"], challenge, resource=time_resource(gateway))
    assert result.location is None and result.response.status_code == 502
    assert "bad_verification_code" in page_text(result.response)
    back = query_of(form_link(result.response))
    assert back["error"] == "temporarily_unavailable" and back["state"] == "st-123"


def test_user_cancelling_at_github_returns_access_denied(gateway, browser, fake_github):
    fake_github.control(deny=True)
    client = register(gateway)
    _, challenge = pkce_pair()
    result = browser.sign_in(client["client_id"], challenge, resource=time_resource(gateway))
    assert result.params["error"] == "access_denied"


def form_link(response) -> str:
    import re
    import html
    match = re.search(r'id="return" href="([^"]+)"', response.text)
    assert match, response.text
    return html.unescape(match.group(1))


# --- allow-lists --------------------------------------------------------------------------------

def test_allow_list_matches_logins_case_insensitively(gateway, browser, fake_github):
    fake_github.set_user("OctoCat")
    _, tokens = signed_in(gateway, browser)
    assert jwt_claims(tokens["access_token"])["login"] == "OctoCat"


def test_user_outside_the_allow_list_is_denied_with_a_page_and_access_denied(gateway, browser, fake_github):
    fake_github.set_user("mallory", user_id=666)
    client = register(gateway)
    _, challenge = pkce_pair()
    result = browser.sign_in(client["client_id"], challenge, resource=time_resource(gateway))
    assert result.location is None and result.response.status_code == 403
    assert "mallory is not allowed" in page_text(result.response)
    back = query_of(form_link(result.response))
    assert back["error"] == "access_denied" and back["iss"] == gateway.base


def test_org_membership_admits_and_router_list_narrows(gateway, browser, fake_github):
    fake_github.set_user("carol", user_id=7, orgs=["ACME"])
    signed_in(gateway, browser)  # admitted through the org, matched case-insensitively
    # The notes router admits only bob, whatever the global list says.
    client = register(gateway)
    _, challenge = pkce_pair()
    result = browser.sign_in(client["client_id"], challenge, resource=gateway.url("/notes/mcp"))
    assert result.response.status_code == 403


def test_team_membership_admits(gateway, browser, fake_github):
    fake_github.set_user("dave", user_id=8, orgs=["other"], teams=["acme/platform"])
    _, tokens = signed_in(gateway, browser)
    assert jwt_claims(tokens["access_token"])["login"] == "dave"


def test_login_only_lists_read_neither_orgs_nor_teams(start_gateway, redis_server, fake_github, local_password_hash):
    text = config(redis_server.url, fake_github, local_password_hash).replace('orgs: ["acme"]\n        teams: ["Acme/Platform"]', "orgs: []")
    gateway = start_gateway(text)
    browser = Browser(gateway)
    try:
        signed_in(gateway, browser)
        paths = [r["path"] for r in fake_github.requests()]
        assert "/api/v3/user" in paths and not [p for p in paths if p.startswith("/api/v3/user/")]
    finally:
        browser.close()


def test_empty_allow_list_admits_nobody(start_gateway, redis_server, fake_github, local_password_hash):
    text = config(redis_server.url, fake_github, local_password_hash).replace('users: ["octocat"]\n        orgs: ["acme"]\n        teams: ["Acme/Platform"]', "users: []")
    gateway = start_gateway(text)
    browser = Browser(gateway)
    try:
        client = register(gateway)
        _, challenge = pkce_pair()
        result = browser.sign_in(client["client_id"], challenge, resource=time_resource(gateway))
        assert result.response.status_code == 403
        assert not [r for r in fake_github.requests() if r["path"] == "/api/v3/user/orgs"]
    finally:
        browser.close()


# --- local accounts -----------------------------------------------------------------------------

def test_local_sign_in(start_gateway, redis_server, fake_github, local_password_hash):
    gateway = start_gateway(config(redis_server.url, fake_github, local_password_hash, allow_users=("octocat", "alice")))
    browser = Browser(gateway)
    try:
        client = register(gateway)
        verifier, challenge = pkce_pair()
        page = browser.open(browser.authorize_url(client["client_id"], challenge, resource=time_resource(gateway)))
        wrong = browser.approve(page, "local", username="alice", password="wrong")
        assert wrong.status_code == 401 and "wrong" in page_text(wrong)
        # The same request can be retried from the re-rendered form.
        result = browser.follow(browser.approve(wrong, "local", username="alice", password="correct horse battery staple"))
        tokens = exchange_code(gateway, client["client_id"], result.params["code"], verifier, resource=time_resource(gateway)).json()
        assert jwt_claims(tokens["access_token"])["sub"] == "local:alice"
    finally:
        browser.close()


# --- /authorize errors ----------------------------------------------------------------------------

def test_pkce_is_required_and_plain_is_refused(gateway, browser):
    client = register(gateway)
    no_challenge = browser.open(browser.authorize_url(client["client_id"], None, resource=time_resource(gateway)))
    assert error_page_return(no_challenge)["error"] == "invalid_request"
    plain = browser.open(browser.authorize_url(client["client_id"], "a" * 43, resource=time_resource(gateway)).replace("S256", "plain"))
    assert error_page_return(plain)["error"] == "invalid_request"


def test_a_trailing_slash_on_the_resource_names_the_same_resource(gateway, browser):
    slashed = time_resource(gateway) + "/"
    client, tokens = signed_in(gateway, browser, resource=slashed)
    assert jwt_claims(tokens["access_token"])["aud"] == time_resource(gateway)
    assert refresh(gateway, client, tokens["refresh_token"], resource=slashed).status_code == 200
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "slashed", "version": "1"}}}
    for path in ("/time/mcp", "/time/mcp/"):
        assert httpx.post(gateway.url(path), json=init, headers=headers, timeout=20).status_code == 200, path
    metadata = httpx.get(gateway.url("/.well-known/oauth-protected-resource/time/mcp/"), timeout=10)
    assert metadata.status_code == 200 and metadata.json()["resource"] == time_resource(gateway)


def test_unknown_resource_is_invalid_target(gateway, browser):
    client = register(gateway)
    _, challenge = pkce_pair()
    response = browser.open(browser.authorize_url(client["client_id"], challenge, resource="https://evil.example/mcp"))
    assert error_page_return(response)["error"] == "invalid_target"
    # A route with auth: none is not a protected resource either.
    response = browser.open(browser.authorize_url(client["client_id"], challenge, resource=gateway.url("/status/mcp")))
    assert error_page_return(response)["error"] == "invalid_target"


def test_unregistered_redirect_uri_is_shown_not_redirected(gateway, browser):
    client = register(gateway)
    _, challenge = pkce_pair()
    for uri in ("http://127.0.0.1.evil.com/callback", "https://evil.example/callback", CALLBACK + "/../x"):
        response = browser.open(browser.authorize_url(client["client_id"], challenge, redirect_uri=uri, resource=time_resource(gateway)))
        assert response.status_code == 400 and "location" not in response.headers


def test_loopback_redirect_may_use_any_port(gateway, browser):
    client = register(gateway)
    verifier, challenge = pkce_pair()
    other_port = "http://127.0.0.1:50123/callback"
    result = browser.sign_in(client["client_id"], challenge, redirect_uri=other_port, resource=time_resource(gateway))
    response = exchange_code(gateway, client["client_id"], result.params["code"], verifier, redirect_uri=other_port)
    assert response.status_code == 200


def test_error_pages_escape_reflected_values(gateway, browser):
    attack = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    for url in (
        gateway.url("/authorize?client_id=" + httpx.QueryParams({"x": attack})["x"]),
        gateway.url("/authorize?" + str(httpx.QueryParams({"client_id": attack}))),
    ):
        response = browser.open(url)
        assert response.status_code == 400
        assert "<script>" not in response.text and "<img" not in response.text
        assert "&lt;script&gt;" in response.text
    client = register(gateway)
    response = browser.open(browser.authorize_url(client["client_id"], "x", redirect_uri="https://x.example/" + attack))
    assert response.status_code == 400 and "<script>" not in response.text and "onerror=alert" not in response.text.replace("onerror=alert(2)&gt;", "")


def test_unknown_scopes_are_dropped_from_the_grant(gateway, browser):
    _, tokens = signed_in(gateway, browser, scope="claudeai mcp offline_access")
    assert tokens["scope"] == "mcp" and jwt_claims(tokens["access_token"])["scope"] == "mcp"
    _, tokens = signed_in(gateway, browser, scope="claudeai")
    assert tokens["scope"] == "mcp"
    # A refresh token whether or not offline_access was asked for (Claude never asks).
    assert tokens["refresh_token"]


# --- codes ----------------------------------------------------------------------------------------

def code_for(gateway, browser, client):
    verifier, challenge = pkce_pair()
    result = browser.sign_in(client["client_id"], challenge, resource=time_resource(gateway))
    return result.params["code"], verifier


def test_code_is_single_use(gateway, browser):
    client = register(gateway)
    code, verifier = code_for(gateway, browser, client)
    assert exchange_code(gateway, client["client_id"], code, verifier).status_code == 200
    again = exchange_code(gateway, client["client_id"], code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert again.headers["cache-control"] == "no-store"


def test_code_cannot_be_double_spent_concurrently(gateway, browser):
    client = register(gateway)
    code, verifier = code_for(gateway, browser, client)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: exchange_code(gateway, client["client_id"], code, verifier).status_code, range(8)))
    assert statuses.count(200) == 1 and statuses.count(400) == 7


def test_code_is_bound_to_its_client_and_burnt_by_a_wrong_presentation(gateway, browser):
    victim = register(gateway)
    thief = register(gateway)
    code, verifier = code_for(gateway, browser, victim)
    stolen = exchange_code(gateway, thief["client_id"], code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    # Burnt: the rightful client cannot use it any more either.
    assert exchange_code(gateway, victim["client_id"], code, verifier).status_code == 400
    code, verifier = code_for(gateway, browser, victim)
    assert exchange_code(gateway, victim["client_id"], code, "x" * 50).json()["error"] == "invalid_grant"


def test_code_lives_at_most_sixty_seconds(gateway, browser, redis_server):
    client = register(gateway)
    code_for(gateway, browser, client)
    keys = [k for k in redis_server.cli("KEYS", "gwtest:code:*").split() if k]
    assert keys and all(0 < int(redis_server.cli("TTL", k)) <= 60 for k in keys)


def test_code_resource_must_match(gateway, browser):
    client = register(gateway)
    code, verifier = code_for(gateway, browser, client)
    response = exchange_code(gateway, client["client_id"], code, verifier, resource=gateway.url("/notes/mcp"))
    assert response.json()["error"] == "invalid_grant"


# --- token endpoint client authentication -------------------------------------------------------

def test_unknown_client_gets_401_invalid_client(gateway):
    response = token_request(gateway, {"grant_type": "authorization_code", "code": "x", "code_verifier": "y" * 43, "client_id": "mcpgw-nope", "redirect_uri": CALLBACK})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert response.headers["cache-control"] == "no-store"


def test_a_deleted_client_is_told_to_register_again_at_authorize_and_token(gateway, browser):
    client = register(gateway)
    code, verifier = code_for(gateway, browser, client)
    deleted = httpx.delete(client["registration_client_uri"], headers={"Authorization": f"Bearer {client['registration_access_token']}"}, timeout=10)
    assert deleted.status_code == 204
    # /token: 401 invalid_client (what makes Claude register again).
    answer = exchange_code(gateway, client["client_id"], code, verifier)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    # /authorize: an error page, never a redirect to the (no longer registered) redirect URI.
    page = browser.open(browser.authorize_url(client["client_id"], pkce_pair()[1], resource=time_resource(gateway)))
    assert page.status_code == 400 and "location" not in page.headers
    assert "unknown" in page.text.lower() or "not registered" in page.text.lower(), page.text[:500]


def test_confidential_clients_authenticate_with_their_registered_method(gateway, browser):
    basic = register(gateway, token_endpoint_auth_method="client_secret_basic")
    code, verifier = code_for(gateway, browser, basic)
    wrong = exchange_code(gateway, basic["client_id"], code, verifier, auth=(basic["client_id"], "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    code, verifier = code_for(gateway, browser, basic)
    assert exchange_code(gateway, basic["client_id"], code, verifier).status_code == 401  # no secret at all
    code, verifier = code_for(gateway, browser, basic)
    assert exchange_code(gateway, basic["client_id"], code, verifier, auth=(basic["client_id"], basic["client_secret"])).status_code == 200

    post = register(gateway, token_endpoint_auth_method="client_secret_post")
    code, verifier = code_for(gateway, browser, post)
    response = token_request(gateway, {
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": CALLBACK,
        "client_id": post["client_id"], "client_secret": post["client_secret"],
    })
    assert response.status_code == 200 and "refresh_token" in response.json()


def test_client_without_refresh_grant_gets_no_refresh_token_field(gateway, browser):
    client = register(gateway, grant_types=["authorization_code"])
    code, verifier = code_for(gateway, browser, client)
    body = exchange_code(gateway, client["client_id"], code, verifier).json()
    assert "refresh_token" not in body  # never refresh_token: null


# --- refresh tokens ------------------------------------------------------------------------------

def refresh(gateway, client, refresh_token, **extra):
    return token_request(gateway, {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"], **extra})


def test_refresh_rotates_and_reuse_revokes_the_family(gateway, browser):
    client, tokens = signed_in(gateway, browser)
    first = tokens["refresh_token"]
    rotated = refresh(gateway, client, first)
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert second != first
    assert jwt_claims(rotated.json()["access_token"])["aud"] == time_resource(gateway)
    # Within auth.refreshReuseGrace (10 s by default) the same client presenting it again is a
    # racer the network delayed: it gets the same answer, byte for byte, and revokes nothing.
    repeat = refresh(gateway, client, first)
    assert repeat.status_code == 200 and repeat.content == rotated.content
    # Another client presenting it is theft, grace or not: invalid_grant, and the family goes.
    replay = refresh(gateway, register(gateway), first)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # The whole family is gone: the legitimate latest token fails too, and so does the owner's
    # repeat (the grace ends with the family).
    assert refresh(gateway, client, second).json()["error"] == "invalid_grant"
    assert refresh(gateway, client, first).json()["error"] == "invalid_grant"


def test_racing_presentations_of_a_refresh_token_get_the_same_pair(gateway, browser):
    client, tokens = signed_in(gateway, browser)
    answers = raw_refreshes(gateway, client, tokens["refresh_token"], 3)
    assert [status for status, _ in answers] == [200, 200, 200], (answers, gateway.managed.log()[-3000:])
    pairs = {(json.loads(payload)["access_token"], json.loads(payload)["refresh_token"]) for _, payload in answers}
    assert len(pairs) == 1, "every racer gets the one new pair"
    (access, second), = pairs
    # The pair works: the family was not revoked by the race.
    assert introspect(gateway, client, access).json()["active"] is True
    # A racer arriving after the answer, within the grace, gets the same pair too.
    late = refresh(gateway, client, tokens["refresh_token"])
    assert late.status_code == 200 and json.loads(late.content) == json.loads(answers[0][1])
    # Another client presenting the old token is theft: invalid_grant, and the family goes.
    theft = refresh(gateway, register(gateway), tokens["refresh_token"])
    assert theft.status_code == 400 and theft.json()["error"] == "invalid_grant"
    assert refresh(gateway, client, second).json()["error"] == "invalid_grant"
    assert introspect(gateway, client, access).json() == {"active": False}


def tokens_of_another_sign_in(gateway, browser) -> str:
    return signed_in(gateway, browser)[1]["refresh_token"]


def test_an_invalid_refresh_token_is_invalid_grant(gateway, browser):
    client, _ = signed_in(gateway, browser)
    # (An empty value is an omitted parameter, RFC 6749 §3.1: invalid_request, as for none.)
    for presented in ("garbage", "x" * 4000, "%00", tokens_of_another_sign_in(gateway, browser)[:-2]):
        answer = refresh(gateway, client, presented)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", (presented[:10], answer.text)


def test_refresh_token_is_bound_to_its_client(gateway, browser):
    client, tokens = signed_in(gateway, browser)
    other = register(gateway)
    assert refresh(gateway, other, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(gateway, client, tokens["refresh_token"]).json()["error"] == "invalid_grant"  # family revoked


def test_refresh_rechecks_the_allow_list_in_force(gateway, browser, redis_server, fake_github, local_password_hash):
    client, tokens = signed_in(gateway, browser)
    fake_github_free = config(redis_server.url, fake_github, local_password_hash, allow_users=("someone-else",)).replace('orgs: ["acme"]', "orgs: []").replace('teams: ["Acme/Platform"]', "teams: []").replace("{port}", str(gateway.port))
    gateway.rewrite_config(fake_github_free)
    gateway.wait_for_generation(2)
    denied = refresh(gateway, client, tokens["refresh_token"])
    assert denied.status_code == 400 and "no longer allowed" in denied.json()["error_description"]


# --- revocation and introspection ----------------------------------------------------------------

def introspect(gateway, client, token):
    return httpx.post(gateway.url("/introspect"), data={"token": token, "client_id": client["client_id"]}, timeout=10)


def revoke(gateway, client, token):
    return httpx.post(gateway.url("/revoke"), data={"token": token, "client_id": client["client_id"]}, timeout=10)


def test_introspection_shows_only_the_clients_own_tokens(gateway, browser):
    client, tokens = signed_in(gateway, browser)
    other = register(gateway)
    own = introspect(gateway, client, tokens["access_token"]).json()
    assert own["active"] is True and own["client_id"] == client["client_id"] and own["username"] == "octocat"
    assert introspect(gateway, other, tokens["access_token"]).json() == {"active": False}
    assert introspect(gateway, other, tokens["refresh_token"]).json() == {"active": False}
    assert introspect(gateway, client, tokens["refresh_token"]).json()["active"] is True
    assert introspect(gateway, client, "garbage").json() == {"active": False}
    assert httpx.post(gateway.url("/introspect"), data={"token": tokens["access_token"], "client_id": "mcpgw-unknown"}, timeout=5).status_code == 401


def test_revocation_only_by_the_owning_client(gateway, browser):
    client, tokens = signed_in(gateway, browser)
    other = register(gateway)
    # Another client's revocation is answered like one of an unknown token (no existence
    # oracle, RFC 7009 §2.2) and revokes nothing.
    assert revoke(gateway, other, tokens["access_token"]).status_code == 200
    assert revoke(gateway, other, tokens["refresh_token"]).status_code == 200
    assert introspect(gateway, client, tokens["access_token"]).json()["active"] is True
    assert introspect(gateway, client, tokens["refresh_token"]).json()["active"] is True
    assert revoke(gateway, client, tokens["access_token"]).status_code == 200
    assert introspect(gateway, client, tokens["access_token"]).json() == {"active": False}
    assert revoke(gateway, client, tokens["refresh_token"]).status_code == 200
    assert refresh(gateway, client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert revoke(gateway, client, "unknown-token").status_code == 200  # RFC 7009 §2.2


def test_deleting_a_client_revokes_its_access_and_refresh_tokens(gateway, browser):
    client, tokens = signed_in(gateway, browser)
    response = httpx.delete(client["registration_client_uri"], headers={"Authorization": f"Bearer {client['registration_access_token']}"}, timeout=10)
    assert response.status_code == 204
    # A fresh registration cannot see the old tokens alive either.
    assert refresh(gateway, client, tokens["refresh_token"]).status_code == 401  # the client itself is gone
    helper = register(gateway)
    assert introspect(gateway, helper, tokens["access_token"]).json() == {"active": False}


# --- store outage -------------------------------------------------------------------------------

def test_redis_restart_mid_flow(gateway, browser, redis_server, tmp_path):
    client, tokens = signed_in(gateway, browser)
    redis_server.stop()
    down = refresh(gateway, client, tokens["refresh_token"])
    assert down.status_code == 503 and down.json()["error"] == "temporarily_unavailable"
    assert httpx.get(gateway.url("/jwks.json"), timeout=5).status_code in (200, 503)
    redis_server.restart(tmp_path)
    # Redis came back empty (no persistence in the test): a client registers and signs in again,
    # without restarting the gateway.
    wait_until(lambda: httpx.get(gateway.url("/readyz"), timeout=5).status_code == 200, what="gateway ready again")
    _, again = signed_in(gateway, browser)
    assert again["access_token"]


# --- key rotation ---------------------------------------------------------------------------------

def test_key_rotation_keeps_the_previous_key_published_for_live_tokens(start_gateway, redis_server, fake_github, local_password_hash):
    extra = """
      signing:
        rotationInterval: "3s"
"""
    gateway = start_gateway(config(redis_server.url, fake_github, local_password_hash, extra_auth=extra, access_ttl="3s"))
    browser = Browser(gateway)
    try:
        client, tokens = signed_in(gateway, browser)
        old_kid = jwt_header(tokens["access_token"])["kid"]
        # Each token request checks the schedule: once the key is 3 s old, a new one signs.
        def rotated():
            _, fresh = signed_in(gateway, browser, client=client)
            return jwt_header(fresh["access_token"])["kid"] != old_kid and fresh
        fresh = wait_until(rotated, timeout=20, interval=0.5, what="a token signed by a new key")
        kids = [k["kid"] for k in httpx.get(gateway.url("/jwks.json"), timeout=5).json()["keys"]]
        assert jwt_header(fresh["access_token"])["kid"] in kids and old_kid in kids
        assert introspect(gateway, client, tokens["access_token"]).json()["active"] in (True, False)  # may have expired
        assert introspect(gateway, client, fresh["access_token"]).json()["active"] is True
        # Once every token the old key signed has expired (3 s + 10 s skew), it is pruned.
        wait_until(lambda: old_kid not in [k["kid"] for k in httpx.get(gateway.url("/jwks.json"), timeout=5).json()["keys"]]
                   and signed_in(gateway, browser, client=client), timeout=40, interval=1, what="old key pruned")
    finally:
        browser.close()
