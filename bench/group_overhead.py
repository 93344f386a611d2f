"""Cost of a group: tools/call and tools/list through a group of three HTTP members against one
member directly through the gateway, in one run, alternating rounds. The members are the SDK
catalogue server (Tests/integration/servers/catalogue_server.py), each its own process; the group
uses `prefix: always`. Reports p50 / p99 at c=1 and c=16, the group's added p50, and the gateway's
CPU per call (its own process, members excluded).

Writes bench/results-groups.md (and prints it). Usage: python bench/group_overhead.py --gateway PATH
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, own_cpu_seconds, run_wrk, wait_port, write_results  # noqa: E402

SCRIPT = HERE / "group_call.lua"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(HERE / "results-groups.md"))
    args = parser.parse_args()
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ports = [free_port() for _ in range(3)]
            for port in ports:
                processes.append(subprocess.Popen([sys.executable, str(REPO / "Tests/integration/servers/catalogue_server.py"), "--port", str(port)],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in ports:
                wait_port(port)
            gateway_port = free_port()
            config = Path(tmp) / "gateway.yaml"
            members = "".join(f"""
  m{index}:
    http:
      url: "http://127.0.0.1:{port}/mcp\"""" for index, port in enumerate(ports))
            config.write_text(f"""
entryPoints:
  web:
    address: "127.0.0.1:{gateway_port}"
publicURL: "http://127.0.0.1:{gateway_port}"
log:
  accessLog: false
routers:
  direct: {{rule: "PathPrefix(`/direct`)", service: m0, auth: none}}
  group: {{rule: "PathPrefix(`/group`)", service: three, auth: none}}
services:{members}
  three:
    group:
      members: [m0, m1, m2]
      prefix: always
""")
            gateway = subprocess.Popen([args.gateway, "serve", "--config", str(config), "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(gateway)
            wait_port(gateway_port)
            base = f"http://127.0.0.1:{gateway_port}"
            cases = {
                "tools/call direct": (f"{base}/direct/mcp", {"MCPGW_TOOL": "get_time", "MCPGW_METHOD": "tools/call"}),
                "tools/call group": (f"{base}/group/mcp", {"MCPGW_TOOL": "m0__get_time", "MCPGW_METHOD": "tools/call"}),
                "tools/list direct": (f"{base}/direct/mcp", {"MCPGW_METHOD": "tools/list"}),
                "tools/list group": (f"{base}/group/mcp", {"MCPGW_METHOD": "tools/list"}),
            }
            # Warm up every path (and the group's lists) once.
            for url, env in cases.values():
                run_wrk(url, 1, 1, SCRIPT, env=env)
            results: dict[tuple[str, int], list[dict]] = {}
            for _ in range(args.rounds):
                for concurrency in (1, 16):
                    for name, (url, env) in cases.items():
                        before = own_cpu_seconds(gateway.pid)
                        run = run_wrk(url, concurrency, args.seconds, SCRIPT, env=env)
                        run["cpu_us"] = (own_cpu_seconds(gateway.pid) - before) / max(run["requests"], 1) * 1e6
                        results.setdefault((name, concurrency), []).append(run)
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                process.wait(timeout=10)

    def median(name, concurrency, key):
        return statistics.median(run[key] for run in results[(name, concurrency)])

    lines = ["# Groups: a call through a group of three HTTP members vs one member directly", "",
             f"{machine_line()}. Members: the SDK catalogue server, one process each; `prefix: always`; "
             f"medians of {args.rounds} alternating rounds of {args.seconds} s (wrk, 2026-07-28 POSTs). "
             "Gateway CPU is the gateway process's own, per request.", "",
             "| case | c | req/s | p50 ms | p99 ms | gateway CPU µs/req | errors |", "|---|---|---|---|---|---|---|"]
    for concurrency in (1, 16):
        for name in cases:
            runs = results[(name, concurrency)]
            lines.append(f"| {name} | {concurrency} | {median(name, concurrency, 'rps'):.0f} | {median(name, concurrency, 'p50'):.2f} | "
                         f"{median(name, concurrency, 'p99'):.2f} | {median(name, concurrency, 'cpu_us'):.0f} | {sum(r['errors'] for r in runs)} |")
    lines += ["", "| measure | value | target |", "|---|---|---|"]
    for concurrency in (1, 16):
        added = median("tools/call group", concurrency, "p50") - median("tools/call direct", concurrency, "p50")
        cpu = median("tools/call group", concurrency, "cpu_us") - median("tools/call direct", concurrency, "cpu_us")
        lines.append(f"| tools/call: p50 added by the group, c={concurrency} | {added:.2f} ms | ≤ 0.5 ms |")
        lines.append(f"| tools/call: gateway CPU added by the group, c={concurrency} | {cpu:.0f} µs | – |")
    write_results(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
