import Foundation

/// A stdio MCP server small enough to read at a glance, for tests that need a real child process
/// without the SDK: Python's standard library only (`python3` on PATH). It speaks the
/// session-based protocol only (it refuses `server/discover`, as a 2025 server does), answers
/// `initialize`, `tools/list`, `ping` and `tools/call` for `echo` (the `text` argument back) and
/// `pid` (its process id), and refuses anything else with -32601.
package enum FakeChild {
    package static let source = #"""
    import json, os, sys

    def answer(message, result=None, error=None):
        reply = {"jsonrpc": "2.0", "id": message["id"]}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue
        method, params = message["method"], message.get("params") or {}
        if method == "initialize":
            answer(message, {"protocolVersion": params.get("protocolVersion", "2025-11-25"), "capabilities": {"tools": {}},
                             "serverInfo": {"name": "fake-child", "version": "1"}})
        elif method == "tools/list":
            answer(message, {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}, {"name": "pid", "inputSchema": {"type": "object"}}]})
        elif method == "ping":
            answer(message, {})
        elif method == "tools/call" and params.get("name") == "echo":
            answer(message, {"content": [{"type": "text", "text": params.get("arguments", {}).get("text", "")}]})
        elif method == "tools/call" and params.get("name") == "pid":
            answer(message, {"content": [{"type": "text", "text": str(os.getpid())}]})
        else:
            answer(message, error={"code": -32601, "message": "Method not found: " + method})
    """#

    /// Writes the server to a new temporary file and returns its path (for `args` after `python3`).
    package static func write() throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fake-child-\(UUID().uuidString).py")
        try source.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }
}
