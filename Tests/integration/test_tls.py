"""TLS entry points: the official SDK client over https with a test CA (HTTP/1.1 and HTTP/2, SSE
intact), a renewed certificate served to new connections without a restart, a broken renewal
keeping the old pair, and the plain entry point redirecting to https."""

from __future__ import annotations

import os
import socket
import ssl

import anyio
import httpx
from cryptography import x509
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port, wait_until
from pki import CA
from test_attacks import start_gateway


def served_serial(port: int, ca_path) -> int:
    """The serial of the certificate a new TLS connection is given."""
    context = ssl.create_default_context(cafile=str(ca_path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def replace(path, content: bytes) -> None:
    """Writes the file the way renewal tools do: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)


async def sdk_call(url: str, ca_path, http2: bool) -> tuple[set[str], str, str]:
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca_path)), http2=http2, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool("get_current_time", {"timezone": "UTC"})
        version = (await http.get(url.replace("/time/mcp", "/healthz"))).http_version
    return names, result.content[0].text, version


def test_https_entry_point_with_http2_redirect_and_live_certificate_renewal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    ca = CA(tmp)
    first_cert, first_key, first_serial = ca.issue(tmp, "first")
    cert_file, key_file = tmp / "live.pem", tmp / "live-key.pem"
    cert_file.write_bytes(first_cert.read_bytes())
    key_file.write_bytes(first_key.read_bytes())
    tls_port = free_port()
    gateway = start_gateway(tmp, f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
        redirectTo: websecure
      websecure:
        address: "127.0.0.1:{tls_port}"
        http2: true
        tls:
          certFile: "{cert_file}"
          keyFile: "{key_file}"
          minVersion: "1.2"
    publicURL: "https://127.0.0.1:{tls_port}"
    routers:
      time:
        rule: "PathPrefix(`/time`)"
        service: time
        auth: none
    services:
      time:
        stdio:
          command: "mcp-server-time"
          args: ["--local-timezone=UTC"]
    """, name="tls-gateway")
    base = f"https://127.0.0.1:{tls_port}"
    try:
        # The plain entry point: health checks answered, everything else sent to https.
        assert httpx.get(gateway.url("/healthz"), timeout=5).status_code == 200
        redirected = httpx.post(gateway.url("/time/mcp?x=1"), json={}, timeout=5)
        assert redirected.status_code == 308 and redirected.headers["location"] == f"{base}/time/mcp?x=1"
        scheme_relative = httpx.get(gateway.url("//evil.example/x"), timeout=5)
        assert scheme_relative.headers["location"] == f"{base}/evil.example/x"

        # Without the CA the certificate is refused; with it, the SDK works over HTTP/1.1 and h2.
        try:
            httpx.get(f"{base}/healthz", timeout=5)
            raise AssertionError("a certificate of an unknown CA was accepted")
        except httpx.ConnectError:
            pass
        for http2, expected in ((False, "HTTP/1.1"), (True, "HTTP/2")):
            names, text, version = anyio.run(sdk_call, f"{base}/time/mcp", ca.path, http2)
            assert names == {"get_current_time", "convert_time"} and '"timezone": "UTC"' in text
            assert version == expected

        # SSE over h2: an initialize asking for a stream gets its answer as an event.
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca.path)), http2=True, timeout=30) as http:
            with http.stream("POST", f"{base}/time/mcp", headers={"Accept": "text/event-stream, application/json"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "h2", "version": "1"}},
            }) as response:
                assert response.http_version == "HTTP/2" and response.status_code == 200
                body = "".join(response.iter_text())
            assert "serverInfo" in body

        assert served_serial(tls_port, ca.path) == first_serial
        # A renewal: key and certificate replaced; new connections get the new one, no restart.
        second_cert, second_key, second_serial = ca.issue(tmp, "second")
        replace(key_file, second_key.read_bytes())
        replace(cert_file, second_cert.read_bytes())
        wait_until(lambda: served_serial(tls_port, ca.path) == second_serial, what="the renewed certificate served")
        assert "TLS certificate reloaded" in gateway.managed.log()

        # A broken renewal (a certificate that does not match the key): logged, old pair kept.
        third_cert, _, _ = ca.issue(tmp, "third")
        replace(cert_file, third_cert.read_bytes())
        wait_until(lambda: "cannot be used; the previous one stays in force" in gateway.managed.log(), what="the refusal logged")
        assert served_serial(tls_port, ca.path) == second_serial
        names, _, _ = anyio.run(sdk_call, f"{base}/time/mcp", ca.path, False)
        assert "get_current_time" in names
        assert gateway.managed.process.poll() is None
    finally:
        gateway.managed.stop()


def test_tls_settings_are_checked_before_the_gateway_starts(tmp_path_factory):
    import subprocess

    from test_attacks import gateway_binary

    tmp = tmp_path_factory.mktemp("tls-check")
    ca = CA(tmp)
    cert, _, _ = ca.issue(tmp, "one")
    _, other_key, _ = ca.issue(tmp, "two")
    config = tmp / "mismatch.yaml"
    config.write_text(f"""
entryPoints:
  websecure:
    address: "127.0.0.1:{free_port()}"
    tls:
      certFile: "{cert}"
      keyFile: "{other_key}"
publicURL: "https://127.0.0.1"
routers:
  r:
    rule: "PathPrefix(`/r`)"
    service: s
    auth: none
services:
  s:
    http:
      url: "http://127.0.0.1:9/mcp"
""")
    result = subprocess.run([gateway_binary(), "serve", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "does not match the certificate" in result.stderr + result.stdout
