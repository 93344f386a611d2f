"""The gateway's own credentials for upstreams (`services.<s>.http.auth`): bearer, API key, Basic
and query, from `env://`, `file://` or literals; the client's credentials never reach the
upstream; a reload re-reads the secrets; nothing secret in the log, even at trace level; unset or
unreadable references are configuration errors with their position."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys

import httpx

from conftest import SERVERS, free_port, port_open, start_process, wait_until
from test_attacks import gateway_binary, start_gateway


def config(upstream: str, secret_file, query_file) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    routers:
      bearer: {{ rule: "PathPrefix(`/bearer`)", service: bearer, auth: none }}
      key: {{ rule: "PathPrefix(`/key`)", service: key, auth: none }}
      basic: {{ rule: "PathPrefix(`/basic`)", service: basic, auth: none }}
      query: {{ rule: "PathPrefix(`/query`)", service: query, auth: none }}
    services:
      bearer:
        http:
          url: "{upstream}/echo"
          auth: {{ bearer: "file://{secret_file}" }}
      key:
        http:
          url: "{upstream}/echo"
          auth: {{ apiKey: {{ header: "X-Api-Key", value: "env://UPSTREAM_KEY" }} }}
      basic:
        http:
          url: "{upstream}/echo"
          auth: {{ basic: {{ username: "svc", password: "env://UPSTREAM_PASSWORD" }} }}
      query:
        http:
          url: "{upstream}/echo?fixed=1"
          auth: {{ query: {{ name: "key", value: "file://{query_file}" }} }}
    """


CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Authorization": "Bearer the-clients-own-token"}


