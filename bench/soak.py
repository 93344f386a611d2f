"""Soak: one gateway under a steady load at ~80 % of its measured peak, first on the HTTP route
(2026-07-28 tools/call to nginx answering a canned result: the fast relay), then on a stdio route
(2026-07-28 tools/call through a warm pool of two mcp-server-time children), `--minutes` each
(10 for the report). The gateway's RSS and open descriptors are sampled every 10 s; the report
compares the end with the first sample after warm-up and counts wrk's errors. Not part of CI.

Pacing: wrk has no rate option; each connection waits `MCPGW_DELAY_MS` between requests (the
`delay()` hook of the Lua scripts) and the number of connections is calibrated so that the rate
is ~80 % of the peak measured just before.

Writes bench/results-soak.md. Usage: python bench/soak.py --gateway .build/release/mcp-gateway [--minutes 10]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, open_descriptors as fds, parse_wrk, rss_kib, run_wrk, stop_all, wait_port  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402
from stdio_bridge import two_route_config  # noqa: E402



def calibrate(url: str, script: Path, target: float, p50_ms: float) -> tuple[int, int, dict]:
    """Connections and per-connection delay that give about `target` requests per second."""
    delay = max(1, round(2 * p50_ms))
    connections = max(1, math.ceil(target * (delay + p50_ms) / 1000))
    result: dict = {}
    for _ in range(3):
        result = run_wrk(url, connections, 5, script, {"MCPGW_DELAY_MS": str(delay)})
        if abs(result["rps"] / target - 1) < 0.05:
            break
        connections = max(1, round(connections * target / max(result["rps"], 1)))
    return connections, delay, result


def soak(name: str, url: str, script: Path, pid: int, minutes: float) -> dict:
    run_wrk(url, 16, 3, script)  # warm-up
    peak = run_wrk(url, 16, 10, script)
    target = 0.8 * peak["rps"]
    connections, delay, calibration = calibrate(url, script, target, peak["p50"])
    print(f"{name}: peak {peak['rps']:.0f} req/s; pacing {connections} connections × {delay} ms → {calibration['rps']:.0f} req/s", flush=True)
    seconds = int(minutes * 60)
    wrk = subprocess.Popen(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s", "--latency", "-s", str(script), url],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "MCPGW_DELAY_MS": str(delay)},
    )
    samples = []
    started = time.monotonic()
    while wrk.poll() is None:
        samples.append((time.monotonic() - started, rss_kib(pid), fds(pid)))
        try:
            wrk.wait(timeout=10)  # a sample every 10 s while wrk runs
        except subprocess.TimeoutExpired:
            pass
    output = wrk.stdout.read() if wrk.stdout else ""
    samples.append((time.monotonic() - started, rss_kib(pid), fds(pid)))
    measured = parse_wrk(output)
    return {"name": name, "peak": peak["rps"], "target": target, "connections": connections, "delay": delay, **measured, "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--output", default=str(HERE / "results-soak.md"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-soak-"))
    started: list[subprocess.Popen] = []
    runs = []
    try:
        upstream, upstream_port = start_nginx(
            "upstream", f"server {{ listen 127.0.0.1:PORT; location / {{ default_type application/json; return 200 '{CANNED}'; }} }}", workdir
        )
        started.append(upstream)
        port = free_port()
        (workdir / "gateway.yaml").write_text(two_route_config(
            port, upstream_port, time_extra='isolation: shared\npool: { min: 2, max: 2, idleTimeout: "1h" }'
        ))
        gateway = subprocess.Popen([args.gateway, "serve", "--config", str(workdir / "gateway.yaml")], stderr=open(workdir / "gateway.log", "wb"))
        started.append(gateway)
        wait_port(port)
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["stdio"].get("time", {}).get("sessions", 0) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the stdio pool did not warm up")
            time.sleep(0.2)  # polling the readiness endpoint

        runs.append(soak("HTTP route (fast relay, nginx upstream)", f"http://127.0.0.1:{port}/bench/mcp", HERE / "tools_call.lua", gateway.pid, args.minutes))
        runs.append(soak("stdio route (2026-07-28, warm pool of 2 mcp-server-time)", f"http://127.0.0.1:{port}/time/mcp", HERE / "modern_call.lua", gateway.pid, args.minutes))
    finally:
        stop_all(started, quit_signal_for=tuple(started[:1]))

    lines = [
        "# Soak: ~80 % of the peak for a while, RSS and descriptors sampled every 10 s",
        "",
        f"Measured {machine_line()}; wrk, nginx, the children and the gateway (release build) on the same 2 cores. "
        f"{args.minutes:g} minutes per route, one gateway for both (the stdio route's run follows the HTTP route's). "
        "Warm-up: the first minute; growth is the last sample against the first sample after it.",
        "",
        "| route | peak req/s | paced req/s (% of peak) | connections × delay | requests | errors | p50 ms | p99 ms | RSS after warm-up | RSS at the end | growth | fds after warm-up → end |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        warm = next((s for s in run["samples"] if s[0] >= 60), run["samples"][0])
        end = run["samples"][-1]
        growth = (end[1] - warm[1]) / warm[1] * 100
        run["growth"] = growth
        lines.append(
            f"| {run['name']} | {run['peak']:.0f} | {run['rps']:.0f} ({run['rps'] / run['peak'] * 100:.0f} %) | {run['connections']} × {run['delay']} ms | "
            f"{run['requests']} | {run['errors']} | {run['p50']:.2f} | {run['p99']:.2f} | {warm[1] / 1024:.1f} MiB | {end[1] / 1024:.1f} MiB | "
            f"{growth:+.1f} % | {warm[2]} → {end[2]} |"
        )
    for run in runs:
        lines += ["", f"## {run['name']}: samples", "", "| s | RSS MiB | fds |", "|---:|---:|---:|"]
        lines += [f"| {t:.0f} | {rss / 1024:.1f} | {fd} |" for t, rss, fd in run["samples"]]
    lines += ["", "## Against the target (no growth after warm-up, no errors)", ""]
    for run in runs:
        ok = run["errors"] == 0 and run["growth"] < 5
        lines.append(f"- {run['name']}: {run['errors']} errors, RSS {run['growth']:+.1f} % after warm-up: " + ("**met**." if ok else "**not met**."))
    lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
