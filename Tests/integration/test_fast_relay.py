"""The fast relay: 2026-07-28 requests to a plain HTTP upstream that every stage admits at once are
relayed by a connection handler on the client's event loop. It must keep every behaviour of the
full pipeline: the header policy, session binding, 502/504, 413, SSE event by event, cancellation
when the client goes away, requests answered in order, and the token check (a token verified a
moment ago admits only its own router). The access log says which requests it carried
(`relay=fast`)."""

import email.utils
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import websocket

from conftest import SERVERS, free_port, modern_body, modern_headers, port_open, start_process, wait_until


# One entry point on a free port, with the access log (its `relay=fast` lines are what the tests
# read).
ENTRY_POINT = """
    entryPoints:
      web:
        address: "127.0.0.1:{port}"
    publicURL: "http://127.0.0.1:{port}"
    log:
      level: info
"""


def relay_config(raw_upstream: str, extra: str = "") -> str:
    return ENTRY_POINT + f"""
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
        auth: none
      other:
        rule: "PathPrefix(`/other`)"
        service: echo
        auth: none
      stream:
        rule: "PathPrefix(`/stream`)"
        service: stream
        auth: none
      slow:
        rule: "PathPrefix(`/slow`)"
        service: slow
        auth: none
    services:
      echo:
        http:
          url: "{raw_upstream}/echo"
          maxRequestBodySize: "4KiB"
      stream:
        http:
          url: "{raw_upstream}/sse-forever"
      slow:
        http:
          url: "{raw_upstream}/hang"
          responseHeaderTimeout: 1s
{extra}
    """


@pytest.fixture
def relay_gateway(start_gateway, raw_upstream):
    return start_gateway(relay_config(raw_upstream))


def call(gateway, path: str, headers: dict | None = None, body: dict | None = None, client: httpx.Client | None = None) -> httpx.Response:
    sender = client or httpx
    return sender.post(gateway.url(path), headers={**modern_headers("tools/call", "echo"), **(headers or {})},
                       json=body or modern_body("tools/call", {"name": "echo", "arguments": {}}), timeout=10)


def fast_lines(gateway) -> list[str]:
    return [line for line in gateway.managed.log().splitlines() if "relay=fast" in line]


def relayed_fast(gateway, path: str, headers: dict | None = None, client: httpx.Client | None = None) -> httpx.Response:
    """A call the fast relay carried. A request that arrives while the full pipeline is still
    finishing the connection's previous answer goes there too (answers stay in order), so the
    first calls on a connection may take the full pipeline."""
    for _ in range(10):
        before = len(fast_lines(gateway))
        response = call(gateway, path, headers, client=client)
        if len(fast_lines(gateway)) > before:
            return response
    raise AssertionError(f"no call to {path} was relayed fast:\n{gateway.managed.log()[-3000:]}")


def echoed_headers(response: httpx.Response) -> dict:
    return {name.lower(): value for name, value in response.json()["headers"]}


def test_a_modern_call_is_relayed_fast_with_the_proxys_header_policy(relay_gateway):
    gateway = relay_gateway
    hostile = {
        "X-Forwarded-User": "admin", "X_Forwarded_User": "admin", "x-forwarded-email": "root@example.com",
        "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Real-IP": "203.0.113.9",
        "Authorization": "Bearer not-for-the-upstream", "Cookie": "mcpgw-session=secret; theme=dark",
        "Connection": "X-Hop", "X-Hop": "hop-by-hop", "Proxy-Authorization": "Basic eA==", "X-Custom": "kept",
    }
    with httpx.Client() as client:
        first = call(gateway, "/echo/mcp", hostile, client=client)  # the era probe: the full pipeline
        assert first.status_code == 200
        second = relayed_fast(gateway, "/echo/mcp?tenant=a%20b", hostile, client=client)
    assert second.status_code == 200
    for response in (first, second):
        seen = echoed_headers(response)
        assert seen["x-custom"] == "kept"
        for name in ("x-forwarded-user", "x_forwarded_user", "x-forwarded-email", "x-real-ip", "authorization", "x-hop", "proxy-authorization"):
            assert name not in seen, (name, seen)
        assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}" and seen["cookie"] == "theme=dark"
        assert seen["mcp-protocol-version"] == "2026-07-28"
        # The upstream's hop-by-hop headers stay with the gateway.
        assert "x-drop-me" not in response.headers and response.headers["x-upstream"] == "raw"
    assert second.json()["query"] == "tenant=a%20b" and second.json()["path"] == "/echo"
    assert json.loads(second.json()["body"])["method"] == "tools/call"
    # Both ways forward the same header names.
    assert sorted(echoed_headers(first)) == sorted(echoed_headers(second))


def test_paths_that_read_two_ways_are_left_to_the_full_pipeline(relay_gateway):
    gateway = relay_gateway
    call(gateway, "/echo/mcp")
    relayed_fast(gateway, "/echo/mcp")
    body = json.dumps(modern_body("tools/call", {"name": "echo", "arguments": {}})).encode()
    for path in ("/other/../echo/mcp", "/other/%2e%2e/echo/mcp", "/other/..%2Fecho/mcp", "/other%2F..%2Fecho/mcp", "//echo/mcp",
                 "/echo/mcp/../../other/mcp", "/ECHO/mcp"):
        before = len(fast_lines(gateway))
        # Sent as is (an HTTP client library would normalize it), on a kept-alive connection.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nContent-Type: application/json\r\n"
                         f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n"
                         f"Mcp-Name: echo\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            status = int(sock.recv(65536).split(b" ", 2)[1])
        # Routing normalizes and refuses what reads two ways; the relay takes only the exact path.
        assert status in (400, 404), (path, status)
        assert len(fast_lines(gateway)) == before, path


def test_one_connection_is_routed_afresh_whenever_its_host_path_or_configuration_changes(relay_gateway, raw_upstream):
    """The relay remembers where a connection's last request went; the next request is routed
    again the moment its host, its path or the configuration differs."""
    gateway = relay_gateway
    body = json.dumps(modern_body("tools/call", {"name": "echo", "arguments": {}}))
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)

    def post(path: str, host: str | None = None) -> int:
        # http.client sends the path as written and the Host given, on one kept-alive connection.
        headers = {**modern_headers("tools/call", "echo"), "Content-Type": "application/json", "Host": host or f"127.0.0.1:{gateway.port}"}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    def router_of_last(path: str) -> str | None:
        # Access-log lines: `… path=/echo/mcp … router=echo status=200 … [GatewayServer] request`.
        lines = [line for line in gateway.managed.log().splitlines() if line.rstrip().endswith(" request") and f" path={path} " in line]
        found = [part.split("=", 1)[1] for part in lines[-1].split() if part.startswith("router=")] if lines else []
        return found[0] if found else None

    try:
        for _ in range(10):
            before = len(fast_lines(gateway))
            assert post("/echo/mcp") == 200
            if len(fast_lines(gateway)) > before:
                break
        else:
            raise AssertionError("no call was relayed fast")
        for path, host, status, router in [
            ("/other/mcp", None, 200, "other"), ("/echo/mcp", None, 200, "echo"), ("/echo/mcp", "evil.example", 421, None),
            ("/echo/mcp", None, 200, "echo"), ("/other/../echo/mcp", None, (400, 404), None), ("/echo/mcp?x=1", None, 200, "echo"),
            ("/other/mcp", None, 200, "other"), ("/other/mcp", None, 200, "other"),
        ]:
            got = post(path, host)
            assert got in (status if isinstance(status, tuple) else (status,)), (path, host, got)
            if router:
                assert router_of_last(path.split("?")[0]) == router, (path, gateway.managed.log()[-2000:])
        # A reload that removes the router: the same connection's next request finds no route.
        other = "      other:\n        rule: \"PathPrefix(`/other`)\"\n        service: echo\n        auth: none\n"
        assert other in relay_config(raw_upstream)
        gateway.rewrite_config(relay_config(raw_upstream).replace(other, "").replace("{port}", str(gateway.port)))
        gateway.wait_for_generation(2)
        assert post("/other/mcp") == 404
        assert post("/echo/mcp") == 200
    finally:
        connection.close()


