"""The HTTP proxy: routing, header hygiene, streaming, failures, limits, origin checks."""

import json
import socket
import time

import httpx
import pytest

from conftest import wait_until


def config_for(raw_upstream: str, extra_routers: str = "", extra_services: str = "", upstream_path: str = "/echo") -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
        allowedOrigins: ["https://app.example.com"]
    publicURL: "http://127.0.0.1:{{port}}"
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
        auth: none
      sse:
        rule: "PathPrefix(`/sse`)"
        service: sse
        auth: none
      forever:
        rule: "PathPrefix(`/forever`)"
        service: forever
        auth: none
      locked:
        rule: "PathPrefix(`/locked`)"
        service: echo
      hosted:
        rule: "Host(`mcp.example.com`)"
        service: echo
        auth: none
      stdio:
        rule: "PathPrefix(`/stdio`)"
        service: child
        auth: none
{extra_routers}
    services:
      echo:
        http:
          url: "{raw_upstream}{upstream_path}"
          headers:
            X-Api-Key: "${{TEST_UPSTREAM_KEY}}"
          maxRequestBodySize: "64KiB"
      sse:
        http:
          url: "{raw_upstream}/sse"
      forever:
        http:
          url: "{raw_upstream}/sse-forever"
      child:
        stdio:
          command: "true"
{extra_services}
    """


@pytest.fixture
def gateway(start_gateway, raw_upstream):
    return start_gateway(config_for(raw_upstream), env={"TEST_UPSTREAM_KEY": "upstream-secret"})


def header_values(echoed: dict, name: str) -> list[str]:
    return [value for key, value in echoed["headers"] if key.lower() == name.lower()]


def test_health_and_readiness(gateway):
    assert httpx.get(gateway.url("/healthz")).json() == {"status": "ok"}
    ready = gateway.readiness()
    assert ready["status"] == "ready" and ready["configGeneration"] == 1 and ready["routers"] == 6


def test_post_is_relayed_with_mcp_headers_and_without_hop_by_hop(gateway):
    # The session the upstream hands out is this caller's through this router.
    session = httpx.post(gateway.url("/echo/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "initialize"}).headers["mcp-session-id"]
    response = httpx.post(
        gateway.url("/echo/mcp"),
        content=b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}',
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": "2025-11-25",
            "Mcp-Method": "tools/call",
            "Mcp-Name": "echo",
            "Mcp-Param-Region": "eu",
            "Last-Event-ID": "42",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "must-not-pass",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic abc",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "spoofed.example",
            "Forwarded": "for=6.6.6.6",
            "X-Api-Key": "client-chosen",
        },
    )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert echoed["body"] == '{"jsonrpc":"2.0","id":7,"method":"tools/list"}'
    for name, value in [
        ("mcp-session-id", session),
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
        ("mcp-param-region", "eu"),
        ("last-event-id", "42"),
        ("accept", "application/json, text/event-stream"),
    ]:
        assert header_values(echoed, name) == [value], name
    for name in ["x-hop", "keep-alive", "proxy-authorization", "forwarded"]:
        assert header_values(echoed, name) == [], name
    # The gateway sets forwarding headers itself; client copies are never trusted.
    assert header_values(echoed, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(echoed, "x-forwarded-proto") == ["http"]
    assert header_values(echoed, "x-forwarded-host") == [f"127.0.0.1:{gateway.port}"]
    # The configured upstream header wins over a client-sent one, and the client never sees it.
    assert header_values(echoed, "x-api-key") == ["upstream-secret"]
    assert "upstream-secret" not in gateway.managed.log()
    # Upstream response: hop-by-hop and Connection-listed headers removed, the rest kept.
    assert response.headers.get("x-upstream") == "raw"
    assert response.headers.get("mcp-session-id") == session
    assert "x-drop-me" not in response.headers


def test_get_and_delete_are_relayed(gateway):
    got = httpx.get(gateway.url("/echo/mcp/"), headers={"Accept": "text/event-stream"})
    assert got.status_code == 200 and got.json()["method"] == "GET"
    session = httpx.post(gateway.url("/echo/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "initialize"}).headers["mcp-session-id"]
    deleted = httpx.delete(gateway.url("/echo/mcp"), headers={"Mcp-Session-Id": session})
    assert deleted.status_code == 200 and deleted.json()["method"] == "DELETE"
    assert header_values(deleted.json(), "mcp-session-id") == [session]
    # A session id the gateway never saw handed out (or one already deleted) is not found.
    for unknown in ("abc", session):
        assert httpx.delete(gateway.url("/echo/mcp"), headers={"Mcp-Session-Id": unknown}).status_code == 404


def test_other_methods_get_405(gateway):
    response = httpx.put(gateway.url("/echo/mcp"), content=b"{}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, DELETE"


def test_host_router_serves_mcp_at_root(gateway):
    response = httpx.post(gateway.url("/mcp"), content=b"{}", headers={"Host": "mcp.example.com"})
    assert response.status_code == 200 and response.json()["path"] == "/echo"


def test_unrouted_and_non_mcp_paths_are_404_json(gateway):
    missing = httpx.post(gateway.url("/nowhere/mcp"), content=b"{}")
    assert missing.status_code == 404 and missing.json()["error"] == "no_route"
    other = httpx.get(gateway.url("/echo/admin"))
    assert other.status_code == 404 and "/echo/mcp" in other.json()["message"]


def test_protected_route_challenges_without_a_valid_token(gateway):
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    metadata_url = gateway.url("/.well-known/oauth-protected-resource/locked/mcp")
    for path in ("/locked/mcp", "/locked/mcp/"):
        response = httpx.post(gateway.url(path), content=ping)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata_url}", scope="mcp"'
        assert response.headers["cache-control"] == "no-store"
    forged = httpx.post(gateway.url("/locked/mcp"), content=ping, headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code == 401 and 'error="invalid_token"' in forged.headers["www-authenticate"]
    metadata = httpx.get(metadata_url).json()
    assert metadata["resource"] == gateway.url("/locked/mcp")
    assert metadata["authorization_servers"] == [gateway.base] and metadata["bearer_methods_supported"] == ["header"]


def test_origin_validation(gateway):
    evil = httpx.post(gateway.url("/echo/mcp"), content=b"{}", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"]["data"]["reason"] == "origin_forbidden"
    null_origin = httpx.post(gateway.url("/echo/mcp"), content=b"{}", headers={"Origin": "null"})
    assert null_origin.status_code == 403
    allowed = httpx.post(gateway.url("/echo/mcp"), content=b"{}", headers={"Origin": "https://app.example.com"})
    assert allowed.status_code == 200
    same = httpx.post(gateway.url("/echo/mcp"), content=b"{}", headers={"Origin": gateway.base})
    assert same.status_code == 200
    absent = httpx.post(gateway.url("/echo/mcp"), content=b"{}")
    assert absent.status_code == 200


def test_body_limit_gives_413_without_reaching_upstream(gateway):
    big = b'{"pad":"' + b"x" * (70 * 1024) + b'"}'
    response = httpx.post(gateway.url("/echo/mcp"), content=big)
    assert response.status_code == 413
    assert response.json()["error"]["data"]["reason"] == "request_too_large"

    def chunks():
        for _ in range(70):
            yield b"x" * 1024

    streamed = httpx.post(gateway.url("/echo/mcp"), content=chunks())
    assert streamed.status_code == 413
    just_fits = httpx.post(gateway.url("/echo/mcp"), content=b'{"pad":"' + b"y" * (60 * 1024) + b'"}')
    assert just_fits.status_code == 200


def test_sse_is_relayed_event_by_event(gateway):
    # 1 000 events, each written separately by the upstream: all arrive, in order, with ids.
    with httpx.stream("GET", gateway.url("/sse/mcp"), params={"count": 1000}, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        ids = [int(line[4:]) for line in response.iter_lines() if line.startswith("id: ")]
    assert ids == list(range(1000))


def test_sse_events_are_not_buffered(start_gateway, raw_upstream, tmp_path):
    gateway = start_gateway(config_for(raw_upstream), env={"TEST_UPSTREAM_KEY": "k"})
    # The upstream sends an event every 300 ms: each must reach the client long before the next is sent.
    arrivals = []
    with httpx.stream("GET", gateway.url("/sse/mcp"), params={"count": 5, "interval": 0.3}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert all(gap > 0.2 for gap in gaps), gaps


def test_client_disconnect_cancels_the_upstream_stream(gateway, raw_upstream):
    with httpx.stream("GET", gateway.url("/forever/mcp")) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        assert httpx.get(f"{raw_upstream}/state").json()["active_streams"] == 1
    # Closing the client's connection must end the upstream request, not leave it open.
    wait_until(lambda: httpx.get(f"{raw_upstream}/state").json()["active_streams"] == 0, timeout=10, what="upstream stream closed")
    assert httpx.get(f"{raw_upstream}/state").json()["disconnects"] == 1


def test_keep_alive_survives_json_exchanges(gateway):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    connection.request("POST", "/echo/mcp", body=b"{}")
    first = connection.getresponse()
    first.read()
    socket_after_first = connection.sock
    assert first.status == 200 and socket_after_first is not None
    for _ in range(3):
        connection.request("POST", "/echo/mcp", body=b"{}")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    # The same TCP connection carried every exchange.
    assert connection.sock is socket_after_first
    connection.close()


def test_unreachable_upstream_gives_502_quickly(start_gateway, raw_upstream):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    routers = """
      dead:
        rule: "PathPrefix(`/dead`)"
        service: dead
        auth: none
    """
    services = f"""
      dead:
        http:
          url: "http://127.0.0.1:{dead_port}/mcp"
    """
    gateway = start_gateway(config_for(raw_upstream, indent(routers), indent(services)), env={"TEST_UPSTREAM_KEY": "k"})
    started = time.monotonic()
    response = httpx.post(gateway.url("/dead/mcp"), content=b'{"jsonrpc":"2.0","id":3,"method":"ping"}')
    assert time.monotonic() - started < 3
    assert response.status_code == 502
    body = response.json()
    assert body["error"]["data"] == {"reason": "upstream_unreachable", "service": "dead", "status": 502}


def slow_gateway(start_gateway, raw_upstream, response_header_timeout: str):
    """A gateway whose /slow route leads to an upstream that never answers."""
    routers = """
      slow:
        rule: "PathPrefix(`/slow`)"
        service: slow
        auth: none
    """
    services = f"""
      slow:
        http:
          url: "{raw_upstream}/hang"
          responseHeaderTimeout: "{response_header_timeout}"
    """
    return start_gateway(config_for(raw_upstream, indent(routers), indent(services)), env={"TEST_UPSTREAM_KEY": "k"})


def test_silent_upstream_gives_504_after_the_response_header_timeout(start_gateway, raw_upstream):
    gateway = slow_gateway(start_gateway, raw_upstream, "1s")
    started = time.monotonic()
    response = httpx.post(gateway.url("/slow/mcp"), content=b"{}", timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["data"]["service"] == "slow"
    assert 0.9 < elapsed < 10


def test_hostile_requests_get_clear_errors_and_the_gateway_survives(gateway):
    raw_requests = [
        b"POST /echo/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST /echo/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET /echo/mcp HTTP/1.1\r\nHost: \r\n\r\n",
    ]
    for raw in raw_requests:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            try:
                sock.sendall(raw)
                sock.recv(4096)
            except OSError:
                pass
    assert httpx.get(gateway.url("/healthz")).status_code == 200
    assert httpx.post(gateway.url("/echo/mcp"), content=b"{}").status_code == 200


def indent(block: str) -> str:
    import textwrap

    # Router and service names sit at six spaces inside config_for's template.
    return textwrap.indent(textwrap.dedent(block), "      ")


def test_client_disconnect_cancels_a_pending_json_request(start_gateway, raw_upstream):
    gateway = slow_gateway(start_gateway, raw_upstream, "60s")
    with socket.create_connection(("127.0.0.1", gateway.port)) as client:
        client.sendall(b"POST /slow/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        wait_until(lambda: httpx.get(f"{raw_upstream}/state").json().get("hanging") == 1, what="request reached the upstream")
    # The client is gone before any answer: the upstream request must end, not wait for its timeout.
    wait_until(lambda: httpx.get(f"{raw_upstream}/state").json().get("hang_disconnects") == 1, timeout=10, what="upstream request cancelled")


def test_sse_responses_announce_that_the_connection_closes(gateway):
    # The stream's connection ends with it: the client must not reuse it for its next request.
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    connection.request("GET", "/sse/mcp?count=2")
    response = connection.getresponse()
    assert response.getheader("Content-Type").startswith("text/event-stream")
    assert response.getheader("Connection") == "close"
    response.read()
    connection.close()


def test_shutdown_ends_open_get_streams_instead_of_waiting_for_them(gateway, raw_upstream):
    # A standalone GET stream answers no request: at SIGTERM it is ended cleanly (the client
    # reconnects elsewhere), instead of holding the shutdown until its 15 s deadline.
    import os
    import signal

    with httpx.stream("GET", gateway.url("/forever/mcp"), timeout=30) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        started = time.monotonic()
        os.kill(gateway.managed.pid, signal.SIGTERM)
        for _ in lines:  # ends without an error: the chunked body is terminated properly
            pass
    assert gateway.managed.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    wait_until(lambda: httpx.get(f"{raw_upstream}/state").json()["active_streams"] == 0, timeout=10, what="upstream stream closed")


def test_forwarded_proto_follows_the_public_url_or_a_trusted_proxy(start_gateway, raw_upstream):
    """Behind TLS the upstream hears https (from publicURL), or what a trusted proxy in front says."""
    config = config_for(raw_upstream).replace('publicURL: "http://127.0.0.1:{port}"', 'publicURL: "https://gw.example.com"').replace(
        'allowedOrigins: ["https://app.example.com"]', 'allowedOrigins: ["https://app.example.com"]\n        trustedProxies: ["127.0.0.1/32"]')
    gateway = start_gateway(config, env={"TEST_UPSTREAM_KEY": "k"})
    direct = httpx.post(gateway.url("/echo/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"Host": "gw.example.com"})
    assert header_values(direct.json(), "x-forwarded-proto") == ["https"]
    assert header_values(direct.json(), "x-forwarded-host") == ["gw.example.com"]
    proxied = httpx.post(gateway.url("/echo/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                         headers={"Host": "gw.example.com", "X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.9"})
    assert header_values(proxied.json(), "x-forwarded-proto") == ["http"]
    assert header_values(proxied.json(), "x-forwarded-for") == ["203.0.113.9"]
    # A legacy SSE session's messages are requests the gateway makes on the client's behalf: they
    # keep the address and scheme the proxy named when the client opened the stream.
    forwarded = {"Host": "gw.example.com", "X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.9"}
    with httpx.Client(timeout=20) as client, client.stream("GET", gateway.url("/echo/sse"), headers={**forwarded, "Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines) == "event: endpoint"
        endpoint = next(lines).removeprefix("data: ")
        posted = client.post(gateway.url(endpoint), json={"jsonrpc": "2.0", "id": 7, "method": "ping"}, headers=forwarded)
        assert posted.status_code == 202, posted.text
        while not (line := next(lines)).startswith("data: "):
            pass
        echoed = json.loads(line.removeprefix("data: "))
    assert header_values(echoed, "x-forwarded-proto") == ["http"], echoed
    assert header_values(echoed, "x-forwarded-for") == ["203.0.113.9"], echoed
