-- One MCP tools/call POST per request, as a 2025-06-18 client sends it without a session (what
-- every peer in bench/peers.py accepts). MCPGW_TOOL names the tool (ContextForge prefixes it with
-- the gateway's name); MCPGW_TOKEN, when set, is sent as the bearer token; MCPGW_SESSION, when
-- set, as the session id.
local tool = os.getenv("MCPGW_TOOL") or "echo"
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":{"text":"hello"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
local session = os.getenv("MCPGW_SESSION")
if session and session ~= "" then
  wrk.headers["Mcp-Session-Id"] = session
end
local token = os.getenv("MCPGW_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
