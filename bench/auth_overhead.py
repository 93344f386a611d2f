"""Cost of the token check: the same HTTP route (nginx answering a canned tools/call result) through
the gateway with `auth: none` and with `auth: oauth` plus a valid token, in one run. Reports gateway
CPU per request for each, their ratio, and Redis commands per request during the protected runs
(`INFO commandstats` before and after), which shows whether the hot path touches Redis.

Writes bench/results-auth.md (and prints it). Usage: python bench/auth_overhead.py --gateway PATH
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, own_cpu_seconds, run_wrk, wait_port, write_results  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402

PASSWORD = "bench-password-not-secret"


def redis_commands(port: int) -> int:
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True, check=True).stdout
    return sum(int(m) for m in re.findall(r"calls=(\d+)", out))


def token_for(base: str, resource: str) -> str:
    client = httpx.post(f"{base}/register", json={"client_name": "bench", "redirect_uris": ["http://127.0.0.1:1/cb"],
                                                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"]}).json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    with httpx.Client() as browser:
        page = browser.get(f"{base}/authorize?" + urlencode({
            "response_type": "code", "client_id": client["client_id"], "redirect_uri": "http://127.0.0.1:1/cb",
            "state": "s", "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource}))
        fields = dict(re.findall(r'name="(request|csrf)" value="([^"]+)"', page.text))
        answer = browser.post(f"{base}/authorize/consent", data={**fields, "action": "approve", "provider": "local",
                                                                 "username": "bench", "password": PASSWORD})
        code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
    return httpx.post(f"{base}/token", data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                                             "redirect_uri": "http://127.0.0.1:1/cb", "client_id": client["client_id"]}).json()["access_token"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--output", default=str(HERE / "results-auth.md"))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    script = HERE / "tools_call.lua"
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            upstream, upstream_port = start_nginx("upstream", f"""
                server {{ listen 127.0.0.1:PORT; keepalive_requests 1000000;
                  location / {{ default_type application/json; return 200 '{CANNED}'; }} }}""", workdir)
            processes.append(upstream)
            redis_port = free_port()
            processes.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                              stdout=subprocess.DEVNULL))
            wait_port(redis_port)
            password_hash = subprocess.run([args.gateway, "hash-password"], input=PASSWORD + "\n", capture_output=True, text=True, check=True).stdout.strip()
            port = free_port()
            config = workdir / "gateway.yaml"
            config.write_text(f"""
entryPoints:
  web:
    address: "127.0.0.1:{port}"
publicURL: "http://127.0.0.1:{port}"
store:
  redis:
    url: "redis://127.0.0.1:{redis_port}/0"
auth:
  allow:
    users: ["bench"]
  local:
    users:
      bench: "{password_hash}"
log:
  level: warning
routers:
  open:
    rule: "PathPrefix(`/open`)"
    service: upstream
    auth: none
  locked:
    rule: "PathPrefix(`/locked`)"
    service: upstream
services:
  upstream:
    http:
      url: "http://127.0.0.1:{upstream_port}/mcp"
""")
            gateway = subprocess.Popen([args.gateway, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(gateway)
            wait_port(port)
            base = f"http://127.0.0.1:{port}"
            token = token_for(base, f"{base}/locked/mcp")
            rows = []
            for connections in levels:
                cells = {}
                for name, path, env in (("auth: none", "/open/mcp", {}), ("oauth + token", "/locked/mcp", {"MCPGW_TOKEN": token})):
                    run_wrk(base + path, connections, 2, script, env)  # warm-up
                    before_cpu, before_redis = own_cpu_seconds(gateway.pid), redis_commands(redis_port)
                    result = run_wrk(base + path, connections, args.seconds, script, env)
                    cpu = own_cpu_seconds(gateway.pid) - before_cpu
                    commands = redis_commands(redis_port) - before_redis - 1  # the INFO call itself
                    cells[name] = {**result, "cpu_us": cpu / max(1, result["requests"]) * 1e6,
                                   "redis_per_request": commands / max(1, result["requests"])}
                rows.append((connections, cells))
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
    lines = [
        "# Token check overhead (HTTP route)", "",
        f"Measured {machine_line()}; wrk {args.seconds}s per cell after a 2s warm-up, tools/call POSTs "
        "(bench/tools_call.lua) through the gateway (release build) to nginx answering a canned result. "
        "Same route and upstream; only `auth` differs. Gateway CPU from /proc; Redis commands from `INFO commandstats`.", "",
        "| c | route | req/s | p50 ms | errors | gateway CPU µs/req | Redis commands/req |",
        "|---|---|---|---|---|---|---|",
    ]
    for connections, cells in rows:
        for name, cell in cells.items():
            lines.append(f"| {connections} | {name} | {cell['rps']:.0f} | {cell['p50']:.2f} | {cell['errors']} | {cell['cpu_us']:.0f} | {cell['redis_per_request']:.4f} |")
    lines.append("")
    for connections, cells in rows:
        ratio = cells["oauth + token"]["cpu_us"] / cells["auth: none"]["cpu_us"]
        lines.append(f"- c={connections}: CPU per request with the token check = **{ratio:.2f}×** `auth: none` (target ≤ 1.15×)")
    write_results(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
