"""Helpers shared by the benchmarks: ports, wrk runs and parsing, /proc CPU and memory readings."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def own_cpu_seconds(pid: int) -> float:
    """User+system CPU of one process (its children excluded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU of one process (its children excluded), apart."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def tree_cpu_seconds(pids: list[int]) -> float:
    """User+system CPU of the given processes and all their live descendants."""
    total, seen, frontier = 0.0, set(), list(pids)
    while frontier:
        pid = frontier.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += own_cpu_seconds(pid)
            for task in os.listdir(f"/proc/{pid}/task"):
                frontier.extend(int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_wrk(url: str, connections: int, seconds: int, script: Path, env: dict | None = None) -> dict:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    ).stdout
    return {"raw": out, **parse_wrk(out)}


def parse_wrk(out: str) -> dict:
    """req/s, request count, p50/p99 (ms) and errors (socket errors and non-2xx answers) of wrk's
    `--latency` output."""
    result: dict = {}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    for label, key in (("50%", "p50"), ("99%", "p99")):
        match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)\b", out)
        value, unit = float(match.group(1)), match.group(2)
        result[key] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    result["errors"] = errors
    return result


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stop_all(started: list[subprocess.Popen], quit_signal_for: tuple = ()) -> None:
    """Stops what a bench started, last first: SIGTERM, or SIGQUIT (nginx's graceful stop) for
    the processes in `quit_signal_for`; killed after 20 s."""
    import signal

    for process in reversed(started):
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT if process in quit_signal_for else signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def machine_line() -> str:
    import platform

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except FileNotFoundError:
        pass
    return f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}"


def write_results(output, lines: list[str]) -> None:
    """A results file from its lines (printed too)."""
    text = "\n".join(lines) + "\n"
    Path(output).write_text(text)
    print(text)
