"""HTTP-route benchmark: tools/call POSTs with wrk at several concurrencies against a fast upstream
(nginx answering a canned JSON-RPC result), measured direct, through nginx `proxy_pass` (the
reference for a mature C proxy) and through mcp-gateway, all in one run on this machine.
Also relays a 1 000-event SSE stream direct and through the gateway and compares per-event delay.
When the NIOFloor product is built next to the gateway (`swift build -c release --product NIOFloor`),
two SwiftNIO relays with nothing of the gateway's are measured in the same run: the floor of a
proxy written with SwiftNIO, to tell SwiftNIO's own cost from the gateway's.

Writes bench/results-http.md (and prints it). Usage: python bench/http_proxy.py --gateway PATH
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, percentile, tree_cpu_seconds as process_tree_cpu, wait_port  # noqa: E402
from common import run_wrk as common_run_wrk  # noqa: E402

CANNED = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}],"isError":false}}'


def nginx_config(prefix: Path, port: int, body: str, worker_connections: int = 4096) -> Path:
    """One worker; `body` inside `http`, `PORT` in it replaced by `port`. More than 4096
    connections raise the worker's descriptor limit to match."""
    conf = prefix / "nginx.conf"
    descriptors = f"worker_rlimit_nofile {worker_connections + 1024};" if worker_connections > 4096 else ""
    conf.write_text(textwrap.dedent(f"""
        daemon off;
        worker_processes 1;
        {descriptors}
        error_log {prefix}/error.log warn;
        pid {prefix}/nginx.pid;
        events {{ worker_connections {worker_connections}; }}
        http {{
            access_log off;
            client_body_temp_path {prefix}/body;
            proxy_temp_path {prefix}/proxy;
            fastcgi_temp_path {prefix}/fastcgi;
            uwsgi_temp_path {prefix}/uwsgi;
            scgi_temp_path {prefix}/scgi;
            keepalive_requests 1000000;
            {body.replace("PORT", str(port))}
        }}
    """))
    return conf


