"""Router middlewares: `rateLimit` counted in Redis, so a limit holds across gateway instances.
Two gateways on one Redis, the echo upstream behind them; tokens from the gateways' own sign-in."""

from __future__ import annotations

import sys

import httpx
import pytest

from conftest import SERVERS, free_port, modern_body, modern_headers, port_open, start_process, wait_until
from test_attacks import World, bearer, rpc_result, start_gateway


def config(redis_url: str, upstream: str, password_hash: str) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_url}"
        keyPrefix: "rl:"
    auth:
      allow:
        users: ["alice", "bob", "carol", "dave"]
      local:
        users:
          alice: "{password_hash}"
          bob: "{password_hash}"
          carol: "{password_hash}"
          dave: "{password_hash}"
        rateLimit:
          perAddress: 1000
    middlewares:
      perUser:
        rateLimit:
          average: 3
          period: 1m
          tools:
            "slow_*": {{ average: 1, period: 1m }}
      hot:
        rateLimit: {{ average: 320, period: 1h }}
    routers:
      limited:
        rule: "PathPrefix(`/limited`)"
        service: echo
        middlewares: [perUser]
      open:
        rule: "PathPrefix(`/open`)"
        service: echo
        auth: none
        middlewares: [perUser]
      free:
        rule: "PathPrefix(`/free`)"
        service: echo
      hot:
        rule: "PathPrefix(`/hot`)"
        service: echo
        auth: none
        middlewares: [hot]
    services:
      echo:
        http:
          url: "{upstream}/echo"
    """


@pytest.fixture(scope="module")
def pair(tmp_path_factory, local_password_hash):
    """Two gateways with the same gateway.yaml on one Redis (as behind a load balancer)."""
    tmp = tmp_path_factory.mktemp("ratelimits")
    started = []
    try:
        redis_port, upstream_port = free_port(), free_port()
        started.append(start_process("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], tmp))
        started.append(start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp))
        wait_until(lambda: port_open(redis_port) and port_open(upstream_port), what="redis and the echo upstream")
        text = config(f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{upstream_port}", local_password_hash)
        first = start_gateway(tmp, text, name="first")
        started.append(first.managed)
        # The same public URL (one issuer, one audience per router), another listening address.
        second = start_gateway(tmp, text.replace('publicURL: "http://127.0.0.1:{port}"', f'publicURL: "http://127.0.0.1:{first.port}"'), name="second")
        started.append(second.managed)
        yield World(first, redis_port, f"http://127.0.0.1:{upstream_port}", tmp, local_password_hash), second
    finally:
        for managed in reversed(started):
            managed.stop()


def call(base: str, path: str, token: str | None, tool: str | None = None, id: int = 1, **headers) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}} if tool else {"jsonrpc": "2.0", "id": id, "method": "ping"}
    return httpx.post(base + path, json=body, headers=bearer(token, **headers), timeout=10)


def assert_limited(response: httpx.Response, policy: str, quota: int, id: int) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-policy"] == f'"{policy}";q={quota};w=60'
    assert response.headers["ratelimit"].startswith(f'"{policy}";r=0;t=')
    answer = response.json()
    assert answer["id"] == id and answer["error"]["data"]["reason"] == "rate_limited", answer


def test_a_users_limit_holds_across_two_gateways_and_fresh_tokens(pair):
    world, second = pair
    alice = world.token("alice", "limited")
    first = world.gateway.base
    # Three requests a minute, counted in Redis: two here, one on the other instance.
    assert call(first, "/limited/mcp", alice, id=1).status_code == 200
    assert call(first, "/limited/mcp", alice, id=2).status_code == 200
    assert call(second.base, "/limited/mcp", alice, id=3).status_code == 200
    assert_limited(call(second.base, "/limited/mcp", alice, id=4), "perUser", 3, 4)
    assert_limited(call(first, "/limited/mcp", alice, id=5), "perUser", 3, 5)
    # The limit is the user's, not the token's: signing in again (another client) does not reset it.
    again = world.sign_in("alice", "limited")["access_token"]
    assert again != alice
    assert_limited(call(first, "/limited/mcp", again, id=6), "perUser", 3, 6)
    # Another user has an allowance of their own; a router without the middleware is not limited.
    assert call(first, "/limited/mcp", world.token("bob", "limited"), id=7).status_code == 200
    free = world.token("alice", "free")
    assert all(call(first, "/free/mcp", free, id=n).status_code == 200 for n in range(8, 13))


def test_a_tool_limit_replaces_the_routers_for_that_tool(pair):
    world, second = pair
    carol = world.token("carol", "limited")
    first = world.gateway.base
    assert call(first, "/limited/mcp", carol, tool="slow_report", id=1).status_code == 200
    # Every tool matching the pattern shares its allowance, on either instance.
    assert_limited(call(second.base, "/limited/mcp", carol, tool="slow_other", id=2), "perUser;tool=slow_*", 1, 2)
    # Other calls count against the router's own limit, untouched by the tool's.
    assert call(first, "/limited/mcp", carol, tool="echo", id=3).status_code == 200
    assert call(first, "/limited/mcp", carol, id=4).status_code == 200


def test_2026_calls_on_the_fast_relay_are_limited_the_same_way(pair):
    """2026-07-28 calls to a plain HTTP upstream are relayed by the connection handler, which runs
    the router's middlewares itself: the same limit, counted in the same Redis, the same 429."""
    world, second = pair
    dave = world.token("dave", "limited")

    def modern(base: str, id: int) -> httpx.Response:
        body = modern_body("tools/call", {"name": "echo", "arguments": {}}, id=id)
        return httpx.post(base + "/limited/mcp", json=body, headers={**bearer(dave), **modern_headers("tools/call", "echo")}, timeout=10)

    def fast(gateway) -> list[str]:
        return [line for line in gateway.managed.log().splitlines() if "relay=fast" in line and "user=dave" in line]

    first = world.gateway
    assert modern(first.base, 1).status_code == 200  # may be the era probe: the full pipeline
    assert modern(first.base, 2).status_code == 200
    assert modern(second.base, 3).status_code == 200
    assert_limited(modern(second.base, 4), "perUser", 3, 4)
    assert_limited(modern(first.base, 5), "perUser", 3, 5)
    # Each call had a connection of its own: from the second on, the relay carried them.
    assert any("status=429" in line for line in fast(first)), first.managed.log()[-3000:]
    assert any("status=200" in line for line in fast(first))


