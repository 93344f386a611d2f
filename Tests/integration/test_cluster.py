"""Several gateway instances on one Redis (`cluster:`): any instance serves any session, a session
whose instance is gone is taken over under the same id, a stopping instance hands its sessions
on, and a forged hop between instances is refused. Real parts: redis-server, nginx round-robin
without affinity, the official SDK clients, stdio children and an HTTP upstream."""

import json
import os
import re
import signal
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, types

from conftest import SERVERS, ManagedProcess, free_port, gateway_binary, modern_body, modern_headers, port_open, start_process, wait_until

# GatewayRedis: a connection that failed waits 50 ms, doubling up to this, before it tries again.
REDIS_MAX_BACKOFF = 2.0

STDIO_SERVER = str(SERVERS / "stdio_server.py")
RAW_STDIO_SERVER = str(SERVERS / "raw_stdio_server.py")
SECRET = "cluster-secret-for-tests-0123456789abcdef"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "cluster-test", "version": "1"}}}
LEGACY = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def cluster_config(port: int, redis_url: str, upstream: str, secret: str = SECRET, grace: str = "15s", modern: str = "") -> str:
    # A 2026-07-28-only HTTP upstream, when a test runs one: session-based clients are bridged.
    modern_router = f"""
      modern:
        rule: "PathPrefix(`/modern`)"
        service: modern
        auth: none""" if modern else ""
    modern_service = f"""
      modern:
        http:
          url: '{modern}'""" if modern else ""
    return textwrap.dedent(f"""
    entryPoints:
      web:
        address: "127.0.0.1:{port}"
    publicURL: "http://127.0.0.1:{port}"
    store:
      redis:
        url: "{redis_url}"
    cluster:
      advertiseURL: "http://127.0.0.1:{port}"
      secret: "{secret}"
      heartbeatTimeout: 3s
    shutdownGrace: {grace}
    log:
      accessLog: true
    routers:
      kit:
        rule: "PathPrefix(`/kit`)"
        service: kit
        auth: none
      notes:
        rule: "PathPrefix(`/notes`)"
        service: notes
        auth: none
      raw:
        rule: "PathPrefix(`/raw`)"
        service: raw
        auth: none{modern_router}
    services:{modern_service}
      raw:
        stdio:
          command: "{sys.executable}"
          args: ["{RAW_STDIO_SERVER}"]
      kit:
        stdio:
          command: "{sys.executable}"
          args: ["{STDIO_SERVER}"]
      notes:
        http:
          url: "{upstream}"
    """)


@dataclass
class Instance:
    name: str
    port: int
    config_path: Path
    managed: ManagedProcess | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.managed.log() if self.managed else ""


@dataclass
class Cluster:
    processes: list
    tmp_path: Path
    redis: object
    upstream: str
    instances: list[Instance] = field(default_factory=list)
    starts: int = 0
    modern: str = ""

    def add(self, name: str) -> Instance:
        port = free_port()
        path = self.tmp_path / f"{name}.yaml"
        path.write_text(cluster_config(port, self.redis.url, self.upstream, modern=self.modern))
        instance = Instance(name, port, path)
        self.instances.append(instance)
        self.start(instance)
        return instance

    def start(self, instance: Instance) -> None:
        self.starts += 1
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        argv = [gateway_binary(), "serve", "--config", str(instance.config_path)]
        instance.managed = start_process(f"{instance.name}-{self.starts}", argv, self.tmp_path, env={**os.environ, "PATH": path})
        self.processes.append(instance.managed)

        def ready():
            if instance.managed.process.poll() is not None:
                raise AssertionError(f"{instance.name} exited:\n{instance.log()}")
            return httpx.get(instance.base + "/readyz", timeout=1).status_code == 200

        wait_until(ready, what=f"{instance.name} ready")


@pytest.fixture
def cluster(processes, tmp_path, redis_server, mcp_upstream) -> Cluster:
    return Cluster(processes, tmp_path, redis_server, mcp_upstream)


