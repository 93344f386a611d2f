"""Access tokens of external issuers (`auth: jwt`, `auth.jwt.issuers`), from a local test issuer
that serves OpenID discovery and a JWKS the way Keycloak does: RS256, ES256 and EdDSA tokens reach
a protected route as the user their claim names, with groups matched by allow-lists and policies
(the official SDK client); expired, early, foreign-audience, untrusted-issuer, unsigned, HMAC-
confused, tampered and unknown-key tokens are refused; a new key id is fetched once and further
unknown ids are not (at most once a minute); removing the issuer from gateway.yaml refuses its
tokens at once; an issuer whose keys cannot be fetched gets 503; no token in the log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import SERVERS, free_port, port_open, start_process, wait_until
from test_attacks import LEGACY, World, start_gateway

AUDIENCE = "mcp-gateway"
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


class LocalIssuer:
    """An OpenID provider's public side: discovery, a JWKS that can gain keys, and token minting."""

    def __init__(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.issuer = self.base + "/realms/acme"
        self.private: dict[str, object] = {}
        self.public_jwks: list[dict] = []
        self.jwks_fetches = 0
        self.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm)
        self.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()), ECAlgorithm)
        self.add_key("ed-1", ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm)
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/realms/acme/.well-known/openid-configuration":
                    body = {"issuer": issuer.issuer, "jwks_uri": issuer.issuer + "/protocol/openid-connect/certs"}
                elif self.path == "/realms/acme/protocol/openid-connect/certs":
                    issuer.jwks_fetches += 1
                    # An HMAC key in the set must never be used to verify anything.
                    body = {"keys": issuer.public_jwks + [{"kty": "oct", "kid": "hmac-1", "k": base64.urlsafe_b64encode(b"shared").decode().rstrip("=")}]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_key(self, kid: str, key, algorithm) -> None:
        self.private[kid] = key
        public = algorithm.to_jwk(key.public_key(), as_dict=True)
        self.public_jwks.append({**public, "kid": kid, "use": "sig"})

    def token(self, kid: str = "rsa-1", lifetime: int = 300, **claims) -> str:
        algorithm = {"rsa": "RS256", "ec-": "ES256", "ed-": "EdDSA"}[kid[:3]]
        now = int(time.time())
        payload = {"iss": self.issuer, "sub": "user-1234", "aud": AUDIENCE, "iat": now, "exp": now + lifetime,
                   "preferred_username": "jdoe", "groups": ["/sre"], "azp": "agent-app", **claims}
        payload = {key: value for key, value in payload.items() if value is not None}
        return jwt.encode(payload, self.private[kid], algorithm=algorithm, headers={"kid": kid})

    def stop(self):
        self.server.shutdown()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def config(upstream: str, password_hash: str, issuer: LocalIssuer) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow:
        users: ["alice", "jdoe", "intruder"]
        groups: ["/sre"]
      local:
        users:
          alice: "{password_hash}"
      jwt:
        issuers:
          keycloak:
            issuer: "{issuer.issuer}"
            audience: "{AUDIENCE}"
            userClaim: preferred_username
            emailClaim: email
            groupsClaim: groups
    routers:
      external: {{ rule: "PathPrefix(`/external`)", service: echo, auth: jwt }}
      mixed: {{ rule: "PathPrefix(`/mixed`)", service: echo, auth: [oauth, jwt] }}
      sre-only:
        rule: "PathPrefix(`/sre-only`)"
        service: echo
        auth: jwt
        allow: {{ groups: ["/SRE"] }}
      catalogue:
        rule: "PathPrefix(`/catalogue`)"
        service: catalogue
        auth: jwt
        tools: {{ allow: ["get_*"] }}
        policies:
          - groups: ["/sre"]
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
def issuer():
    running = LocalIssuer()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_password_hash, issuer):
    tmp = tmp_path_factory.mktemp("external-jwt")
    started = []
    try:
        upstream_port = free_port()
        started.append(start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp))
        wait_until(lambda: port_open(upstream_port), what="the echo upstream")
        upstream = f"http://127.0.0.1:{upstream_port}"
        gateway = start_gateway(tmp, config(upstream, local_password_hash, issuer), name="gateway", extra_args=["--log-level", "trace"])
        started.append(gateway.managed)
        yield World(gateway, 0, upstream, tmp, local_password_hash)
    finally:
        for managed in reversed(started):
            managed.stop()


