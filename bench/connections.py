"""Connections at scale: one gateway instance holding tens of thousands of open client connections
(idle keep-alive, open GET/SSE streams of sessions, WebSocket sessions) while active clients keep
calling tools through it. Reports the gateway's RSS per held connection of each kind, the
descriptor limit the gateway raised itself to (from its log), active clients' req/s and p50 before
and while the connections are held, and whether every held connection still works at the end.

Not part of CI. Every held connection is a descriptor of the gateway (a stream also holds one
towards its upstream) and of this client: the counts must fit the hard descriptor limit of both
processes. The gateway is started with a soft limit of 1024 and the hard limit this process has
(raising a hard limit takes CAP_SYS_RESOURCE), so the raise to the hard limit is the gateway's own
doing and its log says so.
Client connections come from several loopback source addresses (127.0.0.2, .3, ...): one source
address has only ~28 000 ephemeral ports towards one listening port.

Writes bench/results-connections.md. Usage:
    python bench/connections.py --gateway .build/release/mcp-gateway [--idle 40000 --sse 5000 --websocket 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, machine_line, open_descriptors as fds, own_cpu_split, rss_kib, run_wrk, stop_all, tree_cpu_seconds, wait_port  # noqa: E402
from http_proxy import CANNED, start_nginx  # noqa: E402

PER_SOURCE_ADDRESS = 20_000
OPENING_AT_ONCE = 256
TOOLS_CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}})

# A session-based (2025-06-18) upstream that holds GET streams open: asyncio, no framework, so
# that it holds thousands of streams in little memory.
SESSION_UPSTREAM = r'''
import asyncio, itertools, json, sys

counter = itertools.count(1)

async def handle(reader, writer):
    streams = []
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ")[0]
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "GET":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
                while True:
                    await asyncio.sleep(20)
                    event = b": keep-alive\n\n"
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
            message = json.loads(body or b"{}")
            if "id" not in message:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                continue
            extra = b""
            if message.get("method") == "initialize":
                result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "held", "version": "1"}}
                extra = b"Mcp-Session-Id: s-%d\r\n" % next(counter)
            elif message.get("method") == "server/discover":
                answer = json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "Method not found"}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                continue
            else:
                result = {}
            answer = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(answer), answer))
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


class Held:
    """One open client connection and how to check it still works."""

    def __init__(self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.kind, self.reader, self.writer = kind, reader, writer
        self.closed = False
        self.watcher: asyncio.Task | None = None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
    body = await reader.readexactly(int(headers["content-length"])) if "content-length" in headers else b""
    return status, headers, body


def post(path: str, port: int, body: str, extra: str = "", version: str = "2025-06-18") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {version}\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


# A 2026-07-28 call as wrk sends it (bench/tools_call.lua): taken by the fast relay.
MODERN = ("2026-07-28", "Mcp-Method: tools/call\r\nMcp-Name: echo\r\n")


async def connect(port: int, index: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    source = f"127.0.0.{2 + index // PER_SOURCE_ADDRESS}"
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), limit=1 << 16)


async def open_idle(port: int, index: int, modern: bool = False) -> Held:
    reader, writer = await connect(port, index)
    writer.write(post("/bench/mcp", port, TOOLS_CALL, MODERN[1], MODERN[0]) if modern else post("/bench/mcp", port, TOOLS_CALL))
    status, _, _ = await read_response(reader)
    if status != 200:
        raise RuntimeError(f"idle connection: tools/call answered {status}")
    return Held("idle", reader, writer)


async def open_idle_modern(port: int, index: int) -> Held:
    return await open_idle(port, index, modern=True)


INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "held", "version": "1"}}})


async def watch_stream(held: Held) -> None:
    try:
        while await held.reader.read(4096):
            pass
    except (ConnectionError, asyncio.CancelledError):
        pass
    held.closed = True


async def open_sse(port: int, index: int, own_connection: bool = False) -> Held:
    reader, writer = await connect(port, index)
    writer.write(post("/held/mcp", port, INITIALIZE))
    status, headers, _ = await read_response(reader)
    if status != 200 or "mcp-session-id" not in headers:
        raise RuntimeError(f"initialize answered {status}")
    session = headers["mcp-session-id"]
    writer.write(post("/held/mcp", port, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), f"Mcp-Session-Id: {session}\r\n"))
    status, _, _ = await read_response(reader)
    if status != 202:
        raise RuntimeError(f"notifications/initialized answered {status}")
    if own_connection:
        # A client whose POST connection is busy (or that keeps its stream apart) opens the GET on
        # a connection of its own.
        writer.close()
        reader, writer = await connect(port, index)
    writer.write(
        f"GET /held/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nMcp-Session-Id: {session}\r\n\r\n".encode()
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    if not head.startswith("HTTP/1.1 200"):
        raise RuntimeError(f"GET stream answered {head.splitlines()[0]}")
    held = Held("sse", reader, writer)
    held.watcher = asyncio.create_task(watch_stream(held))
    return held


async def open_sse_own(port: int, index: int) -> Held:
    return await open_sse(port, index, own_connection=True)


# A WebSocket client of its own (RFC 6455, client frames masked): the bench venv needs no package.
def ws_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    header = bytes([0x80 | opcode])
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 65536:
        header += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


async def ws_watch(held: Held, answers: asyncio.Queue) -> None:
    """Answers the gateway's pings and hands text frames to whoever waits for them."""
    try:
        while True:
            opcode, payload = await ws_read(held.reader)
            if opcode == 0x9:
                held.writer.write(ws_frame(0xA, payload))
            elif opcode == 0x1:
                await answers.put(payload)
            elif opcode == 0x8:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    held.closed = True


