-- 2026-07-28 stateless tools/call POSTs (no session): headers mirror the body, _meta carries the version.
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "get_current_time"
-- With MCPGW_DELAY_MS set (bench/soak.py), each connection waits that long between requests: a paced load.
local pause = tonumber(os.getenv("MCPGW_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end
