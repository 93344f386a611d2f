"""Client transports beside Streamable HTTP. The 2024-11-05 HTTP+SSE transport (`GET <prefix>/sse`,
`POST <prefix>/messages`): the official mcp 1.x SDK `sse_client` lists tools, calls one, receives
progress and answers an elicitation, through a stdio child and an HTTP upstream, signed in like
any client; a session is its owner's only (another user's token, no token, an unknown or missing
session id are refused); closing the stream ends the inner session; a router can turn the
transport off. WebSocket (subprotocol `mcp` on the MCP endpoint): the SDK 1.x `websocket_client`
does the same through both upstream kinds; the upgrade is authenticated like a request (header or
`bearer.<token>` subprotocol, never echoed), refused without a token, with another route's token,
from a foreign Origin, or without the `mcp` subprotocol; no token in the log; fragments are joined,
pings answered, a close answered with its code, an oversized message (whole or fragmented) closed
with 1009 and a stray continuation with 1002; a stopping gateway closes its sessions with 1001. An upstream that
speaks only the 2024-11-05 transport (`services.<s>.sse`, the SDK 1.x FastMCP `sse` server) reached
by the official client in both eras and by the SDK 1.x `sse_client`, with tools, progress and an
elicitation; one that is down is a clear 502."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import anyio
import httpx
import pytest
import websocket

from conftest import REPO, SERVERS, free_port, port_open, start_process, wait_until
from test_attacks import World, start_gateway
from test_era_matrix import exercise

LEGACY_PYTHON = str(REPO / ".venv-legacy" / "bin" / "python")
CLIENT = REPO / "Tests" / "integration" / "clients" / "legacy_transport_client.py"


def config(upstream_port: int, password_hash: str, sse_port: int) -> str:
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
      open-http: {{ rule: "PathPrefix(`/open-http`)", service: http, auth: none }}
      modern-only: {{ rule: "PathPrefix(`/modern-only`)", service: stdio, auth: none, legacySSE: false }}
      old-server: {{ rule: "PathPrefix(`/old-server`)", service: old-server, auth: none }}
      gone-server: {{ rule: "PathPrefix(`/gone-server`)", service: gone-server, auth: none }}
      small: {{ rule: "PathPrefix(`/small`)", service: small, auth: none }}
    services:
      small:
        stdio:
          command: "{LEGACY_PYTHON}"
          args: ["{SERVERS / 'legacy_server.py'}"]
          maxRequestBodySize: 2KiB
      stdio:
        stdio:
          command: "{LEGACY_PYTHON}"
          args: ["{SERVERS / 'legacy_server.py'}"]
      http:
        http:
          url: "http://127.0.0.1:{upstream_port}/mcp"
      old-server:
        sse:
          url: "http://127.0.0.1:{sse_port}/sse"
          headers: {{ X-From-Gateway: "yes" }}
      gone-server:
        sse:
          url: "http://127.0.0.1:9/sse"
          startTimeout: 5s
    """


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("legacy-sse")
    started = []
    try:
        upstream_port = free_port()
        started.append(start_process("legacy-http", [LEGACY_PYTHON, str(SERVERS / "legacy_server.py"), "--port", str(upstream_port)], tmp))
        sse_port = free_port()
        started.append(start_process("legacy-sse", [LEGACY_PYTHON, str(SERVERS / "legacy_server.py"), "--port", str(sse_port), "--sse"], tmp))
        wait_until(lambda: port_open(upstream_port), what="the session-based HTTP upstream")
        wait_until(lambda: port_open(sse_port), what="the SSE-only upstream")
        gateway = start_gateway(tmp, config(upstream_port, local_password_hash, sse_port), extra_args=["--log-level", "debug"])
        started.append(gateway.managed)
        yield World(gateway, 0, f"http://127.0.0.1:{upstream_port}", tmp, local_password_hash)
    finally:
        for managed in reversed(started):
            managed.stop()


def sdk_client(world: World, url: str, token: str | None, transport: str = "sse") -> dict:
    arguments = [LEGACY_PYTHON, str(CLIENT), "--transport", transport, "--url", url]
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


# --- WebSocket ------------------------------------------------------------------------------------

@pytest.mark.parametrize("router", ["open", "open-http"])
def test_the_sdk_websocket_client_works_through_the_gateway(world, router):
    # The SDK's WebSocket client sends no headers: an open route.
    seen = sdk_client(world, world.url(f"/{router}/mcp").replace("http://", "ws://"), None, transport="websocket")
    assert {"echo", "count", "ask"} <= set(seen["tools"]), seen
    assert seen["echo"] == "hello over websocket"
    assert seen["count"] == "counted 2" and seen["progress"] == [[1.0, 2.0], [2.0, 2.0]], seen
    assert seen["ask"] == "user likes green"


