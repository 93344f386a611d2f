"""What real clients do that a strict server would refuse, absorbed: a 2026-07-28 body under a
`2025-11-25` version header (Claude Code), and `notifications/initialized` without the session id
the initialize answer gave, through a stdio child and an HTTP upstream (SDK servers); metadata
looked for where clients look for it (paths dropped, inserted, appended)."""

from __future__ import annotations

import sys

import httpx
import pytest

from conftest import SERVERS, free_port, modern_body, modern_headers, port_open, start_process, wait_until
from test_attacks import rpc_result, start_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quirks")
    started = []
    try:
        port = free_port()
        started.append(start_process("catalogue", [sys.executable, str(SERVERS / "catalogue_server.py"), "--port", str(port)], tmp))
        wait_until(lambda: port_open(port), what="the catalogue server")
        gateway = start_gateway(tmp, f"""
        entryPoints:
          web:
            address: "127.0.0.1:{{port}}"
        publicURL: "http://127.0.0.1:{{port}}"
        routers:
          stdio: {{ rule: "PathPrefix(`/stdio`)", service: stdio, auth: none }}
          http: {{ rule: "PathPrefix(`/http`)", service: http, auth: none }}
        services:
          stdio:
            stdio:
              command: "{sys.executable}"
              args: ["{SERVERS / 'catalogue_server.py'}"]
          http:
            http:
              url: "http://127.0.0.1:{port}/mcp"
        """)
        started.append(gateway.managed)
        yield gateway
    finally:
        for managed in reversed(started):
            managed.stop()


@pytest.mark.parametrize("router", ["stdio", "http"])
def test_a_2026_body_under_an_older_version_header_is_served_as_2026(gateway, router):
    headers = {**modern_headers("tools/call", "get_time"), "MCP-Protocol-Version": "2025-11-25"}
    for _ in range(2):
        answer = httpx.post(gateway.url(f"/{router}/mcp"), json=modern_body("tools/call", {"name": "get_time", "arguments": {}}), headers=headers, timeout=20)
        assert answer.status_code == 200, answer.text
        result = rpc_result(answer)["result"]
        assert result["content"][0]["text"] == "12:00" and result.get("resultType") == "complete"
    # Without any version header, too.
    bare = {key: value for key, value in headers.items() if key != "MCP-Protocol-Version"}
    answer = httpx.post(gateway.url(f"/{router}/mcp"), json=modern_body("tools/call", {"name": "get_time", "arguments": {}}), headers=bare, timeout=20)
    assert answer.status_code == 200 and rpc_result(answer)["result"]["content"][0]["text"] == "12:00"


def test_the_disagreement_is_logged_once_per_client(gateway):
    log = gateway.managed.log()
    assert log.count("disagrees with the body's version") == 1, log[-3000:]


@pytest.mark.parametrize("router", ["stdio", "http"])
def test_initialized_without_a_session_id_is_accepted(gateway, router):
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "forgetful", "version": "1"}}}
    started = httpx.post(gateway.url(f"/{router}/mcp"), json=init, headers=headers, timeout=20)
    assert started.status_code == 200
    forgot = httpx.post(gateway.url(f"/{router}/mcp"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=20)
    assert forgot.status_code == 202, forgot.text
    # The session works as usual afterwards.
    listed = httpx.post(gateway.url(f"/{router}/mcp"), json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                        headers={**headers, "Mcp-Session-Id": started.headers["mcp-session-id"]}, timeout=20)
    assert listed.status_code == 200 and "get_time" in listed.text


def test_authorization_server_metadata_answers_where_clients_look_for_it(gateway):
    reference = httpx.get(gateway.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    for path in ("/.well-known/oauth-authorization-server/stdio/mcp", "/stdio/mcp/.well-known/oauth-authorization-server",
                 "/.well-known/openid-configuration/http/mcp", "/http/mcp/.well-known/openid-configuration"):
        answer = httpx.get(gateway.url(path), timeout=10)
        assert answer.status_code == 200 and answer.json() == reference, path
    # Nothing else under those names: a look-alike is not the metadata.
    assert httpx.get(gateway.url("/.well-known/oauth-authorization-server-evil"), timeout=10).status_code == 404


def test_resource_metadata_answers_where_clients_look_for_it(tmp_path, local_password_hash):
    gateway = start_gateway(tmp_path, f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow: {{ users: ["alice"] }}
      local: {{ users: {{ alice: "{local_password_hash}" }} }}
    routers:
      time: {{ rule: "PathPrefix(`/time`)", service: time }}
      open: {{ rule: "PathPrefix(`/open`)", service: time, auth: none }}
    services:
      time:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'catalogue_server.py'}"]
    """)
    try:
        resource = gateway.url("/time/mcp")
        # Inserted (RFC 9728), appended, and at the root with the path dropped: this gateway has
        # one endpoint that takes its sign-in, so the root can only mean that one.
        for path in ("/.well-known/oauth-protected-resource/time/mcp", "/time/mcp/.well-known/oauth-protected-resource",
                     "/.well-known/oauth-protected-resource"):
            answer = httpx.get(gateway.url(path), timeout=10)
            assert answer.status_code == 200 and answer.json()["resource"] == resource, (path, answer.text)
        assert httpx.get(gateway.url("/open/mcp/.well-known/oauth-protected-resource"), timeout=10).status_code == 404
    finally:
        gateway.managed.stop()