def test_a_session_id_handed_out_on_the_fast_relay_is_bound_to_its_router(relay_gateway):
    gateway = relay_gateway
    with httpx.Client() as client:
        call(gateway, "/echo/mcp", client=client)
        answered = relayed_fast(gateway, "/echo/mcp", client=client)
    session = answered.headers["mcp-session-id"]
    assert session.startswith("upstream-session-")
    session_headers = {"MCP-Protocol-Version": "2025-06-18", "Mcp-Session-Id": session, "Accept": "application/json, text/event-stream"}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    # Its own router takes it; through another router (same upstream) it does not exist.
    assert httpx.post(gateway.url("/echo/mcp"), headers=session_headers, json=ping, timeout=10).status_code == 200
    assert httpx.post(gateway.url("/other/mcp"), headers=session_headers, json=ping, timeout=10).status_code == 404


def test_upstream_failures_answer_like_the_full_pipeline(start_gateway, processes, tmp_path):
    port = free_port()
    upstream = start_process("raw-upstream-down", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(port)], tmp_path)
    processes.append(upstream)
    wait_until(lambda: port_open(port), what="raw upstream")
    gateway = start_gateway(relay_config(f"http://127.0.0.1:{port}"))
    assert call(gateway, "/echo/mcp").status_code == 200
    assert relayed_fast(gateway, "/echo/mcp").status_code == 200
    upstream.stop()
    before = len(fast_lines(gateway))
    refused = call(gateway, "/echo/mcp")  # a connection of its own: nothing ahead of it
    assert refused.status_code == 502 and len(fast_lines(gateway)) > before
    error = refused.json()["error"]
    assert error["data"]["reason"] == "upstream_unreachable" and error["data"]["service"] == "echo", error

    # No response head within responseHeaderTimeout: 504, and the upstream request is cancelled.
    hanging = start_process("raw-upstream-hang", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(port)], tmp_path)
    processes.append(hanging)
    wait_until(lambda: port_open(port), what="raw upstream again")
    state = lambda: httpx.get(f"http://127.0.0.1:{port}/state", timeout=5).json()
    assert call(gateway, "/slow/mcp").status_code == 504  # the era probe is answered; the call hangs
    wait_until(lambda: state().get("hanging") == 0, what="the first hanging request ended")
    cancelled = state().get("hang_disconnects", 0)
    before = len(fast_lines(gateway))
    started = time.monotonic()
    # On a connection whose last relayed call had a longer deadline: the shorter one holds.
    with httpx.Client() as client:
        assert call(gateway, "/echo/mcp", client=client).status_code == 200
        timed_out = call(gateway, "/slow/mcp", client=client)
    assert timed_out.status_code == 504 and timed_out.json()["error"]["data"]["reason"] == "upstream_timeout"
    assert time.monotonic() - started < 5
    wait_until(lambda: len(fast_lines(gateway)) > before, what="the timed-out call was relayed fast")
    wait_until(lambda: state().get("hang_disconnects", 0) > cancelled and state().get("hanging") == 0, what="the upstream saw the request cancelled")


def test_an_oversized_body_is_refused_before_the_upstream_sees_it(relay_gateway, raw_upstream):
    gateway = relay_gateway
    call(gateway, "/echo/mcp")
    big = modern_body("tools/call", {"name": "echo", "arguments": {"text": "x" * 8000}})
    refused = call(gateway, "/echo/mcp", body=big)
    assert refused.status_code == 413
    # Sent in chunks, without a length: the same.
    payload = json.dumps(big).encode()
    chunked = httpx.post(gateway.url("/echo/mcp"), headers=modern_headers("tools/call", "echo"), content=iter([payload[:3000], payload[3000:]]), timeout=10)
    assert chunked.status_code == 413
    # Bad JSON on the fast path's route is the full pipeline's 400, not relayed.
    bad = httpx.post(gateway.url("/echo/mcp"), headers={**modern_headers("tools/call", "echo"), "Content-Type": "application/json"},
                     content=b'{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call"}', timeout=10)
    assert bad.status_code == 400