def ws_connect(world: World, router: str, **options) -> websocket.WebSocket:
    return websocket.create_connection(world.url(f"/{router}/mcp").replace("http://", "ws://"), timeout=20, **options)


def ws_initialize(connection: websocket.WebSocket) -> dict:
    connection.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-ws", "version": "1"}}}))
    while True:
        message = json.loads(connection.recv())
        if message.get("id") == 1:
            return message


def test_a_websocket_upgrade_is_authenticated_like_a_request(world):
    alice = world.token("alice", "stdio")
    # With the token in the header, and with it as a subprotocol (what a browser can send).
    for options in ({"header": [f"Authorization: Bearer {alice}"], "subprotocols": ["mcp"]}, {"subprotocols": ["mcp", f"bearer.{alice}"]}):
        connection = ws_connect(world, "stdio", **options)
        try:
            assert connection.getsubprotocol() == "mcp"
            assert alice not in json.dumps(connection.getheaders())
            answer = ws_initialize(connection)
            assert answer["result"]["serverInfo"]["name"] == "legacy-server"
        finally:
            connection.close()
    # Refused upgrades get the library's empty 400; the log says what HTTP would have answered.
    refusals = {
        "no token": ({"subprotocols": ["mcp"]}, "reason=invalid_request status=401"),
        "another route's token": ({"header": [f"Authorization: Bearer {world.token('alice', 'http')}"], "subprotocols": ["mcp"]}, "reason=invalid_token status=401"),
        "a forged token": ({"subprotocols": ["mcp", "bearer.not-a-token"]}, "reason=invalid_token status=401"),
        "a foreign origin": ({"header": [f"Authorization: Bearer {alice}"], "subprotocols": ["mcp"], "origin": "https://evil.example"}, "status=403"),
    }
    for name, (options, logged) in refusals.items():
        before = world.gateway.managed.log().count("WebSocket upgrade refused")
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws_connect(world, "stdio", **options)
        assert refused.value.status_code == 400, name
        refusal_lines = [line for line in world.gateway.managed.log().splitlines() if "WebSocket upgrade refused" in line]
        assert len(refusal_lines) == before + 1 and logged in refusal_lines[-1], (name, refusal_lines[-1:])
    # Subprotocols without mcp: not upgraded.
    with pytest.raises(websocket.WebSocketBadStatusException):
        ws_connect(world, "open", subprotocols=["graphql-ws"])
    # Not an MCP endpoint: not upgraded.
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(world.url("/open/other").replace("http://", "ws://"), timeout=10)
    refused_lines = [line for line in world.gateway.managed.log().splitlines() if "WebSocket upgrade refused" in line]
    assert "path=/open/other" in refused_lines[-1] and "status=404" in refused_lines[-1]


def _close_code(connection: websocket.WebSocket) -> int:
    """The code of the close frame the gateway sends next (messages before it are skipped)."""
    while True:
        opcode, frame = connection.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big")


def test_websocket_frames_are_handled_as_rfc_6455_says(world):
    """A message split into fragments is joined; a ping is answered with its payload; a close is
    answered with its code; a half-close is answered with a close; a message beyond the service's
    body limit (2 KiB here), in one frame or in fragments, closes with 1009; a continuation with no
    message begun, with 1002."""
    connection = ws_connect(world, "small", subprotocols=["mcp"])
    try:
        initialize = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                 "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-ws", "version": "1"}}})
        half = len(initialize) // 2
        connection.send_frame(websocket.ABNF.create_frame(initialize[:half], websocket.ABNF.OPCODE_TEXT, fin=0))
        connection.send_frame(websocket.ABNF.create_frame(initialize[half:], websocket.ABNF.OPCODE_CONT, fin=1))
        answer = json.loads(connection.recv())
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "legacy-server", answer
        connection.ping(b"are you there")
        opcode, frame = connection.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"are you there"
        connection.send_close(status=1000)
        assert _close_code(connection) == 1000
    finally:
        connection.shutdown()
    # A client that half-closes its socket without a close frame: the gateway closes its side too.
    connection = ws_connect(world, "small", subprotocols=["mcp"])
    try:
        connection.sock.shutdown(socket.SHUT_WR)
        assert connection.sock.recv(65536) == b""
    finally:
        connection.shutdown()

    too_large = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"padding": "x" * 3000}})
    for frames in ([(too_large, websocket.ABNF.OPCODE_TEXT, 1)],
                   [(too_large[:1500], websocket.ABNF.OPCODE_TEXT, 0), (too_large[1500:], websocket.ABNF.OPCODE_CONT, 1)],
                   [("{}", websocket.ABNF.OPCODE_CONT, 1)]):
        connection = ws_connect(world, "small", subprotocols=["mcp"])
        try:
            for data, opcode, fin in frames:
                connection.send_frame(websocket.ABNF.create_frame(data, opcode, fin=fin))
            assert _close_code(connection) == (1002 if frames[0][1] == websocket.ABNF.OPCODE_CONT else 1009), frames[0][1:]
        finally:
            connection.shutdown()


