"""Client ID Metadata Documents: https client_ids fetched (through a test CA), validated, cached,
refused when unsafe, and replaced by pinned documents when a fetch fails; `private_key_jwt`
documents (inline `jwks` or `jwks_uri`) authenticating at /token with RFC 7523 assertions, or as
public clients."""

import ssl
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from oauth_helpers import CALLBACK as REDIRECT
from oauth_helpers import Browser, exchange_code, page_text, pkce_pair

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
from test_oauth import config as oauth_config


def config(redis_url, github, password_hash, ca_file, allow_private=True, pinned: str = "") -> str:
    extra = f"""
      clientMetadata:
        allowPrivateAddresses: {"true" if allow_private else "false"}
        caFile: "{ca_file}"
        fetchTimeout: "3s"
{pinned}"""
    return oauth_config(redis_url, github, password_hash, extra_auth=extra)


@pytest.fixture
def gateway(start_gateway, redis_server, fake_github, local_password_hash, metadata_documents):
    return start_gateway(config(redis_server.url, fake_github, local_password_hash, metadata_documents.ca_file))


def test_document_client_signs_in_and_is_cached(gateway, metadata_documents):
    client_id = metadata_documents.url("/client.json")
    browser = Browser(gateway)
    try:
        verifier, challenge = pkce_pair()
        page = browser.open(browser.authorize_url(client_id, challenge, resource=gateway.url("/time/mcp")))
        assert page.status_code == 200, page.text
        assert "Docs Client" in page.text and "published client metadata" in page_text(page)
        result = browser.follow(browser.approve(page))
        tokens = exchange_code(gateway, client_id, result.params["code"], verifier, resource=gateway.url("/time/mcp"))
        assert tokens.status_code == 200, tokens.text
        assert tokens.json()["refresh_token"]
        # Fetched once for /authorize, /token and the consent page: cached per max-age.
        assert metadata_documents.counts()["/client.json"] == 1
    finally:
        browser.close()


def test_a_documents_loopback_redirect_may_use_any_port(gateway, metadata_documents):
    # The document registers http://127.0.0.1:33418/callback; native clients use another port.
    client_id = metadata_documents.url("/client.json")
    other_port = "http://127.0.0.1:40111/callback"
    browser = Browser(gateway)
    try:
        verifier, challenge = pkce_pair()
        page = browser.open(browser.authorize_url(client_id, challenge, redirect_uri=other_port, resource=gateway.url("/time/mcp")))
        assert page.status_code == 200, page.text
        result = browser.follow(browser.approve(page), stop_prefix=other_port)
        assert result.params.get("code"), result
        tokens = exchange_code(gateway, client_id, result.params["code"], verifier, resource=gateway.url("/time/mcp"), redirect_uri=other_port)
        assert tokens.status_code == 200, tokens.text
    finally:
        browser.close()


@pytest.mark.parametrize("path, reason", [
    ("/wrong-id.json", "must equal its URL"),
    ("/big.json", "64 KiB"),
    ("/secret.json", "not supported for metadata documents"),
    ("/redirect-other", "another host"),
    ("/missing.json", "HTTP 404"),
])
def test_unusable_documents_are_refused_with_the_reason_in_the_log_only(gateway, metadata_documents, path, reason):
    _, challenge = pkce_pair()
    browser = Browser(gateway)
    try:
        page = browser.open(browser.authorize_url(metadata_documents.url(path), challenge, resource=gateway.url("/time/mcp")))
        assert page.status_code == 400 and "location" not in page.headers
        # What went wrong fetching a URL anyone can name is not told to the browser (an oracle
        # for what answers where); the operator finds it in the log.
        assert reason not in page_text(page) and "could not be fetched or is not a valid client metadata document" in page_text(page)
        assert reason in gateway.managed.log()
        # A failed document is not fetched again at once, however often it is named.
        browser.open(browser.authorize_url(metadata_documents.url(path), challenge, resource=gateway.url("/time/mcp")))
        assert metadata_documents.counts()[path.split("?")[0]] == 1
    finally:
        browser.close()


def test_the_whole_fetch_has_one_deadline(gateway, metadata_documents):
    import time

    _, challenge = pkce_pair()
    browser = Browser(gateway)
    try:
        started = time.monotonic()
        page = browser.open(browser.authorize_url(metadata_documents.url("/slow.json"), challenge, resource=gateway.url("/time/mcp")))
        # fetchTimeout is 3 s; the document trickles for ~200 s, each byte well within a read timeout.
        assert page.status_code == 400 and time.monotonic() - started < 6
        assert "took longer than" in gateway.managed.log()
    finally:
        browser.close()


def test_same_host_redirect_is_followed(gateway, metadata_documents):
    _, challenge = pkce_pair()
    browser = Browser(gateway)
    try:
        page = browser.open(browser.authorize_url(metadata_documents.url("/redirect-same"), challenge, resource=gateway.url("/time/mcp")))
        assert page.status_code == 200 and "Docs Client" in page.text
    finally:
        browser.close()


