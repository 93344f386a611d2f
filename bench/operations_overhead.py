"""Cost of the operations features on the HTTP route: the same protected route (nginx answering a
canned tools/call result, a valid token) through two gateways on one Redis, one with the audit log
(arguments off), Prometheus metrics and a rate-limit middleware (a limit never reached) on, one
with all of them off; the two are measured in alternating rounds in one run. Reports gateway CPU
per request for each, their ratio, and Redis commands per request (the rate limit is meant to cost
one round trip at most).

Writes bench/results-operations.md (and prints it). Usage: python bench/operations_overhead.py --gateway PATH
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from auth_overhead import PASSWORD, redis_commands, token_for  # noqa: E402
from common import free_port, machine_line, own_cpu_seconds, run_wrk, wait_port  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402


def gateway_config(port: int, redis_port: int, upstream_port: int, password_hash: str, workdir: Path, operations: bool) -> str:
    extra = f"""
audit:
  file: "{workdir / f'audit-{port}.log'}"
metrics:
  prometheus: {{}}
middlewares:
  generous:
    rateLimit: {{ average: 1000000, period: 1s }}
""" if operations else ""
    middlewares = "\n    middlewares: [generous]" if operations else ""
    return f"""
entryPoints:
  web:
    address: "127.0.0.1:{port}"
publicURL: "http://127.0.0.1:{port}"
store:
  redis:
    url: "redis://127.0.0.1:{redis_port}/0"
    keyPrefix: "gw{port}:"
auth:
  allow:
    users: ["bench"]
  local:
    users:
      bench: "{password_hash}"
log:
  level: warning
{extra}
routers:
  locked:
    rule: "PathPrefix(`/locked`)"
    service: upstream{middlewares}
services:
  upstream:
    http:
      url: "http://127.0.0.1:{upstream_port}/mcp"
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="16")
    parser.add_argument("--output", default=str(HERE / "results-operations.md"))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    script = HERE / "tools_call.lua"
    processes: list[subprocess.Popen] = []
    samples: dict[tuple[int, str], list[dict]] = {}
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
            gateways = {}
            for name, operations in (("all off", False), ("audit + metrics + rate limit", True)):
                port = free_port()
                config = workdir / f"{port}.yaml"
                config.write_text(gateway_config(port, redis_port, upstream_port, password_hash, workdir, operations))
                process = subprocess.Popen([args.gateway, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                processes.append(process)
                wait_port(port)
                base = f"http://127.0.0.1:{port}"
                gateways[name] = (process, base, token_for(base, f"{base}/locked/mcp"))
            for connections in levels:
                for _ in range(args.rounds):
                    for name, (process, base, token) in gateways.items():
                        env = {"MCPGW_TOKEN": token}
                        run_wrk(base + "/locked/mcp", connections, 2, script, env)  # warm-up
                        before_cpu, before_redis = own_cpu_seconds(process.pid), redis_commands(redis_port)
                        result = run_wrk(base + "/locked/mcp", connections, args.seconds, script, env)
                        cpu = own_cpu_seconds(process.pid) - before_cpu
                        commands = redis_commands(redis_port) - before_redis - 1  # the INFO call itself
                        samples.setdefault((connections, name), []).append({
                            **result, "cpu_us": cpu / max(1, result["requests"]) * 1e6, "redis_per_request": commands / max(1, result["requests"]),
                        })
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
    lines = [
        "# Operations overhead (HTTP route)", "",
        f"Measured {machine_line()}; wrk {args.seconds}s per cell after a 2s warm-up, {args.rounds} alternating rounds per "
        "configuration (medians shown), tools/call POSTs (bench/tools_call.lua) with a valid token through the gateway (release "
        "build) to nginx answering a canned result. Both gateways share one Redis (own key prefixes); only the audit log "
        "(arguments off), `metrics.prometheus` and a `rateLimit` middleware differ. Gateway CPU from /proc; Redis commands "
        "from `INFO commandstats`.", "",
        "| c | configuration | req/s | p50 ms | errors | gateway CPU µs/req | Redis commands/req |",
        "|---|---|---|---|---|---|---|",
    ]
    medians = {}
    for (connections, name), cells in samples.items():
        median = {key: statistics.median(cell[key] for cell in cells) for key in ("rps", "p50", "cpu_us", "redis_per_request")}
        median["errors"] = sum(cell["errors"] for cell in cells)
        medians[(connections, name)] = median
        lines.append(f"| {connections} | {name} | {median['rps']:.0f} | {median['p50']:.2f} | {median['errors']} | {median['cpu_us']:.0f} | {median['redis_per_request']:.4f} |")
    lines.append("")
    for connections in levels:
        on, off = medians[(connections, "audit + metrics + rate limit")], medians[(connections, "all off")]
        lines.append(f"- c={connections}: CPU per request with audit, metrics and a rate limit = **{on['cpu_us'] / off['cpu_us']:.2f}×** all off "
                     f"(target ≤ 1.10×); Redis commands per request {off['redis_per_request']:.3f} → {on['redis_per_request']:.3f} "
                     f"(**+{on['redis_per_request'] - off['redis_per_request']:.3f}**, target ≤ 1)")
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
