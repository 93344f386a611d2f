"""Several instances on one Redis: what the forwarding hop costs, and how long a takeover takes.

Two mcp-gateway instances (`cluster:`) on one redis-server, one stdio route with a minimal child
(awk, so the gateway's own work dominates) and one with a Python SDK child (mcp-server-time, as a
real takeover pays its start-up):
- hop: tools/call at c=1 on a session, sent to the instance holding it (local) and to the other
  one (forwarded): p50/p99 latency and gateway CPU per call (both instances' own CPU, children
  excluded), interleaved rounds;
- takeover: the instance holding a session is killed (SIGKILL) or stopped (SIGTERM, sessions
  released), and the first request for the session at the other instance is timed until its
  answer (the new child's start included).

Writes bench/results-cluster.md. Usage: python bench/cluster.py --gateway .build/release/mcp-gateway
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, machine_line, own_cpu_seconds, percentile, wait_port  # noqa: E402

HERE = Path(__file__).resolve().parent
TINY = HERE / "tiny_child.awk"
SECRET = "bench-cluster-secret-0123456789abcdefghij"
def compact(message: dict) -> bytes:
    """JSON without spaces: the minimal awk child reads ids with a plain pattern."""
    return json.dumps(message, separators=(",", ":")).encode()


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}


class Instance:
    def __init__(self, gateway: str, work: Path, name: str, redis_port: int):
        self.gateway, self.work, self.name, self.redis_port = gateway, work, name, redis_port
        self.port = free_port()
        self.config = work / f"{name}.yaml"
        self.config.write_text(textwrap.dedent(f"""
        entryPoints:
          web: {{address: "127.0.0.1:{self.port}"}}
        publicURL: "http://127.0.0.1:{self.port}"
        store: {{redis: {{url: "redis://127.0.0.1:{redis_port}/0"}}}}
        cluster: {{advertiseURL: "http://127.0.0.1:{self.port}", secret: "{SECRET}", heartbeatTimeout: 3s}}
        log: {{level: warning, accessLog: false}}
        routers:
          tiny: {{rule: "PathPrefix(`/tiny`)", service: tiny, auth: none}}
          time: {{rule: "PathPrefix(`/time`)", service: time, auth: none}}
        services:
          tiny: {{stdio: {{command: "awk", args: ["-W", "interactive", "-f", "{TINY}"]}}}}
          time: {{stdio: {{command: "mcp-server-time", args: ["--local-timezone=UTC"]}}}}
        """))
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = open(self.work / f"{self.name}-{self.starts}.log", "wb")
        self.process = subprocess.Popen([self.gateway, "serve", "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.work)
        wait_port(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=40)


def initialize(client: httpx.Client, base: str, path: str) -> str:
    answer = client.post(base + path, content=compact(INIT), headers=HEADERS)
    answer.raise_for_status()
    session = answer.headers["mcp-session-id"]
    client.post(base + path, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**HEADERS, "Mcp-Session-Id": session})
    return session


def call(client: httpx.Client, base: str, path: str, session: str, id: int, tool: str = "ping") -> float:
    body = {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {} if tool == "ping" else {"timezone": "UTC"}}}
    started = time.perf_counter()
    answer = client.post(base + path, content=compact(body), headers={**HEADERS, "Mcp-Session-Id": session})
    elapsed = time.perf_counter() - started
    if answer.status_code != 200 or '"result"' not in answer.text:
        raise SystemExit(f"call failed: {answer.status_code} {answer.text[:200]}")
    return elapsed


def hop_round(a: Instance, b: Instance, calls: int) -> dict:
    results = {}
    with httpx.Client(timeout=30) as client:
        session = initialize(client, a.base, "/tiny/mcp")
        for _ in range(50):  # warm both paths (connections, caches)
            call(client, a.base, "/tiny/mcp", session, 2)
            call(client, b.base, "/tiny/mcp", session, 2)
        for label, target in (("local", a), ("forwarded", b)):
            cpu_before = own_cpu_seconds(a.process.pid) + own_cpu_seconds(b.process.pid)
            latencies = [call(client, target.base, "/tiny/mcp", session, 3 + i) for i in range(calls)]
            cpu = own_cpu_seconds(a.process.pid) + own_cpu_seconds(b.process.pid) - cpu_before
            results[label] = {"p50": percentile(latencies, 0.5) * 1000, "p99": percentile(latencies, 0.99) * 1000, "cpu_us": cpu / calls * 1e6}
        client.delete(a.base + "/tiny/mcp", headers={**HEADERS, "Mcp-Session-Id": session})
    return results


def takeover(a: Instance, b: Instance, path: str, tool: str, sig: int) -> float:
    with httpx.Client(timeout=60) as client:
        session = initialize(client, a.base, path)
        call(client, a.base, path, session, 2, tool)
        a.stop(sig)
        started = time.perf_counter()
        call(client, b.base, path, session, 3, tool)
        took = time.perf_counter() - started
        client.delete(b.base + path, headers={**HEADERS, "Mcp-Session-Id": session})
    a.start()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--takeovers", type=int, default=7)
    parser.add_argument("--output", default=str(HERE / "results-cluster.md"))
    args = parser.parse_args()
    args.gateway = str(Path(args.gateway).resolve())
    if not shutil.which("mcp-server-time"):
        raise SystemExit("mcp-server-time is not on PATH (run through `just bench-cluster`)")

    work = Path(tempfile.mkdtemp(prefix="mcpgw-bench-cluster-"))
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    wait_port(redis_port)
    a, b = Instance(args.gateway, work, "a", redis_port), Instance(args.gateway, work, "b", redis_port)
    try:
        a.start()
        b.start()
        rounds = [hop_round(a, b, args.calls) for _ in range(args.rounds)]
        kill_tiny = [takeover(a, b, "/tiny/mcp", "ping", signal.SIGKILL) for _ in range(args.takeovers)]
        kill_time = [takeover(a, b, "/time/mcp", "get_current_time", signal.SIGKILL) for _ in range(args.takeovers)]
        term_time = [takeover(a, b, "/time/mcp", "get_current_time", signal.SIGTERM) for _ in range(args.takeovers)]
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)
        redis.terminate()
        redis.wait()

    def median(label: str, key: str) -> float:
        return statistics.median(r[label][key] for r in rounds)

    lines = [
        "# Several instances: the forwarding hop and session takeover",
        "",
        f"`bench/cluster.py` ({machine_line()}): two instances on one redis-server, loopback, "
        f"a session-based client at c=1; {args.calls} tools/call per path per round, {args.rounds} interleaved rounds (medians of the rounds; "
        "each round's figures below). CPU is both gateway processes' own, children excluded.",
        "",
        "| path | p50 ms | p99 ms | gateway CPU per call µs |",
        "|---|---|---|---|",
        f"| local (the instance holding the session) | {median('local', 'p50'):.3f} | {median('local', 'p99'):.3f} | {median('local', 'cpu_us'):.0f} |",
        f"| forwarded (the other instance, one hop) | {median('forwarded', 'p50'):.3f} | {median('forwarded', 'p99'):.3f} | {median('forwarded', 'cpu_us'):.0f} |",
        f"| **hop cost** | **+{median('forwarded', 'p50') - median('local', 'p50'):.3f}** | | **+{median('forwarded', 'cpu_us') - median('local', 'cpu_us'):.0f}** |",
        "",
        "Rounds (local p50 / forwarded p50 ms, local / forwarded CPU µs): "
        + "; ".join(f"{r['local']['p50']:.3f} / {r['forwarded']['p50']:.3f}, {r['local']['cpu_us']:.0f} / {r['forwarded']['cpu_us']:.0f}" for r in rounds),
        "",
        "## Takeover",
        "",
        "From sending the first request for the session to the other instance, right after the instance holding it stopped, "
        f"to its answer: the new child started, the recorded initialize replayed, the call answered ({args.takeovers} runs each).",
        "",
        "| how the instance went | child | p50 ms | min ms | max ms |",
        "|---|---|---|---|---|",
        f"| SIGKILL (taken for gone: its connection is refused) | awk (minimal) | {statistics.median(kill_tiny) * 1000:.0f} | {min(kill_tiny) * 1000:.0f} | {max(kill_tiny) * 1000:.0f} |",
        f"| SIGKILL | mcp-server-time (Python SDK) | {statistics.median(kill_time) * 1000:.0f} | {min(kill_time) * 1000:.0f} | {max(kill_time) * 1000:.0f} |",
        f"| SIGTERM (sessions released) | mcp-server-time (Python SDK) | {statistics.median(term_time) * 1000:.0f} | {min(term_time) * 1000:.0f} | {max(term_time) * 1000:.0f} |",
        "",
    ]
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