def test_event_streams_are_relayed_event_by_event_and_cancelled_with_the_client(relay_gateway, raw_upstream):
    gateway = relay_gateway
    call(gateway, "/echo/mcp")  # not the stream's route: its era probe happens on its first call
    state = lambda: httpx.get(f"{raw_upstream}/state", timeout=5).json()
    # The first stream (era probe on the full pipeline's path), then a relayed one.
    for attempt in range(2):
        before = state()["disconnects"]
        with httpx.stream("POST", gateway.url("/stream/mcp"), headers=modern_headers("tools/call", "echo"),
                          json=modern_body("tools/call", {"name": "echo", "arguments": {}}), timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["x-accel-buffering"] == "no" and response.headers["content-type"].startswith("text/event-stream")
            events = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                if len(events) == 3:
                    break
        assert [event["n"] for event in events] == [0, 1, 2]
        # Closing the stream is how a 2026-07-28 client cancels: the upstream sees it at once.
        wait_until(lambda: state()["disconnects"] > before and state()["active_streams"] == 0, what="upstream stream cancelled")
    assert any("router=stream" in line for line in fast_lines(gateway))


def test_pipelined_requests_are_answered_in_order(relay_gateway):
    gateway = relay_gateway
    call(gateway, "/echo/mcp")

    def request(path: str, id: int, version: str = "2026-07-28") -> bytes:
        body = json.dumps(modern_body("tools/call", {"name": "echo", "arguments": {}}, id=id)).encode()
        head = (f"POST {path}?n={id} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nContent-Type: application/json\r\n"
                f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {version}\r\nMcp-Method: tools/call\r\n"
                f"Mcp-Name: echo\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    # Fast, full pipeline (a GET the relay never takes), fast, fast: one write, answers in order.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        probe = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode()
        sock.sendall(request("/echo/mcp", 1) + probe + request("/echo/mcp", 2) + request("/other/mcp", 3))
        order = [b'"query":"n=1"', b'"status":"ok"', b'"query":"n=2"', b'"query":"n=3"']
        received = b""
        # Read until every answer is in (the socket's timeout bounds the wait).
        while not all(marker in received for marker in order):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    positions = [received.find(marker) for marker in order]
    assert all(position >= 0 for position in positions), received[:2000]
    assert positions == sorted(positions), received[:2000]


def test_a_token_verified_a_moment_ago_admits_only_its_own_router(start_gateway, redis_server, fake_github, local_password_hash, raw_upstream):
    from oauth_helpers import access_token_for

    # At trace level: no token may reach the log however verbose it is.
    gateway = start_gateway(ENTRY_POINT + f"""
    store:
      redis:
        url: "{redis_server.url}"
        keyPrefix: "fastrelay:"
    auth:
      github: {fake_github.config}
      allow:
        users: ["octocat"]
    routers:
      mine:
        rule: "PathPrefix(`/mine`)"
        service: echo
      theirs:
        rule: "PathPrefix(`/theirs`)"
        service: echo
        allow:
          users: ["someone-else"]
    services:
      echo:
        http:
          url: "{raw_upstream}/echo"
    """, extra_args=["--log-level", "trace"])
    token = access_token_for(gateway, fake_github, "octocat", 1, gateway.url("/mine/mcp"))
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client() as client:
        assert call(gateway, "/mine/mcp", bearer, client=client).status_code == 200
        relayed = relayed_fast(gateway, "/mine/mcp", bearer, client=client)
        assert relayed.status_code == 200 and "authorization" not in echoed_headers(relayed)
        assert echoed_headers(relayed)["x-forwarded-user"] == "octocat"
        # The same token, just verified, for another router: refused, fast or not.
        other = call(gateway, "/theirs/mcp", bearer, client=client)
        assert other.status_code == 401 and "invalid_token" in other.headers["www-authenticate"]
        # A token that is not the verified one (one character changed): refused.
        forged = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        assert call(gateway, "/mine/mcp", {"Authorization": f"Bearer {forged}"}, client=client).status_code == 401
        assert call(gateway, "/mine/mcp", client=client).status_code == 401
    log = gateway.managed.log()
    assert "trace" in log and "relay=fast" in log
    for secret in (token, forged, token.split(".")[2], "fake-github-secret"):
        assert secret not in log


def test_a_rate_limit_on_a_password_protected_redis_is_decided_on_the_loop_and_logs_no_secret(start_gateway, processes, tmp_path, raw_upstream):
    """The relay asks Redis on its event loop's own connection, which authenticates and selects
    the configured database like the others; at trace, neither the Redis password nor anything
    else secret reaches the log."""
    password = "redis-pass-" + os.urandom(8).hex()
    redis_port = free_port()
    processes.append(start_process("redis-pw", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                                "--requirepass", password], tmp_path))
    wait_until(lambda: port_open(redis_port), what="redis with a password")
    gateway = start_gateway(ENTRY_POINT + f"""
    store:
      redis:
        url: "redis://:{password}@127.0.0.1:{redis_port}/3"
    middlewares:
      tight:
        rateLimit: {{ average: 2, period: 1m, by: ip }}
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
        auth: none
        middlewares: [tight]
    services:
      echo:
        http:
          url: "{raw_upstream}/echo"
    """, extra_args=["--log-level", "trace"])
    url = gateway.url("/echo/mcp")
    statuses = []
    with httpx.Client(timeout=10) as client:
        # The first call may be the era probe (full pipeline); the rest are relayed.
        for attempt in range(4):
            body = modern_body("tools/call", {"name": "echo", "arguments": {}}, id=attempt)
            statuses.append(client.post(url, json=body, headers=modern_headers("tools/call", "echo")).status_code)
    assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429], statuses
    assert any("status=429" in line for line in fast_lines(gateway)), gateway.managed.log()[-3000:]
    # Counted in database 3, under the password.
    keys = subprocess.run(["redis-cli", "-p", str(redis_port), "--no-auth-warning", "-a", password, "-n", "3", "--scan", "--pattern", "*ratelimit*"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert keys, "no rate-limit key in database 3"
    log = gateway.managed.log()
    assert " trace " in log
    assert password not in log


def test_an_entry_point_can_turn_the_fast_relay_off(start_gateway, raw_upstream):
    gateway = start_gateway(relay_config(raw_upstream).replace('''        address: "127.0.0.1:{port}"''', '''        address: "127.0.0.1:{port}"
        fastRelay: false''', 1))
    with httpx.Client() as client:
        for _ in range(3):
            assert call(gateway, "/echo/mcp", client=client).status_code == 200
    wait_until(lambda: gateway.managed.log().count("path=/echo/mcp") >= 3, what="three access lines")
    assert fast_lines(gateway) == []


def test_relayed_calls_are_audited_and_counted_like_the_full_pipelines(start_gateway, processes, tmp_path):
    from test_metrics import scrape, value

    port = free_port()
    upstream = start_process("raw-upstream-observed", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(port)], tmp_path)
    processes.append(upstream)
    wait_until(lambda: port_open(port), what="raw upstream")
    audit_file = tmp_path / "audit.jsonl"
    gateway = start_gateway(relay_config(f"http://127.0.0.1:{port}", extra=f"""
    audit:
      file: "{audit_file}"
      arguments: redacted
    metrics:
      prometheus: {{}}
    """))
    assert call(gateway, "/echo/mcp").status_code == 200  # the era probe: the full pipeline
    secret = {"name": "echo", "arguments": {"text": "hi", "password": "hunter2-not-logged"}}
    for _ in range(3):  # a connection each: nothing ahead of them, so all three are relayed fast
        before = len(fast_lines(gateway))
        assert call(gateway, "/echo/mcp", body=modern_body("tools/call", secret)).status_code == 200
        assert len(fast_lines(gateway)) == before + 1
    upstream.stop()
    before = len(fast_lines(gateway))
    assert call(gateway, "/echo/mcp").status_code == 502
    assert len(fast_lines(gateway)) == before + 1

    def lines():
        return [json.loads(line) for line in audit_file.read_text().splitlines() if '"mcp.request"' in line]

    records = wait_until(lambda: len(lines()) >= 5 and lines(), what="five mcp.request lines")
    relayed = [r for r in records if r.get("arguments")]
    assert len(relayed) == 3, records
    for record in relayed:
        assert record["router"] == "echo" and record["service"] == "echo" and record["transport"] == "http"
        assert record["mcp_method"] == "tools/call" and record["tool"] == "echo" and record["status"] == 200
        assert record["protocol_version"] == "2026-07-28" and record["ip"] == "127.0.0.1"
        assert record["bytes_in"] > 0 and record["bytes_out"] > 0 and "duration_ms" in record
        assert record["arguments"]["text"] == "hi" and record["arguments"]["password"] != "hunter2-not-logged"
    failed = records[-1]
    assert failed["status"] == 502 and failed["error_code"] == -32000, failed
    assert "hunter2-not-logged" not in audit_file.read_text()

    samples = scrape(gateway.url("/metrics"))
    count = "mcp_server_operation_duration_seconds_count"
    assert value(samples, count, mcp_method_name="tools/call", gen_ai_tool_name="echo", router="echo", error_type="") >= 4
    assert value(samples, count, mcp_method_name="tools/call", router="echo", error_type="-32000") == 1
    assert value(samples, "mcp_gateway_upstream_duration_seconds_count", service="echo") >= 5


def test_clients_behind_one_proxy_connection_are_audited_each_as_itself(start_gateway, raw_upstream, tmp_path):
    """The audit line's `ip` (and who called) is encoded once per connection while it stays the
    same: a proxy in front reuses one connection for many clients, and each request must still be
    recorded with its own forwarded address, never the previous client's."""
    audit_file = tmp_path / "audit.jsonl"
    gateway = start_gateway(ENTRY_POINT.replace("        address:", "        trustedProxies: [\"127.0.0.1\"]\n        address:") + f"""
    audit:
      file: "{audit_file}"
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
        auth: none
    services:
      echo:
        http:
          url: "{raw_upstream}/echo"
    """)
    clients = ["198.51.100.7", "203.0.113.9", "198.51.100.7", "2001:db8:0:0:0:0:0:5"]
    with httpx.Client() as proxy:  # one keep-alive connection, as a proxy in front holds it
        relayed_fast(gateway, "/echo/mcp", headers={"X-Forwarded-For": "192.0.2.1"}, client=proxy)
        before = len(fast_lines(gateway))
        for address in clients:
            assert call(gateway, "/echo/mcp", headers={"X-Forwarded-For": address}, client=proxy).status_code == 200
        assert len(fast_lines(gateway)) == before + len(clients)  # every one relayed fast

    def addresses():
        return [json.loads(line).get("ip") for line in audit_file.read_text().splitlines() if '"mcp.request"' in line]

    seen = wait_until(lambda: len(addresses()) >= len(clients) + 2 and addresses(), what="the audit lines")
    assert seen[-len(clients):] == clients, seen
    # The warm-up calls' client too, whichever path took them (the full pipeline's audit line
    # named the proxy until the client address was settled before its observations).
    assert set(seen[:-len(clients)]) == {"192.0.2.1"}, seen


# --- stdio sessions ------------------------------------------------------------------------------

STDIO_SERVER = str(SERVERS / "stdio_server.py")
SESSION_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def stdio_config() -> str:
    return ENTRY_POINT + f"""
    routers:
      kit:
        rule: "PathPrefix(`/kit`)"
        service: kit
        auth: none
      side:
        rule: "PathPrefix(`/side`)"
        service: kit
        auth: none
    services:
      kit:
        stdio:
          command: "{sys.executable}"
          args: ["{STDIO_SERVER}"]
    """


@pytest.fixture
def stdio_gateway(start_gateway):
    return start_gateway(stdio_config())


def open_session(gateway, path: str = "/kit/mcp") -> dict:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}}, "clientInfo": {"name": "fast", "version": "1"}}}
    answer = httpx.post(gateway.url(path), json=init, headers=SESSION_HEADERS, timeout=20)
    assert answer.status_code == 200, answer.text
    headers = {**SESSION_HEADERS, "Mcp-Session-Id": answer.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    assert httpx.post(gateway.url(path), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=10).status_code == 202
    return headers


def tool_call(id, name: str, arguments: dict, progress: str | None = None) -> dict:
    params = {"name": name, "arguments": arguments}
    if progress:
        params["_meta"] = {"progressToken": progress}
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_calls_in_a_stdio_session_are_relayed_fast_json_and_sse_on_one_connection(stdio_gateway):
    headers = open_session(stdio_gateway)
    url = stdio_gateway.url("/kit/mcp")
    with httpx.Client(headers=headers, timeout=10) as client:
        for attempt in range(3):
            answer = client.post(url, json=tool_call(f"e{attempt}", "echo", {"text": f"über {attempt}"}))
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text
            assert answer.json() == {"jsonrpc": "2.0", "id": f"e{attempt}", "result": answer.json()["result"]}
            assert answer.json()["result"]["content"][0]["text"] == f"über {attempt}"
            assert abs(email.utils.parsedate_to_datetime(answer.headers["date"]).timestamp() - time.time()) < 5
        # Progress first: the answer is an SSE stream, event by event with resumable ids, and the
        # connection stays usable after it.
        counted = client.post(url, json=tool_call(7, "count", {"steps": 3, "delay_seconds": 0.05}, progress="p7"))
        assert counted.headers["content-type"].startswith("text/event-stream")
        assert "connection" not in counted.headers or counted.headers["connection"] != "close"
        events = sse_events(counted.text)
        assert [e["params"]["progress"] for e in events if e.get("method") == "notifications/progress"] == [1, 2, 3]
        assert events[-1]["id"] == 7 and events[-1]["result"]["content"][0]["text"] == "counted 3"
        assert counted.text.count("\nid: ") + counted.text.startswith("id: ") == 4
        assert client.post(url, json=tool_call(8, "pid", {})).json()["result"]["content"][0]["text"].isdigit()
    fast = [line for line in fast_lines(stdio_gateway) if "path=/kit/mcp" in line and "mcp_method=tools/call" in line]
    assert len(fast) >= 4, stdio_gateway.managed.log()[-3000:]
    assert any("tool=count" in line for line in fast)


def test_a_session_is_not_found_through_another_router_or_under_a_made_up_id(stdio_gateway):
    headers = open_session(stdio_gateway)
    kit, side = stdio_gateway.url("/kit/mcp"), stdio_gateway.url("/side/mcp")
    for attempt in range(2):
        assert httpx.post(kit, json=tool_call(attempt, "pid", {}), headers=headers, timeout=10).status_code == 200
    # The same service behind another router: the session belongs to /kit's router.
    for attempt in range(2):
        elsewhere = httpx.post(side, json=tool_call(attempt, "pid", {}), headers=headers, timeout=10)
        assert elsewhere.status_code == 404, elsewhere.text
    made_up = {**headers, "Mcp-Session-Id": headers["Mcp-Session-Id"][:-2] + ("00" if not headers["Mcp-Session-Id"].endswith("00") else "11")}
    assert httpx.post(kit, json=tool_call(3, "pid", {}), headers=made_up, timeout=10).status_code == 404
    assert not [line for line in fast_lines(stdio_gateway) if "path=/side/mcp" in line]


def test_a_fast_relayed_stream_broken_by_the_client_resumes_with_last_event_id(stdio_gateway):
    headers = open_session(stdio_gateway)
    url = stdio_gateway.url("/kit/mcp")
    assert httpx.post(url, json=tool_call("warm", "pid", {}), headers=headers, timeout=10).status_code == 200
    last_id = None
    with httpx.stream("POST", url, json=tool_call("c1", "count", {"steps": 4, "delay_seconds": 0.3}, progress="tok"), headers=headers, timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("id: "):
                last_id = line[4:]
            if line.startswith("data: "):
                break  # the client goes away after the first event
    assert last_id
    resumed = httpx.get(url, headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last_id}, timeout=10)
    events = sse_events(resumed.text)
    assert [e["params"]["progress"] for e in events if e.get("method") == "notifications/progress"] == [2, 3, 4]
    assert events[-1]["id"] == "c1" and events[-1]["result"]["content"][0]["text"] == "counted 4"
    assert any("tool=count" in line for line in fast_lines(stdio_gateway))


def test_the_official_client_elicits_and_gets_progress_over_the_fast_relay(stdio_gateway):
    import anyio
    from mcp import Client, types

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async def scenario():
        async with Client(stdio_gateway.url("/kit/mcp"), mode="legacy", elicitation_callback=elicitation) as client:
            for attempt in range(3):
                with anyio.fail_after(15):
                    assert (await client.call_tool("ask_user", {})).content[0].text == "user likes teal"
                    steps = []

                    async def progress(done, total, message):
                        steps.append(done)

                    result = await client.call_tool("count", {"steps": 2, "delay_seconds": 0.01}, progress_callback=progress)
                    assert result.content[0].text == "counted 2" and steps == [1, 2], (attempt, steps)

    anyio.run(scenario)
    fast = fast_lines(stdio_gateway)
    assert any("tool=ask_user" in line for line in fast) and any("tool=count" in line for line in fast), stdio_gateway.managed.log()[-3000:]


def test_a_child_crashing_mid_call_on_the_fast_relay_answers_an_error(stdio_gateway):
    headers = open_session(stdio_gateway)
    url = stdio_gateway.url("/kit/mcp")
    assert httpx.post(url, json=tool_call("warm", "pid", {}), headers=headers, timeout=10).status_code == 200
    crashed = httpx.post(url, json=tool_call("boom", "crash", {}), headers=headers, timeout=20)
    text = crashed.text
    messages = sse_events(text) if crashed.headers["content-type"].startswith("text/event-stream") else [crashed.json()]
    assert messages and "error" in messages[-1], text
    assert httpx.post(url, json=tool_call("after", "pid", {}), headers=headers, timeout=10).status_code == 404
    assert any("tool=crash" in line for line in fast_lines(stdio_gateway))


def test_a_body_with_two_readings_in_a_stdio_session_is_refused_and_reaches_no_child(stdio_gateway):
    """The session is warm (its binding just confirmed), so each of these is a fast relay
    candidate: the strict JSON check must refuse it before any byte reaches the child."""
    headers = open_session(stdio_gateway)
    url = stdio_gateway.url("/kit/mcp")
    with httpx.Client(headers=headers, timeout=10) as client:
        first_pid = client.post(url, json=tool_call("w1", "pid", {})).json()["result"]["content"][0]["text"]
        assert client.post(url, json=tool_call("w2", "pid", {})).status_code == 200
        bodies = [
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"crash","arguments":{"text":"x"}}}',
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\\u0061me":"crash","arguments":{"text":"x"}}}',
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}},"params":{"name":"crash"}}',
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","id":2,"params":{"name":"crash"}}',
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crash\\x"}}',
        ]
        for body in bodies:
            refused = client.post(url, content=body.encode())
            assert refused.status_code == 400 and refused.json()["error"]["code"] == -32700, (body, refused.text)
        # The child neither crashed nor was replaced: the same process answers.
        after = client.post(url, json=tool_call("w3", "pid", {}))
        assert after.status_code == 200 and after.json()["result"]["content"][0]["text"] == first_pid
    assert not [line for line in fast_lines(stdio_gateway) if "tool=crash" in line]


