"""Cost of the operations features on the HTTP route: the same protected route (nginx answering a
canned tools/call result, a valid token) through two gateways on one Redis, one with the audit log
(arguments off), Prometheus metrics and a rate-limit middleware (a limit never reached) on, one
with all of them off; the two are measured in alternating rounds in one run. Reports gateway CPU
per request for each, their ratio, and Redis commands per request (the rate limit is meant to cost
one round trip at most; this limit's burst is large, so each instance takes tokens ahead of use
and most requests cost none). `--each` also measures each feature alone.

Writes bench/results-operations.md (and prints it). Usage: python bench/operations_overhead.py --gateway PATH
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile

import httpx
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from auth_overhead import PASSWORD, token_for  # noqa: E402
from common import free_port, machine_line, own_cpu_split, run_wrk, wait_port, write_results  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402


FEATURES = ("audit", "metrics", "rateLimit")
PROBE_BODY = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'


def gateway_config(port: int, redis_port: int, upstream_port: int, password_hash: str, workdir: Path, features: set[str]) -> str:
    extra = ""
    if "audit" in features:
        extra += f"""
audit:
  file: "{workdir / f'audit-{port}.log'}"
"""
    if "metrics" in features:
        extra += """
metrics:
  prometheus: {}
"""
    if "rateLimit" in features:
        extra += """
middlewares:
  generous:
    rateLimit: { average: 1000000, period: 1s }
"""
    middlewares = "\n    middlewares: [generous]" if "rateLimit" in features else ""
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


def redis_counts(port: int) -> tuple[int, int]:
    """All commands, and commands a client sent (those run inside scripts taken off: the rate
    limit's script runs TIME, GET and SET, and nothing else here calls TIME)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True, check=True).stdout
    total = sum(int(m) for m in re.findall(r"calls=(\d+)", out))
    time_calls = sum(int(m) for m in re.findall(r"cmdstat_time:calls=(\d+)", out))
    return total, total - 3 * time_calls


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="16")
    parser.add_argument("--output", default=str(HERE / "results-operations.md"))
    parser.add_argument("--each", action="store_true", help="also measure each feature alone")
    parser.add_argument("--paced-ms", type=int, default=0,
                        help="each connection waits this long between requests (tools_call.lua's MCPGW_DELAY_MS): both configurations "
                             "then get nearly the same request rate, below either's peak, instead of as many as each can answer")
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
            configurations = [("all off", set()), ("audit + metrics + rate limit", set(FEATURES))]
            if args.each:
                configurations[1:1] = [(f"{feature} only", {feature}) for feature in FEATURES]
            for name, features in configurations:
                port = free_port()
                config = workdir / f"{port}.yaml"
                config.write_text(gateway_config(port, redis_port, upstream_port, password_hash, workdir, features))
                process = subprocess.Popen([args.gateway, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                processes.append(process)
                wait_port(port)
                base = f"http://127.0.0.1:{port}"
                gateways[name] = (process, base, token_for(base, f"{base}/locked/mcp"))
            for connections in levels:
                for _ in range(args.rounds):
                    for name, (process, base, token) in gateways.items():
                        env = {"MCPGW_TOKEN": token, **({"MCPGW_DELAY_MS": str(args.paced_ms)} if args.paced_ms else {})}
                        run_wrk(base + "/locked/mcp", connections, 2, script, env)  # warm-up
                        before_cpu, (before_total, before_trips) = own_cpu_split(process.pid), redis_counts(redis_port)
                        result = run_wrk(base + "/locked/mcp", connections, args.seconds, script, env)
                        after_cpu = own_cpu_split(process.pid)
                        user, system = after_cpu[0] - before_cpu[0], after_cpu[1] - before_cpu[1]
                        after_total, after_trips = redis_counts(redis_port)
                        if result["errors"]:
                            # What an erroring cell answered, to tell a refusal from a failure.
                            probe = httpx.post(base + "/locked/mcp", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                                                              "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"},
                                               content=PROBE_BODY)
                            print(f"{name}: {result['errors']} errors in this cell; a request now gets {probe.status_code} {probe.text[:300]}", file=sys.stderr)
                        requests = max(1, result["requests"])
                        samples.setdefault((connections, name), []).append({
                            **result, "cpu_us": (user + system) / requests * 1e6, "user_us": user / requests * 1e6, "sys_us": system / requests * 1e6, "redis_per_request": (after_total - before_total - 1) / requests,
                            "trips_per_request": (after_trips - before_trips - 1) / requests,  # the INFO call itself
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
        "from `INFO commandstats`." + (f" Paced: each connection waits {args.paced_ms} ms between requests, so both configurations "
                                        "get nearly the same request rate, below either's peak (`--paced-ms`)." if args.paced_ms else
                                        " Unpaced: each configuration answers as many requests as it can."), "",
        "| c | configuration | req/s | p50 ms | errors | gateway CPU µs/req (user + system) | Redis round trips/req | Redis commands/req (incl. in scripts) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    medians = {}
    for (connections, name), cells in samples.items():
        median = {key: statistics.median(cell[key] for cell in cells) for key in ("rps", "p50", "cpu_us", "user_us", "sys_us", "redis_per_request", "trips_per_request")}
        median["errors"] = sum(cell["errors"] for cell in cells)
        medians[(connections, name)] = median
        lines.append(f"| {connections} | {name} | {median['rps']:.0f} | {median['p50']:.2f} | {median['errors']} | {median['cpu_us']:.0f} ({median['user_us']:.0f} + {median['sys_us']:.0f}) | {median['trips_per_request']:.4f} | {median['redis_per_request']:.4f} |")
    lines.append("")
    for connections in levels:
        on, off = medians[(connections, "audit + metrics + rate limit")], medians[(connections, "all off")]
        lines.append(f"- c={connections}: CPU per request with audit, metrics and a rate limit = **{on['cpu_us'] / off['cpu_us']:.2f}×** all off "
                     f"(target ≤ 1.10×); Redis round trips per request {off['trips_per_request']:.3f} → {on['trips_per_request']:.3f} "
                     f"(**+{on['trips_per_request'] - off['trips_per_request']:.3f}**, target ≤ 1)")
        # Each round measures every configuration once: the ratio of all on to all off within a round is
        # less exposed to the machine drifting between rounds than the ratio of medians above.
        paired = sorted(on_cell["cpu_us"] / off_cell["cpu_us"] for off_cell, on_cell in
                        zip(samples[(connections, "all off")], samples[(connections, "audit + metrics + rate limit")]))
        lines.append(f"  - the same ratio within each round (all off and all on of the same round): median "
                     f"{statistics.median(paired):.2f}×, from {paired[0]:.2f}× to {paired[-1]:.2f}× over {len(paired)} rounds")
        rounds = zip(samples[(connections, "all off")], samples[(connections, "audit + metrics + rate limit")])
        lines.append("  - each round, all off → all on, µs per request (user + system): " + "; ".join(
            f"{off_cell['user_us']:.0f}+{off_cell['sys_us']:.0f} → {on_cell['user_us']:.0f}+{on_cell['sys_us']:.0f}" for off_cell, on_cell in rounds))
    write_results(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