async def ws_call(held: Held, message: dict, timeout: float = 30) -> dict:
    held.writer.write(ws_frame(0x1, json.dumps(message).encode()))
    while True:
        answer = json.loads(await asyncio.wait_for(held.answers.get(), timeout))
        if answer.get("id") == message["id"]:
            return answer


async def open_websocket(port: int, index: int) -> Held:
    reader, writer = await connect(port, index)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /held/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n".encode()
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    if not head.startswith("HTTP/1.1 101"):
        raise RuntimeError(f"WebSocket upgrade answered {head.splitlines()[0]}")
    held = Held("websocket", reader, writer)
    held.answers = asyncio.Queue()
    held.watcher = asyncio.create_task(ws_watch(held, held.answers))
    answer = await ws_call(held, json.loads(INITIALIZE))
    if "result" not in answer:
        raise RuntimeError(f"initialize over WebSocket: {answer}")
    held.writer.write(ws_frame(0x1, b'{"jsonrpc":"2.0","method":"notifications/initialized"}'))
    return held


async def open_many(kind: str, opener, port: int, first_index: int, count: int) -> tuple[list[Held], list[str]]:
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    failures: list[str] = []

    async def one(index: int) -> Held | None:
        async with gate:
            try:
                return await asyncio.wait_for(opener(port, index), 60)
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                failures.append(f"{kind}: {type(error).__name__}: {error}")
                return None

    opened = await asyncio.gather(*(one(first_index + i) for i in range(count)))
    return [held for held in opened if held is not None], failures


async def still_working(held: Held, port: int) -> bool:
    """The connection still answers: a tools/call on an idle one, an open stream, a ping over WebSocket."""
    if held.closed:
        return False
    try:
        if held.kind == "idle":
            held.writer.write(post("/bench/mcp", port, TOOLS_CALL))
            status, _, _ = await asyncio.wait_for(read_response(held.reader), 30)
            return status == 200
        if held.kind == "websocket":
            answer = await ws_call(held, {"jsonrpc": "2.0", "id": 99, "method": "ping"})
            return "result" in answer
        return not held.closed
    except Exception:  # noqa: BLE001 - a broken connection is what this counts
        return False


