"""A hand-written 2026-07-28-only MCP server over HTTP (no SDK): every POST must carry
MCP-Protocol-Version 2026-07-28 and `_meta` protocolVersion; `initialize` and session-based requests
get 400 with -32022 (UnsupportedProtocolVersion). Tools: echo, whoami (clientInfo name from _meta),
count (progress notifications on an SSE answer, when the request has a progressToken), ask
(an InputRequiredResult)."""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "2026-07-28"
TOOLS = [
    {"name": "echo", "description": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "whoami", "description": "client name from _meta", "inputSchema": {"type": "object"}},
    {"name": "ask", "description": "asks for input (InputRequiredResult)", "inputSchema": {"type": "object"}},
    {"name": "count", "description": "progress", "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer"}}}},
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: dict | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(405, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "POST only"}})

    do_DELETE = do_GET

    def do_POST(self):
        message = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        request_id, method = message.get("id"), message.get("method")
        meta = (message.get("params") or {}).get("_meta") or {}
        if self.headers.get("MCP-Protocol-Version") != VERSION or meta.get("io.modelcontextprotocol/protocolVersion") != VERSION:
            return self.reply(400, {"jsonrpc": "2.0", "id": request_id, "error": {
                "code": -32022, "message": "Unsupported protocol version", "data": {"supported": [VERSION]}}})
        if request_id is None:
            return self.reply(202, None)

        def result(value):
            self.reply(200, {"jsonrpc": "2.0", "id": request_id, "result": {"resultType": "complete", **value}})

        if method == "server/discover":
            return result({"supportedVersions": [VERSION], "capabilities": {"tools": {}}, "ttlMs": 0, "cacheScope": "public",
                           "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-http", "version": "1.0"}}})
        if method == "tools/list":
            return result({"tools": TOOLS, "ttlMs": 0, "cacheScope": "public"})
        if method == "tools/call" and message["params"]["name"] == "ask":
            answer = (message["params"].get("inputResponses") or {}).get("colour")
            if answer is None:
                return result({"resultType": "input_required", "inputRequests": {"colour": {"method": "elicitation/create", "params": {
                    "mode": "form", "message": "Favourite colour?", "requestedSchema": {"type": "object", "properties": {"colour": {"type": "string"}}}}}},
                    "requestState": "http-state"})
            return result({"content": [{"type": "text", "text": f"user likes {(answer.get('content') or {}).get('colour')} ({message['params'].get('requestState')})"}], "isError": False})
        if method == "tools/call" and message["params"]["name"] == "count":
            steps = int((message["params"].get("arguments") or {}).get("steps", 2))
            token = meta.get("progressToken")
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for done in range(1, steps + 1):
                if token is not None:
                    event = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": done, "total": steps}}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
            final = {"jsonrpc": "2.0", "id": request_id, "result": {"resultType": "complete", "content": [{"type": "text", "text": f"counted {steps}"}], "isError": False}}
            self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
            self.wfile.flush()
            self.close_connection = True
            return
        if method == "tools/call":
            name = message["params"]["name"]
            text = meta.get("io.modelcontextprotocol/clientInfo", {}).get("name", "") if name == "whoami" else (message["params"].get("arguments") or {}).get("text", "")
            return result({"content": [{"type": "text", "text": text}], "isError": False})
        self.reply(404, {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"unknown method {method}"}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()
