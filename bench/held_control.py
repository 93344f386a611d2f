"""The control for bench/connections.py's active clients: the same wrk load (c=16, tools/call)
through nginx `proxy_pass` and through the bare SwiftNIO HTTP/1 relay (bench/NIOFloor `--mode
http`), before, while and after N idle keep-alive connections are held on it (each after one
request). If they slow down as much as the gateway does, what the held connections cost the
active clients is this machine's (its kernel, its caches), not the gateway's.

Prints, per server and phase: req/s, p50, and the server's own CPU per request (user and system),
medians of `--rounds` runs of 8 s.

Usage: bench/held_control.py [--connections 10000] [--rounds 5] [--floor .build/release/NIOFloor]
"""
import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import connections as cx  # noqa: E402
from common import free_port, open_descriptors, rss_kib, stop_all, wait_port  # noqa: E402
from http_proxy import CANNED, nginx_config, start_nginx  # noqa: E402


def nginx_proxy(workdir: Path, upstream_port: int) -> tuple[subprocess.Popen, int, int]:
    """nginx `proxy_pass` with room for the held connections: (master, worker pid, port)."""
    port = free_port()
    prefix = workdir / "proxy"
    prefix.mkdir()
    conf = nginx_config(prefix, port, f"""
        keepalive_timeout 30m;
        upstream mcp {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
        server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://mcp; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
    """, worker_connections=16_000)
    master = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)])
    wait_port(port)
    deadline = time.monotonic() + 10
    while True:
        children = subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True).stdout.split()
        if children or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not children:
        raise SystemExit("nginx started no worker")
    return master, int(children[0]), port


def measure(name: str, pid: int, port: int, upstream: subprocess.Popen, count: int, rounds: int) -> None:
    url = f"http://127.0.0.1:{port}/bench/mcp"
    cx.run_wrk(url, 16, 2, cx.HERE / "tools_call.lua")  # warm-up

    def phase(label: str) -> None:
        result = cx.wrk_rounds(url, 8, rounds, pid, [upstream.pid])
        print(
            f"{name} {label}: {result['rps']:.0f} req/s, p50 {result['p50']:.3f} ms, {result['cpu_us']:.1f} µs CPU per request "
            f"({result['system_us']:.1f} system); p50s {', '.join(f'{x:.3f}' for x in result['p50s'])}",
            flush=True,
        )

    phase("before")
    loop = asyncio.new_event_loop()
    rss_before = rss_kib(pid)
    held, failed = loop.run_until_complete(cx.open_many("idle", cx.open_idle_modern, port, 0, count))
    print(f"{name}: {len(held)} of {count} held ({len(failed)} failed), RSS {rss_before / 1024:.1f} → {rss_kib(pid) / 1024:.1f} MiB", flush=True)
    phase(f"while {len(held)} are held")
    for connection in held:
        connection.writer.close()
    loop.run_until_complete(asyncio.sleep(0.5))
    deadline = time.monotonic() + 30
    while open_descriptors(pid) > 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    phase("after they closed")
    loop.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--floor", default=str(HERE.parent / ".build/release/NIOFloor"))
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (20_000, 20_000))
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-held-control-"))
    started: list[subprocess.Popen] = []
    try:
        upstream, upstream_port = start_nginx(
            "upstream", f"server {{ listen 127.0.0.1:PORT; location / {{ default_type application/json; return 200 '{CANNED}'; }} }}", workdir
        )
        started.append(upstream)
        master, worker, port = nginx_proxy(workdir, upstream_port)
        started.append(master)
        measure("nginx proxy_pass", worker, port, upstream, args.connections, args.rounds)
        stop_all([master])
        started.remove(master)
        if Path(args.floor).exists():
            port = free_port()
            floor = subprocess.Popen(
                ["prlimit", "--nofile=20000:20000", "--", args.floor, "--listen", str(port), "--upstream", str(upstream_port), "--mode", "http"],
                stdout=subprocess.DEVNULL,
            )
            started.append(floor)
            wait_port(port)
            measure("SwiftNIO HTTP/1 relay", floor.pid, port, upstream, args.connections, args.rounds)
        else:
            print(f"no {args.floor} (swift build -c release --product NIOFloor): the SwiftNIO relay is not measured", file=sys.stderr)
    finally:
        stop_all(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
