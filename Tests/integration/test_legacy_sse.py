"""The 2024-11-05 HTTP+SSE transport for old clients (`GET <prefix>/sse`, `POST <prefix>/messages`):
the official mcp 1.x SDK `sse_client` lists tools, calls one, receives progress and answers an
elicitation, through a stdio child and an HTTP upstream, signed in like any client; a session is
its owner's only (another user's token, no token, an unknown or missing session id are refused);
closing the stream ends the inner session; a router can turn the transport off."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from conftest import REPO, SERVERS, free_port, port_open, start_process, wait_until
from test_attacks import World, start_gateway

LEGACY_PYTHON = str(REPO / ".venv-legacy" / "bin" / "python")
CLIENT = REPO / "Tests" / "integration" / "clients" / "legacy_transport_client.py"


def config(upstream_port: int, password_hash: str) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    auth:
      allow:
        users: ["alice", "bob"]
      local:
        users:
          alice: "{password_hash}"
          bob: "{password_hash}"
    routers:
      stdio: {{ rule: "PathPrefix(`/stdio`)", service: stdio }}
      http: {{ rule: "PathPrefix(`/http`)", service: http }}
      open: {{ rule: "PathPrefix(`/open`)", service: stdio, auth: none }}
      modern-only: {{ rule: "PathPrefix(`/modern-only`)", service: stdio, auth: none, legacySSE: false }}
    services:
      stdio:
        stdio:
          command: "{LEGACY_PYTHON}"
          args: ["{SERVERS / 'legacy_server.py'}"]
      http:
        http:
          url: "http://127.0.0.1:{upstream_port}/mcp"
    """


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("legacy-sse")
    started = []
    try:
        upstream_port = free_port()
        started.append(start_process("legacy-http", [LEGACY_PYTHON, str(SERVERS / "legacy_server.py"), "--port", str(upstream_port)], tmp))
        wait_until(lambda: port_open(upstream_port), what="the session-based HTTP upstream")
        gateway = start_gateway(tmp, config(upstream_port, local_password_hash), extra_args=["--log-level", "debug"])
        started.append(gateway.managed)
        yield World(gateway, 0, f"http://127.0.0.1:{upstream_port}", tmp, local_password_hash)
    finally:
        for managed in reversed(started):
            managed.stop()


def sdk_client(world: World, url: str, token: str | None) -> dict:
    arguments = [LEGACY_PYTHON, str(CLIENT), "--transport", "sse", "--url", url]
    if token:
        arguments += ["--token", token]
    try:
        finished = subprocess.run(arguments, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as timeout:
        raise AssertionError(f"the client did not finish:\n{(timeout.stderr or b'')[-2000:]}\n{world.gateway.managed.log()[-4000:]}") from None
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(finished.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("router", ["stdio", "http"])
def test_the_sdk_sse_client_works_through_the_gateway(world, router):
    seen = sdk_client(world, world.url(f"/{router}/sse"), world.token("alice", router))
    assert {"echo", "count", "ask"} <= set(seen["tools"]), seen
    assert seen["echo"] == "hello over sse"
    assert seen["count"] == "counted 2" and seen["progress"] == [[1.0, 2.0], [2.0, 2.0]], seen
    assert seen["ask"] == "user likes green" and "colour" in seen["elicitation"]


def open_stream(world: World, router: str, token: str | None):
    headers = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {token}"} if token else {})}
    client = httpx.Client(timeout=20)
    stream = client.stream("GET", world.url(f"/{router}/sse"), headers=headers)
    response = stream.__enter__()
    # One line iterator for the stream's life: a finished iterator closes the response.
    return client, stream, response, response.iter_lines()


def endpoint_of(lines) -> str:
    assert next(lines) == "event: endpoint"
    data = next(lines)
    assert data.startswith("data: ")
    return data[len("data: "):]


def test_a_session_is_its_owners_only(world):
    alice, bob = world.token("alice", "stdio"), world.token("bob", "stdio")
    unauthenticated = httpx.get(world.url("/stdio/sse"), timeout=10)
    assert unauthenticated.status_code == 401 and "resource_metadata=" in unauthenticated.headers["www-authenticate"]
    client, stream, response, lines = open_stream(world, "stdio", alice)
    try:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        endpoint = endpoint_of(lines)
        assert endpoint.startswith("/stdio/messages?sessionId=")
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        post = lambda path, token: httpx.post(world.url(path), json=ping, timeout=10,  # noqa: E731
                                              headers={"Authorization": f"Bearer {token}"} if token else {})
        assert post(endpoint, alice).status_code == 202
        # Bob's token, no token, a forged id, no id, another router's path: refused.
        assert post(endpoint, bob).status_code == 404
        assert post(endpoint, None).status_code == 401
        assert post("/stdio/messages?sessionId=" + "0" * 32, alice).status_code == 404
        assert post("/stdio/messages", alice).status_code == 400
        assert post(endpoint.replace("/stdio/", "/http/"), world.token("alice", "http")).status_code == 404
        assert httpx.get(world.url(endpoint), headers={"Authorization": f"Bearer {alice}"}, timeout=10).status_code == 405
    finally:
        stream.__exit__(None, None, None)
        client.close()


def test_closing_the_stream_ends_the_inner_session(world):
    client, stream, response, lines = open_stream(world, "open", None)
    try:
        endpoint = endpoint_of(lines)
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
        posted = httpx.post(world.url(endpoint), json=init, timeout=10)
        assert posted.status_code == 202, posted.text
        while not (line := next(lines)).startswith("data: "):
            pass
        answer = json.loads(line[len("data: "):])
        assert answer["id"] == 1 and answer["result"]["protocolVersion"] == "2024-11-05"
    finally:
        stream.__exit__(None, None, None)
        client.close()
    wait_until(lambda: "legacy SSE session closed" in world.gateway.managed.log(), what="the legacy session closed")
    wait_until(lambda: "DELETE" in world.gateway.managed.log().split("legacy SSE session closed")[-1], what="the inner session deleted")


def test_a_router_can_turn_the_transport_off(world):
    assert httpx.get(world.url("/modern-only/sse"), timeout=10).status_code == 404
    assert httpx.post(world.url("/modern-only/messages?sessionId=x"), json={}, timeout=10).status_code == 404
