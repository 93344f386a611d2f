"""2026-07-28 stateless tools/call through a warm stdio pool, side by side in one run with the
legacy child-per-session path (50 sessions) and mcp-streamablehttp-proxy (50 sessions), all on the
same child (mcp-server-time), plus the children's own ceiling for the pool's size and the latency
of single calls with no session on a warm pool.

Writes bench/results-modern.md. Usage: python bench/modern_pool.py --gateway PATH [--pool 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from stdio_bridge import (  # noqa: E402 (bench/ is on sys.path when run as a script)
    CHILD_ARGS, HERE, REPO, TIME_SERVER, Target, child_ceiling, create_sessions, delete_sessions, gateway_target,
)
from common import free_port, machine_line, own_cpu_seconds, percentile, run_wrk, tree_cpu_seconds, write_results  # noqa: E402,F401

MODERN_BODY = json.loads(
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"},'
    '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},'
    '"io.modelcontextprotocol/clientCapabilities":{}}}}'
)
MODERN_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
                  "Mcp-Method": "tools/call", "Mcp-Name": "get_current_time"}


def pool_target(binary: str, workdir: Path, size: int) -> Target:
    target = gateway_target(binary, workdir, name="pool", extra=f"isolation: shared\npool: {{ min: {size}, max: {size}, idleTimeout: \"1h\" }}")
    target.name = "mcp-gateway (2026-07-28, warm pool)"
    return target


def wait_warm(target: Target, size: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = httpx.get(f"http://127.0.0.1:{target.port}/readyz", timeout=5).json()
        if ready["stdio"].get("time", {}).get("sessions", 0) >= size:
            return
        time.sleep(0.1)  # polling a readiness endpoint
    raise SystemExit("the pool did not warm up")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--output", default=str(HERE / "results-modern.md"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-modern-bench-"))
    rows = []

    # First calls with no session on a warm pool: sequential, one connection each.
    pool = pool_target(args.gateway, workdir, args.pool)
    try:
        wait_warm(pool, args.pool)
        latencies = []
        for _ in range(200):
            with httpx.Client(timeout=30) as client:
                started = time.perf_counter()
                answer = client.post(pool.url, json=MODERN_BODY, headers=MODERN_HEADERS)
                latencies.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, answer.text
        first_call_p50 = percentile(latencies[20:], 0.5)
        run_wrk(pool.url, 16, 2, HERE / "modern_call.lua")  # warm-up
        for connections in (16, 64):
            before, tree_before = own_cpu_seconds(pool.process.pid), tree_cpu_seconds([pool.process.pid])
            result = run_wrk(pool.url, connections, args.seconds, HERE / "modern_call.lua")
            own = own_cpu_seconds(pool.process.pid) - before
            children = tree_cpu_seconds([pool.process.pid]) - tree_before - own
            per_call = 1e6 / max(1, result["requests"])
            rows.append({"target": pool.name, "clients": "stateless", "c": connections, **result, "cpu_us": own * per_call, "children_us": children * per_call})
            print(rows[-1]["target"], connections, result["rps"], flush=True)
    finally:
        pool.stop()

    anchors = [
        ("mcp-gateway (2025, child per session)", lambda: gateway_target(args.gateway, workdir, name="legacy")),
        ("mcp-streamablehttp-proxy", lambda: (lambda port: Target(
            "mcp-streamablehttp-proxy",
            [str(REPO / ".venv-bench-streamablehttp" / "bin" / "mcp-streamablehttp-proxy"), "--port", str(port), "--timeout", "3600",
             "--log-level", "warning", TIME_SERVER, *CHILD_ARGS], port, "/mcp"))(free_port())),
    ]
    for name, start in anchors:
        target = start()
        try:
            sessions = create_sessions(target.url, 50)
            sessions_file = workdir / f"sessions-{len(rows)}.txt"
            sessions_file.write_text("\n".join(sessions) + "\n")
            env = {"MCPGW_SESSIONS": str(sessions_file)}
            run_wrk(target.url, 16, 2, HERE / "sessions.lua", env)
            for connections in (16, 64):
                before, tree_before = own_cpu_seconds(target.process.pid), tree_cpu_seconds([target.process.pid])
                result = run_wrk(target.url, connections, args.seconds, HERE / "sessions.lua", env)
                own = own_cpu_seconds(target.process.pid) - before
                children = tree_cpu_seconds([target.process.pid]) - tree_before - own
                per_call = 1e6 / max(1, result["requests"])
                rows.append({"target": name, "clients": "50 sessions", "c": connections, **result, "cpu_us": own * per_call, "children_us": children * per_call})
                print(name, connections, result["rps"], flush=True)
            delete_sessions(target.url, sessions)
        finally:
            target.stop()

    # The pool speaks to the (dual-era) children in 2026-07-28, so that is the ceiling to compare
    # with; the session-based ceiling is shown too.
    ceiling = asyncio.run(child_ceiling(args.pool, 64, args.seconds, modern=True))
    rows.append({"target": f"{args.pool} children direct, 2026-07-28 (ceiling)", "clients": "—", "c": 64, **ceiling, "errors": 0, "cpu_us": None})
    legacy_ceiling = asyncio.run(child_ceiling(args.pool, 64, args.seconds))
    rows.append({"target": f"{args.pool} children direct, session-based", "clients": "—", "c": 64, **legacy_ceiling, "errors": 0, "cpu_us": None})

    lines = [
        "# 2026-07-28 clients through a warm stdio pool", "",
        f"Measured {machine_line()}. Child: mcp-server-time (current) everywhere. wrk {args.seconds}s per cell. "
        f"The pool: `isolation: shared`, `pool: {{min: {args.pool}, max: {args.pool}}}`, stateless tools/call with the 2026-07-28 headers "
        "and `_meta` (bench/modern_call.lua); the gateway probes the children with `server/discover` and, mcp-server-time being dual-era, "
        "speaks 2026-07-28 to them directly. The session-based rows "
        "spread the same call over 50 pre-created sessions (bench/sessions.lua). \"own CPU\" excludes the children; \"children CPU\" is "
        "theirs (CPU seconds of the process tree minus the bridge's own, per call).", "",
        "| target | clients | c | req/s | p50 ms | p99 ms | errors | own CPU µs/call | children CPU µs/call |", "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = "—" if r.get("cpu_us") is None else f"{r['cpu_us']:.0f}"
        children_cpu = "—" if r.get("children_us") is None else f"{r['children_us']:.0f}"
        lines.append(f"| {r['target']} | {r['clients']} | {r['c']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | {cpu} | {children_cpu} |")
    by = {(r["target"], r["c"]): r for r in rows}
    modern = by[("mcp-gateway (2026-07-28, warm pool)", 64)]
    anchor = by[("mcp-streamablehttp-proxy", 64)]
    ceiling_row = rows[-2]
    lines += [
        "",
        f"- c=64: warm pool {modern['rps']:.0f} req/s = **{modern['rps'] / anchor['rps']:.2f}×** mcp-streamablehttp-proxy with 50 sessions "
        f"({anchor['rps']:.0f} req/s in this run; target ≥ 2.5×)",
        f"- c=64: **{modern['rps'] / ceiling_row['rps'] * 100:.0f}%** of {args.pool} children driven directly in 2026-07-28 ({ceiling_row['rps']:.0f} req/s; target ≥ 85%)",
        f"- First call with no session on a warm pool: p50 **{first_call_p50:.2f} ms** over 180 sequential calls, new connection each (target ≤ 5 ms)",
        f"- Bound: the children alone use {modern['children_us']:.0f} µs of CPU per call in the pool; with {os.cpu_count()} cores no bridge in front of "
        f"children that cost this much can exceed {os.cpu_count() * 1e6 / modern['children_us']:.0f} req/s = {os.cpu_count() * 1e6 / modern['children_us'] / anchor['rps']:.2f}× "
        "the anchor in this run, even if the bridge and the load generator cost nothing",
    ]
    write_results(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
