"""Administration: `mcp-gateway admin` (clients, sessions, users, tokens) against the Redis store a
running gateway uses, and the /admin page driven in headless Chromium (sign-in through the
gateway's own consent page, a revoke button, a screenshot). A revoked user's next call gets 401."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from cdp import Chromium
from conftest import REPO, SERVERS, free_port, port_open, start_process, wait_until
from oauth_helpers import pkce_pair, register, token_request
from test_attacks import PASSWORD, World, bearer, gateway_binary, start_gateway

ARTIFACTS = REPO / "artifacts" / "screenshots"


def config(redis_url: str, upstream: str, password_hash: str, audit_file) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_url}"
    audit:
      file: "{audit_file}"
    admin:
      allow:
        users: ["alice"]
    auth:
      allow:
        users: ["alice", "bob"]
      local:
        users:
          alice: "{password_hash}"
          bob: "{password_hash}"
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
    services:
      echo:
        http:
          url: "{upstream}/echo"
    """


def admin(config_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([gateway_binary(), "admin", *args, "--config", str(config_path)], capture_output=True, text=True, timeout=60)


def admin_json(config_path, *args: str):
    result = admin(config_path, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "lookup", "arguments": {}}}


def start_world(tmp, redis_server, local_password_hash):
    upstream_port = free_port()
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the echo upstream")
    gateway = start_gateway(tmp, config(redis_server.url, f"http://127.0.0.1:{upstream_port}", local_password_hash, tmp / "audit.log"), name="admin-gw")
    return gateway, upstream, World(gateway, redis_server.port, "", tmp, local_password_hash)


def test_admin_cli_lists_and_revokes(tmp_path_factory, redis_server, local_password_hash):
    tmp = tmp_path_factory.mktemp("admin-cli")
    gateway, upstream, world = start_world(tmp, redis_server, local_password_hash)
    config_path = tmp / "admin-gw.yaml"
    try:
        signed = world.sign_in("bob", "echo")
        token = signed["access_token"]
        first = httpx.post(world.url("/echo/mcp"), json=CALL, headers=bearer(token), timeout=10)
        assert first.status_code == 200
        session_id = first.headers["mcp-session-id"]

        users = admin_json(config_path, "users", "list")
        bob = next(u for u in users if u["login"] == "bob")
        assert bob["subject"] == "local:bob" and bob["signIns"] == 1
        clients = admin_json(config_path, "clients", "list")
        assert signed["client"]["client_id"] in {c["clientID"] for c in clients}
        shown = admin_json(config_path, "clients", "show", signed["client"]["client_id"])
        assert shown["tokenEndpointAuthMethod"] == "none" and "secret" not in json.dumps(shown).lower()
        sessions = admin_json(config_path, "sessions", "list")
        mine = [s for s in sessions if s["router"] == "echo" and s["subject"] == "local:bob"]
        assert len(mine) == 1 and session_id not in json.dumps(sessions)  # listed by hash only
        table = admin(config_path, "users", "list")
        assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:2] == ["LOGIN", "SUBJECT"]

        # Ending the session: the next request in it is 404 (the client starts a new one).
        assert admin_json(config_path, "sessions", "end", mine[0]["session"]) == {"ended": mine[0]["session"]}
        in_session = bearer(token, **{"Mcp-Session-Id": session_id})
        wait_until(lambda: httpx.post(world.url("/echo/mcp"), json=CALL, headers=in_session, timeout=10).status_code == 404,
                   what="the ended session refused", timeout=15)
        assert admin(config_path, "sessions", "end", mine[0]["session"]).returncode == 1

        # Revoking the user: refresh fails at once, the access token within the cache window.
        assert admin_json(config_path, "tokens", "revoke", "--user", "bob") == {"user": "bob", "revokedSignIns": "1"}
        refreshed = token_request(gateway, {"grant_type": "refresh_token", "refresh_token": signed["refresh_token"], "client_id": signed["client"]["client_id"]})
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        wait_until(lambda: httpx.post(world.url("/echo/mcp"), json=CALL, headers=bearer(token), timeout=10).status_code == 401,
                   what="the revoked user's call refused", timeout=15)

        # Revoking a client: its registration is gone.
        assert admin_json(config_path, "clients", "revoke", signed["client"]["client_id"]) == {"revoked": signed["client"]["client_id"]}
        assert admin(config_path, "clients", "show", signed["client"]["client_id"]).returncode == 1
        assert signed["client"]["client_id"] not in {c["clientID"] for c in admin_json(config_path, "clients", "list")}
    finally:
        gateway.managed.stop()
        upstream.stop()

    # Without a store the state is in the gateway's memory: the command says so.
    memory = tmp / "memory.yaml"
    memory.write_text(config_path.read_text().replace(f'store:\n  redis:\n    url: "{redis_server.url}"\n', ""))
    result = admin(memory, "users", "list")
    assert result.returncode == 2 and "no store" in result.stderr