def cluster_state(cluster: "Cluster", instance: Instance) -> str:
    """The instance's heartbeat record in Redis (says serving or draining)."""
    match = re.search(r"instance=([0-9a-f]{32}) .*mcp-gateway starting", instance.log())
    assert match, "the instance logs its id at start"
    return cluster.redis.cli("GET", f"mcpgw:instance:{match.group(1)}")


def initialize(base: str, path: str = "/kit/mcp") -> str:
    answer = httpx.post(base + path, json=INIT, headers=LEGACY, timeout=20)
    assert answer.status_code == 200, answer.text
    session = answer.headers["mcp-session-id"]
    done = httpx.post(base + path, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**LEGACY, "Mcp-Session-Id": session}, timeout=10)
    assert done.status_code == 202, done.text
    return session


def call(base: str, session: str, tool: str, arguments: dict, path: str = "/kit/mcp", id: int = 2, progress: bool = False) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    if progress:
        body["params"]["_meta"] = {"progressToken": f"p{id}"}
    return httpx.post(base + path, json=body, headers={**LEGACY, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}, timeout=20)


def result_text(response: httpx.Response) -> str:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        datas = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = [d for d in datas if '"result"' in d or '"error"' in d][-1]
    message = json.loads(text)
    assert "result" in message, message
    return message["result"]["content"][0]["text"]


def test_a_session_is_served_by_every_instance_and_its_child_stays_one(cluster):
    a, b = cluster.add("a"), cluster.add("b")
    session = initialize(a.base)
    owner_pid = result_text(call(a.base, session, "pid", {}))
    # Through the other instance: forwarded to the one holding the child, same process answers.
    for attempt in range(3):
        forwarded = call(b.base, session, "pid", {}, id=10 + attempt)
        assert forwarded.status_code == 200, forwarded.text
        assert result_text(forwarded) == owner_pid
    assert result_text(call(b.base, session, "echo", {"text": "über ✓"})) == "über ✓"
    # Progress streams through the hop as SSE, event by event. The connection closes after a
    # stream, and says so: a proxy in front keeping connections alive (nginx `keepalive`) would
    # otherwise send its next request on it and get no answer.
    with httpx.Client(base_url=b.base, headers={**LEGACY, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}, timeout=20) as kept:
        for attempt in range(3):
            counted = kept.post("/kit/mcp", json={"jsonrpc": "2.0", "id": 20 + attempt, "method": "tools/call", "params": {
                "name": "count", "arguments": {"steps": 3, "delay_seconds": 0.05}, "_meta": {"progressToken": f"p{attempt}"}}})
            assert counted.headers["content-type"].startswith("text/event-stream")
            assert counted.headers.get("connection") == "close", counted.headers
            assert counted.text.count("notifications/progress") == 3
            assert result_text(counted) == "counted 3"
            plain = kept.post("/kit/mcp", json={"jsonrpc": "2.0", "id": 30 + attempt, "method": "tools/call", "params": {"name": "pid", "arguments": {}}})
            assert result_text(plain) == owner_pid
    # DELETE through the other instance ends the session everywhere.
    assert httpx.delete(b.base + "/kit/mcp", headers={"Mcp-Session-Id": session}, timeout=10).status_code == 204
    assert call(a.base, session, "pid", {}).status_code == 404
    assert call(b.base, session, "pid", {}).status_code == 404


def test_a_killed_instance_s_session_is_taken_over_under_the_same_id(cluster):
    a, b = cluster.add("a"), cluster.add("b")
    session = initialize(a.base)
    first_pid = result_text(call(a.base, session, "pid", {}))
    os.kill(a.managed.pid, signal.SIGKILL)
    a.managed.process.wait(timeout=10)
    started = time.monotonic()
    answer = call(b.base, session, "pid", {})
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    new_pid = result_text(answer)
    assert new_pid != first_pid
    assert took < 10, f"takeover took {took:.1f}s"
    assert "session re-established on this instance" in b.log()
    # Served by the new child from now on, under the same id.
    assert result_text(call(b.base, session, "pid", {}, id=3)) == new_pid


