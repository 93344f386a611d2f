"""Hot reload: a valid file is swapped in without disturbing open streams; an invalid one is rejected."""

import os
import signal

import httpx
import pytest

from conftest import wait_until

BASE = """
entryPoints:
  web:
    address: "127.0.0.1:{port}"
publicURL: "http://127.0.0.1:{port}"
routers:
  echo:
    rule: "PathPrefix(`/echo`)"
    service: echo
    auth: none
  forever:
    rule: "PathPrefix(`/forever`)"
    service: forever
    auth: none
EXTRA_ROUTERS
services:
  echo:
    http:
      url: "UPSTREAM/echo"
  forever:
    http:
      url: "UPSTREAM/sse-forever"
"""

ADDED_ROUTER = """  added:
    rule: "PathPrefix(`/added`)"
    service: echo
    auth: none"""


def render(upstream: str, port: int, extra: str = "") -> str:
    return BASE.replace("UPSTREAM", upstream).replace("EXTRA_ROUTERS", extra).replace("{port}", str(port))


@pytest.fixture
def gateway(start_gateway, raw_upstream):
    return start_gateway(BASE.replace("UPSTREAM", raw_upstream).replace("EXTRA_ROUTERS", ""))


def read_events(lines, count: int) -> list[str]:
    events = []
    for line in lines:
        if line.startswith("data: "):
            events.append(line)
            if len(events) == count:
                break
    return events


def test_reload_swaps_routes_and_keeps_open_streams(gateway, raw_upstream):
    assert httpx.post(gateway.url("/added/mcp"), content=b"{}").status_code == 404
    with httpx.stream("GET", gateway.url("/forever/mcp"), timeout=10) as stream:
        lines = stream.iter_lines()
        assert len(read_events(lines, 3)) == 3
        gateway.rewrite_config(render(raw_upstream, gateway.port, ADDED_ROUTER))
        ready = gateway.wait_for_generation(2)
        assert ready["routers"] == 3
        assert httpx.post(gateway.url("/added/mcp"), content=b"{}").status_code == 200
        # The stream opened before the reload keeps flowing after it.
        assert len(read_events(lines, 5)) == 5
    assert httpx.post(gateway.url("/echo/mcp"), content=b"{}").status_code == 200


def test_invalid_file_is_rejected_and_the_old_configuration_stays(gateway, raw_upstream):
    gateway.rewrite_config(render(raw_upstream, gateway.port).replace("service: echo", "service: missing"))
    wait_until(lambda: gateway.readiness()["rejectedReloads"] == 1, what="rejected reload")
    assert gateway.readiness()["configGeneration"] == 1
    assert httpx.post(gateway.url("/echo/mcp"), content=b"{}").status_code == 200
    log = gateway.managed.log()
    assert "configuration reload rejected" in log
    assert 'service "missing" is not defined' in log
    # A later good file is taken.
    gateway.rewrite_config(render(raw_upstream, gateway.port, ADDED_ROUTER))
    gateway.wait_for_generation(2)
    assert httpx.post(gateway.url("/added/mcp"), content=b"{}").status_code == 200


def test_sighup_reloads(gateway, raw_upstream):
    os.kill(gateway.managed.pid, signal.SIGHUP)
    gateway.wait_for_generation(2)
    assert "reason=SIGHUP" in gateway.managed.log()


def test_static_changes_wait_for_a_restart(gateway, raw_upstream):
    changed = render(raw_upstream, gateway.port, ADDED_ROUTER).replace(f'publicURL: "http://127.0.0.1:{gateway.port}"', 'publicURL: "https://mcp.example.com"')
    gateway.rewrite_config(changed)
    gateway.wait_for_generation(2)
    assert httpx.post(gateway.url("/added/mcp"), content=b"{}").status_code == 200
    assert "take effect only after a restart" in gateway.managed.log()
    assert "keys=publicURL" in gateway.managed.log()


def test_sigterm_stops_the_gateway_cleanly(gateway):
    os.kill(gateway.managed.pid, signal.SIGTERM)
    assert gateway.managed.process.wait(timeout=15) == 0


def test_a_reload_reaches_2026_07_28_pools(start_gateway):
    """A stdio service whose settings change gets new children for 2026-07-28 clients too: the
    pool (and any warm child) of the old settings is not handed out again."""
    import sys

    from conftest import SERVERS, modern_body, modern_headers

    text = f"""
entryPoints:
  web:
    address: "127.0.0.1:{{port}}"
publicURL: "http://127.0.0.1:{{port}}"
routers:
  kids:
    rule: "PathPrefix(`/kids`)"
    service: kids
    auth: none
services:
  kids:
    stdio:
      command: "{sys.executable}"
      args: ["{SERVERS / 'modern_stdio_server.py'}"]
      env: {{FLAVOUR: "one"}}
      pool: {{min: 1}}
"""
    gateway = start_gateway(text)

    def pid() -> int:
        answer = httpx.post(gateway.url("/kids/mcp"), json=modern_body("tools/call", {"name": "pid", "arguments": {}}),
                            headers=modern_headers("tools/call", "pid"), timeout=20).json()
        return int(answer["result"]["content"][0]["text"])

    before = pid()
    assert pid() == before  # the same child serves the same identity
    gateway.rewrite_config(text.replace('FLAVOUR: "one"', 'FLAVOUR: "two"').replace("{port}", str(gateway.port)))
    gateway.wait_for_generation(2)
    after = pid()
    assert after != before