def test_an_open_routers_limit_is_per_address_and_forged_forwarding_does_not_reset_it(pair):
    world, second = pair
    # auth: none: counted per client address. The gateway trusts no proxy here, so a client
    # inventing X-Forwarded-For (or its case and underscore variants) is still the same address.
    spoofs = [{"X-Forwarded-For": "203.0.113.1"}, {"x-forwarded-for": "203.0.113.2"}, {"X-Real-IP": "203.0.113.3"}]
    for n, headers in enumerate(spoofs):
        assert call(world.gateway.base, "/open/mcp", None, id=n, **headers).status_code == 200
    assert_limited(call(second.base, "/open/mcp", None, id=9, **{"X_Forwarded_For": "203.0.113.4"}), "perUser", 3, 9)


def script_calls(redis_port: int) -> int:
    """Calls of the rate limit script so far (EVAL and EVALSHA), from `INFO commandstats`."""
    import re
    import subprocess

    stats = subprocess.run(["redis-cli", "-p", str(redis_port), "INFO", "commandstats"], capture_output=True, text=True, check=True).stdout
    return sum(int(calls) for calls in re.findall(r"cmdstat_eval(?:sha)?:calls=(\d+)", stats))


def test_a_hot_key_costs_few_round_trips_and_two_gateways_never_admit_more_than_the_burst(pair):
    """A limit with a large burst (320 at once, then 320 an hour): each instance takes a few
    tokens ahead of use for a key it sees often, so most requests cost no Redis round trip; hammered
    through both instances at once, 2025 calls (full pipeline) and 2026 calls (fast relay), the two
    together still admit no more than the burst, and then refuse with the time to wait."""
    from concurrent.futures import ThreadPoolExecutor

    world, second = pair
    before = script_calls(world.redis_port)

    def hammer(base: str, modern: bool) -> list[int]:
        with httpx.Client(timeout=10) as client:
            statuses = []
            for n in range(120):
                if modern:
                    body = modern_body("tools/call", {"name": "echo", "arguments": {}}, id=n)
                    response = client.post(base + "/hot/mcp", json=body, headers=modern_headers("tools/call", "echo"))
                else:
                    response = client.post(base + "/hot/mcp", json={"jsonrpc": "2.0", "id": n, "method": "ping"})
                statuses.append(response.status_code)
            return statuses

    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(hammer, gateway.base, modern) for gateway in (world.gateway, second) for modern in (False, True)]
        statuses = [status for run in runs for status in run.result()]
    assert set(statuses) <= {200, 429}, statuses
    admitted = statuses.count(200)
    # Never more than the burst; fewer only by reserves not used up (at most 20 per instance).
    assert 320 - 2 * 20 <= admitted <= 320, admitted
    calls = script_calls(world.redis_port) - before
    assert calls < 120, f"480 requests took {calls} script calls"
    # Refused with the time to the next token (an hour / 320 = 11.25 s), remembered or asked.
    for base in (world.gateway.base, second.base):
        refused = call(base, "/hot/mcp", None, id=1)
        assert refused.status_code == 429 and refused.headers["ratelimit-policy"] == '"hot";q=320;w=3600', refused.headers
        assert 5 <= int(refused.headers["retry-after"]) <= 12, refused.headers


