"""Where the gateway's CPU goes, sampled by `perf record -e cpu-clock` (a software clock: this
machine has no hardware counters, and valgrind cannot run the binary) for the whole load:

- `--route http` (default): tools/call POSTs with wrk through mcp-gateway to nginx answering a
  canned result (as bench/http_proxy.py);
- `--route stdio`: tools/call POSTs spread over 50 sessions of mcp-server-time children (as
  bench/stdio_bridge.py); only the gateway process is sampled, its children are not.

Prints and writes the share of samples per library and the top symbols (demangled), so a change's
effect on the data path can be explained, not only measured.

Usage: python bench/profile.py --gateway .build/release/mcp-gateway [--route stdio] [--connections 16] [--seconds 10]
Writes bench/results-profile.md (or results-profile-stdio.md) and bench/out/profile-<route>.data
(perf's raw data).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, run_wrk, stop_all, wait_port  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402


def demangled(text: str) -> str:
    swift = shutil.which("swift")
    if not swift:
        return text
    result = subprocess.run([swift, "demangle", "--simplified"], input=text, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else text


def report(data: Path, sort: str, limit: float, children: bool = False) -> list[tuple[float, str]]:
    """(percent, what) rows of `perf report` sorted by `sort`, those at or above `limit` %.
    `children`: inclusive shares (a function with everything it called), from call chains."""
    output = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--children" if children else "--no-children", "-g", "none",
         "--sort", sort, "--percent-limit", str(limit)],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = []
    for line in output.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if match and not line.lstrip().startswith("#"):
            what = re.sub(r"(\s+-)+$", "", match.group(2))  # perf's empty source columns
            rows.append((float(match.group(1)), re.sub(r"\s{2,}", "  ", what)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--frequency", type=int, default=999, help="samples per second per CPU")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--route", choices=["http", "stdio"], default="http")
    parser.add_argument("--sessions", type=int, default=50, help="stdio route: sessions the calls are spread over")
    parser.add_argument("--call-graph", action="store_true",
                        help="record call chains (frame pointers) and add the gateway's functions by inclusive share")
    parser.add_argument("--operations", nargs="?", const="audit,metrics,rateLimit", default="",
                        help="http route: with an audit log, Prometheus metrics and a rate limit on Redis (issue 12's all-on "
                             "configuration), or those named (comma-separated: audit, metrics, rateLimit; Redis in every case)")
    parser.add_argument("--full-pipeline", action="store_true",
                        help="the entry point's fast relay off, so every request takes the full pipeline")
    parser.add_argument("--older-build", action="store_true",
                        help="stdio route: the gateway is a build from before wave 2 (its configuration without the keys it does not know)")
    parser.add_argument("--output")
    args = parser.parse_args()
    default_output = {"http": "results-profile.md", "stdio": "results-profile-stdio.md"}[args.route]
    if args.operations:
        default_output = "results-profile-operations.md"
    if args.full_pipeline:
        default_output = default_output.replace(".md", "-full-pipeline.md")
    output = Path(args.output) if args.output else HERE / default_output
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed (just bench-profile installs linux-perf)")

    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-profile-"))
    (HERE / "out").mkdir(exist_ok=True)
    data = HERE / "out" / f"profile-{args.route}.data"
    if args.route == "stdio":
        load, what = profile_stdio(args, workdir, data)
    else:
        load, what = profile_http(args, workdir, data)

    libraries = report(data, "dso", 0.5)
    symbols = report(data, "dso,symbol", 0.0)[: args.top]
    lines = [
        f"# Where the gateway's CPU goes ({args.route} route)", "",
        f"{machine_line()}; `bench/profile.py --route {args.route}`: wrk {args.seconds}s at c={args.connections}, {what}; "
        f"`perf record -e cpu-clock -F {args.frequency}` on the gateway "
        f"for the whole load: {load['rps']:.0f} req/s, p50 {load['p50']:.3f} ms, {load['errors']} errors.",
        "", "## Samples per library", "", "| share | library |", "|---|---|",
        *[f"| {share:.1f} % | `{name}` |" for share, name in libraries],
        "", f"## Top {args.top} symbols", "", "| share | library and symbol |", "|---|---|",
    ]
    names = demangled("\n".join(name for _, name in symbols)).splitlines()
    for (share, _), name in zip(symbols, names):
        lines.append(f"| {share:.2f} % | `{name.replace('|', '/')[:160]}` |")
    if args.call_graph:
        # perf's children mode prints the inclusive share first, then the function's own.
        inclusive = [row for row in report(data, "symbol", 1.0, children=True)][: args.top]
        lines += ["", f"## Inclusive shares (a function and what it calls), top {args.top}", "", "| inclusive | self and symbol |", "|---|---|"]
        names = demangled("\n".join(name for _, name in inclusive)).splitlines()
        for (share, _), name in zip(inclusive, names):
            lines.append(f"| {share:.1f} % | `{name.replace('|', '/')[:160]}` |")
    text = "\n".join(lines) + "\n"
    output.write_text(text)
    print(text)
    return 0


def record(args, pid: int, data: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["perf", "record", "-e", "cpu-clock", "-F", str(args.frequency), *(["--call-graph", "fp"] if args.call_graph else []),
         "-p", str(pid), "-o", str(data), "--", "sleep", str(args.seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def profile_stdio(args, workdir: Path, data: Path) -> tuple[dict, str]:
    from stdio_bridge import create_sessions, gateway_target

    target = gateway_target(args.gateway, workdir, fast_relay=not args.full_pipeline, older_build=args.older_build)
    try:
        sessions = create_sessions(target.url, args.sessions)
        sessions_file = workdir / "sessions.txt"
        sessions_file.write_text("\n".join(sessions) + "\n")
        env = {"MCPGW_SESSIONS": str(sessions_file)}
        run_wrk(target.url, args.connections, 2, HERE / "sessions.lua", env)  # warm-up
        recorder = record(args, target.process.pid, data)
        load = run_wrk(target.url, args.connections, args.seconds, HERE / "sessions.lua", env)
        recorder.wait(timeout=args.seconds + 60)
    finally:
        target.stop()
    return load, (f"tools/call POSTs (2025-06-18) spread over {args.sessions} sessions of mcp-server-time children "
                  "(release build, `auth: none`); the gateway process only, children excluded")


def profile_http(args, workdir: Path, data: Path) -> tuple[dict, str]:
    started: list[subprocess.Popen] = []
    try:
        upstream, upstream_port = start_nginx(
            "upstream", f"server {{ listen 127.0.0.1:PORT; location / {{ default_type application/json; return 200 '{CANNED}'; }} }}", workdir,
        )
        started.append(upstream)
        port = free_port()
        operations = router_middlewares = ""
        fast_relay = "\n                fastRelay: false" if args.full_pipeline else ""
        if args.operations:
            features = set(args.operations.split(","))
            redis_port = free_port()
            started.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                            stdout=subprocess.DEVNULL))
            wait_port(redis_port)
            operations = f"""
            store:
              redis:
                url: "redis://127.0.0.1:{redis_port}/0\""""
            if "audit" in features:
                operations += f"""
            audit:
              file: "{workdir / 'audit.log'}\""""
            if "metrics" in features:
                operations += """
            metrics:
              prometheus: {}"""
            if "rateLimit" in features:
                router_middlewares = "\n                middlewares: [generous]"
                operations += """
            middlewares:
              generous:
                rateLimit: { average: 1000000, period: 1s, by: ip }"""
        config = workdir / "gateway.yaml"
        config.write_text(textwrap.dedent(f"""
            entryPoints:
              web:
                address: "127.0.0.1:{port}"{fast_relay}
            publicURL: "http://127.0.0.1:{port}"
            log:
              level: warning{operations}
            routers:
              bench:
                rule: "PathPrefix(`/bench`)"
                service: bench
                auth: none{router_middlewares}
            services:
              bench:
                http:
                  url: "http://127.0.0.1:{upstream_port}/mcp"
        """))
        gateway = subprocess.Popen([args.gateway, "serve", "--config", str(config)], stderr=open(workdir / "gateway.log", "wb"))
        started.append(gateway)
        wait_port(port)
        url = f"http://127.0.0.1:{port}/bench/mcp"
        run_wrk(url, args.connections, 2, HERE / "tools_call.lua")  # warm-up
        recorder = record(args, gateway.pid, data)
        load = run_wrk(url, args.connections, args.seconds, HERE / "tools_call.lua")
        recorder.wait(timeout=args.seconds + 60)
    finally:
        stop_all(started, quit_signal_for=tuple(started[:1]))  # nginx stops gracefully on SIGQUIT
    what = "tools/call POSTs through mcp-gateway (release build, `auth: none`) to nginx answering a canned result"
    if args.full_pipeline:
        what += "; the fast relay off (`fastRelay: false`): the full pipeline"
    if args.operations:
        what += "; with an audit log, Prometheus metrics and a `rateLimit` middleware (by address) on Redis"
    return load, what


if __name__ == "__main__":
    raise SystemExit(main())
