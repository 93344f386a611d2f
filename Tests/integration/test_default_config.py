"""The repository's own gateway.yaml, started the way `just run` starts it (services/run.py)."""

import os
import signal
import subprocess
import sys

import anyio
import httpx
from mcp import Client

from conftest import REPO, ManagedProcess, free_port, gateway_binary, start_process, wait_until


def test_default_config_serves_the_examples_and_keeps_protected_routes_closed(tmp_path, processes):
    gateway_port, status_port, notes_port, redis_port = free_port(), free_port(), free_port(), free_port()
    config = (
        (REPO / "gateway.yaml").read_text()
        .replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}")
        .replace("127.0.0.1:9200", f"127.0.0.1:{status_port}")
        .replace("127.0.0.1:9100", f"127.0.0.1:{notes_port}")
        .replace("127.0.0.1:6379", f"127.0.0.1:{redis_port}")
    )
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "NOTES_API_KEY"}
    # In a process group of its own, as a shell runs `just run` in the foreground: Ctrl-C is a
    # SIGINT to that whole group.
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "services" / "run.py"), "--gateway", gateway_binary(), "--config", str(config_path),
             "--status-port", str(status_port), "--notes-port", str(notes_port)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
        )
    runner = ManagedProcess(process, "run", log_path)
    processes.append(runner)
    base = f"http://127.0.0.1:{gateway_port}"
    wait_until(lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200, timeout=60, what="gateway from run.py")
    # The log tells a first-time user where the MCP endpoints are and what the demo account is.
    log = runner.log()
    assert f"router=status signIn=none (public) url=http://127.0.0.1:{gateway_port}/status/mcp [GatewayServer] MCP endpoint" in log, log[-3000:]
    assert f"router=time signIn=required url=http://127.0.0.1:{gateway_port}/time/mcp [GatewayServer] MCP endpoint" in log, log[-3000:]
    assert "sign in on the consent page as demo / demo-password-change-me" in log, log[-3000:]
    # run.py started a redis-server for the store, and the gateway reaches it.
    assert httpx.get(f"{base}/readyz").json()["store"] == "reachable"

    async def use_status_route():
        for mode in ("legacy", "2026-07-28"):
            async with Client(f"{base}/status/mcp", mode=mode) as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert names == {"echo", "status", "countdown"}
                result = await client.call_tool("countdown", {"steps": 2, "delay_seconds": 0.05})
                assert result.content[0].text == "countdown of 2 finished"

    async def use_time_route():
        # mcp-server-time over stdio, from the project's .venv, behind the gateway's sign-in: the
        # official client's OAuth provider with the default config's demo local account.
        from test_sdk_oauth import BrowserAgent, MemoryStorage, call_tools, provider_for

        class DefaultGateway:
            def url(self, path):
                return base + path

        agent = BrowserAgent(DefaultGateway(), provider="local", username="demo", password="demo-password-change-me")
        try:
            names, text = await call_tools(f"{base}/time/mcp", provider_for(f"{base}/time/mcp", agent, MemoryStorage()))
        finally:
            agent.browser.close()
        assert names == {"get_current_time", "convert_time"}
        assert '"timezone": "UTC"' in text and agent.authorizations == 1

    anyio.run(use_status_route)
    anyio.run(use_time_route)
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    # A protected route answers 401 with its metadata URL to a request without a token.
    challenge = httpx.post(f"{base}/mcp", content=ping, headers={"Host": "notes.example.com"})
    assert challenge.status_code == 401 and "resource_metadata=" in challenge.headers["www-authenticate"]
    # A host router's metadata at the root of its host, and the 2025-03-26 fallback (authorization
    # server metadata on the MCP host itself).
    prm = httpx.get(f"{base}/.well-known/oauth-protected-resource", headers={"Host": "notes.example.com"}).json()
    assert prm["resource"] == f"http://notes.example.com:{gateway_port}/mcp" and prm["authorization_servers"] == [base]
    assert challenge.headers["www-authenticate"].startswith(
        f'Bearer resource_metadata="http://notes.example.com:{gateway_port}/.well-known/oauth-protected-resource/mcp"')
    on_host = httpx.get(f"{base}/.well-known/oauth-authorization-server", headers={"Host": "notes.example.com"}).json()
    assert on_host["issuer"] == base

    sign_in_as_claude_with_the_demo_account(base, gateway_port)

    # Ctrl-C: everything stops, in order, without a traceback from any of the processes.
    os.killpg(runner.pid, signal.SIGINT)
    try:
        status = runner.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("run.py did not stop within 20 s of Ctrl-C; its log ends:\n" + runner.log()[-4000:]) from None
    assert status == 0, runner.log()[-4000:]
    assert "Traceback" not in runner.log(), runner.log()[-4000:]
    for port in (gateway_port, status_port, notes_port, redis_port):
        wait_until(lambda: not _listening(port), timeout=10, what=f"port {port} released")


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sign_in_as_claude_with_the_demo_account(base: str, gateway_port: int) -> None:
    """On a fresh clone the default config can sign in: Claude's client id resolves to the pinned
    document (claude.ai is unreachable here, as it often is from datacenters), and the demo local
    account gets a code for the notes route."""
    from oauth_helpers import form_for, pkce_pair, query_of

    claude = "https://claude.ai/oauth/mcp-oauth-client-metadata"
    callback = "https://claude.ai/api/mcp/auth_callback"
    resource = f"http://notes.example.com:{gateway_port}/mcp"
    verifier, challenge = pkce_pair()
    with httpx.Client(timeout=30) as browser:
        page = browser.get(f"{base}/authorize", params={
            "response_type": "code", "client_id": claude, "redirect_uri": callback, "state": "s1",
            "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource, "scope": "claudeai",
        })
        assert page.status_code == 200, page.text
        assert ">Claude<" in page.text and "claude.ai" in page.text
        form = form_for(page.text, "approve", "local")
        answer = browser.post(f"{base}/authorize/consent", data={**form, "username": "demo", "password": "demo-password-change-me"})
        assert answer.status_code == 303, answer.text
        location = answer.headers["location"]
        assert location.startswith(callback)
        params = query_of(location)
    tokens = httpx.post(f"{base}/token", data={
        "grant_type": "authorization_code", "code": params["code"], "code_verifier": verifier, "redirect_uri": callback,
        "client_id": claude, "resource": resource,
    }, timeout=30)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["scope"] == "mcp" and tokens.json()["refresh_token"]