def test_admin_page_in_chromium_revokes_a_user(tmp_path_factory, redis_server, local_password_hash):
    tmp = tmp_path_factory.mktemp("admin-page")
    gateway, upstream, world = start_world(tmp, redis_server, local_password_hash)
    browser = None
    try:
        token = world.token("bob", "echo")
        assert httpx.post(world.url("/echo/mcp"), json=CALL, headers=bearer(token), timeout=10).status_code == 200

        browser = Chromium(tmp)
        browser.navigate(world.url("/admin"))
        # Not signed in: the gateway's own consent page, for the admin page's resource.
        assert "/authorize" in browser.url() and world.url("/admin") in browser.html()
        browser.submit("#password", username="alice", password=PASSWORD)
        assert browser.url() == world.url("/admin"), browser.url()
        html = browser.html()
        assert "alice" in html and 'id="revoke-user-bob"' in html and "<script" not in html.lower()
        assert 'id="done"' not in html and ">nil<" not in html
        assert "auth.signin" in html  # recent audit events
        browser.screenshot(ARTIFACTS / "admin.png")
        assert (ARTIFACTS / "admin.png").stat().st_size > 10000

        browser.submit("#revoke-user-bob")
        assert browser.url().startswith(world.url("/admin?done=revoke-user"))
        assert "next call is refused" in browser.html()
        browser.screenshot(ARTIFACTS / "admin-revoked.png")
        wait_until(lambda: httpx.post(world.url("/echo/mcp"), json=CALL, headers=bearer(token), timeout=10).status_code == 401,
                   what="bob's next call refused", timeout=15)
        events = [json.loads(line) for line in (tmp / "audit.log").read_text().splitlines()]
        assert any(e["event"] == "admin.revoke-user" and e["user"] == "alice" and e["target"] == "bob" for e in events)
    finally:
        if browser:
            browser.close()
        gateway.managed.stop()
        upstream.stop()


def test_admin_page_attacks_fail_closed(tmp_path_factory, redis_server, local_password_hash):
    tmp = tmp_path_factory.mktemp("admin-attacks")
    gateway, upstream, world = start_world(tmp, redis_server, local_password_hash)
    try:
        # No session: a bare POST is refused; /admin starts a sign-in rather than showing anything.
        assert httpx.post(world.url("/admin/action"), data={"action": "revoke-user", "target": "bob"}, timeout=10).status_code == 403
        first = httpx.get(world.url("/admin"), timeout=10)
        assert first.status_code == 303 and "/authorize?" in first.headers["location"]
        assert "mcpgw-admin-login=" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]

        # bob is a user of the gateway but not an administrator: the sign-in stops at the allow-list.
        client = httpx.Client(follow_redirects=False, timeout=15)
        start = client.get(world.url("/admin"))
        consent = client.get(start.headers["location"])
        form = dict(__import__("re").findall(r'name="(request|csrf)" value="([^"]+)"', consent.text))
        denied = client.post(world.url("/authorize/consent"), data={**form, "action": "approve", "provider": "local", "username": "bob", "password": PASSWORD})
        assert denied.status_code == 403 and "not allowed" in denied.text

        # The admin page's client and resource go together only.
        _, challenge = pkce_pair()
        from urllib.parse import urlencode
        common = {"response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"}
        other = register(gateway)
        for query in (
            {**common, "client_id": other["client_id"], "redirect_uri": other["redirect_uris"][0], "resource": world.url("/admin")},
            {**common, "client_id": "mcp-gateway-admin", "redirect_uri": world.url("/admin/callback"), "resource": world.url("/echo/mcp")},
        ):
            answer = httpx.get(world.url("/authorize?" + urlencode(query)), timeout=10)
            assert answer.status_code == 400 and "invalid_target" in answer.text, query
        # A foreign redirect URI for the admin client is refused outright.
        evil = httpx.get(world.url("/authorize?" + urlencode({**common, "client_id": "mcp-gateway-admin", "redirect_uri": "https://evil.example/cb",
                                                               "resource": world.url("/admin")})), timeout=10)
        assert evil.status_code == 400

        # A callback with a code but without this browser's login cookie is refused.
        assert httpx.get(world.url("/admin/callback?code=x&state=y"), timeout=10).status_code == 400
    finally:
        gateway.managed.stop()
        upstream.stop()
