"""Instructions per proxied request, counted by callgrind: the one figure here that does not move
with whatever else runs on the machine (CPU time does, by ±10 % from run to run on 2 shared
cores). User space only: the kernel's share (system calls, waking wrk and nginx) is not counted,
so read it beside the CPU figures of http_proxy.py and operations_overhead.py, not instead.

Each build runs under `valgrind --tool=callgrind`; after a warm-up, the counters are zeroed,
wrk sends tools/call POSTs (bench/tools_call.lua) for a while at the given concurrency, and the
counters are dumped: instructions (Ir) per completed request. Configurations:
- the HTTP route with `auth: none` to nginx answering a canned result (as http_proxy.py), for
  `--gateway` and, with `--baseline`, an older build;
- SwiftNIO's floor (bench/NIOFloor's tcp and http relays), when built next to `--gateway`;
- with `--operations`: the protected route of operations_overhead.py (a token, Redis) with the
  audit log, metrics and a rate limit all off and all on (issue 12's pair).

Two things make valgrind run these binaries on this machine:
- valgrind 3.19 (Debian 12) cannot read the DWARF 5 that Swift 6.3 writes, so each binary is
  measured as a copy without debug information (`objcopy --strip-debug`; symbols stay);
- valgrind (3.19 to 3.27) crashes when a process calls `sigsuspend` with its mask in read-only
  memory, which libdispatch does whenever an async `main` parks the main thread; a tiny
  preloaded `sigsuspend` that passes a copy of the mask avoids it.

Usage: python bench/callgrind.py --gateway NEW [--baseline OLD] [--operations] [--seconds 10]
Writes bench/results-callgrind.md (and prints it). Needs valgrind, a C compiler (cc, or the
toolchain's clang), wrk, nginx (and redis-server for --operations).

Read the figures with one caveat: under valgrind the gateway runs ~50× slower, so work done per
unit of time rather than per request (the audit log's flush every 10 ms, a token re-checked
after its memo's interval, rate-limit reserves refilled) is spread over fewer requests and
weighs more than at full speed; cells move by ±2 % between runs for that reason.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from auth_overhead import PASSWORD, token_for  # noqa: E402
from common import free_port, machine_line, run_wrk, stop_all, wait_port, write_results  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402
from operations_overhead import FEATURES, gateway_config as operations_config  # noqa: E402
from stdio_bridge import create_sessions, stdio_gateway_config  # noqa: E402

SIGSUSPEND_SHIM = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
/* valgrind writes to the mask it is given; libdispatch's lives in read-only memory. */
int sigsuspend(const sigset_t *mask) {
    sigset_t copy = *mask;
    return (int)syscall(SYS_rt_sigsuspend, &copy, (size_t)(_NSIG / 8));
}
"""


def http_config(port: int, upstream_port: int) -> str:
    return textwrap.dedent(f"""
        entryPoints:
          web:
            address: "127.0.0.1:{port}"
        publicURL: "http://127.0.0.1:{port}"
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
    """)


class Measured:
    """One gateway under callgrind."""

    def __init__(self, command: list[str], port: int, workdir: Path, label: str, shim: Path, path: str):
        self.label = label
        self.url = f"http://127.0.0.1:{port}{path}"
        self.base = f"http://127.0.0.1:{port}"
        self.out = workdir / f"callgrind-{re.sub(r'[^a-z0-9]+', '-', label.lower())}.out"
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *command],
            stdout=subprocess.DEVNULL, stderr=open(workdir / f"{self.out.stem}.log", "wb"), env={**os.environ, "LD_PRELOAD": str(shim)},
        )
        wait_port(port, timeout=300)
        self.pid = self.process.pid  # Debian's `valgrind` script execs valgrind, which execs the tool

    def control(self, command: str) -> None:
        subprocess.run(["callgrind_control", f"--{command}", str(self.pid)], check=True, capture_output=True)

    def instructions_per_request(self, connections: int, seconds: int, env: dict, script: Path = HERE / "tools_call.lua") -> tuple[float, int]:
        run_wrk(self.url, connections, 3, script, env)  # warm-up: lazy paths, caches, pools
        self.control("zero")
        result = run_wrk(self.url, connections, seconds, script, env)
        before = set(self.out.parent.glob(f"{self.out.name}.*"))
        self.control("dump")
        dumps = sorted(set(self.out.parent.glob(f"{self.out.name}.*")) - before, key=lambda path: path.stat().st_mtime)
        totals = re.search(r"^totals:\s*(\d+)", dumps[-1].read_text(errors="replace"), re.MULTILINE) if dumps else None
        if not totals or result["errors"] or not result["requests"]:
            raise SystemExit(f"{self.label}: no count ({result['errors']} errors, {result['requests']} requests)")
        return int(totals.group(1)) / result["requests"], result["requests"]