def start_nginx(name: str, body: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = nginx_config(prefix, port, body)
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return process, port


def run_wrk(url: str, connections: int, seconds: int) -> dict:
    return common_run_wrk(url, connections, seconds, HERE / "tools_call.lua")


def sse_delays(url: str, count: int) -> list[float]:
    """Per-event delay between the upstream writing an event and the client reading it (ms)."""
    import httpx

    delays = []
    with httpx.stream("GET", url, params={"count": count}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                sent = json.loads(line[6:])["t"]
                delays.append((time.time() - sent) * 1000)
    return delays


SSE_UPSTREAM = r'''
import asyncio, json, sys, time
import uvicorn
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

async def sse(request):
    count = int(request.query_params.get("count", "1000"))
    async def events():
        for i in range(count):
            yield f"id: {i}\ndata: {json.dumps({'n': i, 't': time.time()})}\n\n".encode()
            await asyncio.sleep(0.002)
    return StreamingResponse(events(), media_type="text/event-stream")

uvicorn.run(Starlette(routes=[Route("/sse", sse)]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--output", default=str(HERE / "results-http.md"))
    parser.add_argument("--gateway-cpu", default="", help="pin the gateway to this CPU (taskset -c)")
    parser.add_argument("--log-level", default="warning", help="the gateway's log.level (info: with the access log)")
    parser.add_argument("--extra-log", default="", help="more log: keys, e.g. 'accessLog: false' (builds that know them)")
    parser.add_argument("--floor", default="", help="the NIOFloor binary (default: next to --gateway, when built there)")
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="measure every cell this many times, the targets alternating within each round; the tables show medians "
        "(one run's ratios move by ±0.3× with what else the 2 cores do)",
    )
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    started: list[subprocess.Popen] = []
    try:
        upstream, upstream_port = start_nginx(
            "upstream",
            f"server {{ listen 127.0.0.1:PORT; location / {{ default_type application/json; return 200 '{CANNED}'; }} }}",
            workdir,
        )
        started.append(upstream)
        proxy, proxy_port = start_nginx(
            "proxy",
            f"upstream mcp {{ server 127.0.0.1:{upstream_port}; keepalive 512; }}\n"
            "server { listen 127.0.0.1:PORT; location / { proxy_pass http://mcp; proxy_http_version 1.1; "
            "proxy_set_header Connection \"\"; proxy_buffering off; } }",
            workdir,
        )
        started.append(proxy)

        sse_port = free_port()
        sse_script = workdir / "sse_upstream.py"
        sse_script.write_text(SSE_UPSTREAM)
        sse_upstream = subprocess.Popen([sys.executable, str(sse_script), str(sse_port)])
        started.append(sse_upstream)
        wait_port(sse_port)

        # SwiftNIO's floor (bench/NIOFloor): a byte relay and an HTTP/1 relay with nothing of the
        # gateway's, each with as many event loops as the gateway has (one per core).
        floor_binary = Path(args.floor) if args.floor else Path(args.gateway).resolve().parent / "NIOFloor"
        floors = []
        if floor_binary.exists():
            for mode in ("tcp", "http"):
                floor_port = free_port()
                floor = subprocess.Popen([str(floor_binary), "--listen", str(floor_port), "--upstream", str(upstream_port), "--mode", mode], stdout=subprocess.DEVNULL)
                started.append(floor)
                wait_port(floor_port)
                floors.append((f"SwiftNIO {mode} relay", f"http://127.0.0.1:{floor_port}/mcp", [floor.pid]))
        else:
            print(f"no {floor_binary} (swift build -c release --product NIOFloor): the SwiftNIO floor is not measured", file=sys.stderr)

        gateway_port = free_port()
        config = workdir / "gateway.yaml"
        config.write_text(textwrap.dedent(f"""
            entryPoints:
              web:
                address: "127.0.0.1:{gateway_port}"
            publicURL: "http://127.0.0.1:{gateway_port}"
            log:
              level: {args.log_level}
              {args.extra_log}
            routers:
              bench:
                rule: "PathPrefix(`/bench`)"
                service: bench
                auth: none
              sse:
                rule: "PathPrefix(`/sse`)"
                service: sse
                auth: none
            services:
              bench:
                http:
                  url: "http://127.0.0.1:{upstream_port}/mcp"
              sse:
                http:
                  url: "http://127.0.0.1:{sse_port}/sse"
        """))
        # --gateway-cpu pins the gateway to one CPU (run the script itself under `taskset -c <other>`),
        # so wrk and nginx never share its core: less run-to-run noise in CPU per request.
        pin = ["taskset", "-c", args.gateway_cpu] if args.gateway_cpu else []
        gateway = subprocess.Popen([*pin, args.gateway, "serve", "--config", str(config)], stderr=open(workdir / "gateway.log", "wb"))
        started.append(gateway)
        wait_port(gateway_port)

        targets = [
            ("direct", f"http://127.0.0.1:{upstream_port}/mcp", []),
            ("nginx", f"http://127.0.0.1:{proxy_port}/mcp", [proxy.pid]),
            *floors,
            ("mcp-gateway", f"http://127.0.0.1:{gateway_port}/bench/mcp", [gateway.pid]),
        ]
        rows = []
        for name, url, pids in targets:
            run_wrk(url, 16, 2)  # warm-up: connections, caches, JIT-free but lazy paths
        for round_number in range(args.rounds):
            for connections in concurrencies:
                for name, url, pids in targets:
                    before = process_tree_cpu(pids) if pids else 0.0
                    result = run_wrk(url, connections, args.seconds)
                    after = process_tree_cpu(pids) if pids else 0.0
                    cpu_per_k = (after - before) / result["requests"] * 1000 if pids and result["requests"] else None
                    rows.append({
                        "target": name, "c": connections, "round": round_number,
                        **{k: v for k, v in result.items() if k != "raw"}, "cpu_per_k": cpu_per_k,
                    })
                    print(f"round {round_number + 1} {name:12} c={connections:<4} {result['rps']:>10.0f} req/s  p50 {result['p50']:.3f} ms  p99 {result['p99']:.3f} ms  errors {result['errors']}  cpu/1k {cpu_per_k if cpu_per_k is None else round(cpu_per_k, 3)}", flush=True)

        direct_sse = sse_delays(f"http://127.0.0.1:{sse_port}/sse", 1000)
        gateway_sse = sse_delays(f"http://127.0.0.1:{gateway_port}/sse/mcp", 1000)
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM if process is not started[0] and process is not started[1] else signal.SIGQUIT)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    # Each cell's median over the rounds (errors: their sum), and the rounds themselves.
    by: dict = {}
    rounds: dict = {}
    for key in dict.fromkeys((row["target"], row["c"]) for row in rows):
        cells = [row for row in rows if (row["target"], row["c"]) == key]
        rounds[key] = cells
        cpu = [cell["cpu_per_k"] for cell in cells if cell["cpu_per_k"] is not None]
        by[key] = {
            "target": key[0], "c": key[1],
            **{field: median([cell[field] for cell in cells]) for field in ("rps", "p50", "p99")},
            "errors": sum(cell["errors"] for cell in cells), "cpu_per_k": median(cpu) if cpu else None,
        }
    lines = [
        "# HTTP route benchmark",
        "",
        f"Measured {machine_line()}; wrk with {args.seconds}s per cell, {args.rounds} rounds (every target at every "
        "concurrency in each round; medians shown, errors summed), tools/call POSTs "
        "(bench/tools_call.lua) against nginx answering a canned JSON-RPC result. nginx 1 worker for both "
        "upstream and reference proxy; mcp-gateway release build. Everything, wrk included, shares the 2 cores.",
        "",
        "| target | concurrency | req/s | p50 ms | p99 ms | errors | proxy CPU s / 1 000 req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in by.values():
        cpu = "—" if row["cpu_per_k"] is None else f"{row['cpu_per_k']:.3f}"
        lines.append(f"| {row['target']} | {row['c']} | {row['rps']:.0f} | {row['p50']:.3f} | {row['p99']:.3f} | {row['errors']} | {cpu} |")
    lines += ["", "## Against the targets", "", "Ratios of the medians; in brackets, each round's own.", ""]
    for connections in concurrencies:
        gw, ng, direct = by[("mcp-gateway", connections)], by[("nginx", connections)], by[("direct", connections)]
        ratio = gw["cpu_per_k"] / ng["cpu_per_k"] if ng["cpu_per_k"] else float("nan")
        each = zip(rounds[("mcp-gateway", connections)], rounds[("nginx", connections)], rounds[("direct", connections)])
        per_round = [(g["cpu_per_k"] / n["cpu_per_k"], g["p50"] - d["p50"], g["rps"]) for g, n, d in each if n["cpu_per_k"]]
        lines.append(
            f"- c={connections}: gateway CPU per request = **{ratio:.2f}×** nginx's (target ≤ 3×; "
            f"{', '.join(f'{r[0]:.2f}×' for r in per_round)}); "
            f"added p50 over direct {gw['p50'] - direct['p50']:.3f} ms ({', '.join(f'{r[1]:.3f}' for r in per_round)}; "
            f"nginx: {ng['p50'] - direct['p50']:.3f} ms); "
            f"gateway {gw['rps']:.0f} req/s ({', '.join(f'{r[2]:.0f}' for r in per_round)}) = {gw['rps'] / ng['rps']:.2f}× nginx's; "
            f"errors {gw['errors']}"
        )
    if floors:
        lines += [
            "",
            "## The SwiftNIO floor",
            "",
            "CPU per request against nginx `proxy_pass`, for the two SwiftNIO relays of bench/NIOFloor (one kept-alive "
            "upstream connection per client connection on its own event loop; `tcp`: bytes passed through unparsed; "
            "`http`: NIOHTTP1's server pipeline and client codec, every part passed through unchanged) and for the "
            "gateway, and the gateway against the HTTP relay:",
            "",
            "| concurrency | SwiftNIO tcp relay | SwiftNIO http relay | mcp-gateway | mcp-gateway / SwiftNIO http relay |",
            "|---:|---:|---:|---:|---:|",
        ]
        for connections in concurrencies:
            ng = by[("nginx", connections)]["cpu_per_k"]
            tcp, http, gw = (by[(name, connections)]["cpu_per_k"] for name in ("SwiftNIO tcp relay", "SwiftNIO http relay", "mcp-gateway"))
            lines.append(f"| {connections} | {tcp / ng:.2f}× | {http / ng:.2f}× | {gw / ng:.2f}× | {gw / http:.2f}× |")
    lines += [
        "",
        "## SSE relay (1 000 events, one every 2 ms)",
        "",
        "Delay from the upstream writing an event to the client reading it:",
        "",
        "| path | events | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        f"| direct | {len(direct_sse)} | {percentile(direct_sse, 0.5):.2f} | {percentile(direct_sse, 0.99):.2f} | {max(direct_sse):.2f} |",
        f"| mcp-gateway | {len(gateway_sse)} | {percentile(gateway_sse, 0.5):.2f} | {percentile(gateway_sse, 0.99):.2f} | {max(gateway_sse):.2f} |",
        "",
    ]
    text = "\n".join(lines)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