@pytest.mark.parametrize("upstream", ["stdio", "http"])
def test_another_users_token_with_a_warm_session_id_is_refused_fast_or_not(start_gateway, fake_github, request, upstream):
    from oauth_helpers import access_token_for

    if upstream == "stdio":
        service = f"""
        stdio:
          command: "{sys.executable}"
          args: ["{STDIO_SERVER}"]"""
    else:
        # A session-based HTTP upstream: its own session, bound to the caller who started it.
        url = request.getfixturevalue("raw_upstream") + "/session-stream"
        service = f"""
        http:
          url: "{url}"
"""
    gateway = start_gateway(ENTRY_POINT + f"""
    auth:
      github: {fake_github.config}
      allow:
        users: ["octocat", "hubot"]
    routers:
      kit:
        rule: "PathPrefix(`/kit`)"
        service: kit
    services:
      kit:{service}
    """)
    resource = gateway.url("/kit/mcp")
    alice = {"Authorization": f"Bearer {access_token_for(gateway, fake_github, 'octocat', 1, resource)}"}
    bob = {"Authorization": f"Bearer {access_token_for(gateway, fake_github, 'hubot', 2, resource)}"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "fast", "version": "1"}}}
    opened = httpx.post(resource, json=init, headers={**SESSION_HEADERS, **alice}, timeout=20)
    assert opened.status_code == 200, opened.text
    session = {**SESSION_HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    initialized = httpx.post(resource, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**session, **alice}, timeout=10)
    # (The HTTP upstream echoes every request.)
    assert initialized.status_code == (202 if upstream == "stdio" else 200)
    with httpx.Client(timeout=10) as owner, httpx.Client(timeout=10) as intruder:
        for attempt in range(3):
            assert owner.post(resource, json=tool_call(f"a{attempt}", "pid", {}), headers={**session, **alice}).status_code == 200
        # Bob's valid token, on one connection (so it is remembered as verified), with Alice's
        # warm session id: never her child.
        for attempt in range(3):
            refused = intruder.post(resource, json=tool_call(f"b{attempt}", "echo", {"text": "mine now"}), headers={**session, **bob})
            assert refused.status_code == 404, refused.text
        assert owner.post(resource, json=tool_call("a9", "pid", {}), headers={**session, **alice}).status_code == 200
    lines = fast_lines(gateway)
    assert any("user=octocat" in line and "tool=pid" in line for line in lines), gateway.managed.log()[-3000:]
    # Bob's requests are refused by the full pipeline, or by the fast relay once the store said no.
    assert all("status=404" in line for line in lines if "user=hubot" in line), gateway.managed.log()[-3000:]


