"""Peers measured in the same run: the gateways a user would install instead of mcp-gateway, each
proxying the same fast MCP upstream, with nginx `proxy_pass` and the upstream direct as references.

- mcp-gateway: `auth: apiKey` (a bearer key checked on every call), release build.
- IBM ContextForge (`mcp-contextforge-gateway`, PyPI): its defaults (one uvicorn worker, JWT bearer
  auth, SQLite), the upstream registered as a gateway and exposed through a virtual server; set:
  `SSRF_ALLOW_LOCALHOST=true` (the upstream listens on loopback) and `RATE_LIMITING_ENABLED=false`
  (its default 100 tool calls a minute per user, then a 15-minute lockout, would be measured).
- FastMCP's proxy (`fastmcp`, PyPI): `create_proxy(url)` served over Streamable HTTP, stateless
  with JSON answers (one POST per call, like the others).

Each peer is installed into its own bench-only venv by bench/setup-anchors.sh, never into the
product. Load: wrk, one 2025-06-18 tools/call POST per request without a session
(bench/tools_call_2025.lua), at several concurrencies. CPU per call is the process tree's (all of
a peer's workers), from /proc. The upstream is a minimal asyncio MCP server (initialize,
tools/list, tools/call with JSON answers), so that the proxies, not the upstream, are measured.

Writes bench/results-peers.md. Usage: python bench/peers.py --gateway .build/release/mcp-gateway
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, run_wrk, stop_all, tree_cpu_seconds, wait_port  # noqa: E402
from http_proxy import start_nginx  # noqa: E402

SCRIPT = HERE / "tools_call_2025.lua"
CONTEXTFORGE = REPO / ".venv-bench-contextforge" / "bin"
FASTMCP = REPO / ".venv-bench-fastmcp" / "bin"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"

FAST_UPSTREAM = r'''
import asyncio, json, sys

TOOLS = {"tools": [{"name": "echo", "description": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}]}

def result(message):
    method = message.get("method")
    if method == "initialize":
        return {"protocolVersion": message["params"].get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}}, "serverInfo": {"name": "fast", "version": "1"}}
    if method == "tools/list":
        return TOOLS
    if method == "tools/call":
        return {"content": [{"type": "text", "text": "hello"}], "isError": False}
    if method in ("resources/list", "prompts/list", "resources/templates/list"):
        return {method.split("/")[0] if method != "resources/templates/list" else "resourceTemplates": []}
    if method == "ping":
        return {}
    return None

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if not lines[0].startswith("POST"):
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                continue
            message = json.loads(body)
            if "id" not in message:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                continue
            answer = result(message)
            payload = {"jsonrpc": "2.0", "id": message["id"]}
            payload.update({"result": answer} if answer is not None else {"error": {"code": -32601, "message": "Method not found"}})
            data = json.dumps(payload).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''

FASTMCP_PROXY = r'''
import sys
from fastmcp.server.server import create_proxy
create_proxy(sys.argv[1], name="peer").run(transport="http", host="127.0.0.1", port=int(sys.argv[2]), stateless_http=True, json_response=True, log_level="warning")
'''


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"{url} never answered")


def call_once(url: str, tool: str, token: str | None) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    answer = httpx.post(url, headers=headers, timeout=30,
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"text": "hello"}}})
    answer.raise_for_status()
    return answer.json()


def start_contextforge(workdir: Path, upstream: str) -> tuple[subprocess.Popen, str, str, str]:
    port = free_port()
    env = {
        **os.environ, "JWT_SECRET_KEY": JWT_SECRET, "PLATFORM_ADMIN_EMAIL": "admin@example.com", "PLATFORM_ADMIN_PASSWORD": "bench-Admin-password-1!",
        "MCPGATEWAY_UI_ENABLED": "false", "MCPGATEWAY_ADMIN_API_ENABLED": "true", "DATABASE_URL": f"sqlite:///{workdir}/contextforge.db",
        "SSRF_ALLOW_LOCALHOST": "true",
        # Its default limit of 100 tool calls a minute per user (then a 15-minute lockout) would
        # measure the limiter, not the proxy: turned off, like mcp-gateway runs without a limit here.
        "RATE_LIMITING_ENABLED": "false",
    }
    process = subprocess.Popen([str(CONTEXTFORGE / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=workdir,
                               stdout=open(workdir / "contextforge.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health")
    token = subprocess.run(
        [str(CONTEXTFORGE / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username", "admin@example.com", "--exp", "600", "--secret", JWT_SECRET, "--admin"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip().splitlines()[0]
    auth = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{base}/gateways", headers=auth, json={"name": "bench", "url": upstream, "transport": "STREAMABLEHTTP"}, timeout=60).raise_for_status()
    tools = httpx.get(f"{base}/tools", headers=auth, timeout=30).json()
    tool = next(t for t in tools if t.get("originalName") == "echo")
    server = httpx.post(f"{base}/servers", headers=auth, json={"server": {"name": "bench", "associated_tools": [tool["id"]]}}, timeout=30)
    server.raise_for_status()
    return process, f"{base}/servers/{server.json()['id']}/mcp", token, tool["name"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--output", default=str(HERE / "results-peers.md"))
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    for venv in (CONTEXTFORGE, FASTMCP):
        if not venv.exists():
            raise SystemExit(f"{venv.parent} is missing: run bash bench/setup-anchors.sh")

    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-peers-"))
    started: list[subprocess.Popen] = []
    try:
        upstream_port = free_port()
        (workdir / "fast_upstream.py").write_text(FAST_UPSTREAM)
        started.append(subprocess.Popen([sys.executable, str(workdir / "fast_upstream.py"), str(upstream_port)]))
        wait_port(upstream_port)
        upstream = f"http://127.0.0.1:{upstream_port}/mcp"

        nginx, nginx_port = start_nginx(
            "proxy",
            f"upstream mcp {{ server 127.0.0.1:{upstream_port}; keepalive 512; }}\n"
            "server { listen 127.0.0.1:PORT; location / { proxy_pass http://mcp; proxy_http_version 1.1; "
            "proxy_set_header Connection \"\"; proxy_buffering off; } }",
            workdir,
        )
        started.append(nginx)

        key = subprocess.run([args.gateway, "new-key"], capture_output=True, text=True, check=True).stdout
        secret = next(line.split()[1] for line in key.splitlines() if line.startswith("key:"))
        digest = next(line.split()[1] for line in key.splitlines() if line.startswith("hash:"))
        gateway_port = free_port()
        (workdir / "gateway.yaml").write_text(textwrap.dedent(f"""
            entryPoints:
              web:
                address: "127.0.0.1:{gateway_port}"
            publicURL: "http://127.0.0.1:{gateway_port}"
            log:
              level: warning
            auth:
              allow: {{ users: [bench] }}
              apiKeys:
                bench: {{ hash: "{digest}", user: bench }}
            routers:
              bench:
                rule: "PathPrefix(`/bench`)"
                service: bench
                auth: apiKey
            services:
              bench:
                http:
                  url: "{upstream}"
        """))
        gateway = subprocess.Popen([args.gateway, "serve", "--config", str(workdir / "gateway.yaml")], stderr=open(workdir / "gateway.log", "wb"))
        started.append(gateway)
        wait_port(gateway_port)

        fastmcp_port = free_port()
        (workdir / "fastmcp_proxy.py").write_text(FASTMCP_PROXY)
        fastmcp = subprocess.Popen([str(FASTMCP / "python"), str(workdir / "fastmcp_proxy.py"), upstream, str(fastmcp_port)],
                                   stdout=open(workdir / "fastmcp.log", "wb"), stderr=subprocess.STDOUT)
        started.append(fastmcp)
        wait_port(fastmcp_port)

        contextforge, contextforge_url, contextforge_token, contextforge_tool = start_contextforge(workdir, upstream)
        started.append(contextforge)

        targets = [
            ("upstream direct", upstream, "echo", None, []),
            ("nginx proxy_pass", f"http://127.0.0.1:{nginx_port}/mcp", "echo", None, [nginx.pid]),
            ("mcp-gateway (apiKey)", f"http://127.0.0.1:{gateway_port}/bench/mcp", "echo", secret, [gateway.pid]),
            ("FastMCP proxy 4.2.3", f"http://127.0.0.1:{fastmcp_port}/mcp", "echo", None, [fastmcp.pid]),
            ("ContextForge 1.0.7 (JWT)", contextforge_url, contextforge_tool, contextforge_token, [contextforge.pid]),
        ]
        for name, url, tool, token, _ in targets:
            answer = call_once(url, tool, token)
            assert answer.get("result", {}).get("content", [{}])[0].get("text") == "hello", (name, answer)
            run_wrk(url, 8, 2, SCRIPT, {"MCPGW_TOOL": tool, "MCPGW_TOKEN": token or ""})  # warm-up
        rows = []
        for connections in concurrencies:
            for name, url, tool, token, pids in targets:
                before = tree_cpu_seconds(pids) if pids else 0.0
                result = run_wrk(url, connections, args.seconds, SCRIPT, {"MCPGW_TOOL": tool, "MCPGW_TOKEN": token or ""})
                after = tree_cpu_seconds(pids) if pids else 0.0
                cpu = (after - before) / result["requests"] * 1e6 if pids and result["requests"] else None
                rows.append({"target": name, "c": connections, **{k: v for k, v in result.items() if k != "raw"}, "cpu_us": cpu})
                print(f"{name:26} c={connections:<3} {result['rps']:>9.0f} req/s  p50 {result['p50']:.3f} ms  p99 {result['p99']:.3f} ms  "
                      f"errors {result['errors']}  cpu/call {'—' if cpu is None else f'{cpu:.0f} µs'}", flush=True)
    finally:
        stop_all(started, quit_signal_for=tuple(started[1:2]))

    lines = [
        "# Peers: the same upstream behind mcp-gateway, ContextForge, FastMCP's proxy and nginx",
        "",
        f"Measured {machine_line()}; everything (wrk, upstream, the proxies) on the same 2 cores. "
        "Load: wrk, one 2025-06-18 tools/call POST per request without a session (bench/tools_call_2025.lua), "
        f"{args.seconds} s per cell. CPU per call: the proxy's process tree (user+system) over the cell's requests. "
        "Upstream: a minimal asyncio MCP server with JSON answers (bench/peers.py). mcp-gateway checks an API key "
        "(`auth: apiKey`), ContextForge its JWT (its default auth; its default rate limit of 100 calls a minute per user is off); "
        "FastMCP's proxy and nginx check nothing. mcp-gateway takes this 2025-06-18 request through the full pipeline "
        "(the fast relay takes 2026-07-28 calls: bench/results-http.md).",
        "",
        "| proxy | concurrency | req/s | p50 ms | p99 ms | errors | CPU µs/call |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = "—" if row["cpu_us"] is None else f"{row['cpu_us']:.0f}"
        lines.append(f"| {row['target']} | {row['c']} | {row['rps']:.0f} | {row['p50']:.2f} | {row['p99']:.2f} | {row['errors']} | {cpu} |")
    lines += ["", "## Against the target (≥ 10× ContextForge's req/s at equal or lower CPU per call)", ""]
    for connections in concurrencies:
        ours = next(r for r in rows if r["target"].startswith("mcp-gateway") and r["c"] == connections)
        theirs = next(r for r in rows if r["target"].startswith("ContextForge") and r["c"] == connections)
        fast = next(r for r in rows if r["target"].startswith("FastMCP") and r["c"] == connections)
        ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
        cpu_ratio = theirs["cpu_us"] / ours["cpu_us"] if ours["cpu_us"] else float("inf")
        met = ratio >= 10 and ours["cpu_us"] <= theirs["cpu_us"]
        lines.append(f"- c={connections}: mcp-gateway {ours['rps']:.0f} req/s = **{ratio:.1f}×** ContextForge ({theirs['rps']:.0f}), "
                     f"CPU per call {ours['cpu_us']:.0f} µs vs {theirs['cpu_us']:.0f} µs (1/{cpu_ratio:.1f}); "
                     f"{fast['rps'] and ours['rps'] / fast['rps']:.1f}× FastMCP's proxy: " + ("**met**." if met else "**not met**."))
    lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
