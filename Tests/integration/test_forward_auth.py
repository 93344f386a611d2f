"""Forward auth: a real nginx in front (auth_request → the gateway's /verify), the way operators
who keep their own proxy deploy the gateway. The snippet tested here is the one in
docs/deployment.md."""

import shutil
import textwrap

import httpx
import pytest

from conftest import free_port, port_open, start_process, wait_until
from oauth_helpers import Browser, exchange_code, pkce_pair, register
from test_oauth import config as oauth_config

NGINX_SITE = """
    # The gateway's authorization server and metadata: straight to the gateway, no auth.
    location ~ ^/(\\.well-known/|authorize|token$|register|revoke$|introspect$|jwks\\.json$|oauth/) {{
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_pass {gateway};
    }}
    location / {{
        auth_request /_mcp_gateway_verify;
        # The identity the gateway verified, for the upstream.
        auth_request_set $mcp_user $upstream_http_x_forwarded_user;
        auth_request_set $mcp_client $upstream_http_x_forwarded_client_id;
        proxy_set_header X-Forwarded-User $mcp_user;
        proxy_set_header X-Forwarded-Client-Id $mcp_client;
        proxy_set_header Authorization "";
        proxy_http_version 1.1;
        proxy_buffering off;{extra}
        proxy_pass {upstream};
    }}
    location = /_mcp_gateway_verify {{
        internal;
        proxy_pass {gateway}/verify;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Forwarded-Method $request_method;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Forwarded-Uri $request_uri;
    }}
"""


def test_nginx_auth_request_through_verify(start_gateway, redis_server, fake_github, local_password_hash, raw_upstream, processes, tmp_path, nginx_binary):
    nginx_port = free_port()
    text = oauth_config(redis_server.url, fake_github, local_password_hash).replace(
        'publicURL: "http://127.0.0.1:{port}"', f'publicURL: "http://127.0.0.1:{nginx_port}"')
    gateway = start_gateway(text)
    site = NGINX_SITE.format(upstream=raw_upstream, gateway=gateway.base, extra="\n        rewrite ^ /echo break;  # test only: the echo upstream")
    conf = tmp_path / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""
        daemon off;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/nginx-error.log warn;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp_path}/nginx-body;
            proxy_temp_path {tmp_path}/nginx-proxy;
            fastcgi_temp_path {tmp_path}/nginx-fastcgi;
            uwsgi_temp_path {tmp_path}/nginx-uwsgi;
            scgi_temp_path {tmp_path}/nginx-scgi;
            server {{
                listen 127.0.0.1:{nginx_port};
                {site}
            }}
        }}
    """))
    managed = start_process("nginx", [nginx_binary, "-c", str(conf), "-p", str(tmp_path)], tmp_path)
    processes.append(managed)
    wait_until(lambda: managed.process.poll() is None and port_open(nginx_port), what="nginx")
    public = f"http://127.0.0.1:{nginx_port}"
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'

    # No token: nginx answers 401 and the gateway's challenge survives the proxy.
    denied = httpx.post(public + "/notes/mcp", content=ping, timeout=10)
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == f'Bearer resource_metadata="{public}/.well-known/oauth-protected-resource/notes/mcp", scope="mcp"'

    browser = Browser(gateway)
    try:
        resource = public + "/time/mcp"
        client = register(gateway)
        verifier, challenge = pkce_pair()
        code = browser.sign_in(client["client_id"], challenge, resource=resource).params["code"]
        token = exchange_code(gateway, client["client_id"], code, verifier, resource=resource).json()["access_token"]
        forbidden_notes = httpx.post(public + "/notes/mcp", content=ping, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert forbidden_notes.status_code == 401  # audience: a /time/mcp token is not for /notes/mcp
        allowed = httpx.post(public + "/time/mcp", content=ping, headers={"Authorization": f"Bearer {token}", "X-Forwarded-User": "admin"}, timeout=10)
        assert allowed.status_code == 200, allowed.text
        headers = {k.lower(): v for k, v in allowed.json()["headers"]}
        assert headers["x-forwarded-user"] == "octocat" and headers["x-forwarded-client-id"] == client["client_id"]
        assert "authorization" not in headers or headers["authorization"] == ""
        # A route with auth: none passes without a token.
        assert httpx.post(public + "/status/mcp", content=ping, timeout=10).status_code == 200
        # A path no router claims is refused.
        assert httpx.get(public + "/nowhere", timeout=10).status_code == 403
        # Traversal from the public router to protected ones: nginx normalizes the path before it
        # proxies, so the gateway must decide on that path too, never approve the raw text's.
        import socket

        for uri in ("/status/../notes/mcp", "/status/%2e%2e/notes/mcp", "/status/%2E%2E/time/mcp", "/status/mcp/../../time/mcp", "/status/./../time/mcp"):
            with socket.create_connection(("127.0.0.1", nginx_port), timeout=10) as raw:
                raw.sendall(f"POST {uri} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(ping)}\r\nConnection: close\r\n\r\n".encode() + ping)
                status = int(raw.recv(65536).split(b" ", 2)[1])
            assert status in (400, 401, 500), (uri, status)
    finally:
        browser.close()


def test_verify_answers_directly(gateway_for_verify):
    gateway = gateway_for_verify
    missing = httpx.get(gateway.url("/verify"), timeout=5)
    assert missing.status_code == 400
    challenge = httpx.get(gateway.url("/verify"), headers={"X-Forwarded-Host": "127.0.0.1", "X-Forwarded-Uri": "/time/mcp", "X-Forwarded-Method": "POST"}, timeout=5)
    assert challenge.status_code == 401 and "resource_metadata=" in challenge.headers["www-authenticate"]
    public = httpx.get(gateway.url("/verify"), headers={"X-Forwarded-Host": "127.0.0.1", "X-Forwarded-Uri": "/status/mcp?x=1"}, timeout=5)
    assert public.status_code == 200


@pytest.fixture
def gateway_for_verify(start_gateway, redis_server, fake_github, local_password_hash):
    return start_gateway(oauth_config(redis_server.url, fake_github, local_password_hash))