def test_relayed_stdio_calls_are_audited_and_counted_like_the_full_pipelines(start_gateway, tmp_path):
    from test_metrics import scrape, value

    audit_file = tmp_path / "audit.jsonl"
    gateway = start_gateway(stdio_config() + f"""
    audit:
      file: "{audit_file}"
      arguments: redacted
    metrics:
      prometheus: {{}}
    """)
    headers = open_session(gateway)
    url = gateway.url("/kit/mcp")
    with httpx.Client(headers=headers, timeout=10) as client:
        for attempt in range(3):
            answer = client.post(url, json=tool_call(attempt, "echo", {"text": "hi", "password": "hunter2-not-logged"}))
            assert answer.json()["result"]["content"][0]["text"] == "hi"
        counted = client.post(url, json=tool_call(9, "count", {"steps": 2, "delay_seconds": 0.01}, progress="p9"))
        assert counted.headers["content-type"].startswith("text/event-stream")
    fast = [line for line in fast_lines(gateway) if "mcp_method=tools/call" in line]
    assert len(fast) >= 3, gateway.managed.log()[-3000:]

    def calls():
        return [json.loads(line) for line in audit_file.read_text().splitlines() if '"tools/call"' in line]

    records = wait_until(lambda: len(calls()) >= 4 and calls(), what="four tools/call audit lines")
    echoes = [r for r in records if r.get("tool") == "echo"]
    assert len(echoes) == 3, records
    for record in echoes:
        assert record["router"] == "kit" and record["service"] == "kit" and record["transport"] == "stdio" and record["status"] == 200
        assert record["bytes_in"] > 0 and record["bytes_out"] > 0 and "duration_ms" in record
        assert record["arguments"]["text"] == "hi" and record["arguments"]["password"] != "hunter2-not-logged"
    streamed = [r for r in records if r.get("tool") == "count"]
    assert streamed and streamed[0]["status"] == 200 and streamed[0]["bytes_out"] > counted.text.count("data:") * 10
    assert "hunter2-not-logged" not in audit_file.read_text()

    samples = scrape(gateway.url("/metrics"))
    count = "mcp_server_operation_duration_seconds_count"
    assert value(samples, count, mcp_method_name="tools/call", gen_ai_tool_name="echo", router="kit", error_type="") == 3
    assert value(samples, "mcp_gateway_upstream_duration_seconds_count", service="kit") >= 4