def next_event_id(stream) -> str:
    """The id of the next event on an open SSE response."""
    event_id = None
    for line in stream.iter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:") and event_id:
            return event_id
    raise AssertionError("the stream ended without an event")


def test_a_broken_stream_resumes_through_another_instance_and_after_a_takeover(cluster):
    a, b = cluster.add("a"), cluster.add("b")
    session = initialize(a.base)
    headers = {**LEGACY, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}

    def first_event_of_a_count(id: str) -> str:
        body = {"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "count", "arguments": {"steps": 4, "delay_seconds": 0.3}, "_meta": {"progressToken": id}}}
        with httpx.stream("POST", a.base + "/kit/mcp", json=body, headers=headers, timeout=20) as stream:
            return next_event_id(stream)  # the connection drops after the first event

    # Resumed through b: forwarded to a, which replays what the dropped stream missed.
    resumed = httpx.get(b.base + "/kit/mcp", headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": first_event_of_a_count("c1")}, timeout=20)
    events = [json.loads(line[5:]) for line in resumed.text.splitlines() if line.startswith("data:")]
    assert [e["params"]["progress"] for e in events if e.get("method") == "notifications/progress"] == [2, 3, 4]
    assert events[-1]["id"] == "c1" and events[-1]["result"]["content"][0]["text"] == "counted 4"

    # a is gone mid-call: the stream resumes on b's new child, without the lost events, and the log says so.
    last = first_event_of_a_count("c2")
    os.kill(a.managed.pid, signal.SIGKILL)
    a.managed.process.wait(timeout=10)
    with httpx.stream("GET", b.base + "/kit/mcp", headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last}, timeout=20) as stream:
        assert stream.status_code == 200
    assert "resumes without the events sent before the takeover" in b.log()
    assert result_text(call(b.base, session, "echo", {"text": "still here"}, id=4)) == "still here"


def test_a_session_whose_child_crashed_is_over_on_every_instance(cluster):
    """Ended on its own (not with its instance): no other instance resurrects it."""
    a, b = cluster.add("a"), cluster.add("b")
    session = initialize(a.base)
    call(a.base, session, "crash", {})
    wait_until(lambda: call(a.base, session, "pid", {}, id=5).status_code == 404, what="the crashed session ends on a")
    # Even once a is gone too: the session's record went with its child.
    os.kill(a.managed.pid, signal.SIGKILL)
    a.managed.process.wait(timeout=10)
    assert call(b.base, session, "pid", {}, id=6).status_code == 404
    assert "session re-established" not in b.log()


def test_a_session_bridged_by_one_instance_is_served_through_another(cluster, processes, tmp_path):
    """The other instance's fast relay learns from the store that the session is bridged (not
    the upstream's own) and hands the request to its full pipeline, which sends it where the
    session is held: a request relayed as it is would reach a 2026-07-28-only upstream as a
    session-based one."""
    port = free_port()
    upstream = start_process("modern-http", [sys.executable, str(SERVERS / "modern_http_server.py"), "--port", str(port)], tmp_path)
    processes.append(upstream)
    wait_until(lambda: upstream.process.poll() is None and port_open(port), what="the 2026-07-28-only upstream")
    cluster.modern = f"http://127.0.0.1:{port}/mcp"
    a, b = cluster.add("a"), cluster.add("b")
    session = initialize(a.base, "/modern/mcp")
    assert "bridged to a 2026-07-28-only upstream" in a.log()
    assert result_text(call(a.base, session, "echo", {"text": "on a"}, path="/modern/mcp")) == "on a"
    for attempt in range(3):
        through_b = call(b.base, session, "echo", {"text": f"through b {attempt}"}, path="/modern/mcp", id=10 + attempt)
        assert through_b.status_code == 200, through_b.text
        assert result_text(through_b) == f"through b {attempt}"
    # Made up, or another router's: not found on either instance.
    assert call(b.base, "made-up-session", "echo", {"text": "x"}, path="/modern/mcp").status_code == 404
    assert call(b.base, session, "echo", {"text": "x"}, path="/notes/mcp").status_code == 404


def test_a_forged_or_altered_hop_is_refused(cluster):
    a = cluster.add("a")
    session = initialize(a.base)
    import base64
    import hashlib
    import hmac

    def hop(body: bytes, secret: str = SECRET, when: int | None = None, target: str = "/kit/mcp", identity: dict | None = None, sign_body: bytes | None = None):
        ident = base64.urlsafe_b64encode(json.dumps(identity or {"groups": [], "proto": "http"}).encode()).decode().rstrip("=")
        stamp = str(int(time.time()) if when is None else when)
        text = "\n".join(["mcp-gateway-hop-v1", "POST", target, session, stamp, ident, hashlib.sha256(sign_body if sign_body is not None else body).hexdigest()])
        signature = base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()
        headers = {**LEGACY, "Mcp-Session-Id": session, "mcp-gateway-hop-identity": ident, "mcp-gateway-hop-time": stamp, "mcp-gateway-hop-signature": signature}
        return httpx.post(a.base + target, content=body, headers=headers, timeout=10)

    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "pid", "arguments": {}}}).encode()
    # What a member of the cluster would send is served (the test knows the secret) ...
    assert hop(body).status_code == 200
    # ... but not under another secret, with an altered body, too old, or made up.
    assert hop(body, secret="another-secret-of-at-least-32-characters!").status_code == 403
    assert hop(body, sign_body=body.replace(b"pid", b"big")).status_code == 403
    assert hop(body, when=int(time.time()) - 120).status_code == 403
    made_up = httpx.post(a.base + "/kit/mcp", content=body, headers={**LEGACY, "Mcp-Session-Id": session, "mcp-gateway-hop-signature": "x"}, timeout=10)
    assert made_up.status_code == 403
    assert "cluster signature" in made_up.text