def test_a_websocket_sessions_stream_is_relayed_on_its_connection(world):
    """On an HTTP upstream the session's GET stream is carried by the fast relay behind the
    WebSocket (no task reads it): what the server sends outside any request (tools/list_changed,
    which `add_tool` announces on the GET stream) arrives as a text frame. (A browser's session
    sends `Origin`, which the fast relay leaves to the full pipeline: the other tests' sessions,
    whose client sends it, read their stream in a task.)"""
    connection = ws_connect(world, "open-http", subprotocols=["mcp"], suppress_origin=True)
    calls = iter(range(100, 200))

    def list_change_arrives() -> bool:
        # The GET opens after initialize is answered; a notification sent before it is lost, so
        # each try adds another tool until one's announcement comes.
        call = next(calls)
        connection.send(json.dumps({"jsonrpc": "2.0", "id": call, "method": "tools/call",
                                    "params": {"name": "add_tool", "arguments": {"name": f"ws_extra_{call}"}}}))
        answered = False
        while True:
            try:
                message = json.loads(connection.recv())
            except websocket.WebSocketTimeoutException:
                return False
            if message.get("method") == "notifications/tools/list_changed":
                return True
            if message.get("id") == call:
                answered = True
                connection.settimeout(2)  # the announcement may follow the answer
            elif answered:
                continue

    try:
        ws_initialize(connection)
        connection.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        wait_until(list_change_arrives, what="tools/list_changed over the WebSocket")
    finally:
        connection.close()
    streams = [line for line in world.gateway.managed.log().splitlines()
               if "relay=fast" in line and "method=GET" in line and "path=/open-http/mcp" in line]
    assert streams, "the session's GET stream was not relayed on the WebSocket's connection"


def test_a_stopping_gateway_closes_its_websocket_sessions_with_1001(tmp_path):
    """SIGTERM ends each WebSocket session at once with 1001 (going away), so its client
    reconnects to a serving instance, and the gateway exits without waiting for them."""
    gateway = start_gateway(tmp_path, """
    entryPoints:
      web:
        address: "127.0.0.1:{port}"
    publicURL: "http://127.0.0.1:{port}"
    routers:
      open: { rule: "PathPrefix(`/open`)", service: nowhere, auth: none }
    services:
      nowhere: { http: { url: "http://127.0.0.1:9/mcp" } }
    """)
    connection = websocket.create_connection(gateway.url("/open/mcp").replace("http://", "ws://"), timeout=10, subprotocols=["mcp"])
    try:
        connection.ping(b"up")
        assert connection.recv_data_frame(control_frame=True)[0] == websocket.ABNF.OPCODE_PONG
        os.kill(gateway.managed.pid, signal.SIGTERM)
        assert _close_code(connection) == 1001
        assert gateway.managed.process.wait(timeout=15) == 0
    finally:
        connection.shutdown()
        gateway.managed.stop()


def test_no_token_of_the_old_transports_reaches_the_log(world):
    alice = world.token("alice", "stdio")
    connection = ws_connect(world, "stdio", subprotocols=["mcp", f"bearer.{alice}"])
    ws_initialize(connection)
    connection.close()
    sdk_client(world, world.url("/stdio/sse"), alice)
    assert alice not in world.gateway.managed.log()


# --- upstreams that speak only the 2024-11-05 HTTP+SSE transport ----------------------------------

@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_an_sse_only_upstream_serves_clients_of_both_eras(world, mode):
    names, echoed, counted, progress, asked, answered = anyio.run(exercise, world.url("/old-server/mcp"), mode, {"steps": 2})
    assert {"echo", "count", "ask"} <= names
    assert echoed == "across eras" and counted == "counted 2" and progress == [1, 2]
    assert len(asked) == 1 and answered.startswith("user likes saffron"), answered


def test_an_sse_only_upstream_serves_old_clients_too(world):
    seen = sdk_client(world, world.url("/old-server/sse"), None)
    assert seen["echo"] == "hello over sse" and seen["ask"] == "user likes green" and seen["progress"] == [[1.0, 2.0], [2.0, 2.0]]


