"""Soak: three instances on one Redis behind nginx round robin (no affinity), steady session-based
load on a stdio route and an HTTP route for `--minutes` (at least 10 for the report), RSS and open
file descriptors of each instance sampled every 10 s. Not part of CI.

Writes bench/results-cluster-soak.md. Usage: python bench/cluster_soak.py --gateway .build/release/mcp-gateway
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, machine_line, rss_kib, wait_port  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = HERE / "tiny_child.awk"
UPSTREAM = REPO / "Tests" / "integration" / "servers" / "mcp_http_server.py"
SECRET = "bench-cluster-secret-0123456789abcdefghij"
def compact(message: dict) -> bytes:
    """JSON without spaces: the minimal awk child reads ids with a plain pattern."""
    return json.dumps(message, separators=(",", ":")).encode()


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}}


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--output", default=str(HERE / "results-cluster-soak.md"))
    args = parser.parse_args()
    args.gateway = str(Path(args.gateway).resolve())
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="mcpgw-soak-"))
    processes: list[subprocess.Popen] = []
    redis_port, upstream_port, front_port = free_port(), free_port(), free_port()
    processes.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work))
    processes.append(subprocess.Popen([sys.executable, str(UPSTREAM), "--port", str(upstream_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work))
    wait_port(redis_port)
    wait_port(upstream_port)
    instances = []
    for name in "abc":
        port = free_port()
        config = work / f"{name}.yaml"
        config.write_text(textwrap.dedent(f"""
        entryPoints:
          web: {{address: "127.0.0.1:{port}"}}
        publicURL: "http://127.0.0.1:{port}"
        store: {{redis: {{url: "redis://127.0.0.1:{redis_port}/0"}}}}
        cluster: {{advertiseURL: "http://127.0.0.1:{port}", secret: "{SECRET}"}}
        log: {{level: warning, accessLog: false}}
        routers:
          tiny: {{rule: "PathPrefix(`/tiny`)", service: tiny, auth: none}}
          notes: {{rule: "PathPrefix(`/notes`)", service: notes, auth: none}}
        services:
          tiny: {{stdio: {{command: "awk", args: ["-W", "interactive", "-f", "{TINY}"]}}}}
          notes: {{http: {{url: "http://127.0.0.1:{upstream_port}/mcp"}}}}
        """))
        process = subprocess.Popen([args.gateway, "serve", "--config", str(config)], stdout=open(work / f"{name}.log", "wb"), stderr=subprocess.STDOUT, cwd=work)
        processes.append(process)
        wait_port(port)
        instances.append((name, port, process))
    servers = "\n".join(f"server 127.0.0.1:{port} max_fails=0;" for _, port, _ in instances)
    (work / "nginx.conf").write_text(f"""
daemon off; pid {work}/nginx.pid; error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f; uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
  upstream gw {{ {servers} keepalive 16; }}
  server {{ listen 127.0.0.1:{front_port};
    location / {{ proxy_pass http://gw; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; proxy_buffering off; }} }}
}}""")
    processes.append(subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)], cwd=work))
    wait_port(front_port)
    front = f"http://127.0.0.1:{front_port}"

    stop = threading.Event()
    counts = {"ok": 0, "failed": 0, "sessions": 0}
    lock = threading.Lock()

    def worker(index: int) -> None:
        path = "/tiny/mcp" if index % 2 == 0 else "/notes/mcp"
        tool = {"name": "ping", "arguments": {}} if path == "/tiny/mcp" else {"name": "echo", "arguments": {"text": "soak"}}
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                # A session of 200 calls, then DELETE and a new one: sessions come and go as in use.
                answer = client.post(front + path, content=compact(INIT), headers=HEADERS)
                session = answer.headers.get("mcp-session-id")
                if answer.status_code != 200 or not session:
                    with lock:
                        counts["failed"] += 1
                    continue
                with lock:
                    counts["sessions"] += 1
                for call in range(200):
                    if stop.is_set():
                        break
                    body = {"jsonrpc": "2.0", "id": call + 2, "method": "tools/call", "params": tool}
                    reply = client.post(front + path, content=compact(body), headers={**HEADERS, "Mcp-Session-Id": session})
                    with lock:
                        counts["ok" if reply.status_code == 200 and '"result"' in reply.text else "failed"] += 1
                client.delete(front + path, headers={**HEADERS, "Mcp-Session-Id": session})

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.workers)]
    for thread in threads:
        thread.start()
    samples = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.minutes * 60:
            with lock:
                done = dict(counts)
            samples.append((time.monotonic() - started, done, [(name, rss_kib(p.pid), fds(p.pid)) for name, _, p in instances]))
            print(f"{samples[-1][0]:6.0f}s {done} " + " ".join(f"{n}: {r} KiB {f} fds" for n, r, f in samples[-1][2]), flush=True)
            time.sleep(10)  # the sampling interval
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    warm = [s for s in samples if s[0] >= 60] or samples
    lines = [
        "# Soak: three instances behind nginx round robin",
        "",
        f"`bench/cluster_soak.py` ({machine_line()}): {args.minutes:g} minutes, {args.workers} workers "
        "(half on a stdio route with a minimal awk child, half on an HTTP route to a Python SDK server), each running sessions of "
        "200 tools/call then DELETE, through nginx round robin without affinity (so most requests are forwarded to the instance "
        "holding their session). RSS and open descriptors of each instance every 10 s.",
        "",
        f"Calls answered: {counts['ok']}, failed: {counts['failed']}, sessions: {counts['sessions']}.",
        "",
        "| instance | RSS at 1 min KiB | RSS at end KiB | RSS min–max after 1 min | fds at 1 min | fds at end | fds min–max after 1 min |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, (name, _, _) in enumerate(instances):
        rss = [s[2][index][1] for s in warm]
        fd = [s[2][index][2] for s in warm]
        lines.append(f"| {name} | {rss[0]} | {rss[-1]} | {min(rss)}–{max(rss)} | {fd[0]} | {fd[-1]} | {min(fd)}–{max(fd)} |")
    lines += ["", "Samples (seconds: calls; per instance RSS KiB / fds):", ""]
    lines += [f"- {t:.0f}: {c['ok']} ok, {c['failed']} failed; " + ", ".join(f"{n} {r}/{f}" for n, r, f in per) for t, c, per in samples]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12 + len(instances)]))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