def prepared(binary: str, workdir: Path, name: str) -> str:
    copy = workdir / name
    subprocess.run(["objcopy", "--strip-debug", binary, str(copy)], check=True)
    return str(copy)


def serve(binary: str, workdir: Path, name: str, config_text: str) -> list[str]:
    config = workdir / f"{name}.yaml"
    config.write_text(config_text)
    return [prepared(binary, workdir, name), "serve", "--config", str(config)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--gateway-name", default="candidate")
    parser.add_argument("--baseline", default="", help="an older build, measured on the HTTP route too")
    parser.add_argument("--baseline-name", default="baseline")
    parser.add_argument("--operations", action="store_true", help="also issue 12's pair: all off and all on")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--output", default=str(HERE / "results-callgrind.md"))
    parser.add_argument("--stdio", type=int, default=0, metavar="SESSIONS",
                        help="also the stdio route: tools/call (bench/sessions.lua) over this many sessions of mcp-server-time")
    parser.add_argument("--no-http", action="store_true", help="leave out the HTTP route and the SwiftNIO floor")
    parser.add_argument("--keep", default="", help="a directory to keep the dumps in (for callgrind_annotate)")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    rows: list[tuple[str, int, float, int]] = []
    started: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="mcpgw-callgrind-") as tmp:
        workdir = Path(tmp)
        shim = workdir / "sigsuspend.so"
        (workdir / "sigsuspend.c").write_text(SIGSUSPEND_SHIM)
        compiler = shutil.which("cc") or shutil.which("clang")  # clang comes with the Swift toolchain
        if not compiler:
            raise SystemExit("no C compiler (cc or clang) for the sigsuspend shim")
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", str(workdir / "sigsuspend.c"), "-o", str(shim)], check=True)
        try:
            upstream, upstream_port = start_nginx(
                "upstream", f"server {{ listen 127.0.0.1:PORT; keepalive_requests 1000000; "
                f"location / {{ default_type application/json; return 200 '{CANNED}'; }} }}", workdir)
            started.append(upstream)
            builds = [(args.gateway_name, args.gateway)] + ([(args.baseline_name, args.baseline)] if args.baseline else [])
            for name, binary in ([] if args.no_http else builds):
                port = free_port()
                gateway = Measured(serve(binary, workdir, f"gateway-{len(started)}", http_config(port, upstream_port)), port, workdir,
                                   f"{name}, HTTP route, auth: none", shim, "/bench/mcp")
                started.append(gateway.process)
                for connections in levels:
                    per_request, requests = gateway.instructions_per_request(connections, args.seconds, {})
                    rows.append((gateway.label, connections, per_request, requests))
                    print(f"{gateway.label:45} c={connections:<3} {per_request:>10.0f} instructions/request ({requests} requests)", flush=True)
            floor = Path(args.gateway).resolve().parent / "NIOFloor"
            if floor.exists() and not args.no_http:
                for mode in ("tcp", "http"):
                    port = free_port()
                    relay = Measured([prepared(str(floor), workdir, f"floor-{mode}"), "--listen", str(port), "--upstream", str(upstream_port), "--mode", mode],
                                     port, workdir, f"SwiftNIO {mode} relay (bench/NIOFloor)", shim, "/mcp")
                    started.append(relay.process)
                    for connections in levels:
                        per_request, requests = relay.instructions_per_request(connections, args.seconds, {})
                        rows.append((relay.label, connections, per_request, requests))
                        print(f"{relay.label:45} c={connections:<3} {per_request:>10.0f} instructions/request ({requests} requests)", flush=True)
            if args.operations:
                redis_port = free_port()
                started.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                                stdout=subprocess.DEVNULL))
                wait_port(redis_port)
                password_hash = subprocess.run([args.gateway, "hash-password"], input=PASSWORD + "\n", capture_output=True, text=True, check=True).stdout.strip()
                for name, features in (("all off", set()), ("audit + metrics + rate limit", set(FEATURES))):
                    port = free_port()
                    gateway = Measured(serve(args.gateway, workdir, f"gateway-{len(started)}",
                                             operations_config(port, redis_port, upstream_port, password_hash, workdir, features)), port, workdir,
                                       f"{args.gateway_name}, protected route, {name}", shim, "/locked/mcp")
                    started.append(gateway.process)
                    token = token_for(gateway.base, f"{gateway.base}/locked/mcp")
                    for connections in levels:
                        per_request, requests = gateway.instructions_per_request(connections, args.seconds, {"MCPGW_TOKEN": token})
                        rows.append((gateway.label, connections, per_request, requests))
                        print(f"{gateway.label:45} c={connections:<3} {per_request:>10.0f} instructions/request ({requests} requests)", flush=True)
            for name, binary in (builds if args.stdio else []):
                port = free_port()
                gateway = Measured(serve(binary, workdir, f"gateway-{len(started)}", stdio_gateway_config(port)), port, workdir,
                                   f"{name}, stdio route, {args.stdio} sessions", shim, "/time/mcp")
                started.append(gateway.process)
                sessions = workdir / f"sessions-{len(started)}.txt"
                sessions.write_text("\n".join(create_sessions(gateway.url, args.stdio)) + "\n")
                for connections in levels:
                    per_request, requests = gateway.instructions_per_request(connections, args.seconds, {"MCPGW_SESSIONS": str(sessions)}, HERE / "sessions.lua")
                    rows.append((gateway.label, connections, per_request, requests))
                    print(f"{gateway.label:45} c={connections:<3} {per_request:>10.0f} instructions/request ({requests} requests)", flush=True)
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                for dump in workdir.glob("callgrind-*.out.*"):
                    dump.replace(Path(args.keep) / dump.name)
        finally:
            stop_all(started, quit_signal_for=(started[0],) if started else ())
    lines = [
        "# Instructions per proxied request (callgrind)", "",
        f"Measured {machine_line()}; {subprocess.run(['valgrind', '--version'], capture_output=True, text=True).stdout.strip()} "
        f"(callgrind), release builds without debug information; wrk {args.seconds}s per cell after a 3s warm-up, tools/call POSTs "
        "(bench/tools_call.lua) to nginx answering a canned result; counters zeroed before and dumped after each cell. User-space "
        "instructions of the whole gateway process (every thread) per completed request; the kernel's work is not counted. "
        "Under valgrind the gateway runs ~50× slower, so work done per unit of time (audit flushes, token memo intervals, "
        "rate-limit reserves) weighs more per request than at full speed; cells move by ±2 % between runs.", "",
        "| configuration | concurrency | requests | instructions per request |",
        "|---|---:|---:|---:|",
    ]
    for label, connections, per_request, requests in rows:
        lines.append(f"| {label} | {connections} | {requests} | {per_request:,.0f} |")
    by = {(label, connections): per_request for label, connections, per_request, _ in rows}
    lines.append("")
    for connections in levels:
        if args.baseline and not args.no_http:
            new = by[(f"{args.gateway_name}, HTTP route, auth: none", connections)]
            old = by[(f"{args.baseline_name}, HTTP route, auth: none", connections)]
            lines.append(f"- c={connections}, HTTP route: {args.gateway_name} / {args.baseline_name} = **{new / old:.2f}×** ({old:,.0f} → {new:,.0f})")
        if args.operations:
            off = by[(f"{args.gateway_name}, protected route, all off", connections)]
            on = by[(f"{args.gateway_name}, protected route, audit + metrics + rate limit", connections)]
            lines.append(f"- c={connections}, protected route: audit + metrics + rate limit / all off = **{on / off:.2f}×** "
                         f"({off:,.0f} → {on:,.0f}, +{on - off:,.0f})")
        if args.baseline and args.stdio:
            new = by[(f"{args.gateway_name}, stdio route, {args.stdio} sessions", connections)]
            old = by[(f"{args.baseline_name}, stdio route, {args.stdio} sessions", connections)]
            lines.append(f"- c={connections}, stdio route: {args.gateway_name} / {args.baseline_name} = **{new / old:.2f}×** ({old:,.0f} → {new:,.0f})")
    write_results(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
