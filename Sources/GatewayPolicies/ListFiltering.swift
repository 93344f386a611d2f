package import GatewayConfig
package import MCPMessages
package import NIOCore

/// The list and call methods a policy looks at, and where their names are.
package enum PolicedMethods {
    /// A list answer: the array in `result` and the member naming each item.
    package struct Listing: Sendable, Equatable {
        package var kind: CallPolicy.Kind
        package var array: String
        package var key: String
    }

    package static func listing(_ method: String?) -> Listing? {
        switch method {
        case "tools/list": Listing(kind: .tools, array: "tools", key: "name")
        case "prompts/list": Listing(kind: .prompts, array: "prompts", key: "name")
        case "resources/list": Listing(kind: .resources, array: "resources", key: "uri")
        case "resources/templates/list": Listing(kind: .resources, array: "resourceTemplates", key: "uriTemplate")
        default: nil
        }
    }

    /// What a request calls by name: `tools/call`, `prompts/get`, `resources/read|subscribe|unsubscribe`,
    /// and `completion/complete` of a prompt's or resource's arguments (which would otherwise tell
    /// that a hidden prompt exists).
    package static func target(of message: JSONRPCMessage) -> (kind: CallPolicy.Kind, name: String?)? {
        switch message.method {
        case "tools/call": (.tools, message.string(at: ["params", "name"]))
        case "prompts/get": (.prompts, message.string(at: ["params", "name"]))
        case "resources/read", "resources/subscribe", "resources/unsubscribe": (.resources, message.string(at: ["params", "uri"]))
        case "completion/complete":
            switch message.string(at: ["params", "ref", "type"]) {
            case "ref/prompt": (.prompts, message.string(at: ["params", "ref", "name"]))
            case "ref/resource": (.resources, message.string(at: ["params", "ref", "uri"]))
            default: nil
            }
        default: nil
        }
    }
}

/// One list answer with the items the caller may not see taken out, the rest of the bytes as the
/// server wrote them.
package struct FilteredPage: Sendable {
    /// The response, filtered (or as it was, when it is an error or nothing was hidden).
    package var message: ByteBuffer
    /// Items left in the page.
    package var kept: Int
    /// Items taken out.
    package var removed: Int
    /// `result.nextCursor`, when the server has more.
    package var nextCursor: String?
}

package enum ListFiltering {
    /// Filters one JSON-RPC response to a list request. `markPrivate` (2026-07-28 answers) sets
    /// `result.cacheScope` to `"private"` when anything was taken out, so no shared cache serves
    /// one caller's view to another. An item without its name is taken out (fail closed); nil
    /// when the message is not a response with the listing's array (left to the caller to pass on).
    package static func filter(_ message: ByteBuffer, listing: PolicedMethods.Listing, view: CallerView, markPrivate: Bool) -> FilteredPage? {
        typealias Edit = (range: Range<Int>, replacement: String)
        let scanned: (edits: [Edit], kept: Int, removed: Int, cursor: String?)? = message.withUnsafeReadableBytes { buffer in
            guard let top = try? JSONScanner.members(of: buffer, in: 0..<buffer.count) else { return nil }
            if top.contains(where: { $0.key == "error" }) { return ([], 0, 0, nil) }
            guard let result = top.first(where: { $0.key == "result" })?.value,
                  let members = try? JSONScanner.members(of: buffer, in: result),
                  let array = members.first(where: { $0.key == listing.array })?.value,
                  let elements = try? JSONScanner.elements(of: buffer, in: array)
            else { return nil }
            let cursor = members.first { $0.key == "nextCursor" }.flatMap { JSONScanner.string(buffer, in: $0.value) }
            var keptRanges: [Range<Int>] = []
            for element in elements {
                let name = (try? JSONScanner.members(of: buffer, in: element))?.first { $0.key == listing.key }.flatMap { JSONScanner.string(buffer, in: $0.value) }
                if let name, view.admits(listing.kind, name) { keptRanges.append(element) }
            }
            let removed = elements.count - keptRanges.count
            guard removed > 0 else { return ([], keptRanges.count, 0, cursor) }
            var text = "["
            for (index, range) in keptRanges.enumerated() {
                if index > 0 { text += "," }
                text += String(decoding: UnsafeRawBufferPointer(rebasing: buffer[range]), as: UTF8.self)
            }
            text += "]"
            var edits: [Edit] = [(array, text)]
            if markPrivate {
                if let scope = members.first(where: { $0.key == "cacheScope" })?.value {
                    edits.append((scope, "\"private\""))
                } else {
                    // At the start of `result`, after its `{`.
                    edits.append((result.lowerBound + 1..<result.lowerBound + 1, members.isEmpty ? "\"cacheScope\":\"private\"" : "\"cacheScope\":\"private\","))
                }
            }
            return (edits, keptRanges.count, removed, cursor)
        }
        guard let scanned else { return nil }
        guard !scanned.edits.isEmpty else {
            return FilteredPage(message: message, kept: scanned.kept, removed: scanned.removed, nextCursor: scanned.cursor)
        }
        var spliced = ByteBuffer()
        spliced.reserveCapacity(message.readableBytes)
        var position = 0
        let start = message.readerIndex
        for edit in scanned.edits.sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) {
            if let slice = message.getSlice(at: start + position, length: edit.range.lowerBound - position) { spliced.writeImmutableBuffer(slice) }
            spliced.writeString(edit.replacement)
            position = edit.range.upperBound
        }
        if let slice = message.getSlice(at: start + position, length: message.readableBytes - position) { spliced.writeImmutableBuffer(slice) }
        return FilteredPage(message: spliced, kept: scanned.kept, removed: scanned.removed, nextCursor: scanned.cursor)
    }
}
