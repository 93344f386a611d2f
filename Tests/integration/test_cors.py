"""Browser clients: a page in headless Chromium on an origin the entry point lists in
`allowedOrigins` starts an MCP session with `fetch` (preflight answered, `Mcp-Session-Id` and
`WWW-Authenticate` readable, an API key sent in a custom header); the same page on another origin
is refused by the browser (no CORS header for it, never `*`)."""

from __future__ import annotations

import json
import sys

import httpx
import pytest

from cdp import Chromium
from conftest import SERVERS, free_port, port_open, start_process, wait_until
from test_api_keys import CI_KEY, sha256
from test_attacks import start_gateway

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "browser", "version": "1"}}}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cors")
    (tmp / "pages").mkdir()
    (tmp / "pages" / "index.html").write_text("<!doctype html><title>client</title><p>an MCP client page</p>")
    started = []
    try:
        allowed_port, other_port = free_port(), free_port()
        for port in (allowed_port, other_port):
            started.append(start_process(f"page-{port}", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp / "pages")], tmp))
        wait_until(lambda: port_open(allowed_port) and port_open(other_port), what="the page servers")
        gateway = start_gateway(tmp, f"""
        entryPoints:
          web:
            address: "127.0.0.1:{{port}}"
            allowedOrigins: ["http://127.0.0.1:{allowed_port}"]
        publicURL: "http://127.0.0.1:{{port}}"
        auth:
          allow: {{anyone: true}}
          apiKeys:
            ci: {{ hash: "{sha256(CI_KEY)}", user: "ci-bot" }}
        routers:
          open: {{ rule: "PathPrefix(`/open`)", service: catalogue, auth: none }}
          keyed: {{ rule: "PathPrefix(`/keyed`)", service: catalogue, auth: [oauth, apiKey] }}
        services:
          catalogue:
            stdio:
              command: "{sys.executable}"
              args: ["{SERVERS / 'catalogue_server.py'}"]
        """)
        started.append(gateway.managed)
        browser = Chromium(tmp)
        try:
            yield gateway, browser, f"http://127.0.0.1:{allowed_port}/index.html", f"http://127.0.0.1:{other_port}/index.html"
        finally:
            browser.close()
    finally:
        for managed in reversed(started):
            managed.stop()


def fetch_from_page(browser: Chromium, url: str, headers: dict) -> dict:
    script = f"""(async () => {{
      try {{
        const response = await fetch({json.dumps(url)}, {{method: "POST", headers: {json.dumps(headers)}, body: {json.dumps(json.dumps(INIT))}}});
        return {{status: response.status, session: response.headers.get("mcp-session-id"),
                 challenge: response.headers.get("www-authenticate"), body: await response.text()}};
      }} catch (error) {{
        return {{blocked: String(error)}};
      }}
    }})()"""
    return browser.call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)["result"]["value"]


BASE_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


def test_a_page_on_an_allowed_origin_starts_a_session_with_fetch(setting):
    gateway, browser, allowed, _ = setting
    browser.navigate(allowed)
    opened = fetch_from_page(browser, gateway.url("/open/mcp"), BASE_HEADERS)
    assert opened.get("status") == 200, opened
    assert opened["session"], "Mcp-Session-Id is exposed to the page"
    assert "catalogue" in opened["body"]
    # A protected route: the challenge is readable, and a key in a custom header passes the preflight.
    refused = fetch_from_page(browser, gateway.url("/keyed/mcp"), BASE_HEADERS)
    assert refused.get("status") == 401 and "resource_metadata=" in (refused["challenge"] or ""), refused
    keyed = fetch_from_page(browser, gateway.url("/keyed/mcp"), {**BASE_HEADERS, "X-API-Key": CI_KEY})
    assert keyed.get("status") == 200 and keyed["session"], keyed


def test_a_page_on_another_origin_is_refused_by_the_browser(setting):
    gateway, browser, _, other = setting
    browser.navigate(other)
    outcome = fetch_from_page(browser, gateway.url("/open/mcp"), BASE_HEADERS)
    assert "blocked" in outcome and "Failed to fetch" in outcome["blocked"], outcome


def test_preflights_and_headers_as_a_browser_sees_them(setting):
    gateway, _, allowed, other = setting
    origin = allowed.rsplit("/", 1)[0]
    preflight = httpx.options(gateway.url("/open/mcp"), headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                                  "Access-Control-Request-Headers": "content-type,mcp-protocol-version,authorization"}, timeout=10)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    allowed_headers = preflight.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "content-type", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id"):
        assert header in allowed_headers
    # The OAuth endpoints too (a browser client registers and exchanges codes with fetch).
    token = httpx.options(gateway.url("/token"), headers={"Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=10)
    assert token.status_code == 204 and token.headers["access-control-allow-origin"] == origin
    metadata = httpx.get(gateway.url("/.well-known/oauth-authorization-server"), headers={"Origin": origin}, timeout=10)
    assert metadata.headers["access-control-allow-origin"] == origin and "Origin" in metadata.headers["vary"]
    # Another origin gets no CORS header, and nothing ever says `*`.
    stranger = other.rsplit("/", 1)[0]
    for response in (httpx.options(gateway.url("/open/mcp"), headers={"Origin": stranger, "Access-Control-Request-Method": "POST"}, timeout=10),
                     httpx.get(gateway.url("/.well-known/oauth-authorization-server"), headers={"Origin": stranger}, timeout=10)):
        assert "access-control-allow-origin" not in response.headers
    assert preflight.headers["access-control-allow-origin"] != "*"
