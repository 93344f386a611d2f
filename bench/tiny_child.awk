# A minimal stdio MCP server (answers initialize and ping) for measuring the gateway's memory per
# idle session without the children's own memory dominating the machine.
{
  if (match($0, /"id":[0-9]+/)) {
    id = substr($0, RSTART + 5, RLENGTH - 5)
    if ($0 ~ /"method":"initialize"/) {
      print "{\"jsonrpc\":\"2.0\",\"id\":" id ",\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"serverInfo\":{\"name\":\"tiny\",\"version\":\"1\"}}}"
    } else {
      print "{\"jsonrpc\":\"2.0\",\"id\":" id ",\"result\":{}}"
    }
    fflush()
  }
}