def test_private_addresses_are_refused_unless_allowed_and_pins_stand_in(start_gateway, redis_server, fake_github, local_password_hash, metadata_documents):
    client_id = metadata_documents.url("/client.json")
    pinned = f"""        pinned:
          "{client_id}":
            client_name: "Pinned Docs Client"
            redirect_uris: ["http://127.0.0.1:33418/callback"]
"""
    gateway = start_gateway(config(redis_server.url, fake_github, local_password_hash, metadata_documents.ca_file, allow_private=False, pinned=pinned))
    browser = Browser(gateway)
    try:
        _, challenge = pkce_pair()
        # The fetch is refused (127.0.0.1 is loopback) before any connection: the pin is used.
        page = browser.open(browser.authorize_url(client_id, challenge, resource=gateway.url("/time/mcp")))
        assert page.status_code == 200 and "Pinned Docs Client" in page.text
        assert metadata_documents.counts().get("/client.json", 0) == 0
        # Without a pin, the refusal says why in the log (not to the browser).
        page = browser.open(browser.authorize_url(metadata_documents.url("/redirect-same"), challenge, resource=gateway.url("/time/mcp")))
        assert page.status_code == 400 and "private, loopback or link-local" not in page_text(page)
        assert "private, loopback or link-local" in gateway.managed.log()
    finally:
        browser.close()


def test_a_failed_fetch_of_a_pinned_document_is_not_retried_on_every_sign_in(start_gateway, redis_server, fake_github, local_password_hash, metadata_documents):
    # Claude's document is often unreachable from datacenters: after one failed fetch the pin
    # answers for a minute, so each sign-in does not wait out another failed attempt.
    client_id = metadata_documents.url("/gone.json")
    pinned = f"""        pinned:
          "{client_id}":
            client_name: "Pinned Gone Client"
            redirect_uris: ["http://127.0.0.1:33418/callback"]
"""
    gateway = start_gateway(config(redis_server.url, fake_github, local_password_hash, metadata_documents.ca_file, pinned=pinned))
    browser = Browser(gateway)
    try:
        _, challenge = pkce_pair()
        for _ in range(3):
            page = browser.open(browser.authorize_url(client_id, challenge, resource=gateway.url("/time/mcp")))
            assert page.status_code == 200 and "Pinned Gone Client" in page.text
        assert metadata_documents.counts().get("/gone.json", 0) == 1
        assert "using the pinned document" in gateway.managed.log()
    finally:
        browser.close()


def test_claudes_document_is_pinned_without_configuration(gateway):
    """A gateway.yaml that never mentions Claude still lets Claude.ai in when fetching its
    document fails (a bot challenge from a datacenter; here: no route to the internet at all)."""
    claude = "https://claude.ai/oauth/mcp-oauth-client-metadata"
    browser = Browser(gateway)
    try:
        page = browser.open(browser.authorize_url(claude, pkce_pair()[1], redirect_uri="https://claude.ai/api/mcp/auth_callback",
                                                  resource=gateway.url("/time/mcp")))
        assert page.status_code == 200 and "Claude" in page_text(page)
    finally:
        browser.close()


def test_private_key_jwt_documents_authenticate_with_assertions_or_as_public_clients(gateway, metadata_documents):
    key = serialization.load_pem_private_key(httpx.get(metadata_documents.url("/_private_key"), verify=ssl.create_default_context(cafile=str(metadata_documents.ca_file)), timeout=10).content, None)
    other_key = ec.generate_private_key(ec.SECP256R1())
    metadata = httpx.get(gateway.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]

    def assertion(client_id: str, signing_key=key, kid: str = "doc-1", **claims) -> str:
        now = int(time.time())
        payload = {"iss": client_id, "sub": client_id, "aud": gateway.url("/token"), "iat": now, "exp": now + 60, "jti": str(uuid.uuid4()), **claims}
        return jwt.encode(payload, signing_key, algorithm="ES256", headers={"kid": kid})

    def token(form: dict) -> httpx.Response:
        return httpx.post(gateway.url("/token"), data=form, timeout=10)

    browser = Browser(gateway)
    try:
        for path in ("/pkjwt.json", "/pkjwt-uri.json"):
            client_id = metadata_documents.url(path)
            verifier, challenge = pkce_pair()
            page = browser.open(browser.authorize_url(client_id, challenge, resource=gateway.url("/time/mcp")))
            assert page.status_code == 200, page.text
            code = browser.follow(browser.approve(page)).params["code"]
            signed = assertion(client_id)
            exchanged = token({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
                               "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed})
            assert exchanged.status_code == 200, (path, exchanged.text)
            refresh_token = exchanged.json()["refresh_token"]
            refused = {
                "replayed": signed,
                "another key": assertion(client_id, signing_key=other_key),
                "another audience": assertion(client_id, aud="https://elsewhere.example/token"),
                "another client": assertion(metadata_documents.url("/client.json")),
                "expired": assertion(client_id, exp=int(time.time()) - 120),
                "a day long": assertion(client_id, exp=int(time.time()) + 86400),
                "HS256": jwt.encode({"iss": client_id, "sub": client_id, "aud": gateway.url("/token"), "exp": int(time.time()) + 60, "jti": "h"},
                                    "a-shared-secret-long-enough-for-hs256", algorithm="HS256", headers={"kid": "doc-1"}),
            }
            for name, bad in refused.items():
                answer = token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_assertion_type": ASSERTION_TYPE, "client_assertion": bad})
                assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", (path, name, answer.text)
            refreshed = token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_assertion_type": ASSERTION_TYPE,
                               "client_assertion": assertion(client_id)})
            assert refreshed.status_code == 200, (path, refreshed.text)
            # The same document also works as a public client (PKCE-bound codes): either way.
            verifier, challenge = pkce_pair()
            page = browser.open(browser.authorize_url(client_id, challenge, resource=gateway.url("/time/mcp")))
            code = browser.follow(browser.approve(page)).params["code"]
            public = exchange_code(gateway, client_id, code, verifier, resource=gateway.url("/time/mcp"))
            assert public.status_code == 200, (path, public.text)
        log = gateway.managed.log()
        assert "the client assertion was already used" in log
        assert signed not in log and signed.rsplit(".", 1)[1] not in log, "no assertion in the log"
    finally:
        browser.close()