class ScriptedUpstream:
    """A raw HTTP/1.1 upstream whose answer to a tools/call is the bytes its `mode` argument names:
    what a broken or hostile server could send to make one answer read as two. The gateway's era
    probe gets a proper 2026-07-28 answer."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def stop(self):
        self.closed = True
        self.server.close()

    def accept(self):
        while not self.closed:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(connection,), daemon=True).start()

    @staticmethod
    def answer(status: str, body: bytes, extra: str = "") -> bytes:
        return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body

    def serve(self, connection: socket.socket):
        pending = b""
        with connection:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                head, pending = pending.split(b"\r\n\r\n", 1)
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                while len(pending) < length:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                body, pending = pending[:length], pending[length:]
                message = json.loads(body)
                if message.get("method") == "server/discover":
                    result = {"jsonrpc": "2.0", "id": message.get("id"), "result": {"supportedVersions": ["2026-07-28"]}}
                    connection.sendall(self.answer("200 OK", json.dumps(result).encode()))
                    continue
                mode = message.get("params", {}).get("arguments", {}).get("mode", "ok")
                good = json.dumps({"jsonrpc": "2.0", "id": message.get("id"), "result": {"content": [], "mode": mode}}).encode()
                evil = json.dumps({"jsonrpc": "2.0", "id": message.get("id"), "result": {"content": [], "smuggled": True}}).encode()
                if mode == "both-lengths":
                    connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(good)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                                       + f"{len(evil):x}\r\n".encode() + evil + b"\r\n0\r\n\r\n")
                elif mode == "two-lengths":
                    connection.sendall(self.answer("200 OK", good, f"Content-Length: {len(good) + 1}\r\n"))
                elif mode == "folded":
                    connection.sendall(self.answer("200 OK", good, "X-Folded: a\r\n Content-Length: 0\r\n"))
                elif mode == "chunked":
                    # Chunk by chunk, an extension and a trailer: the client gets the body whole.
                    half = len(good) // 2
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       + f"{half:x};ext=1\r\n".encode() + good[:half] + b"\r\n"
                                       + f"{len(good) - half:X}\r\n".encode() + good[half:] + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
                elif mode == "until-close":
                    # No length: the answer ends when the upstream closes the connection.
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + good[:10])
                    time.sleep(0.05)
                    connection.sendall(good[10:])
                    return
                elif mode == "trailing-answer":
                    # A second answer nobody asked for, in the same write: the next request on
                    # this connection would otherwise read it as its own.
                    connection.sendall(self.answer("200 OK", good) + self.answer("200 OK", evil))
                else:
                    connection.sendall(self.answer("200 OK", good))


def test_an_upstream_answer_that_could_read_as_two_is_never_relayed_as_one(start_gateway):
    upstream = ScriptedUpstream()
    try:
        gateway = start_gateway(relay_config(f"http://127.0.0.1:{upstream.port}"))

        def tool(client: httpx.Client, mode: str) -> httpx.Response:
            return call(gateway, "/echo/mcp", body=modern_body("tools/call", {"name": "echo", "arguments": {"mode": mode}}), client=client)

        with httpx.Client() as client:
            assert tool(client, "ok").json()["result"]["mode"] == "ok"  # the era probe, then the fast relay
            for mode in ("both-lengths", "two-lengths", "folded"):
                before = len(fast_lines(gateway))
                refused = tool(client, mode)
                assert refused.status_code == 502, (mode, refused.text)
                assert refused.json()["error"]["data"]["reason"] == "upstream_failed", refused.text
                assert "smuggled" not in refused.text
                assert len(fast_lines(gateway)) > before, mode
            # Every framing a server may use arrives whole.
            for mode in ("chunked", "until-close"):
                before = len(fast_lines(gateway))
                answer = tool(client, mode)
                assert answer.status_code == 200 and answer.json()["result"] == {"content": [], "mode": mode}, (mode, answer.text)
                assert len(fast_lines(gateway)) > before, mode
            # The answer behind the end is dropped with its connection: every later call, on the
            # same client connection, gets its own answer.
            relayed = tool(client, "trailing-answer")
            assert relayed.status_code == 200 and relayed.json()["result"]["mode"] == "trailing-answer", relayed.text
            for _ in range(3):
                answer = tool(client, "ok")
                assert answer.status_code == 200 and answer.json()["result"] == {"content": [], "mode": "ok"}, answer.text
    finally:
        upstream.stop()


def test_relayed_connections_without_a_task_end_with_a_graceful_stop_or_a_half_close(relay_gateway):
    """A connection the fast relay served has no task of Hummingbird's until it needs one: a later
    full-pipeline request on it is answered (after a relayed call, and pipelined behind one with a
    half-close after both), a client's half-close ends it, and a graceful stop closes the idle ones
    (one that never sent a byte too) and exits at once, not after the header deadline or
    `shutdownGrace`."""
    gateway = relay_gateway
    port = gateway.port
    body = json.dumps(modern_body("tools/call", {"name": "echo", "arguments": {}})).encode()
    post = (f"POST /echo/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n"
            f"Mcp-Name: echo\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def answer(sock: socket.socket) -> bytes:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        head, rest = received.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, received
            rest += chunk
        return head

    def relayed(sock: socket.socket) -> None:
        for _ in range(10):
            before = len(fast_lines(gateway))
            sock.sendall(post)
            assert answer(sock).startswith(b"HTTP/1.1 200")
            if len(fast_lines(gateway)) > before:
                return
        raise AssertionError("no call on this connection was relayed fast")

    # A relayed call, then a request only the full pipeline answers, on one connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        relayed(sock)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert answer(sock).startswith(b"HTTP/1.1 200")

    # A relayed call and a full-pipeline request sent together, then a half-close: both are
    # answered, in order, and then the gateway ends the connection (the task that starts for the
    # second request is told of the half-close that came before it).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        relayed(sock)
        sock.sendall(post + f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1 200") == 2, received[:500]

    # A half-close after a relayed call: the gateway ends the connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        relayed(sock)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""

    # Idle after a relayed call, and idle having sent nothing: a graceful stop closes both.
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        relayed(idle)
        started = time.monotonic()
        os.kill(gateway.managed.pid, signal.SIGTERM)
        assert idle.recv(65536) == b""
        assert silent.recv(65536) == b""
        assert gateway.managed.process.wait(timeout=10) == 0
        # shutdownGrace is 15 s: a task left waiting would hold the stop that long.
        assert time.monotonic() - started < 10
    finally:
        idle.close()
        silent.close()


def session_stream_config(raw_upstream: str, policy: str = "") -> str:
    return ENTRY_POINT + f"""
    routers:
      live:
        rule: "PathPrefix(`/live`)"
        service: live
        auth: none{policy}
      side:
        rule: "PathPrefix(`/side`)"
        service: live
        auth: none
      brief:
        rule: "PathPrefix(`/brief`)"
        service: brief
        auth: none
      stuck:
        rule: "PathPrefix(`/stuck`)"
        service: stuck
        auth: none
    services:
      live:
        http:
          url: "{raw_upstream}/session-stream"
      brief:
        http:
          url: "{raw_upstream}/session-stream-brief"
      stuck:
        http:
          url: "{raw_upstream}/hang"
          responseHeaderTimeout: 5m
    """


def start_upstream_session(gateway, path: str = "/live/mcp") -> dict:
    """A session the (session-based) upstream hands out through the full pipeline's initialize."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "fast", "version": "1"}}}
    opened = httpx.post(gateway.url(path), json=init, headers=SESSION_HEADERS, timeout=10)
    assert opened.status_code == 200, opened.text
    return {**SESSION_HEADERS, "MCP-Protocol-Version": "2025-06-18", "Mcp-Session-Id": opened.headers["mcp-session-id"]}


