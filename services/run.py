"""Start the example MCP services of the default gateway.yaml, then the gateway itself.

Used by `just run`. The example services listen on loopback; the gateway runs in the
foreground, and everything started here is stopped when the gateway exits or on Ctrl-C.
"""

import argparse
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"run: example service {name} exited with status {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"run: example service {name} did not listen on port {port} within {timeout:.0f}s")


def start_redis_if_needed(config_text: str, children: list) -> None:
    """The store of gateway.yaml on loopback with nothing listening: start a throwaway redis-server
    there (state lives for this run only)."""
    match = re.search(r"redis://(?:[^@/\s]*@)?(127\.0\.0\.1|localhost):(\d+)", config_text)
    if not match:
        return
    port = int(match.group(2))
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            print(f"run: using the Redis already listening on 127.0.0.1:{port}", flush=True)
            return
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, start_new_session=True)
    children.append(process)
    wait_for_port(port, process, "redis-server")
    print(f"run: redis-server listening on 127.0.0.1:{port} (ephemeral)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True, help="path to the mcp-gateway binary")
    parser.add_argument("--config", default="gateway.yaml")
    parser.add_argument("--status-port", type=int, default=9200)
    parser.add_argument("--notes-port", type=int, default=9100)
    args = parser.parse_args()
    examples = [
        ("status", [str(HERE / "status" / "server.py"), "--port", str(args.status_port)], args.status_port),
        ("notes", [str(HERE / "notes" / "server.py"), "--port", str(args.notes_port)], args.notes_port),
    ]

    env = dict(os.environ)
    env.setdefault("NOTES_API_KEY", secrets.token_urlsafe(24))
    # The stdio example (mcp-server-time) is installed in the project's .venv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    children: list[subprocess.Popen] = []
    try:
        start_redis_if_needed(Path(args.config).read_text(), children)
        for name, argv, port in examples:
            # Each child in its own session: a terminal's Ctrl-C reaches this script alone, which
            # stops everything in order (no child dies mid-write with a traceback).
            process = subprocess.Popen([sys.executable, *argv], env=env, start_new_session=True)
            children.append(process)
            wait_for_port(port, process, name)
            print(f"run: example service {name} listening on 127.0.0.1:{port}", flush=True)
        gateway = subprocess.Popen([args.gateway, "serve", "--config", args.config], env=env, start_new_session=True)
        children.append(gateway)
        # Ctrl-C and SIGTERM are passed to the gateway, which shuts down gracefully; the example
        # services and Redis are stopped after it.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda received, _frame: gateway.send_signal(received))
        status = gateway.wait()
        # Stopped by a signal it was asked to stop on: a normal end for `just run`.
        return 0 if status in (0, -signal.SIGINT, -signal.SIGTERM) else status
    finally:
        for process in reversed(children):
            if process.poll() is None:
                process.terminate()
        for process in children:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Ctrl-C while the services were still starting: they are stopped in main's finally.
        sys.exit(130)
