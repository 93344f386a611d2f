"""Cost of the operations features on the HTTP route: the same protected route (nginx answering a
canned tools/call result, a valid token) through two gateways on one Redis, one with the audit log
(arguments off), Prometheus metrics and a rate-limit middleware (a limit never reached) on, one
with all of them off. Reports gateway CPU per request for each, their ratio, and Redis commands
per request (the rate limit is meant to cost one round trip at most; this limit's burst is large,
so each instance takes tokens ahead of use and most requests cost none). `--each` also measures
each feature alone.

How (default, "together"): each round loads the two gateways of a pair at the same time, one wrk
each, and compares their CPU per request over the same seconds. This machine's speed drifts by
10-30 % from one window of seconds to the next (2 shared cores): configurations measured one after
the other differ by that much even when they are the same, which is as large as the effect
measured. Loaded together, both see the same machine, and a control pair of two identical
all-off gateways shows what is left of the noise (its ratio should be 1.00). `--sequential`
measures one configuration at a time in alternating rounds instead (the method before 2026-12-07).

Writes bench/results-operations.md (and prints it). Usage: python bench/operations_overhead.py --gateway PATH
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading

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


def measure_cell(process, base: str, token: str, connections: int, seconds: int, script: Path, paced_ms: int) -> tuple[dict, tuple[float, float]]:
    env = {"MCPGW_TOKEN": token, **({"MCPGW_DELAY_MS": str(paced_ms)} if paced_ms else {})}
    return run_wrk(base + "/locked/mcp", connections, seconds, script, env), own_cpu_split(process.pid)


def probe_refusal(name: str, base: str, token: str, errors: int) -> None:
    """What an erroring cell answered, to tell a refusal from a failure."""
    probe = httpx.post(base + "/locked/mcp", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                                      "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"},
                       content=PROBE_BODY)
    print(f"{name}: {errors} errors in this cell; a request now gets {probe.status_code} {probe.text[:300]}", file=sys.stderr)


def cell(result: dict, before: tuple[float, float], after: tuple[float, float], redis_before: tuple[int, int], redis_after: tuple[int, int]) -> dict:
    user, system = after[0] - before[0], after[1] - before[1]
    requests = max(1, result["requests"])
    return {
        **result, "cpu_us": (user + system) / requests * 1e6, "user_us": user / requests * 1e6, "sys_us": system / requests * 1e6,
        "redis_per_request": (redis_after[0] - redis_before[0] - 1) / requests,
        "trips_per_request": (redis_after[1] - redis_before[1] - 1) / requests,  # the INFO call itself
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", default="16", help="connections per configuration (together: per gateway of a pair)")
    parser.add_argument("--output", default=str(HERE / "results-operations.md"))
    parser.add_argument("--each", action="store_true", help="also measure each feature alone")
    parser.add_argument("--sequential", action="store_true", help="one configuration at a time, in alternating rounds")
    parser.add_argument("--paced-ms", type=int, default=0,
                        help="each connection waits this long between requests (tools_call.lua's MCPGW_DELAY_MS): both configurations "
                             "then get nearly the same request rate, below either's peak, instead of as many as each can answer")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    script = HERE / "tools_call.lua"
    processes: list[subprocess.Popen] = []
    samples: dict[tuple[int, str], list[dict]] = {}
    ratios: dict[tuple[int, str, str], list[float]] = {}
    ON, OFF, CONTROL = "audit + metrics + rate limit", "all off", "all off (second instance)"
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
            configurations = [(OFF, set()), (ON, set(FEATURES))]
            if not args.sequential:
                configurations.insert(1, (CONTROL, set()))
            if args.each:
                configurations[-1:-1] = [(f"{feature} only", {feature}) for feature in FEATURES]
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
                    if args.sequential:
                        for name, (process, base, token) in gateways.items():
                            measure_cell(process, base, token, connections, 2, script, args.paced_ms)  # warm-up
                            before, redis_before = own_cpu_split(process.pid), redis_counts(redis_port)
                            result, after = measure_cell(process, base, token, connections, args.seconds, script, args.paced_ms)
                            if result["errors"]:
                                probe_refusal(name, base, token, result["errors"])
                            samples.setdefault((connections, name), []).append(cell(result, before, after, redis_before, redis_counts(redis_port)))
                        continue
                    # The pairs: the control, then each other configuration against all off.
                    for other in [name for name in gateways if name != OFF]:
                        pair = (OFF, other)
                        results: dict[str, tuple[dict, tuple[float, float]]] = {}

                        def load(name: str, seconds: int) -> None:
                            process, base, token = gateways[name]
                            results[name] = measure_cell(process, base, token, connections, seconds, script, args.paced_ms)

                        for seconds in (2, args.seconds):  # a warm-up, then the measured seconds
                            before = {name: own_cpu_split(gateways[name][0].pid) for name in pair}
                            redis_before = redis_counts(redis_port)
                            threads = [threading.Thread(target=load, args=(name, seconds)) for name in pair]
                            for thread in threads:
                                thread.start()
                            for thread in threads:
                                thread.join()
                        redis_after = redis_counts(redis_port)
                        cells = {}
                        for name in pair:
                            result, after = results[name]
                            if result["errors"]:
                                probe_refusal(name, gateways[name][1], gateways[name][2], result["errors"])
                            # Redis: the pair's commands, counted against the configuration that makes them (all off makes
                            # none but a rare token check).
                            cells[name] = cell(result, before[name], after, (0, 0), (1, 1)) if name == OFF else \
                                cell(result, before[name], after, redis_before, redis_after)
                        samples.setdefault((connections, OFF), []).append(cells[OFF])
                        samples.setdefault((connections, other), []).append(cells[other])
                        ratios.setdefault((connections, OFF, other), []).append(cells[other]["cpu_us"] / cells[OFF]["cpu_us"])
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
    method = (f"{args.rounds} alternating rounds per configuration, one configuration at a time (`--sequential`)" if args.sequential else
              f"{args.rounds} rounds; in each, every configuration is loaded at the same time as an all-off gateway (a pair, one wrk "
              f"of c connections for each gateway), and the two are compared over the same seconds; the control pair is two identical "
              f"all-off gateways")
    lines = [
        "# Operations overhead (HTTP route)", "",
        f"Measured {machine_line()}; wrk {args.seconds}s per cell after a 2s warm-up, {method}; medians shown. tools/call POSTs "
        "(bench/tools_call.lua) with a valid token through the gateway (release build) to nginx answering a canned result. All "
        "gateways share one Redis (own key prefixes); only the audit log (arguments off), `metrics.prometheus` and a `rateLimit` "
        "middleware differ. Gateway CPU from /proc; Redis commands from `INFO commandstats`." + (
            f" Paced: each connection waits {args.paced_ms} ms between requests (`--paced-ms`)." if args.paced_ms else
            " Unpaced: each gateway answers as many requests as it can."), "",
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
        on, off = medians[(connections, ON)], medians[(connections, OFF)]
        trips = f"Redis round trips per request {off['trips_per_request']:.3f} → {on['trips_per_request']:.3f} (**+{on['trips_per_request'] - off['trips_per_request']:.3f}**, target ≤ 1)"
        if args.sequential:
            lines.append(f"- c={connections}: CPU per request with audit, metrics and a rate limit = **{on['cpu_us'] / off['cpu_us']:.2f}×** all off "
                         f"(target ≤ 1.10×); {trips}")
            paired = sorted(on_cell["cpu_us"] / off_cell["cpu_us"] for off_cell, on_cell in zip(samples[(connections, OFF)], samples[(connections, ON)]))
            lines.append(f"  - the same ratio within each round: median {statistics.median(paired):.2f}×, from {paired[0]:.2f}× to {paired[-1]:.2f}× over {len(paired)} rounds")
            continue
        for (level, _, other), values in ratios.items():
            if level != connections:
                continue
            ordered = sorted(values)
            label = "**control** (two identical all-off gateways)" if other == CONTROL else f"**{other}**"
            target = " (target ≤ 1.10×)" if other == ON else ""
            lines.append(f"- c={connections}, {label} against all off, loaded together: CPU per request **{statistics.median(values):.3f}×**{target}, "
                         f"rounds from {ordered[0]:.3f}× to {ordered[-1]:.3f}× ({', '.join(f'{value:.3f}' for value in values)})")
        lines.append(f"- c={connections}: {trips}")
    write_results(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