def test_a_session_based_clients_requests_to_an_http_upstream_are_relayed_fast_in_their_session_only(start_gateway, raw_upstream):
    gateway = start_gateway(session_stream_config(raw_upstream))
    session = start_upstream_session(gateway)
    # The session began here too: the upstream's answer, its session bound before the client saw it.
    assert [line for line in fast_lines(gateway) if "mcp_method=initialize" in line and "status=200" in line], gateway.managed.log()[-3000:]
    url = gateway.url("/live/mcp")
    with httpx.Client(timeout=10) as client:
        for attempt in range(3):
            answer = client.post(url, json=tool_call(attempt, "echo", {"text": "hi"}),
                                 headers={**session, "X-Forwarded-User": "admin", "Connection": "X-Hop", "X-Hop": "hop"})
            assert answer.status_code == 200, answer.text
            assert answer.headers["mcp-session-id"] == session["Mcp-Session-Id"]
            echoed = echoed_headers(answer)
            assert answer.json()["method"] == "POST" and echoed["mcp-session-id"] == session["Mcp-Session-Id"]
            assert "x-forwarded-user" not in echoed and "x-hop" not in echoed and echoed["x-forwarded-for"] == "127.0.0.1"
    fast = [line for line in fast_lines(gateway) if "mcp_method=tools/call" in line and "router=live" in line]
    assert fast and all("method=POST" in line and "status=200" in line for line in fast), gateway.managed.log()[-3000:]
    # The client's answer to a request of the server's (an elicitation's result) goes the same way.
    before = len(fast_lines(gateway))
    answered = httpx.post(url, json={"jsonrpc": "2.0", "id": "server-1", "result": {"action": "accept", "content": {}}}, headers=session, timeout=10)
    assert answered.status_code == 200 and answered.json()["method"] == "POST", answered.text
    assert '"server-1"' in answered.json()["body"]
    assert len(fast_lines(gateway)) == before + 1, gateway.managed.log()[-3000:]

    def upstream_heard() -> int:
        return httpx.get(f"{raw_upstream}/state", timeout=5).json().get("in_session", 0)

    # The session id through another router, or one made up: not found, whatever path it takes
    # (the fast relay asks the store for an id it has not seen confirmed), and the upstream never
    # hears of it.
    heard = upstream_heard()
    for path, headers in (("/side/mcp", session), ("/live/mcp", {**session, "Mcp-Session-Id": "upstream-session-999"})):
        for _ in range(2):
            refused = httpx.post(gateway.url(path), json=tool_call(9, "echo", {}), headers=headers, timeout=10)
            assert refused.status_code == 404, refused.text
            assert refused.json()["error"]["message"], refused.text
            with httpx.stream("GET", gateway.url(path), headers=headers, timeout=10) as stream:
                assert stream.status_code == 404
    assert upstream_heard() == heard
    # A body with two readings (a duplicate key) in the session: refused, never sent as it is.
    for body in ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"rm_rf"}}',
                 '{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}'):
        refused = httpx.post(url, content=body, headers=session, timeout=10)
        assert refused.status_code == 400, refused.text
    assert upstream_heard() == heard
    # A session last confirmed longer ago than the check's five seconds is asked about again, and
    # still relayed here. (Waits for the clock: no event says five seconds have passed.)
    time.sleep(5.2)
    before = len(fast_lines(gateway))
    again = httpx.post(url, json=tool_call(11, "echo", {}), headers=session, timeout=10)
    assert again.status_code == 200 and again.headers["mcp-session-id"] == session["Mcp-Session-Id"], again.text
    assert any("status=200" in line for line in fast_lines(gateway)[before:]), gateway.managed.log()[-3000:]
    # DELETE ends the session (the full pipeline unbinds it): the id is refused at once after.
    assert httpx.delete(url, headers=session, timeout=10).status_code == 200
    heard = upstream_heard()
    gone = httpx.post(url, json=tool_call(10, "echo", {}), headers=session, timeout=10)
    assert gone.status_code == 404, gone.text
    assert upstream_heard() == heard