def test_a_stopping_instance_finishes_in_flight_calls_and_hands_its_sessions_on(cluster):
    a, b = cluster.add("a"), cluster.add("b")
    session = initialize(a.base)
    first_pid = result_text(call(a.base, session, "pid", {}))
    slow: dict = {}

    def slow_call():
        slow["answer"] = call(a.base, session, "count", {"steps": 4, "delay_seconds": 0.5}, id=7, progress=True)

    thread = threading.Thread(target=slow_call)
    thread.start()
    # Its answer's head is sent with the first progress event: the call is in flight on the child.
    wait_until(lambda: a.log().count("mcp_method=tools/call") >= 2, what="the slow call's first progress")
    a.managed.process.send_signal(signal.SIGTERM)
    # While a drains (the slow call keeps it), the session's new requests are served by the
    # instance that takes it over, whichever instance they reach.
    wait_until(lambda: "draining" in cluster_state(cluster, a), what="a marked draining")
    via_b = call(b.base, session, "pid", {}, id=20)
    assert via_b.status_code == 200, via_b.text
    taken_pid = result_text(via_b)
    assert taken_pid != first_pid
    via_a = call(a.base, session, "pid", {}, id=21)
    assert via_a.status_code == 200, via_a.text
    assert result_text(via_a) == taken_pid
    thread.join(timeout=30)
    assert slow["answer"].status_code == 200 and result_text(slow["answer"]) == "counted 4"
    assert slow["answer"].text.count("notifications/progress") == 4
    assert a.managed.process.wait(timeout=30) == 0
    assert "sessionsReleased" in a.log()
    # Released, not lapsed: taken over at once through b, same id, a new child.
    started = time.monotonic()
    answer = call(b.base, session, "pid", {}, id=8)
    assert answer.status_code == 200, answer.text
    assert result_text(answer) == taken_pid
    assert time.monotonic() - started < 5


