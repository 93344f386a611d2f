"""A hand-written stdio MCP server (no SDK), for exact control of what goes on the wire.

Speaks 2025-11-25 and older only. Tool `garbage` writes a non-JSON line to stdout before its result.
"""

import json
import os
import sys

TOOLS = [
    {"name": "echo", "description": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "garbage", "description": "writes a non-JSON line first", "inputSchema": {"type": "object"}},
    {"name": "pid", "description": "process id", "inputSchema": {"type": "object"}},
    {"name": "ask_user", "description": "asks the user (elicitation) for a colour", "inputSchema": {"type": "object"}},
    {"name": "ask_llm", "description": "asks the client's model (sampling)", "inputSchema": {"type": "object"}},
    {"name": "slow", "description": "one progress notification, then an answer after `seconds`", "inputSchema": {"type": "object"}},
    {"name": "add_tool", "description": "announces a tool list change", "inputSchema": {"type": "object"}},
    {"name": "meta", "description": "the request's params._meta, as JSON text", "inputSchema": {"type": "object"}},
]


def ask_client(method: str, params: dict) -> dict:
    """Sends a request to the client and reads stdin until its answer (other lines are ignored)."""
    ask_id = f"ask-{method}"
    send({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": params})
    for answer_line in sys.stdin:
        answer = json.loads(answer_line)
        if answer.get("id") == ask_id and "method" not in answer:
            return answer
    return {}


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def text_result(request_id, text: str) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}], "isError": False}})


for line in sys.stdin:
    message = json.loads(line)
    method, request_id = message.get("method"), message.get("id")
    if method == "initialize":
        version = message["params"].get("protocolVersion", "2025-11-25")
        if version not in ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"):
            version = "2025-11-25"
        send({"jsonrpc": "2.0", "id": request_id, "result": {
            "protocolVersion": version, "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "raw-stdio", "version": "1.0"}}})
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": request_id, "result": {}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        name = message["params"]["name"]
        if name == "garbage":
            sys.stdout.write("this is not JSON\n")
            sys.stdout.flush()
            text_result(request_id, "still fine")
        elif name == "pid":
            text_result(request_id, str(os.getpid()))
        elif name == "meta":
            text_result(request_id, json.dumps(message["params"].get("_meta", {})))
        elif name == "add_tool":
            text_result(request_id, "added")
            send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        elif name == "slow":
            token = (message["params"].get("_meta") or {}).get("progressToken")
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1, "total": 2}})
            import time
            time.sleep(float(message["params"].get("arguments", {}).get("seconds", 1)))
            text_result(request_id, "slow done")
        elif name == "ask_user":
            answer = ask_client("elicitation/create", {"message": "What is your favourite colour?", "requestedSchema": {
                "type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}})
            result = answer.get("result") or {}
            if result.get("action") == "accept":
                text_result(request_id, f"user likes {result.get('content', {}).get('colour')}")
            else:
                text_result(request_id, f"user chose {result.get('action') or answer.get('error', {}).get('message')}")
        elif name == "ask_llm":
            answer = ask_client("sampling/createMessage", {"messages": [{"role": "user", "content": {"type": "text", "text": "meaning of life?"}}], "maxTokens": 20})
            result = answer.get("result") or {}
            text_result(request_id, f"model said: {(result.get('content') or {}).get('text') or answer.get('error', {}).get('message')}")
        else:
            text_result(request_id, message["params"].get("arguments", {}).get("text", ""))
    elif request_id is not None and method is not None:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"unknown method {method}"}})
