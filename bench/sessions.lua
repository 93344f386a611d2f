-- tools/call POSTs spread round-robin over pre-created MCP sessions (ids in $MCPGW_SESSIONS).
local ids = {}
local next_index = 1
local body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"}}}'

function init(args)
  local file = assert(io.open(os.getenv("MCPGW_SESSIONS"), "r"))
  for line in file:lines() do
    if #line > 0 then table.insert(ids, line) end
  end
  file:close()
  next_index = (id or 0) % #ids + 1
end

function setup(thread)
  thread:set("id", math.random(1, 1000))
end

function request()
  local session = ids[next_index]
  next_index = next_index % #ids + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["Mcp-Session-Id"] = session,
    ["MCP-Protocol-Version"] = "2025-06-18",
  }
  return wrk.format("POST", nil, headers, body)
end
