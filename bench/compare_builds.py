"""Two builds of the gateway side by side in one run: the gateway's own CPU per proxied call on the
HTTP route (tools/call to nginx answering a canned result, as bench/http_proxy.py) and per call
on the stdio route (tools/call spread over 50 sessions of mcp-server-time children, as
bench/stdio_bridge.py; children excluded), rounds interleaved (baseline, candidate, baseline, …)
so that drift on the machine falls on both. Reports the median per build and the ratio.

Usage: python bench/compare_builds.py --baseline OLD_BINARY --gateway NEW_BINARY [--rounds 3]
Writes bench/results-builds.md. Build an old commit with
`git worktree add /tmp/base <commit> && swift build -c release --package-path /tmp/base`.
Both builds get the same configuration (keys every build since the wave-1 layout knows; the
newer ones' per-user session cap raised for the 50 sessions of one load generator).
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
from common import free_port, machine_line, own_cpu_seconds, run_wrk, stop_all, wait_port, write_results  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402
from stdio_bridge import create_sessions, two_route_config  # noqa: E402


def start_gateway(binary: str, workdir: Path, name: str, upstream_port: int, entry_point_extra: str = "", baseline: bool = False) -> tuple[subprocess.Popen, int]:
    """`baseline`: an older build, without the keys it does not know (`maxSessionsPerUser`: it
    had no per-user cap)."""
    per_user = "" if baseline else "maxSessionsPerUser: 100"
    port = free_port()
    config = workdir / f"gateway-{name.replace(' ', '-').replace(':', '')}.yaml"
    config.write_text(two_route_config(port, upstream_port, entry_point_extra, time_extra=f'maxSessions: 100\n{per_user}\nidleTimeout: "1h"'))
    process = subprocess.Popen([binary, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=open(workdir / f"{name}.log", "wb"))
    wait_port(port)
    return process, port


def measure(process: subprocess.Popen, url: str, seconds: int, script: Path, env: dict | None = None) -> dict:
    before = own_cpu_seconds(process.pid)
    result = run_wrk(url, 16, seconds, script, env)
    after = own_cpu_seconds(process.pid)
    return {"rps": result["rps"], "errors": result["errors"], "cpu_us": (after - before) / max(1, result["requests"]) * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="the older build")
    parser.add_argument("--gateway", required=True, help="the build to compare with it")
    parser.add_argument("--baseline-name", default="baseline")
    parser.add_argument("--gateway-name", default="candidate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--candidate-full-pipeline", action="store_true",
                        help="also the candidate with `fastRelay: false` (a key older builds do not know)")
    parser.add_argument("--recent-baseline", action="store_true", help="the baseline knows the per-user session cap (built after it came)")
    parser.add_argument("--entry-point", default="", help="extra entry-point keys for both builds, e.g. 'fastRelay: false'")
    parser.add_argument("--routes", choices=["both", "http", "stdio"], default="both",
                        help="measure one route only (more rounds of it in the same time)")
    parser.add_argument("--output", default=str(HERE / "results-builds.md"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-builds-"))
    started: list[subprocess.Popen] = []
    samples: dict[tuple[str, str], list[dict]] = {}
    try:
        upstream, upstream_port = start_nginx(
            "upstream", f"server {{ listen 127.0.0.1:PORT; location / {{ default_type application/json; return 200 '{CANNED}'; }} }}", workdir,
        )
        started.append(upstream)
        builds = []
        candidates = [(args.baseline_name, args.baseline, args.entry_point), (args.gateway_name, args.gateway, args.entry_point)]
        if args.candidate_full_pipeline:
            candidates.append((f"{args.gateway_name}, fastRelay: false", args.gateway, "fastRelay: false"))
        for index, (name, binary, extra) in enumerate(candidates):
            process, port = start_gateway(binary, workdir, name, upstream_port, extra, baseline=index == 0 and not args.recent_baseline)
            started.append(process)
            sessions = create_sessions(f"http://127.0.0.1:{port}/time/mcp", 50)
            sessions_file = workdir / f"sessions-{name}.txt"
            sessions_file.write_text("\n".join(sessions) + "\n")
            builds.append((name, process, port, {"MCPGW_SESSIONS": str(sessions_file)}))
        routes = [
            ("HTTP route, c=16", "/bench/mcp", HERE / "tools_call.lua", False),
            ("stdio route, 50 sessions × c=16", "/time/mcp", HERE / "sessions.lua", True),
        ]
        if args.routes != "both":
            routes = [route for route in routes if route[3] == (args.routes == "stdio")]
        for name, process, port, env in builds:  # warm-up
            for _, path, script, needs_sessions in routes:
                run_wrk(f"http://127.0.0.1:{port}{path}", 16, 2, script, env if needs_sessions else None)
        for round_number in range(args.rounds):
            for route, path, script, needs_sessions in routes:
                for name, process, port, env in builds:
                    sample = measure(process, f"http://127.0.0.1:{port}{path}", args.seconds, script, env if needs_sessions else None)
                    samples.setdefault((route, name), []).append(sample)
                    print(f"round {round_number + 1} {route:32} {name:12} {sample['rps']:8.0f} req/s {sample['cpu_us']:7.1f} µs/call errors {sample['errors']}", flush=True)
    finally:
        stop_all(started)

    lines = [
        "# Two builds side by side", "",
        f"{machine_line()}; `bench/compare_builds.py`: wrk c=16, {args.seconds}s per sample, {args.rounds} rounds interleaved; "
        "the gateway's own CPU per call (children excluded), median of the rounds. "
        f"Baseline: {args.baseline_name}; candidate: {args.gateway_name}. Both with the same configuration and defaults (but the per-user session cap, a key the baseline does not know).", "",
        "| route | build | req/s (median) | CPU µs/call (median) | samples µs/call | errors |", "|---|---|---:|---:|---|---:|",
    ]
    for route, _, _, _ in routes:
        for name, *_ in builds:
            rows = samples[(route, name)]
            lines.append(f"| {route} | {name} | {statistics.median(r['rps'] for r in rows):.0f} | {statistics.median(r['cpu_us'] for r in rows):.1f} | "
                         f"{', '.join(format(r['cpu_us'], '.0f') for r in rows)} | {sum(r['errors'] for r in rows)} |")
    lines += ["", "## Against the baseline", ""]
    for route, _, _, _ in routes:
        base = statistics.median(r["cpu_us"] for r in samples[(route, builds[0][0])])
        for name, *_ in builds[1:]:
            candidate = statistics.median(r["cpu_us"] for r in samples[(route, name)])
            lines.append(f"- {route}, {name}: {candidate:.1f} µs against {base:.1f} µs per call = **{candidate / base:.2f}×**")
    write_results(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