def seen(gateway, router: str) -> dict:
    answer = httpx.post(gateway.url(f"/{router}/mcp"), json=CALL, headers=HEADERS, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return {"headers": {k: v for k, v in body["headers"]}, "query": body["query"]}


def test_upstreams_get_the_gateways_credentials_from_env_and_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("credentials")
    upstream_port = free_port()
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the echo upstream")
    secret_file, query_file = tmp / "bearer-secret", tmp / "query-secret"
    secret_file.write_text("file-bearer-" + os.urandom(4).hex() + "\nsecond line is ignored\n")
    query_file.write_text("q&s=" + os.urandom(4).hex() + "\n")
    env = {"UPSTREAM_KEY": "env-key-" + os.urandom(4).hex(), "UPSTREAM_PASSWORD": "env-pass-" + os.urandom(4).hex()}
    bearer_secret = secret_file.read_text().splitlines()[0]
    gateway = start_gateway(tmp, config(f"http://127.0.0.1:{upstream_port}", secret_file, query_file), name="creds",
                            extra_args=["--log-level", "trace"], env=env)
    try:
        bearer = seen(gateway, "bearer")
        assert bearer["headers"]["authorization"] == f"Bearer {bearer_secret}"
        key = seen(gateway, "key")
        assert key["headers"]["x-api-key"] == env["UPSTREAM_KEY"] and "authorization" not in key["headers"]
        basic = seen(gateway, "basic")
        assert basic["headers"]["authorization"] == "Basic " + base64.b64encode(f"svc:{env['UPSTREAM_PASSWORD']}".encode()).decode()
        query = seen(gateway, "query")
        from urllib.parse import parse_qs
        assert parse_qs(query["query"]) == {"fixed": ["1"], "key": [query_file.read_text().strip()]}
        # The client's own token reached no upstream.
        assert all("the-clients-own-token" not in str(s) for s in (bearer, key, basic, query))

        # A renewed secret file is read again on reload.
        renewed = "renewed-bearer-" + os.urandom(4).hex()
        secret_file.write_text(renewed + "\n")
        os.kill(gateway.managed.pid, signal.SIGHUP)
        wait_until(lambda: seen(gateway, "bearer")["headers"]["authorization"] == f"Bearer {renewed}", what="the renewed bearer")

        log = gateway.managed.log()
        assert "upstream" in log.lower()
        for secret in (bearer_secret, renewed, env["UPSTREAM_KEY"], env["UPSTREAM_PASSWORD"], query_file.read_text().strip().split("=")[1]):
            assert secret not in log, "a secret is in the log"
    finally:
        gateway.managed.stop()
        upstream.stop()


def test_unresolvable_references_are_configuration_errors(tmp_path):
    text = config("http://127.0.0.1:9", tmp_path / "missing-file", tmp_path / "also-missing").replace("{port}", "8080")
    path = tmp_path / "gateway.yaml"
    import textwrap
    path.write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if k not in ("UPSTREAM_KEY", "UPSTREAM_PASSWORD")}
    result = subprocess.run([gateway_binary(), "check", "--config", str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    errors = result.stderr
    assert "services.bearer.http.auth.bearer: cannot read" in errors and "missing-file" in errors
    assert "services.key.http.auth.apiKey.value: the environment variable UPSTREAM_KEY is not set" in errors
    assert "services.basic.http.auth.basic.password: the environment variable UPSTREAM_PASSWORD is not set" in errors
    assert ":" in errors.splitlines()[0]  # file:line:column


def test_an_upstream_can_verify_the_callers_identity_against_the_gateways_jwks(tmp_path_factory, local_password_hash):
    import jwt
    from jwt import PyJWKClient

    from test_attacks import World, bearer

    tmp = tmp_path_factory.mktemp("identity-token")
    upstream_port = free_port()
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the echo upstream")
    secret_file = tmp / "bearer"
    secret_file.write_text("svc-token\n")
    gateway = start_gateway(tmp, f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow:
        users: ["alice"]
      local:
        users:
          alice: "{local_password_hash}"
    routers:
      signed: {{ rule: "PathPrefix(`/signed`)", service: signed }}
      open: {{ rule: "PathPrefix(`/open`)", service: signed, auth: none }}
    services:
      signed:
        http:
          url: "http://127.0.0.1:{upstream_port}/echo"
          auth: {{ bearer: "file://{secret_file}" }}
          identityToken: {{ header: "X-MCP-Identity", ttl: 2m }}
    """, name="identity")
    try:
        world = World(gateway, 0, "", tmp, local_password_hash)
        signed = world.sign_in("alice", "signed")
        forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
        answer = httpx.post(world.url("/signed/mcp"), json=CALL, headers=bearer(signed["access_token"], **{"X-MCP-Identity": forged}), timeout=10)
        headers = {k: v for k, v in answer.json()["headers"]}
        token = headers["x-mcp-identity"]
        assert token != forged and headers["authorization"] == "Bearer svc-token"
        # What an upstream does: verify against the gateway's JWKS, for its own URL as audience.
        key = PyJWKClient(world.url("/jwks.json")).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience=f"http://127.0.0.1:{upstream_port}/echo",
                            issuer=world.url("").rstrip("/"))
        assert claims["sub"] == "local:alice" and claims["login"] == "alice" and claims["router"] == "signed"
        assert claims["client_id"] == signed["client"]["client_id"] and 0 < claims["exp"] - claims["iat"] <= 120
        assert jwt.get_unverified_header(token)["typ"] == "mcp-identity+jwt"

        # The identity token is not an access token: presented to the gateway, it is refused.
        assert httpx.post(world.url("/signed/mcp"), json=CALL, headers=bearer(token), timeout=10).status_code == 401
        # Without a verified caller there is no identity, and a client's forgery never passes.
        anonymous = httpx.post(world.url("/open/mcp"), json=CALL, headers={"Accept": "application/json", "X-MCP-Identity": forged}, timeout=10)
        assert "x-mcp-identity" not in {k for k, _ in anonymous.json()["headers"]}
    finally:
        gateway.managed.stop()
        upstream.stop()


def test_a_translated_request_carries_the_signed_identity_too(tmp_path_factory, local_password_hash):
    """A 2026-07-28 client of a session-based-only upstream (SDK 1.x): the gateway writes the
    upstream's requests itself, and they carry the caller's signed identity as the relay's do."""
    import jwt
    from jwt import PyJWKClient

    from conftest import REPO, modern_body, modern_headers
    from test_attacks import World

    tmp = tmp_path_factory.mktemp("identity-translated")
    upstream_port = free_port()
    upstream = start_process("legacy-upstream", [str(REPO / ".venv-legacy" / "bin" / "python"), str(SERVERS / "legacy_server.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the session-based upstream")
    gateway = start_gateway(tmp, f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow:
        users: ["alice"]
      local:
        users:
          alice: "{local_password_hash}"
    routers:
      legacy: {{ rule: "PathPrefix(`/legacy`)", service: legacy }}
    services:
      legacy:
        http:
          url: "http://127.0.0.1:{upstream_port}/mcp"
          identityToken: {{ header: "X-MCP-Identity", ttl: 2m }}
    """, name="identity-translated")
    try:
        world = World(gateway, 0, "", tmp, local_password_hash)
        token = world.token("alice", "legacy")
        answer = httpx.post(world.url("/legacy/mcp"), json=modern_body("tools/call", {"name": "request_header", "arguments": {"name": "x-mcp-identity"}}),
                            headers={**modern_headers("tools/call", "request_header"), "Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        from test_attacks import rpc_result

        identity = rpc_result(answer)["result"]["content"][0]["text"]
        key = PyJWKClient(world.url("/jwks.json")).get_signing_key_from_jwt(identity)
        claims = jwt.decode(identity, key.key, algorithms=["ES256", "RS256"], audience=f"http://127.0.0.1:{upstream_port}/mcp", issuer=world.url("").rstrip("/"))
        assert claims["login"] == "alice" and claims["router"] == "legacy"
    finally:
        gateway.managed.stop()
        upstream.stop()