def post(world: World, router: str, token: str | None) -> httpx.Response:
    headers = {**LEGACY, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(world.url(f"/{router}/mcp"), json=CALL, headers=headers, timeout=20)


def seen_headers(answer: httpx.Response) -> dict[str, str]:
    return {name.lower(): value for name, value in answer.json()["headers"]}


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
def test_tokens_of_each_algorithm_reach_the_route_as_their_user(world, issuer, kid):
    answer = post(world, "external", issuer.token(kid))
    assert answer.status_code == 200, answer.text
    seen = seen_headers(answer)
    assert seen["x-forwarded-user"] == "jdoe" and "authorization" not in seen


def test_groups_admit_and_the_mixed_router_takes_both_kinds(world, issuer):
    # Not on any users list, but in /sre (matched without regard to case).
    assert post(world, "sre-only", issuer.token(preferred_username="someone-else")).status_code == 200
    outsider = post(world, "sre-only", issuer.token(preferred_username="intruder", groups=["/dev"]))
    assert outsider.status_code == 403 and outsider.json()["error"] == "access_denied"
    # A space-separated groups claim counts as well.
    assert post(world, "sre-only", issuer.token(preferred_username="someone-else", groups="/dev /sre")).status_code == 200
    assert post(world, "mixed", issuer.token()).status_code == 200
    assert post(world, "mixed", world.token("alice", "mixed")).status_code == 200
    challenge = post(world, "mixed", None).headers["www-authenticate"]
    assert "resource_metadata=" in challenge
    missing = post(world, "external", None)
    assert missing.status_code == 401 and "trusted issuer" in missing.json()["error_description"]
    # A gateway token is not an external token: a jwt-only route refuses it.
    assert post(world, "external", world.token("alice", "mixed")).status_code == 401


def test_bad_tokens_are_refused(world, issuer):
    now = int(time.time())
    header_rs = b64(json.dumps({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"iss": issuer.issuer, "sub": "x", "aud": AUDIENCE, "exp": now + 300, "preferred_username": "jdoe"}).encode())
    good = issuer.token()
    rsa_public_pem = issuer.private["rsa-1"].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    confused = f"{hs_header}.{payload}." + b64(hmac.new(rsa_public_pem, f"{hs_header}.{payload}".encode(), hashlib.sha256).digest())
    oct_header = b64(json.dumps({"alg": "HS256", "kid": "hmac-1"}).encode())
    with_shared = f"{oct_header}.{payload}." + b64(hmac.new(b"shared", f"{oct_header}.{payload}".encode(), hashlib.sha256).digest())
    cases = {
        "expired": issuer.token(lifetime=-120),
        "not yet valid": issuer.token(nbf=now + 600),
        "another audience": issuer.token(aud="someone-else"),
        "audience list without ours": issuer.token(aud=["a", "b"]),
        "untrusted issuer": issuer.token(iss="http://127.0.0.1:1/realms/evil"),
        "no expiry": issuer.token(exp=None),
        "alg none": b64(json.dumps({"alg": "none"}).encode()) + "." + payload + ".",
        "HS256 with the RSA public key": confused,
        "HS256 with the JWKS's oct key": with_shared,
        "tampered": good.rsplit(".", 1)[0][:-4] + "AAAA." + good.rsplit(".", 1)[1],
        "signature of another key": f"{header_rs}.{payload}.{issuer.token('rsa-1').rsplit('.', 1)[1]}",
        "an ES256 token naming the RSA key": jwt.encode({"iss": issuer.issuer, "aud": AUDIENCE, "exp": now + 300, "preferred_username": "jdoe"},
                                                 issuer.private["ec-1"], algorithm="ES256", headers={"kid": "rsa-1"}),
        "no user claim": issuer.token(preferred_username=None),
        "not a JWT": "a.b.c",
    }
    for name, token in cases.items():
        answer = post(world, "external", token)
        assert answer.status_code == 401, (name, answer.status_code, answer.text)
        assert answer.json()["error"] == "invalid_token", (name, answer.text)
    # An audience list that includes ours is fine.
    assert post(world, "external", issuer.token(aud=["other", AUDIENCE])).status_code == 200


def test_a_new_key_is_fetched_once_and_made_up_ids_are_not(world, issuer):
    assert post(world, "external", issuer.token()).status_code == 200
    before = issuer.jwks_fetches
    issuer.add_key("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm)
    assert post(world, "external", issuer.token("rsa-2")).status_code == 200
    assert issuer.jwks_fetches == before + 1
    # Within the minute, another unknown id (even a real new one) is not fetched for.
    issuer.add_key("rsa-3", rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm)
    for _ in range(3):
        assert post(world, "external", issuer.token("rsa-3")).status_code == 401
    assert issuer.jwks_fetches == before + 1
    assert post(world, "external", issuer.token("rsa-2")).status_code == 200


def test_the_official_client_with_an_external_token_sees_what_its_groups_may(world, issuer):
    async def tools(token: str) -> list[str]:
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
            async with Client(streamable_http_client(world.url("/catalogue/mcp"), http_client=http), mode="legacy") as client:
                return sorted(tool.name for tool in (await client.list_tools()).tools)

    assert anyio.run(tools, issuer.token()) == ["get_secret", "get_time", "list_zones"]
    assert anyio.run(tools, issuer.token(groups=[])) == ["get_secret", "get_time"]


def test_a_removed_issuer_is_refused_at_once_and_an_unreachable_one_gets_503(world, issuer):
    token = issuer.token()
    assert post(world, "external", token).status_code == 200
    config_path = world.tmp / "gateway.yaml"
    original = config_path.read_text()
    try:
        config_path.write_text(original.replace(issuer.issuer, "http://127.0.0.1:9/realms/gone"))
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        wait_until(lambda: post(world, "external", token).status_code == 401, what="the removed issuer's token refused")
        gone = post(world, "external", token.replace("x", "x"))
        assert "not trusted" in gone.json()["error_description"]
        # The configured issuer now cannot be reached: its tokens cannot be checked (fail closed).
        unreachable = jwt.encode({"iss": "http://127.0.0.1:9/realms/gone", "aud": AUDIENCE, "exp": int(time.time()) + 300,
                                  "preferred_username": "jdoe"}, issuer.private["rsa-1"], algorithm="RS256", headers={"kid": "rsa-1"})
        answer = post(world, "external", unreachable)
        assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
    finally:
        config_path.write_text(original)
        world.gateway.managed.process.send_signal(signal.SIGHUP)
        wait_until(lambda: post(world, "external", token).status_code == 200, what="the issuer back")


def test_no_external_token_reaches_the_log_even_at_trace(world, issuer):
    tokens = [issuer.token(), issuer.token("ec-1"), issuer.token(lifetime=-120)]
    for token in tokens:
        post(world, "external", token)
    log = world.gateway.managed.log()
    assert "trace" in log, "the gateway logs at trace in this module"
    for token in tokens:
        assert token not in log and token.split(".")[2] not in log