def test_an_unknown_middleware_is_a_config_error_with_its_position(tmp_path):
    import subprocess

    from conftest import gateway_binary

    path = tmp_path / "gateway.yaml"
    path.write_text(
        'entryPoints: { web: { address: "127.0.0.1:8080" } }\n'
        'publicURL: "http://127.0.0.1:8080"\n'
        "middlewares:\n"
        "  perUser: { rateLimit: { average: 3 } }\n"
        "routers:\n"
        "  r:\n"
        '    rule: "PathPrefix(`/r`)"\n'
        "    service: s\n"
        "    middlewares: [perUsr]\n"
        "services:\n"
        '  s: { http: { url: "http://127.0.0.1:1/mcp" } }\n'
    )
    result = subprocess.run([gateway_binary(), "check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert 'gateway.yaml:9:19: routers.r.middlewares: middleware "perUsr" is not defined (defined: perUser)' in result.stdout + result.stderr


def test_the_token_endpoint_has_its_own_per_address_limit_across_instances(tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("token-limit")
    text = f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_server.url}"
        keyPrefix: "tl:"
    auth:
      token:
        rateLimit: 3
    routers:
      r:
        rule: "PathPrefix(`/r`)"
        service: s
    services:
      s:
        http:
          url: "http://127.0.0.1:9/mcp"
    """
    first, second = start_gateway(tmp, text, name="token-a"), start_gateway(tmp, text, name="token-b")
    try:
        guess = {"grant_type": "refresh_token", "refresh_token": "guess", "client_id": "nobody"}
        answers = [httpx.post(gateway.url("/token"), data=guess, timeout=10) for gateway in (first, second, first)]
        assert [a.status_code for a in answers] == [401, 401, 401], [a.text for a in answers]
        # The fourth from this address, on either instance, is refused before any token is looked at.
        refused = httpx.post(second.url("/token"), data=guess, timeout=10)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited" and refused.headers["retry-after"] == "60"
    finally:
        first.managed.stop()
        second.managed.stop()


def test_clients_behind_a_trusted_proxy_on_one_kept_alive_connection_have_their_own_limits(pair, tmp_path_factory):
    """Behind a trusted proxy, one connection carries many clients: the fast relay keeps the
    connection's peer address, but each request's client is its own X-Forwarded-For (the proxy's
    entry, the last one). Entries a client wrote before the proxy's do not make it another client."""
    world, _ = pair
    tmp = tmp_path_factory.mktemp("behind-proxy")
    gateway = start_gateway(tmp, f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
        trustedProxies: ["127.0.0.1/32"]
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "redis://127.0.0.1:{world.redis_port}/0"
        keyPrefix: "proxied:"
    middlewares:
      perAddress:
        rateLimit: {{ average: 2, period: 1m }}
    routers:
      open:
        rule: "PathPrefix(`/open`)"
        service: echo
        auth: none
        middlewares: [perAddress]
    services:
      echo:
        http:
          url: "{world.upstream}/echo"
    """, name="behind-proxy", extra_args=["--log-level", "debug"])
    try:
        with httpx.Client(timeout=10) as proxy:  # one kept-alive connection, as a proxy's
            def relayed(forwarded_for: str, id: int) -> httpx.Response:
                body = modern_body("tools/call", {"name": "echo", "arguments": {}}, id=id)
                return proxy.post(gateway.base + "/open/mcp", json=body, headers={**modern_headers("tools/call", "echo"), "X-Forwarded-For": forwarded_for})

            assert relayed("198.51.100.1", 1).status_code == 200
            assert relayed("198.51.100.1", 2).status_code == 200
            assert_limited(relayed("198.51.100.1", 3), "perAddress", 2, 3)
            # Another client through the same connection has its own allowance.
            assert relayed("198.51.100.2", 4).status_code == 200
            # A client that writes another address before the proxy's entry is still itself.
            assert_limited(relayed("203.0.113.77, 198.51.100.1", 5), "perAddress", 2, 5)
            assert relayed("198.51.100.2", 6).status_code == 200
            assert_limited(relayed("198.51.100.2", 7), "perAddress", 2, 7)
    finally:
        gateway.managed.stop()
    fast = [line for line in gateway.managed.log().splitlines() if "relay=fast" in line]
    assert any("ip=198.51.100.2" in line for line in fast) and any("ip=198.51.100.1" in line for line in fast), fast
