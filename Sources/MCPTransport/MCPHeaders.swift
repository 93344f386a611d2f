package import HTTPTypes

/// The MCP header names the transports read and write.
package enum MCPHeaders {
    package static let sessionID = HTTPField.Name("Mcp-Session-Id")!
    package static let protocolVersion = HTTPField.Name("MCP-Protocol-Version")!
    package static let lastEventID = HTTPField.Name("Last-Event-ID")!
}
