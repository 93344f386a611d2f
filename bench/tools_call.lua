-- One MCP tools/call POST per request, as a 2026-07-28 client sends it.
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "echo"
-- With MCPGW_TOKEN set (bench/auth_overhead.py), the bearer token of a protected route.
local token = os.getenv("MCPGW_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
-- With MCPGW_DELAY_MS set (bench/soak.py), each connection waits that long between requests: a paced load.
local pause = tonumber(os.getenv("MCPGW_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end