def test_a_sessions_get_stream_is_relayed_fast_told_of_policy_changes_and_ended_by_a_stop(start_gateway, raw_upstream):
    gateway = start_gateway(session_stream_config(raw_upstream))
    session = start_upstream_session(gateway)
    url = gateway.url("/live/mcp")

    def active_streams() -> int:
        return httpx.get(f"{raw_upstream}/state", timeout=5).json()["active_streams"]

    with httpx.Client(timeout=httpx.Timeout(10, read=20)) as client, client.stream("GET", url, headers=session) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-accel-buffering"] == "no"
        lines = stream.iter_lines()
        numbers: list[int] = []
        for line in lines:
            if line.startswith("data: "):
                numbers.append(json.loads(line[6:])["n"])
                if len(numbers) == 3:
                    break
        assert numbers == sorted(numbers)
        assert [line for line in fast_lines(gateway) if "method=GET" in line and "router=live" in line], gateway.managed.log()[-3000:]
        # A second stream of the session, dropped by its client: its upstream stream ends with it.
        with httpx.Client(timeout=httpx.Timeout(10, read=20)) as other, other.stream("GET", url, headers=session) as dropped:
            assert dropped.status_code == 200
            wait_until(lambda: active_streams() == 2, what="two upstream streams")
        wait_until(lambda: active_streams() == 1, what="the dropped stream's upstream stream closed")
        # A reload that hides a tool: the open stream is told, between two whole events.
        text = gateway.config_path.read_text()
        hidden = re.sub(r"\n( +)auth: none\n", lambda m: f'\n{m[1]}auth: none\n{m[1]}tools: {{deny: ["echo"]}}\n', text, count=1)
        assert hidden != text
        gateway.config_path.write_text(hidden)
        told = False
        for line in lines:
            if line.startswith("data: "):
                message = json.loads(line[6:])
                if message.get("method") == "notifications/tools/list_changed":
                    told = True
                    break
                assert message["n"] > numbers[-1]
                numbers.append(message["n"])
        assert told
        # A stop ends the stream cleanly at once (it answers no request), and its upstream stream.
        started = time.monotonic()
        os.kill(gateway.managed.pid, signal.SIGTERM)
        for _ in lines:
            pass
    assert gateway.managed.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    wait_until(lambda: active_streams() == 0, timeout=10, what="the upstream stream closed")


def test_an_initialize_refused_for_another_reason_is_relayed_as_it_is(start_gateway, raw_upstream):
    """Only a 2026-07-28-only server's refusal (-32022) is handed to the full pipeline to bridge;
    any other 400 to an initialize reaches the client whole, short or past the 64 KiB the relay
    holds to tell."""
    gateway = start_gateway(ENTRY_POINT + f"""
    routers:
      short:
        rule: "PathPrefix(`/short`)"
        service: short
        auth: none
      long:
        rule: "PathPrefix(`/long`)"
        service: long
        auth: none
    services:
      short:
        http:
          url: "{raw_upstream}/refuse"
      long:
        http:
          url: "{raw_upstream}/refuse-long"
    """)
    init = {"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "fast", "version": "1"}}}
    for path, length in (("/short/mcp", 9), ("/long/mcp", 70_009)):
        refused = httpx.post(gateway.url(path), json=init, headers=SESSION_HEADERS, timeout=10)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert refused.json()["id"] == 7 and error["code"] == -32600 and len(error["message"]) == length
    lines = [line for line in fast_lines(gateway) if "mcp_method=initialize" in line]
    assert len(lines) == 2 and all("status=400" in line for line in lines), gateway.managed.log()[-3000:]


def test_a_websocket_sessions_stream_is_relayed_fast_and_its_end_ends_the_session(start_gateway, raw_upstream):
    """A WebSocket session's inner GET stream is relayed on the WebSocket's own connection: its
    events arrive as text frames; the client closing the WebSocket ends the upstream stream; a
    stream the upstream ends ends the session with 1001 (going away), both when the relay carries
    it and when a task reads it (a client sending `Origin` takes the full pipeline)."""
    gateway = start_gateway(session_stream_config(raw_upstream))
    init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ws", "version": "1"}}})

    def active_streams() -> int:
        return httpx.get(f"{raw_upstream}/state", timeout=5).json()["active_streams"]

    def session(router: str, **options) -> websocket.WebSocket:
        connection = websocket.create_connection(gateway.url(f"/{router}/mcp").replace("http://", "ws://"), timeout=20,
                                                 subprotocols=["mcp"], **options)
        connection.send(init)
        return connection

    before = active_streams()
    connection = session("live", suppress_origin=True)
    try:
        numbers = []
        while len(numbers) < 3:
            message = json.loads(connection.recv())
            if "n" in message:
                numbers.append(message["n"])
        assert numbers == sorted(numbers)
        assert active_streams() == before + 1
    finally:
        connection.close()
    wait_until(lambda: active_streams() == before, what="the upstream stream ended with the WebSocket")
    assert [line for line in fast_lines(gateway) if "method=GET" in line and "router=live" in line], gateway.managed.log()[-3000:]

    for options in ({"suppress_origin": True}, {}):
        connection = session("brief", **options)
        try:
            numbers, code = [], None
            while code is None:
                opcode, frame = connection.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(frame.data[:2], "big")
                elif opcode == websocket.ABNF.OPCODE_TEXT and "n" in (message := json.loads(frame.data)):
                    numbers.append(message["n"])
            assert numbers == [0, 1] and code == 1001, (options, numbers, code)
        finally:
            connection.shutdown()
    brief = [line for line in gateway.managed.log().splitlines() if "method=GET" in line and "router=brief" in line]
    assert len(brief) == 2 and "relay=fast" in brief[0] and "relay=fast" not in brief[1], brief


def test_a_websocket_session_holds_a_bounded_number_of_requests_in_flight(start_gateway, raw_upstream):
    """A client that sends request after request to a server that answers none cannot make the
    gateway hold them all: past `WebSocketClients.maxRequestsInFlight` (64) each is answered at
    once with a JSON-RPC error (-32001) and never sent on, and the socket is still read, so the
    client's close is seen and cancels what is in flight."""
    gateway = start_gateway(session_stream_config(raw_upstream))

    def hanging() -> int:
        return httpx.get(f"{raw_upstream}/state", timeout=5).json().get("hanging", 0)

    connection = websocket.create_connection(gateway.url("/stuck/mcp").replace("http://", "ws://"), timeout=20,
                                             subprotocols=["mcp"], suppress_origin=True)
    try:
        for index in range(200):
            connection.send(json.dumps({"jsonrpc": "2.0", "id": index, "method": "tools/call", "params": {"name": "wait", "arguments": {}}}))
        refused = []
        while len(refused) < 136:
            answer = json.loads(connection.recv())
            assert answer["error"]["code"] == -32001 and "in flight" in answer["error"]["message"], answer
            refused.append(answer["id"])
        assert sorted(refused) == list(range(64, 200))
        wait_until(lambda: hanging() == 64, what="the 64 requests in flight at the upstream")
    finally:
        connection.close()
    wait_until(lambda: hanging() == 0, what="the requests in flight cancelled with the session")
