"""The audit log: a JSON line for every MCP request and every security event, arguments as
configured, and no token, code, secret or password in the file whatever the mode."""

from __future__ import annotations

import json
import os
import signal
import sys

import httpx

from conftest import SERVERS, free_port, port_open, start_process, wait_until
from oauth_helpers import register, token_request
from test_attacks import PASSWORD, World, bearer, start_gateway


def config(audit_file, arguments: str, upstream: str, password_hash: str) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    audit:
      file: "{audit_file}"
      arguments: {arguments}
    auth:
      allow:
        users: ["alice"]
      local:
        users:
          alice: "{password_hash}"
    middlewares:
      tight:
        rateLimit: {{ average: 1, period: 1m, tools: {{ "limited": {{ average: 1, period: 1m }} }} }}
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
        middlewares: [tight]
      other:
        rule: "PathPrefix(`/other`)"
        service: echo
    services:
      echo:
        http:
          url: "{upstream}/echo"
    """


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_requests_and_security_events_are_audited_without_secrets(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("audit")
    upstream_port = free_port()
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the echo upstream")
    audit_file = tmp / "audit.log"
    gateway = start_gateway(tmp, config(audit_file, "redacted", f"http://127.0.0.1:{upstream_port}", local_password_hash), name="audited")
    try:
        world = World(gateway, 0, "", tmp, local_password_hash)
        signed = world.sign_in("alice", "echo")
        token = signed["access_token"]
        argument_secret = "argument-secret-" + os.urandom(6).hex()
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "lookup", "arguments": {"query": "weather", "api_key": argument_secret, "nested": {"Password": argument_secret}}}}
        assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer(token), timeout=10).status_code == 200
        # Over the router's limit: a rate_limited event and a 429 request record.
        assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer(token), timeout=10).status_code == 429
        # A token for another router, and one that is not a token at all.
        other = world.sign_in("alice", "other")["access_token"]
        assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer(other), timeout=10).status_code == 401
        assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer("not-a-token"), timeout=10).status_code == 401
        refreshed = token_request(gateway, {"grant_type": "refresh_token", "refresh_token": signed["refresh_token"],
                                            "client_id": signed["client"]["client_id"]}).json()
        revoked = httpx.post(world.url("/revoke"), data={"token": refreshed["refresh_token"], "client_id": signed["client"]["client_id"]}, timeout=10)
        assert revoked.status_code == 200
        confidential = register(gateway, token_endpoint_auth_method="client_secret_basic")
        # logrotate: move the file away, SIGUSR1, and the gateway writes a new one.
        rotated = tmp / "audit.log.1"
        wait_until(lambda: any(e["event"] == "client.registered" and e["client_id"] == confidential["client_id"] for e in read(audit_file)),
                   what="the registration in the audit log")
        audit_file.rename(rotated)
        os.kill(gateway.managed.pid, signal.SIGUSR1)
        wait_until(lambda: "audit log reopened" in gateway.managed.log(), what="the reopen")
        assert httpx.post(world.url("/echo/mcp"), json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers=bearer(other), timeout=10).status_code == 401
        wait_until(lambda: audit_file.exists() and any(e["event"] == "auth.denied" for e in read(audit_file)), what="a line in the new file")
    finally:
        gateway.managed.stop()
        upstream.stop()

    events = read(rotated)
    by_name: dict[str, list[dict]] = {}
    for event in events:
        assert event["time"].endswith("Z") and "event" in event
        by_name.setdefault(event["event"], []).append(event)
    request = next(e for e in by_name["mcp.request"] if e.get("status") == 200 and e.get("tool") == "lookup")
    assert request["router"] == "echo" and request["service"] == "echo" and request["transport"] == "http"
    assert request["mcp_method"] == "tools/call" and request["user"] == "alice" and request["subject"] == "local:alice"
    assert request["request_id"] == 7
    assert request["client_id"] == signed["client"]["client_id"] and request["ip"] == "127.0.0.1"
    assert request["bytes_in"] > 0 and request["bytes_out"] > 0 and request["duration_ms"] >= 0
    assert request["arguments"] == {"query": "weather", "api_key": "[redacted]", "nested": {"Password": "[redacted]"}}
    limited = next(e for e in by_name["mcp.request"] if e.get("status") == 429)
    assert limited["error_code"] == -32000
    rate = by_name["rate_limited"][0]
    assert rate["policy"] == "tight" and rate["router"] == "echo" and rate["user"] == "alice" and rate["tool"] == "lookup"
    reasons = sorted(e["reason"] for e in by_name["auth.denied"])
    assert reasons == ["invalid_token", "invalid_token"], reasons
    assert {"auth.signin", "token.issued", "token.refreshed", "token.revoked", "client.registered"} <= by_name.keys(), by_name.keys()
    assert by_name["token.refreshed"][0]["grant_type"] == "refresh_token"

    text = rotated.read_text() + audit_file.read_text()
    secrets = {
        "access token": token, "other access token": other, "refresh token": signed["refresh_token"], "code": signed["code"],
        "PKCE verifier": signed["verifier"], "password": PASSWORD, "argument secret": argument_secret,
        "refreshed access token": refreshed["access_token"], "rotated refresh token": refreshed["refresh_token"],
        "client secret": confidential["client_secret"], "registration token": confidential["registration_access_token"],
    }
    for what, secret in secrets.items():
        assert secret not in text, f"the {what} is in the audit log"


def test_arguments_are_left_out_by_default_and_kept_whole_when_asked(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("audit-modes")
    upstream_port = free_port()
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the echo upstream")
    seen = {}
    try:
        for mode in ("none", "full"):
            audit_file = tmp / f"audit-{mode}.log"
            gateway = start_gateway(tmp, config(audit_file, mode, f"http://127.0.0.1:{upstream_port}", local_password_hash), name=f"gw-{mode}")
            try:
                world = World(gateway, 0, "", tmp, local_password_hash)
                token = world.token("alice", "echo")
                # A string id in one mode, a number in the other: each is written as the client sent it.
                call = {"jsonrpc": "2.0", "id": "call-1" if mode == "none" else 1, "method": "tools/call",
                        "params": {"name": "lookup", "arguments": {"query": "weather"}}}
                assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer(token), timeout=10).status_code == 200
                # A client-chosen id trying to forge a line of its own, and long enough to bloat every one.
                hostile_id = 'evil"}\n{"event":"token.revoked","user":"bob"}' + "x" * 500
                hostile = {**call, "id": hostile_id}
                assert httpx.post(world.url("/echo/mcp"), json=hostile, headers=bearer(token), timeout=10).status_code == 429
                wait_until(lambda: len([e for e in read(audit_file) if e["event"] == "mcp.request"]) >= 2 if audit_file.exists() else False,
                           what="both request lines")
                requests = [e for e in read(audit_file) if e["event"] == "mcp.request"]
                seen[mode] = requests[0]
                assert requests[1]["status"] == 429 and requests[1]["request_id"] == json.dumps(hostile_id)[:128] + "…", requests[1]
                assert not any(e["event"] == "token.revoked" for e in read(audit_file))
                assert all(len(line) < 4096 for line in audit_file.read_text().splitlines())
            finally:
                gateway.managed.stop()
    finally:
        upstream.stop()
    assert "arguments" not in seen["none"] and seen["none"]["tool"] == "lookup"
    assert seen["none"]["request_id"] == "call-1" and seen["full"]["request_id"] == 1
    assert seen["full"]["arguments"] == {"query": "weather"}