NGINX_ROUND_ROBIN = """
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    # docs/deployment.md, "Several instances": round robin, no affinity.
    upstream mcp_gateway {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mcp_gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


class Load:
    """SDK clients calling tools continuously through the front door, in one event loop on a thread.
    Each call's outcome is recorded with the phase it happened in."""

    def __init__(self, front: str):
        self.front = front
        self.phase = "warm"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[str, str, bool, str]] = []  # (phase, worker, ok, detail)
        self.sessions_started: dict[str, int] = {}
        self.thread = threading.Thread(target=lambda: anyio.run(self._main), daemon=True)

    def record(self, worker: str, ok: bool, detail: str = "", phase: str | None = None) -> None:
        """`phase`: the one the call was made in (a call can outlast its phase)."""
        with self.lock:
            self.outcomes.append((phase or self.phase, worker, ok, detail))

    def successes(self, worker: str) -> int:
        with self.lock:
            return sum(1 for _, w, ok, _ in self.outcomes if w == worker and ok)

    def failures(self, phase: str) -> list[tuple[str, str]]:
        with self.lock:
            return [(w, d) for p, w, ok, d in self.outcomes if p == phase and not ok]

    async def _worker(self, name: str, path: str, mode: str, elicit_tool: str | None):
        async def elicitation(context, params):
            return types.ElicitResult(action="accept", content={"colour": "teal"})

        iteration = 0
        while not self.stop.is_set():
            self.sessions_started[name] = self.sessions_started.get(name, 0) + 1
            try:
                async with Client(self.front + path, mode=mode, elicitation_callback=elicitation) as client:
                    while not self.stop.is_set():
                        iteration += 1
                        kind = "count" if iteration % 5 == 0 else "elicit" if elicit_tool and iteration % 7 == 0 else "echo"
                        phase = self.phase
                        try:
                            with anyio.fail_after(20):
                                if iteration % 5 == 0:
                                    steps = []

                                    async def progress(done, total, message):
                                        steps.append(done)

                                    result = await client.call_tool("count", {"steps": 2, "delay_seconds": 0.05}, progress_callback=progress)
                                    assert result.content[0].text == "counted 2" and len(steps) == 2, (result, steps)
                                elif elicit_tool and iteration % 7 == 0:
                                    result = await client.call_tool(elicit_tool, {})
                                    assert result.content[0].text == "user likes teal", result
                                else:
                                    result = await client.call_tool("echo", {"text": f"{name} {iteration}"})
                                    assert result.content[0].text == f"{name} {iteration}", result
                            self.record(name, True, phase=phase)
                        except Exception as error:  # a failed call: recorded, and the session kept
                            detail = getattr(getattr(error, "error", None), "data", None) or getattr(getattr(error, "error", None), "message", "")
                            self.record(name, False, f"{time.strftime('%H:%M:%S')} {kind}: {type(error).__name__}: {error} {detail}"[:300], phase=phase)
                            if "Session terminated" in str(error) or "not found" in str(error).lower() or isinstance(error, TimeoutError):
                                break
            except Exception as error:
                self.record(name, False, f"session: {type(error).__name__}: {error}"[:300])
                # A new session once an instance behind the front is ready again (its store
                # reachable: /readyz answers 503 while Redis is away).
                await anyio.to_thread.run_sync(lambda: wait_until(
                    lambda: httpx.get(self.front + "/readyz", timeout=2).status_code == 200, what="the front is ready", timeout=30
                ))

    async def _main(self):
        async with anyio.create_task_group() as group:
            for index in range(2):
                group.start_soon(self._worker, f"stdio-legacy-{index}", "/kit/mcp", "legacy", "ask_user")
            group.start_soon(self._worker, "http-legacy", "/notes/mcp", "legacy", "ask_user")
            group.start_soon(self._worker, "stdio-modern", "/kit/mcp", "2026-07-28", None)
            group.start_soon(self._worker, "http-modern", "/notes/mcp", "2026-07-28", None)

    workers = ["stdio-legacy-0", "stdio-legacy-1", "http-legacy", "stdio-modern", "http-modern"]

    def advance(self, calls: int, what: str, timeout: float = 60) -> None:
        """Waits until every worker has made `calls` more successful calls."""
        targets = {w: self.successes(w) + calls for w in self.workers}
        wait_until(lambda: all(self.successes(w) >= n for w, n in targets.items()), timeout=timeout, what=what)