def test_an_sse_upstream_that_is_down_is_a_clear_error(world):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    answer = httpx.post(world.url("/gone-server/mcp"), json=init, headers={"Accept": "application/json, text/event-stream"}, timeout=30)
    assert answer.status_code == 502 and answer.json()["error"]["data"]["reason"] == "server_start_failed", answer.text
    assert "gone-server" in answer.json()["error"]["message"]
    assert "cannot connect to the SSE server" in world.gateway.managed.log()


def test_limits_cap_websocket_and_legacy_sse_sessions(tmp_path):
    """`limits:` caps each transport's sessions per instance; a closed session frees its place."""
    gateway = start_gateway(tmp_path, """
    entryPoints:
      web:
        address: "127.0.0.1:{port}"
    publicURL: "http://127.0.0.1:{port}"
    limits: { webSocketSessions: 2, legacySSESessions: 2 }
    routers:
      capped: { rule: "PathPrefix(`/capped`)", service: nowhere, auth: none }
    services:
      nowhere: { http: { url: "http://127.0.0.1:9/mcp" } }
    """, extra_args=["--log-level", "debug"])
    ws_url = gateway.url("/capped/mcp").replace("http://", "ws://")
    held = []
    try:
        held = [websocket.create_connection(ws_url, timeout=10, subprotocols=["mcp"]) for _ in range(2)]
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(ws_url, timeout=10, subprotocols=["mcp"])
        refused = [line for line in gateway.managed.log().splitlines() if "WebSocket upgrade refused" in line]
        assert refused and "status=503" in refused[-1], refused[-1:]
        held.pop().close()

        def admitted_again():
            held.append(websocket.create_connection(ws_url, timeout=10, subprotocols=["mcp"]))
            return True

        wait_until(admitted_again, what="a WebSocket session admitted once another closed")

        with httpx.Client(timeout=10) as client, client.stream("GET", gateway.url("/capped/sse")) as first, \
                client.stream("GET", gateway.url("/capped/sse")) as second:
            assert first.status_code == 200 and second.status_code == 200
            third = client.get(gateway.url("/capped/sse"))
            assert third.status_code == 503, third.text
        # Both streams are closed now: their places come back.
        wait_until(lambda: _legacy_stream_opens(gateway.url("/capped/sse")), what="a legacy SSE session admitted once the others closed")
    finally:
        for connection in held:
            connection.close()
        gateway.managed.stop()


def _legacy_stream_opens(url: str) -> bool:
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as stream:
        return stream.status_code == 200


def test_limits_connections_closes_the_connections_beyond_and_keeps_the_held_ones(tmp_path):
    """A flood of connections beyond `limits.connections` is closed at once; the held ones go on
    being served, a place freed is taken again, and the log says so once, not per connection."""
    import socket

    gateway = start_gateway(tmp_path, """
    entryPoints:
      web:
        address: "127.0.0.1:{port}"
    publicURL: "http://127.0.0.1:{port}"
    limits: { connections: 3 }
    routers:
      capped: { rule: "PathPrefix(`/capped`)", service: nowhere, auth: none }
    services:
      nowhere: { http: { url: "http://127.0.0.1:9/mcp" } }
    """)
    health = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode()

    def answers(sock: socket.socket) -> bool:
        sock.sendall(health)
        return sock.recv(4096).startswith(b"HTTP/1.1 200")

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock.settimeout(10)
        return sock

    held: list[socket.socket] = []
    try:
        # The readiness probe's connection may still be closing: wait until three are held.
        def three_held():
            while len(held) < 3:
                sock = connect()
                if not answers(sock):
                    sock.close()
                    return False
                held.append(sock)
            return True

        wait_until(three_held, what="three connections held")
        refused = [connect() for _ in range(20)]
        for sock in refused:
            try:
                sock.sendall(health)
                assert sock.recv(4096) == b"", "a connection beyond the limit was served"
            except (ConnectionResetError, BrokenPipeError):
                pass
            sock.close()
        assert all(answers(sock) for sock in held), "a held connection stopped being served"
        log = gateway.managed.log()
        assert log.count("connections refused") == 1 and "limit=3" in log, log[-2000:]
        held.pop().close()

        def admitted_again():
            sock = connect()
            if answers(sock):
                held.append(sock)
                return True
            sock.close()
            return False

        wait_until(admitted_again, what="a connection admitted once a held one closed")
    finally:
        for sock in held:
            sock.close()
        gateway.managed.stop()
