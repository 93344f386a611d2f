"""Fixtures that start real processes (the gateway, upstream MCP servers) on free loopback
ports, wait for readiness by polling, and stop exactly the processes they started, by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERVERS = HERE / "servers"
# mcp-server-time pinned to a 2025 release with mcp<2: a legacy-only (session-based) child.
LEGACY_TIME_SERVER = REPO / ".venv-legacy" / "bin" / "mcp-server-time"


def gateway_binary() -> str:
    binary = os.environ.get("MCPGW_BINARY") or str(REPO / ".build" / "debug" / "mcp-gateway")
    if not Path(binary).exists():
        pytest.fail(f"gateway binary {binary} not found; build it first (just build)")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - readiness probes fail until ready
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


def modern_headers(method: str, name: str | None = None) -> dict:
    """The HTTP headers of a 2026-07-28 request."""
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, "Accept": "application/json, text/event-stream"}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def modern_body(method: str, params: dict | None = None, id: int = 1) -> dict:
    """A 2026-07-28 request: `params` plus the `_meta` every request carries."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": {**(params or {}), "_meta": meta}}


class Subscription:
    """A 2026-07-28 `subscriptions/listen` stream, read in a thread. `close_after`: the client
    closes the stream after that many events (None: it reads until the server ends it)."""

    def __init__(self, url: str, notifications: dict, id: int, close_after: int | None = None):
        import json
        import threading

        self.events: list[dict] = []
        self.ended = threading.Event()
        self._changed = threading.Condition()

        def read():
            body = modern_body("subscriptions/listen", {"notifications": notifications}, id)
            try:
                with httpx.stream("POST", url, json=body, headers=modern_headers("subscriptions/listen"), timeout=30) as response:
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            with self._changed:
                                self.events.append(json.loads(line[5:]))
                                self._changed.notify_all()
                            if close_after is not None and len(self.events) >= close_after:
                                return
            finally:
                self.ended.set()
                with self._changed:
                    self._changed.notify_all()

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 20) -> list[dict]:
        """The events once there are `count` of them (fails the test if they do not come)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.events) >= count or self.ended.is_set(), timeout)
        assert arrived and len(self.events) >= count, f"expected {count} events on the subscription, got {self.events}"
        return self.events

    def join(self, timeout: float = 20) -> None:
        assert self.ended.wait(timeout), "the subscription stream did not end"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ManagedProcess:
    process: subprocess.Popen
    name: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return self.process.returncode


def start_process(name: str, argv: list[str], tmp_path: Path, env: dict | None = None) -> ManagedProcess:
    log_path = tmp_path / f"{name}.log"
    log_file = open(log_path, "wb")
    process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env or dict(os.environ), cwd=tmp_path)
    log_file.close()
    return ManagedProcess(process, name, log_path)


@pytest.fixture
def processes():
    started: list[ManagedProcess] = []
    yield started
    for managed in reversed(started):
        managed.stop()


def _start_python_server(processes, tmp_path, script: str, name: str) -> int:
    port = free_port()
    managed = start_process(name, [sys.executable, str(SERVERS / script), "--port", str(port)], tmp_path)
    processes.append(managed)
    wait_until(lambda: managed.process.poll() is None and port_open(port), what=f"{name} on port {port}")
    return port


@pytest.fixture
def raw_upstream(processes, tmp_path) -> str:
    """Base URL of the plain HTTP upstream (echo, sse, hang, state)."""
    port = _start_python_server(processes, tmp_path, "raw_upstream.py", "raw-upstream")
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def mcp_upstream(processes, tmp_path) -> str:
    """MCP endpoint URL of a real SDK server (both eras)."""
    port = _start_python_server(processes, tmp_path, "mcp_http_server.py", "mcp-upstream")
    return f"http://127.0.0.1:{port}/mcp"


@dataclass
class RedisServer:
    managed: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), "--raw", *args], capture_output=True, text=True, timeout=10).stdout

    def stop(self) -> None:
        self.managed.stop()

    def restart(self, tmp_path: Path) -> None:
        self.managed = start_process("redis", _redis_argv(self.port), tmp_path)
        wait_until(lambda: self.cli("PING").strip() == "PONG", what="redis-server restarted")


def _redis_argv(port: int) -> list[str]:
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


@pytest.fixture
def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which(binary):
        pytest.fail("nginx is not installed (the test recipe installs nginx-light)")
    return binary


@pytest.fixture
def redis_server(processes, tmp_path) -> RedisServer:
    """A real redis-server on a free port, ready (answers PING) before the test starts."""
    port = free_port()
    managed = start_process("redis", _redis_argv(port), tmp_path)
    server = RedisServer(managed, port)
    processes.append(managed)
    wait_until(lambda: server.cli("PING").strip() == "PONG", what="redis-server ready")
    yield server
    server.managed.stop()


@dataclass
class Gateway:
    managed: ManagedProcess
    port: int
    config_path: Path
    base: str = field(init=False)

    def __post_init__(self):
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def readiness(self) -> dict:
        return httpx.get(self.url("/readyz"), timeout=5).json()

    def rewrite_config(self, text: str) -> None:
        # Write aside and rename, as editors do; the gateway notices the new file.
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(textwrap.dedent(text))
        os.replace(temporary, self.config_path)

    def wait_for_generation(self, generation: int) -> dict:
        return wait_until(lambda: (r := self.readiness())["configGeneration"] >= generation and r, what=f"config generation {generation}")


@pytest.fixture
def start_gateway(processes, tmp_path):
    """Start the gateway with a YAML body; `{port}` in it is replaced by a free port."""

    def start(config: str, env: dict | None = None, extra_args: list[str] | None = None) -> Gateway:
        port = free_port()
        config_path = tmp_path / "gateway.yaml"
        config_path.write_text(textwrap.dedent(config).replace("{port}", str(port)))
        argv = [gateway_binary(), "serve", "--config", str(config_path), "--watch-interval", "0.2", *(extra_args or [])]
        # Children are looked up in PATH: the project's .venv holds mcp-server-time and friends.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        managed = start_process("gateway", argv, tmp_path, env={**os.environ, "PATH": path, **(env or {})})
        processes.append(managed)
        gateway = Gateway(managed, port, config_path)

        def healthy():
            if managed.process.poll() is not None:
                raise AssertionError(f"gateway exited with {managed.process.returncode}:\n{managed.log()}")
            return httpx.get(gateway.url("/healthz"), timeout=1).status_code == 200

        wait_until(healthy, what="gateway /healthz")
        return gateway

    return start


@dataclass
class FakeGitHub:
    base: str

    @property
    def web_url(self) -> str:
        return self.base

    @property
    def api_url(self) -> str:
        # GitHub Enterprise layout: the REST API under /api/v3.
        return self.base + "/api/v3"

    @property
    def config(self) -> str:
        """`auth.github` for a gateway signing users in here (a YAML flow mapping, one line)."""
        return f'{{clientID: "fake-github-client", clientSecret: "fake-github-secret", webURL: "{self.web_url}", apiURL: "{self.api_url}"}}'

    def set_user(self, login: str, user_id: int = 583231, orgs=(), teams=(), email: str | None = None) -> None:
        user = {"login": login, "id": user_id, "orgs": list(orgs), "teams": list(teams), "email": email}
        httpx.post(self.base + "/_control", json={"user": user}, timeout=5)

    def control(self, **fields) -> None:
        httpx.post(self.base + "/_control", json=fields, timeout=5)

    def requests(self) -> list[dict]:
        return [r for r in httpx.get(self.base + "/_requests", timeout=5).json() if r["path"] != "/_requests"]


@pytest.fixture
def fake_github(processes, tmp_path) -> FakeGitHub:
    port = _start_python_server(processes, tmp_path, "fake_github.py", "fake-github")
    return FakeGitHub(f"http://127.0.0.1:{port}")


@pytest.fixture(scope="session")
def local_password_hash() -> str:
    """A hash of the password `correct horse battery staple`, made by the gateway's own CLI."""
    result = subprocess.run([gateway_binary(), "hash-password"], input="correct horse battery staple\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class MetadataDocuments:
    base: str
    ca_file: Path

    def url(self, path: str) -> str:
        return self.base + path

    def counts(self) -> dict:
        import ssl

        return httpx.get(self.base + "/_count", verify=ssl.create_default_context(cafile=str(self.ca_file)), timeout=5).json()


@pytest.fixture
def metadata_documents(processes, tmp_path) -> MetadataDocuments:
    """An https server of Client ID Metadata Documents, with its test CA."""
    from pki import make_ca_and_server_cert

    ca, cert, key = make_ca_and_server_cert(tmp_path)
    port = free_port()
    managed = start_process("metadata-documents", [sys.executable, str(SERVERS / "metadata_documents.py"), "--port", str(port),
                                                   "--cert", str(cert), "--key", str(key)], tmp_path)
    processes.append(managed)
    wait_until(lambda: managed.process.poll() is None and port_open(port), what="metadata document server")
    return MetadataDocuments(f"https://127.0.0.1:{port}", ca)