def start_round_robin(instances, processes, tmp_path, nginx_binary) -> str:
    front_port = free_port()
    conf = tmp_path / "nginx.conf"
    servers = "\n".join(f"        server 127.0.0.1:{i.port} max_fails=0;" for i in instances)
    conf.write_text(NGINX_ROUND_ROBIN.format(tmp=tmp_path, servers=servers, port=front_port))
    nginx = start_process("nginx", [nginx_binary, "-c", str(conf), "-p", str(tmp_path)], tmp_path)
    processes.append(nginx)
    wait_until(lambda: nginx.process.poll() is None and port_open(front_port), what="nginx")
    return f"http://127.0.0.1:{front_port}"


def test_progress_and_elicitation_cross_instances_behind_round_robin(cluster, processes, tmp_path, nginx_binary):
    """The official client's calls with progress and an elicitation, each request (the call, the
    client's answer to the ask) landing on either instance."""
    front = start_round_robin([cluster.add("a"), cluster.add("b")], processes, tmp_path, nginx_binary)

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async def scenario():
        for path, tool in (("/kit/mcp", "ask_user"), ("/notes/mcp", "ask")):
            async with Client(front + path, mode="legacy", elicitation_callback=elicitation) as client:
                for attempt in range(6):
                    with anyio.fail_after(15):
                        assert (await client.call_tool(tool, {})).content[0].text == "user likes teal", (path, attempt)
                        steps = []

                        async def progress(done, total, message):
                            steps.append(done)

                        result = await client.call_tool("count", {"steps": 2, "delay_seconds": 0.01}, progress_callback=progress)
                        assert result.content[0].text == "counted 2" and steps == [1, 2], (path, attempt, steps)

    anyio.run(scenario)


def test_a_multi_round_trip_retry_goes_to_the_instance_that_parked_it(cluster, processes, tmp_path, nginx_binary):
    """2026-07-28: the official client's elicitations through round robin (each retry with its
    requestState lands on either instance), then a retry whose instance is gone."""
    a, b = cluster.add("a"), cluster.add("b")
    front = start_round_robin([a, b], processes, tmp_path, nginx_binary)

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async def scenario():
        async with Client(front + "/raw/mcp", mode="2026-07-28", elicitation_callback=elicitation) as client:
            for attempt in range(6):
                with anyio.fail_after(15):
                    assert (await client.call_tool("ask_user", {})).content[0].text == "user likes teal", attempt

    anyio.run(scenario)
    assert "mcp-gateway-hop" not in (tmp_path / "nginx-error.log").read_text()

    def ask_on_a():
        body = modern_body("tools/call", {"name": "ask_user", "arguments": {}})
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = {"elicitation": {"form": {}}}
        asked = httpx.post(a.base + "/raw/mcp", json=body, headers=modern_headers("tools/call", "ask_user"), timeout=30).json()
        assert asked["result"]["requestState"].startswith("mcpgw@"), asked
        answers = {key: {"action": "accept", "content": {"colour": "teal"}} for key in asked["result"]["inputRequests"]}
        retry = modern_body("tools/call", {"name": "ask_user", "arguments": {}, "requestState": asked["result"]["requestState"], "inputResponses": answers})
        retry["params"]["_meta"] = body["params"]["_meta"]
        return retry

    # Parked on a, retried at b: b sends it to a.
    answered = httpx.post(b.base + "/raw/mcp", json=ask_on_a(), headers=modern_headers("tools/call", "ask_user"), timeout=30).json()
    assert answered["result"]["content"][0]["text"] == "user likes teal", answered
    # Parked on a; a is killed; the retry reaching b is told precisely what to do.
    retry = ask_on_a()
    os.kill(a.managed.pid, signal.SIGKILL)
    a.managed.process.wait(timeout=10)
    # Its heartbeat has not lapsed yet: b learns it is gone from the refused connection.
    refused = httpx.post(b.base + "/raw/mcp", json=retry, headers=modern_headers("tools/call", "ask_user"), timeout=30).json()
    assert refused["error"]["code"] == -32602 and "no longer running" in refused["error"]["message"], refused


