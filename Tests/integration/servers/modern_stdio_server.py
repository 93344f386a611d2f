"""A hand-written 2026-07-28-only stdio MCP server (no SDK): answers `server/discover` and
requests carrying `_meta` protocolVersion 2026-07-28; refuses `initialize` and requests without the
version with -32022 (UnsupportedProtocolVersion), as a modern-only server does.

Tools: echo (text), pid, count (progress notifications to the request's progressToken), whoami
(the clientInfo name from the request's _meta, proving the gateway stamps it), ask
(InputRequiredResult), exit (the process ends without answering), announce (a tools/list_changed
on the open `subscriptions/listen` stream, which is acknowledged and held open)."""

import json
import os
import sys

VERSION = "2026-07-28"
TOOLS = [
    {"name": "echo", "description": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "pid", "description": "process id", "inputSchema": {"type": "object"}},
    {"name": "count", "description": "progress", "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer"}}}},
    {"name": "whoami", "description": "client name from _meta", "inputSchema": {"type": "object"}},
    {"name": "ask", "description": "asks for input (InputRequiredResult)", "inputSchema": {"type": "object"}},
    {"name": "exit", "description": "the process ends at once", "inputSchema": {"type": "object"}},
    {"name": "announce", "description": "tools/list_changed to the listen stream", "inputSchema": {"type": "object"}},
]
listening = []


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def result(request_id, value: dict) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": {"resultType": "complete", **value}})


def text(request_id, value: str) -> None:
    result(request_id, {"content": [{"type": "text", "text": value}], "isError": False})


def unsupported(request_id) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32022, "message": "Unsupported protocol version",
                                                         "data": {"supported": [VERSION]}}})


for line in sys.stdin:
    message = json.loads(line)
    method, request_id = message.get("method"), message.get("id")
    if request_id is None or method is None:
        continue  # notifications (including cancellations) and stray responses
    meta = (message.get("params") or {}).get("_meta") or {}
    if method == "initialize" or meta.get("io.modelcontextprotocol/protocolVersion") != VERSION:
        unsupported(request_id)
    elif method == "server/discover":
        result(request_id, {"supportedVersions": [VERSION], "capabilities": {"tools": {}}, "ttlMs": 0, "cacheScope": "public",
                            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-stdio", "version": "1.0"}}})
    elif method == "tools/list":
        result(request_id, {"tools": TOOLS, "ttlMs": 0, "cacheScope": "public"})
    elif method == "tools/call":
        name = message["params"]["name"]
        arguments = message["params"].get("arguments") or {}
        if name == "exit":
            os._exit(0)
        if name == "announce":
            for subscription in listening:
                send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                      "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": subscription}}})
            text(request_id, f"announced to {len(listening)}")
            continue
        if name == "pid":
            text(request_id, str(os.getpid()))
        elif name == "ask" and (message["params"].get("inputResponses") or {}).get("colour") is not None:
            answer = message["params"]["inputResponses"]["colour"]
            state = message["params"].get("requestState")
            text(request_id, f"user likes {(answer.get('content') or {}).get('colour')} (state {state})")
        elif name == "ask":
            result(request_id, {"resultType": "input_required", "inputRequests": {"colour": {"method": "elicitation/create", "params": {
                "mode": "form", "message": "Favourite colour?", "requestedSchema": {"type": "object", "properties": {"colour": {"type": "string"}}}}}},
                "requestState": "opaque"})
        elif name == "whoami":
            text(request_id, meta.get("io.modelcontextprotocol/clientInfo", {}).get("name", ""))
        elif name == "count":
            token = meta.get("progressToken")
            steps = int(arguments.get("steps", 2))
            for done in range(1, steps + 1):
                if token is not None:
                    send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": done, "total": steps}})
            text(request_id, f"counted {steps}")
        else:
            text(request_id, arguments.get("text", ""))
    elif method == "subscriptions/listen":
        listening.append(request_id)
        send({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
              "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": request_id}, "notifications": {}}})
    elif method == "ping":
        result(request_id, {})
    else:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"unknown method {method}"}})
