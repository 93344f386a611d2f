"""Session-based (2025-06-18) tools/call POSTs on the HTTP route, fast relay against full pipeline.

One gateway (release build) with two entry points to the same router and upstream: `fast` (the
fast relay on) and `full` (`fastRelay: false`, every request through the full pipeline). Upstream:
nginx answering a canned JSON-RPC result and naming a session (`Mcp-Session-Id`), as a session-based
server does. Cells: a call without a session (bench/tools_call_2025.lua), and a call in a session
the gateway bound at its initialize (the same script with MCPGW_SESSION), wrk c=16, alternating
entry points round by round; CPU per call is the gateway process's (user + system).

Writes bench/results-session-calls.md. Usage: python bench/session_calls.py --gateway PATH
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, own_cpu_seconds, run_wrk, stop_all, wait_port, write_results  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402

SESSION = "bench-upstream-session"
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--output", default=str(HERE / "results-session-calls.md"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-session-calls-"))
    started: list[subprocess.Popen] = []
    try:
        upstream, upstream_port = start_nginx(
            "upstream",
            f"server {{ listen 127.0.0.1:PORT; location / {{ default_type application/json; add_header Mcp-Session-Id {SESSION}; return 200 '{CANNED}'; }} }}",
            workdir,
        )
        started.append(upstream)
        fast_port, full_port = free_port(), free_port()
        config = workdir / "gateway.yaml"
        config.write_text(textwrap.dedent(f"""
            entryPoints:
              fast:
                address: "127.0.0.1:{fast_port}"
              full:
                address: "127.0.0.1:{full_port}"
                fastRelay: false
            publicURL: "http://127.0.0.1:{fast_port}"
            log:
              level: warning
            routers:
              bench:
                rule: "PathPrefix(`/bench`)"
                service: bench
                auth: none
            services:
              bench:
                http:
                  url: "http://127.0.0.1:{upstream_port}/mcp"
        """))
        gateway = subprocess.Popen([args.gateway, "serve", "--config", str(config)], stderr=open(workdir / "gateway.log", "wb"))
        started.append(gateway)
        wait_port(fast_port)
        wait_port(full_port)
        urls = {"fast relay": f"http://127.0.0.1:{fast_port}/bench/mcp", "full pipeline": f"http://127.0.0.1:{full_port}/bench/mcp"}
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
        for url in urls.values():
            answer = httpx.post(url, json=INITIALIZE, headers=headers, timeout=10)
            if answer.status_code != 200 or answer.headers.get("mcp-session-id") != SESSION:
                raise SystemExit(f"initialize through {url} answered {answer.status_code}: {answer.text}")
        cells = {(path, kind): [] for path in urls for kind in ("without a session", "in a session")}
        for _ in range(args.rounds):
            for kind in ("without a session", "in a session"):
                for path, url in urls.items():
                    env = {"MCPGW_SESSION": SESSION if kind == "in a session" else ""}
                    run_wrk(url, args.concurrency, 2, HERE / "tools_call_2025.lua", env)  # warm-up
                    cpu_before = own_cpu_seconds(gateway.pid)
                    result = run_wrk(url, args.concurrency, args.seconds, HERE / "tools_call_2025.lua", env)
                    cpu = own_cpu_seconds(gateway.pid) - cpu_before
                    result["cpu_us"] = cpu / max(1, result["requests"]) * 1e6
                    cells[(path, kind)].append(result)
                    print(f"{path}, {kind}: {result['rps']:.0f} req/s p50 {result['p50']:.3f} ms, {result['cpu_us']:.0f} µs/call, errors {result['errors']}", flush=True)
        lines = [
            "# Session-based calls on the HTTP route: fast relay against full pipeline",
            "",
            f"Measured {machine_line()}. One gateway (release build, access log off) with two entry points to one router: "
            "the fast relay on, and `fastRelay: false` (the full pipeline). Upstream: nginx answering a canned tools/call result "
            f"and naming a session. wrk c={args.concurrency}, {args.seconds} s per cell after a 2 s warm-up, {args.rounds} rounds "
            "(entry points alternating), medians shown, errors summed. 2025-06-18 tools/call POSTs (bench/tools_call_2025.lua): "
            "without a session, and in a session the gateway bound at its initialize. The upstream names its session on every answer, "
            "so a call without a session also has the gateway confirm that binding in its store (both paths do, as for a session "
            "an upstream hands out). CPU per call: the gateway process's.",
            "",
            "| path | call | req/s | p50 ms | p99 ms | errors | gateway CPU µs/call |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        medians = {}
        for (path, kind), runs in cells.items():
            median = {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50", "p99", "cpu_us")}
            medians[(path, kind)] = median
            lines.append(f"| {path} | {kind} | {median['rps']:.0f} | {median['p50']:.3f} | {median['p99']:.3f} | {sum(r['errors'] for r in runs)} | {median['cpu_us']:.0f} |")
        lines += ["", "Fast relay against full pipeline, CPU per call (each round's own in brackets):", ""]
        for kind in ("without a session", "in a session"):
            fast, full = cells[("fast relay", kind)], cells[("full pipeline", kind)]
            ratio = medians[("fast relay", kind)]["cpu_us"] / medians[("full pipeline", kind)]["cpu_us"]
            rounds = ", ".join(f"{a['cpu_us'] / b['cpu_us']:.2f}×" for a, b in zip(fast, full))
            lines.append(f"- {kind}: **{ratio:.2f}×** ({rounds}); req/s {medians[('fast relay', kind)]['rps'] / medians[('full pipeline', kind)]['rps']:.2f}×")
        write_results(args.output, lines)
    finally:
        stop_all(started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