def test_three_instances_behind_round_robin_survive_a_kill_a_rolling_restart_and_a_redis_restart(cluster, redis_server, processes, tmp_path, nginx_binary):
    instances = [cluster.add(name) for name in ("a", "b", "c")]
    load = Load(start_round_robin(instances, processes, tmp_path, nginx_binary))
    load.thread.start()
    try:
        load.advance(10, "warm-up calls")
        assert load.failures("warm") == [], (tmp_path / "nginx-error.log").read_text()
        # Round robin without affinity: every instance served session requests, most of them
        # for sessions another instance holds (forwarded).
        for instance in instances:
            assert instance.log().count("path=/kit/mcp") > 3, instance.name

        load.phase = "kill"
        victim = instances[2]
        os.kill(victim.managed.pid, signal.SIGKILL)
        victim.managed.process.wait(timeout=10)
        load.advance(10, "calls after kill -9")
        killed = load.failures("kill")
        # Only requests in flight on the killed instance may fail: at most one per worker.
        assert len(killed) <= len(Load.workers), killed
        cluster.start(victim)
        load.advance(5, "calls after the restart of the killed instance")

        load.phase = "rolling"
        for instance in instances:
            instance.managed.process.send_signal(signal.SIGTERM)
            assert instance.managed.process.wait(timeout=40) == 0, instance.log()[-2000:]
            cluster.start(instance)
            load.advance(5, f"calls after restarting {instance.name}")
        rolling = load.failures("rolling")
        assert len(rolling) <= len(Load.workers), rolling

        load.phase = "redis-down"
        redis_server.cli("SHUTDOWN", "SAVE")
        redis_server.managed.process.wait(timeout=10)
        wait_until(lambda: len(load.failures("redis-down")) >= 3, what="calls failing while Redis is down")
        down = load.failures("redis-down")
        redis_server.restart(tmp_path)
        back_at = time.monotonic()
        load.phase = "redis-back"
        load.advance(10, "calls after Redis is back")
        # A Redis connection that failed while Redis was away answers 503 at once until its
        # backoff (50 ms doubling to 2 s, GatewayRedis) has run out, then reconnects on the next
        # call that needs it. Ten calls per worker can all land on connections that are back
        # while another still waits, so calls go on until the longest backoff has passed.
        wait_until(lambda: time.monotonic() - back_at > REDIS_MAX_BACKOFF + 0.5, what="the longest Redis reconnect backoff to pass")
        load.advance(5, "calls past the longest Redis reconnect backoff")
        assert all("503" in detail or "unavailable" in detail.lower() or "Timeout" in detail for _, detail in down), down
        load.phase = "after"
        load.advance(5, "calls once recovered")
        assert load.failures("after") == []
        lost = {w: n - 1 for w, n in load.sessions_started.items() if n > 1}
        print(f"\ncluster faults: kill -9 failed {len(killed)}, rolling restart failed {len(rolling)}, "
              f"redis outage failed {len(down)} (+{len(load.failures('redis-back'))} while reconnecting); sessions restarted by clients: {lost}")
        for phase in ("kill", "rolling", "redis-back"):
            for worker, detail in load.failures(phase):
                print(f"  {phase} {worker}: {detail}")
        reestablished = sum(i.log().count("session re-established on this instance") for i in instances)
        assert reestablished >= 1
    finally:
        load.stop.set()
        load.thread.join(timeout=30)
