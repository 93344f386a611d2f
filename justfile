# Recipes; on a fresh machine run them through ./bootstrap.sh, which installs prerequisites first.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
python := venv / "bin" / "python"

# List the recipes.
default:
    @just --list

# Build the gateway (debug).
build:
    swift build

# Build the gateway (release).
build-release:
    swift build -c release

# Run the gateway with gateway.yaml, plus the example services it routes to.
run: build-release
    PATH="{{venv}}/bin:$PATH" {{python}} services/run.py --gateway .build/release/mcp-gateway --config gateway.yaml

# Validate a configuration file (with the release binary `just run` builds).
check config="gateway.yaml": build-release
    .build/release/mcp-gateway check --config {{config}}

# The whole test suite: Swift unit tests, then integration tests with real servers and clients.
test: build
    # nginx: the forward-auth test runs a real nginx (auth_request) in front of the gateway;
    # chromium: the consent and error pages are rendered and screenshotted headless.
    bash scripts/ensure-apt.sh nginx-light chromium
    bash scripts/legacy-venv.sh
    swift build --build-tests
    swift test --skip-build
    MCPGW_BINARY="$(swift build --show-bin-path)/mcp-gateway" PATH="{{venv}}/bin:$PATH" {{python}} -m pytest -q Tests/integration

# Benchmarks (wrk, nginx, the anchor bridges); results land in bench/results-*.md.
bench: bench-http bench-session-calls bench-auth bench-operations bench-stdio bench-modern bench-policies bench-groups bench-cluster bench-peers

# HTTP route: direct vs nginx proxy_pass vs the SwiftNIO floor (bench/NIOFloor) vs mcp-gateway.
bench-http: build-release
    bash scripts/ensure-apt.sh wrk nginx-light
    PATH="{{venv}}/bin:$PATH" {{python}} bench/http_proxy.py --gateway .build/release/mcp-gateway

# Session-based (2025-06-18) calls on the HTTP route: the fast relay against the full pipeline.
bench-session-calls: build-release
    bash scripts/ensure-apt.sh wrk nginx-light
    PATH="{{venv}}/bin:$PATH" {{python}} bench/session_calls.py --gateway .build/release/mcp-gateway

# Where the gateway's CPU goes on the HTTP and the stdio route, and on the HTTP route with audit, metrics and a rate limit on: perf (cpu-clock) profiles under load.
bench-profile: build-release
    bash scripts/ensure-apt.sh wrk nginx-light linux-perf
    PATH="{{venv}}/bin:$PATH" {{python}} bench/profile.py --gateway .build/release/mcp-gateway
    PATH="{{venv}}/bin:$PATH" {{python}} bench/profile.py --route stdio --call-graph --gateway .build/release/mcp-gateway
    PATH="{{venv}}/bin:$PATH" {{python}} bench/profile.py --operations --call-graph --gateway .build/release/mcp-gateway

# `just bench-callgrind --baseline OLD_BINARY` adds an older build
# (git worktree add /tmp/base <commit> && swift build -c release --package-path /tmp/base).
# Instructions per proxied request under callgrind (not in `bench`): HTTP route, SwiftNIO floor, audit/metrics/rate limit off and on.
bench-callgrind *args: build-release
    bash scripts/ensure-apt.sh wrk nginx-light valgrind redis-server
    PATH="{{venv}}/bin:$PATH" {{python}} bench/callgrind.py --gateway .build/release/mcp-gateway --operations {{args}}

# Token check: the same HTTP route with auth: none and with a valid token.
bench-auth: build-release
    bash scripts/ensure-apt.sh wrk nginx-light redis-server
    PATH="{{venv}}/bin:$PATH" {{python}} bench/auth_overhead.py --gateway .build/release/mcp-gateway

# Audit, metrics and a rate limit on against all off, on the same protected HTTP route.
bench-operations: build-release
    bash scripts/ensure-apt.sh wrk nginx-light redis-server
    PATH="{{venv}}/bin:$PATH" {{python}} bench/operations_overhead.py --gateway .build/release/mcp-gateway

# stdio bridge: mcp-gateway vs mcp-streamablehttp-proxy vs mcp-proxy vs the children's ceiling.
bench-stdio: build-release
    bash scripts/ensure-apt.sh wrk
    bash bench/setup-anchors.sh
    PATH="{{venv}}/bin:$PATH" {{python}} bench/stdio_bridge.py --gateway .build/release/mcp-gateway

# 2026-07-28 clients through a warm stdio pool vs the session-based path vs mcp-streamablehttp-proxy.
bench-modern: build-release
    bash scripts/ensure-apt.sh wrk
    bash bench/setup-anchors.sh
    PATH="{{venv}}/bin:$PATH" {{python}} bench/modern_pool.py --gateway .build/release/mcp-gateway

# Policy evaluation: a view and a decision with 100 globs against none, a 50-tool answer filtered.
bench-policies:
    swift build -c release --product PolicyBenchmark
    .build/release/PolicyBenchmark | tee bench/results-policies.md

# A call through a group of three HTTP members vs one member directly.
bench-groups: build-release
    bash scripts/ensure-apt.sh wrk
    PATH="{{venv}}/bin:$PATH" {{python}} bench/group_overhead.py --gateway .build/release/mcp-gateway

# Several instances on one Redis: the forwarding hop's cost and session takeover time.
bench-cluster: build-release
    bash scripts/ensure-apt.sh redis-server
    PATH="{{venv}}/bin:$PATH" {{python}} bench/cluster.py --gateway .build/release/mcp-gateway

# The gateways a user would install instead (ContextForge, FastMCP's proxy) and nginx, same upstream.
bench-peers: build-release
    bash scripts/ensure-apt.sh wrk nginx-light
    bash bench/setup-anchors.sh
    PATH="{{venv}}/bin:$PATH" {{python}} bench/peers.py --gateway .build/release/mcp-gateway

# Soak (not in `bench`): 10 minutes at ~80 % of the peak on the HTTP route, then on a stdio route.
soak: build-release
    bash scripts/ensure-apt.sh wrk nginx-light
    PATH="{{venv}}/bin:$PATH" {{python}} bench/soak.py --gateway .build/release/mcp-gateway --minutes 10

# Connections at scale (not in `bench`): thousands of held connections (idle, streams, WebSocket)
# while active clients call through; RSS per connection. Needs a hard descriptor limit above the count.
bench-connections: build-release
    bash scripts/ensure-apt.sh wrk nginx-light
    PATH="{{venv}}/bin:$PATH" {{python}} bench/connections.py --gateway .build/release/mcp-gateway

# The control for bench-connections' active clients: nginx proxy_pass and the bare SwiftNIO relay
# under the same load, before, while and after 10 000 idle connections are held on them.
bench-held-control: build-release
    bash scripts/ensure-apt.sh wrk nginx-light
    PATH="{{venv}}/bin:$PATH" {{python}} bench/held_control.py

# Soak (not in `bench`): three instances behind nginx for 10 minutes, RSS and descriptors sampled.
soak-cluster: build-release
    bash scripts/ensure-apt.sh redis-server nginx-light
    PATH="{{venv}}/bin:$PATH" {{python}} bench/cluster_soak.py --gateway .build/release/mcp-gateway --minutes 10