async def open_idle_floor(port: int, index: int) -> Held:
    """A keep-alive connection to the SwiftNIO floor after one request (an unknown session: 404)."""
    reader, writer = await connect(port, index)
    writer.write(post("/mcp", port, TOOLS_CALL, "Mcp-Session-Id: none\r\n"))
    status, _, _ = await read_response(reader)
    if status != 404:
        raise RuntimeError(f"floor connection: answered {status}")
    return Held("floor", reader, writer)


def measure_floor(binary: Path, count: int, hard_limit: int, loop: asyncio.AbstractEventLoop) -> tuple[int, int, int, int] | None:
    """RSS of a bare SwiftNIO HTTP/1 server (bench/NIOFloor --mode stdio: NIOHTTP1's server pipeline and
    one handler, nothing of Hummingbird's or the gateway's) before and after `count` idle keep-alive
    connections, each after one request: what SwiftNIO itself holds per connection."""
    if not binary.exists():
        print(f"no {binary} (swift build -c release --product NIOFloor): the SwiftNIO floor is not measured", file=sys.stderr)
        return None
    port = free_port()
    floor = subprocess.Popen(["prlimit", f"--nofile={hard_limit}:{hard_limit}", "--", str(binary), "--listen", str(port), "--mode", "stdio",
                              "--child", "/bin/true"], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        before = settle_rss(floor.pid)
        held, _ = loop.run_until_complete(open_many("floor", open_idle_floor, port, 0, count))
        after = settle_rss(floor.pid)
        for connection in held:
            connection.writer.close()
        loop.run_until_complete(asyncio.sleep(0.1))
        return count, len(held), before, after
    finally:
        stop_all([floor])


def settle_rss(pid: int) -> int:
    """RSS once it stops moving (allocations of the last connections made, no load running)."""
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def wrk_rounds(url: str, seconds: int, rounds: int, gateway_pid: int, other_pids: list[int], profile: Path | None = None) -> dict:
    """`rounds` wrk runs of the active clients: medians of req/s, p50, p99, the gateway's own CPU
    per request (user and system) and the CPU the other servers (the upstreams) used meanwhile;
    errors summed; each run's p50. The CPU tells a gateway doing more per request from one given
    less of the machine. With `profile`, the first run is also sampled there by `perf record`."""
    runs = []
    for index in range(max(1, rounds)):
        (user_before, system_before), others_before = own_cpu_split(gateway_pid), tree_cpu_seconds(other_pids)
        recorder = None
        if profile is not None and index == 0:
            recorder = subprocess.Popen(
                ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-p", str(gateway_pid), "-o", str(profile), "--", "sleep", str(max(1, seconds - 1))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        run = run_wrk(url, 16, seconds, HERE / "tools_call.lua")
        if recorder is not None:
            recorder.wait()
        user_after, system_after = own_cpu_split(gateway_pid)
        run["cpu_us"] = (user_after + system_after - user_before - system_before) / max(1, run["requests"]) * 1e6
        run["system_us"] = (system_after - system_before) / max(1, run["requests"]) * 1e6
        run["others_s"] = tree_cpu_seconds(other_pids) - others_before
        runs.append(run)
    return {
        "rps": statistics.median(run["rps"] for run in runs), "p50": statistics.median(run["p50"] for run in runs),
        "p99": statistics.median(run["p99"] for run in runs), "errors": sum(run["errors"] for run in runs),
        "p50s": [run["p50"] for run in runs], "cpu_us": statistics.median(run["cpu_us"] for run in runs),
        "system_us": statistics.median(run["system_us"] for run in runs),
        "others_s": statistics.median(run["others_s"] for run in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    parser.add_argument("--idle", type=int, default=5_000, help="idle connections after a 2025-06-18 call without a session")
    parser.add_argument("--idle-relayed", type=int, default=5_000, help="idle connections after a 2026-07-28 call")
    parser.add_argument("--sse", type=int, default=1_500, help="GET streams on the connection that initialized the session")
    parser.add_argument("--sse-own", type=int, default=1_500, help="GET streams on a connection of their own")
    parser.add_argument("--websocket", type=int, default=1_500)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs before and while held (medians: one run's p50 varies by more than 10 %)")
    parser.add_argument("--output", default=str(HERE / "results-connections.md"))
    parser.add_argument("--profile", default="", help="a directory: `perf record` the gateway in the first wrk run of each phase (before.data, held.data, after.data)")
    parser.add_argument("--floor", default="", help="the NIOFloor binary (default: next to --gateway, when built there)")
    args = parser.parse_args()
    total = args.idle + args.idle_relayed + args.sse + args.sse_own + args.websocket
    # A stream and a WebSocket session each also hold the session's stream to the upstream.
    gateway_needs, client_needs = total + args.sse + args.sse_own + args.websocket + 600, total + 200
    if max(gateway_needs, client_needs) > hard_limit:
        raise SystemExit(
            f"{total} connections need {gateway_needs} descriptors in the gateway and {client_needs} here; the hard limit is {hard_limit} "
            "(raise it with `ulimit -Hn` as root with CAP_SYS_RESOURCE, or ask for fewer)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard_limit, hard_limit))

    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-connections-"))
    started: list[subprocess.Popen] = []
    report: list[str] = []
    try:
        upstream, upstream_port = start_nginx(
            "upstream", f"server {{ listen 127.0.0.1:PORT; location / {{ default_type application/json; return 200 '{CANNED}'; }} }}", workdir
        )
        started.append(upstream)
        held_port = free_port()
        (workdir / "held_upstream.py").write_text(SESSION_UPSTREAM)
        started.append(subprocess.Popen([sys.executable, str(workdir / "held_upstream.py"), str(held_port)]))
        wait_port(held_port)

        gateway_port = free_port()
        config = workdir / "gateway.yaml"
        config.write_text(textwrap.dedent(f"""
            entryPoints:
              web:
                address: "127.0.0.1:{gateway_port}"
                idleTimeout: 30m
            publicURL: "http://127.0.0.1:{gateway_port}"
            log:
              level: info
              accessLog: false
            limits:
              connections: {total + 64}
              webSocketSessions: {max(1, args.websocket)}
            routers:
              bench:
                rule: "PathPrefix(`/bench`)"
                service: bench
                auth: none
              held:
                rule: "PathPrefix(`/held`)"
                service: held
                auth: none
            services:
              bench:
                http:
                  url: "http://127.0.0.1:{upstream_port}/mcp"
              held:
                http:
                  url: "http://127.0.0.1:{held_port}/mcp"
        """))
        log_path = workdir / "gateway.log"
        gateway = subprocess.Popen(
            ["prlimit", f"--nofile=1024:{hard_limit}", "--", args.gateway, "serve", "--config", str(config)], stderr=open(log_path, "wb")
        )
        started.append(gateway)
        wait_port(gateway_port)
        pid = gateway.pid  # prlimit execs the gateway: same process
        url = f"http://127.0.0.1:{gateway_port}/bench/mcp"
        log_text = log_path.read_text()
        raised = re.search(r"from=(\d+) to=(\d+) .*file descriptor limit raised", log_text)
        gate_line = re.search(r"connections=(\d+) .*connection limit", log_text)

        def profile_path(phase: str) -> Path | None:
            if not args.profile:
                return None
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            return Path(args.profile) / f"{phase}.data"

        run_wrk(url, 16, 2, HERE / "tools_call.lua")  # warm-up
        before = wrk_rounds(url, args.seconds, args.rounds, pid, [p.pid for p in started[:2]], profile_path("before"))
        fds_before = fds(pid)
        print(f"active before: {before['rps']:.0f} req/s p50 {before['p50']:.3f} ms errors {before['errors']}", flush=True)

        loop = asyncio.new_event_loop()
        rows = []
        everything: list[Held] = []
        failures: list[str] = []
        rss_start = settle_rss(pid)
        rss_now, index = rss_start, 0
        for kind, opener, count in (("idle keep-alive after a relayed 2026-07-28 call", open_idle_modern, args.idle_relayed), ("idle keep-alive after a 2025-06-18 call", open_idle, args.idle), ("GET/SSE stream of a session, on the connection that initialized it", open_sse, args.sse), ("GET/SSE stream of a session, on a connection of its own", open_sse_own, args.sse_own), ("WebSocket session", open_websocket, args.websocket)):
            if count == 0:
                continue
            began = time.monotonic()
            held, failed = loop.run_until_complete(open_many(kind, opener, gateway_port, index, count))
            index += count
            seconds = time.monotonic() - began
            everything += held
            failures += failed
            rss_after = settle_rss(pid)
            per = (rss_after - rss_now) / max(1, len(held))
            rows.append((kind, count, len(held), seconds, rss_now, rss_after, per))
            print(f"{kind}: {len(held)}/{count} open in {seconds:.1f} s, RSS {rss_now / 1024:.1f} → {rss_after / 1024:.1f} MiB, {per:.1f} KiB each, gateway fds {fds(pid)}", flush=True)
            rss_now = rss_after

        during = wrk_rounds(url, args.seconds, args.rounds, pid, [p.pid for p in started[:2]], profile_path("held"))
        print(f"active while held: {during['rps']:.0f} req/s p50 {during['p50']:.3f} ms errors {during['errors']}", flush=True)
        gateway_fds = fds(pid)

        async def check_all() -> dict[str, list[int]]:
            gate = asyncio.Semaphore(OPENING_AT_ONCE)
            tally: dict[str, list[int]] = {}

            async def one(held: Held) -> None:
                async with gate:
                    ok = await still_working(held, gateway_port)
                tally.setdefault(held.kind, [0, 0])[0 if ok else 1] += 1

            await asyncio.gather(*(one(held) for held in everything))
            return tally

        tally = loop.run_until_complete(check_all())
        print(f"still working at the end: {tally}", flush=True)
        for held in everything:
            if held.watcher:
                held.watcher.cancel()
            held.writer.close()
        loop.run_until_complete(asyncio.sleep(0.1))
        # The same active load once the held connections are gone: whether a p50 change comes with
        # the connections being open, or stays with what opening them left behind (a grown heap,
        # the machine's state) — one run's p50 varies more than the 10 % target on its own.
        released_by = time.monotonic() + 60
        while fds(pid) > fds_before + 64 and time.monotonic() < released_by:
            time.sleep(0.2)
        rss_released = settle_rss(pid)
        after = wrk_rounds(url, args.seconds, args.rounds, pid, [p.pid for p in started[:2]], profile_path("after"))
        print(f"active after release: {after['rps']:.0f} req/s p50 {after['p50']:.3f} ms errors {after['errors']}, RSS {rss_released / 1024:.1f} MiB", flush=True)
        floor = measure_floor(Path(args.floor) if args.floor else Path(args.gateway).resolve().parent / "NIOFloor",
                              max(1, args.idle_relayed), hard_limit, loop)

        total_open = sum(row[2] for row in rows)
        overall = (rss_now - rss_start) / max(1, total_open)
        p50_change = (during["p50"] / before["p50"] - 1) * 100
        report += [
            "# Connections at scale",
            "",
            f"Measured {machine_line()}. One gateway (release build, `idleTimeout: 30m`, access log off), "
            f"started with descriptor limits soft 1024 / hard {hard_limit} (this machine's hard limit; CAP_SYS_RESOURCE, needed to raise it, is not granted here); upstreams: nginx answering a canned tools/call result "
            "(active load, idle connections) and a minimal asyncio session-based (2025-06-18) server that holds GET streams "
            "(streams and WebSocket sessions). Held connections come from one asyncio client process (`bench/connections.py`), "
            f"{OPENING_AT_ONCE} opening at a time; each idle connection made one tools/call first, each stream is a session's GET "
            "after initialize (on the connection that initialized it, or on one of its own), each WebSocket session initialized over its socket. Active load: wrk, c=16, "
            f"{args.seconds} s × {args.rounds} runs before, while held and after they closed (medians), tools/call through the fast relay. RSS after it settles.",
            "",
            "Gateway log: " + (f"file descriptor limit raised from {raised.group(1)} to {raised.group(2)}" if raised else "no descriptor-limit line")
            + (f"; connection limit {gate_line.group(1)} (`limits.connections`, set by the bench to the count it opens)" if gate_line else "") + ".",
            "",
            "| held connections | asked | open | seconds to open | gateway RSS before | after | per connection |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for kind, count, opened, seconds, rss_before, rss_after, per in rows:
            report.append(f"| {kind} | {count} | {opened} | {seconds:.1f} | {rss_before / 1024:.1f} MiB | {rss_after / 1024:.1f} MiB | {per:.1f} KiB |")
        report += [
            f"| **all** | {total} | {total_open} | | {rss_start / 1024:.1f} MiB | {rss_now / 1024:.1f} MiB | **{overall:.1f} KiB** |",
            "",
            f"Gateway descriptors while held: {gateway_fds}. Failures while opening: {len(failures)}"
            + (f" (first: {failures[0]})" if failures else "") + ".",
            "",
            "| active clients (wrk c=16) | req/s | p50 ms | p99 ms | errors | gateway CPU per request | upstreams' CPU per run |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| before | {before['rps']:.0f} | {before['p50']:.3f} | {before['p99']:.3f} | {before['errors']} | {before['cpu_us']:.1f} µs ({before['system_us']:.1f} system) | {before['others_s']:.2f} s |",
            f"| while {total_open} connections are held | {during['rps']:.0f} | {during['p50']:.3f} | {during['p99']:.3f} | {during['errors']} | {during['cpu_us']:.1f} µs ({during['system_us']:.1f} system) | {during['others_s']:.2f} s |",
            f"| after they closed (gateway RSS {rss_released / 1024:.1f} MiB) | {after['rps']:.0f} | {after['p50']:.3f} | {after['p99']:.3f} | {after['errors']} | {after['cpu_us']:.1f} µs ({after['system_us']:.1f} system) | {after['others_s']:.2f} s |",
            "",
            "Still working at the end (a tools/call on each idle connection, each stream still open, a ping over each WebSocket): "
            + ", ".join(f"{kind} {ok} ok / {bad} broken" for kind, (ok, bad) in sorted(tally.items())) + ".",
            "",
        ]
        if floor:
            asked, opened, floor_before, floor_after = floor
            report += [
                "## The SwiftNIO floor",
                "",
                f"A bare SwiftNIO HTTP/1 server (bench/NIOFloor `--mode stdio`: NIOHTTP1's server pipeline and one handler, "
                f"{os.cpu_count()} event loops, nothing of Hummingbird's or the gateway's) holding {opened} of {asked} idle keep-alive "
                f"connections, each after one request: RSS {floor_before / 1024:.1f} → {floor_after / 1024:.1f} MiB, "
                f"**{(floor_after - floor_before) / max(1, opened):.1f} KiB** per connection.",
                "",
            ]
        report += [
            "## Against the targets",
            "",
            f"- {total_open} of {total} connections held with {overall:.1f} KiB of gateway RSS each (target: 50 000 with ≤ 20 KiB each): "
            + ("**met**." if total_open >= 50_000 and overall <= 20 and not failures else "**not met**."),
            f"- Active clients' p50 {before['p50']:.3f} → {during['p50']:.3f} ms ({p50_change:+.1f} %; target within 10 %; medians of {args.rounds} runs each: "
            f"{', '.join(f'{x:.3f}' for x in before['p50s'])} before, {', '.join(f'{x:.3f}' for x in during['p50s'])} while held, "
            f"{', '.join(f'{x:.3f}' for x in after['p50s'])} after they closed: {(after['p50'] / before['p50'] - 1) * 100:+.1f} % on before), "
            f"errors {during['errors']}: " + ("**met**." if p50_change <= 10 and during["errors"] == 0 else "**not met**."),
            "",
        ]
    finally:
        stop_all(started, quit_signal_for=tuple(started[:1]))
    text = "\n".join(report)
    print(text)
    Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
