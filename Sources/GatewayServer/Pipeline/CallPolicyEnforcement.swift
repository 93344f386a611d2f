import GatewayConfig
import GatewayPolicies
import Hummingbird
import HTTPTypes
import MCPMessages
import MCPTransport
import MCPTranslation
import NIOCore
import Synchronization
import GatewayAuth
import Logging

/// Stage 8: the router's tool, resource and prompt policies (`tools`, `resources`, `prompts`,
/// `policies`) for the verified caller. A call of something the caller may not see is answered
/// exactly as the server answers an unknown name, so a policy reveals nothing; list answers are
/// filtered on their way back (`filtered`), fetching further pages while a filtered page would
/// be empty but the server has more.
struct CallPolicyEnforcement {
    /// Further pages fetched for one list request before an empty page is returned as it is.
    static let maxExtraPages = 16

    /// What the response of an admitted request needs: the caller's view and which of the
    /// request's ids are list requests (nil when nothing needs filtering).
    struct Filtering: Sendable {
        let view: CallerView
        let listings: [String: PolicedMethods.Listing]
        /// A single request (not a batch): further pages may be fetched for it.
        let single: Bool
        let markPrivate: Bool
    }

    enum Outcome {
        /// Nothing to refuse or filter.
        case pass
        /// A call the caller may not make, answered as the server answers an unknown name.
        case refused(Response)
        /// Admitted; its answer has lists to filter.
        case filter(Filtering)
    }

    /// Refuses a call the caller may not make; says what the response needs filtered.
    func apply(_ request: Request, _ context: GatewayRequestContext) throws(GatewayError) -> Outcome {
        guard let route = context.route, let call = context.call else { throw .pipelineOrder(stage: "CallPolicyEnforcement") }
        guard !route.callPolicy.isEmpty, let payload = call.payload else { return .pass }
        let messages: [JSONRPCMessage]
        switch payload {
        case .single(let message): messages = [message]
        case .batch(let batch): messages = batch
        }
        if call.era == .modern, let message = call.message { try Self.checkHeaders(message, request: request) }
        let view = route.callPolicy.view(for: context.caller?.identity)
        guard !view.isUnrestricted else { return .pass }
        var refusals: [(message: JSONRPCMessage, error: ByteBuffer)] = []
        var listings: [String: PolicedMethods.Listing] = [:]
        for message in messages where message.isRequest {
            if let target = PolicedMethods.target(of: message), view.restricts(target.kind), !(target.name.map { view.admits(target.kind, $0) } ?? false) {
                refusals.append((message, Self.unknown(target.kind, name: target.name, rawID: message.rawID, era: call.era)))
            } else if let listing = PolicedMethods.listing(message.method), view.restricts(listing.kind), let rawID = message.rawID {
                listings[rawID] = listing
            }
        }
        if !refusals.isEmpty {
            context.logger.info("call refused by policy", metadata: ["router": "\(route.router.name)", "method": "\(refusals[0].message.method ?? "")"])
            let single = if case .single = payload { true } else { false }
            return .refused(Self.refusal(refusals, batch: !single, all: messages))
        }
        guard !listings.isEmpty else { return .pass }
        let single = if case .single = payload { true } else { false }
        return .filter(Filtering(view: view, listings: listings, single: single, markPrivate: call.era == .modern))
    }

    /// 2026-07-28: the `Mcp-Method` and `Mcp-Name` headers must say what the body says, checked
    /// before any decision, so a header cannot carry a different call past the policy than the
    /// one the server acts on (the spec's `HeaderMismatch`).
    static func checkHeaders(_ message: JSONRPCMessage, request: Request) throws(GatewayError) {
        guard let method = message.method else { return }
        var mismatch: String?
        if let sent = request.headers[ModernProtocol.methodHeader], ModernProtocol.decodeHeader(sent) != method {
            mismatch = "Mcp-Method must equal the body's method \(method)"
        } else if ["tools/call", "prompts/get", "resources/read"].contains(method) {
            let expected = message.string(at: ["params", method == "resources/read" ? "uri" : "name"])
            if request.headers[ModernProtocol.nameHeader].flatMap(ModernProtocol.decodeHeader) != expected {
                mismatch = "Mcp-Name must equal the body's \(method == "resources/read" ? "params.uri" : "params.name")"
            }
        }
        if let mismatch {
            throw .protocolViolation(ProtocolViolation(status: .badRequest, code: ModernProtocol.headerMismatch, message: "Header mismatch: \(mismatch)", rawID: message.rawID))
        }
    }

    /// The error a server gives for a name it does not know: `Unknown tool: x` (−32602), a
    /// resource not found (−32002 before 2026-07-28, −32602 since), `Unknown prompt: x`.
    static func unknown(_ kind: CallPolicy.Kind, name: String?, rawID: String?, era: MCPCall.Era) -> ByteBuffer {
        let quoted = name.map(JSONRPCErrorResponse.jsonString) ?? "null"
        switch kind {
        case .tools:
            return JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.invalidParams, message: "Unknown tool: \(name ?? "")")
        case .prompts:
            return JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.invalidParams, message: "Unknown prompt: \(name ?? "")")
        case .resources:
            return JSONRPCErrorResponse.make(
                rawID: rawID, code: era == .modern ? JSONRPCErrorResponse.invalidParams : -32002, message: "Resource not found", dataJSON: "{\"uri\":\(quoted)}"
            )
        }
    }

    /// One refused call: its error, as a server answers (200). In a batch every request gets an
    /// answer: the refused ones their error, the others that the batch was not run.
    static func refusal(_ refusals: [(message: JSONRPCMessage, error: ByteBuffer)], batch: Bool, all: [JSONRPCMessage]) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        guard batch else { return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: refusals[0].error)) }
        var body = ByteBuffer(string: "[")
        var first = true
        for message in all where message.isRequest {
            if !first { body.writeString(",") }
            first = false
            if let refused = refusals.first(where: { $0.message.rawID == message.rawID }) {
                body.writeImmutableBuffer(refused.error)
            } else {
                body.writeImmutableBuffer(JSONRPCErrorResponse.make(
                    rawID: message.rawID, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: the batch was not run because one of its calls was refused"
                ))
            }
        }
        body.writeString("]")
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: body))
    }

    // MARK: list answers

    /// Fetches the next page of a list request: the answer's message (its id the client's).
    typealias NextPage = @Sendable (_ cursor: String) async -> ByteBuffer?

    /// `response` with its list answers filtered for the caller (JSON or SSE, as it came).
    static func filtered(_ response: Response, _ filtering: Filtering, nextPage: NextPage?) -> Response {
        guard response.status == .ok else { return response }
        var response = response
        let eventStream = MediaTypes.isEventStream(response.headers[.contentType])
        guard eventStream || MediaTypes.isJSON(response.headers[.contentType]) else { return response }
        let original = response.body
        response.headers[.contentLength] = nil
        response.body = ResponseBody { writer in
            let filter = ListAnswerFilter(filtering: filtering, nextPage: filtering.single ? nextPage : nil)
            try await original.write(FilteringWriter(parent: writer, filter: filter, eventStream: eventStream))
        }
        return response
    }

    /// The message of a whole answer to one request (`rawID`): the JSON body, or the event of an
    /// SSE body that answers it.
    static func answer(of response: Response, rawID: String) async -> ByteBuffer? {
        guard response.status == .ok else { return nil }
        let collector = CollectingWriter()
        try? await response.body.write(collector)
        var body = collector.collected
        if MediaTypes.isEventStream(response.headers[.contentType]) {
            var decoder = SSEDecoder()
            while let event = try? decoder.decode(buffer: &body) ?? decoder.decodeLast(buffer: &body, seenEOF: true) {
                if let message = try? JSONRPCMessage(parsing: event.data), message.isResponse, message.rawID == rawID { return event.data }
            }
            return nil
        }
        return body
    }
}

/// Filters list answers as they pass, one JSON body or one SSE event at a time.
struct ListAnswerFilter: Sendable {
    let filtering: CallPolicyEnforcement.Filtering
    let nextPage: CallPolicyEnforcement.NextPage?

    /// One message (or a batch's array) with the list answers filtered.
    func filter(_ body: ByteBuffer) async -> ByteBuffer {
        let elements: [Range<Int>]? = body.withUnsafeReadableBytes { buffer in
            JSONScanner.firstSignificantByte(buffer, in: 0..<buffer.count) == UInt8(ascii: "[") ? try? JSONScanner.elements(of: buffer, in: 0..<buffer.count) : nil
        }
        guard let elements else { return await filterMessage(body) }
        var output = ByteBuffer(string: "[")
        for (index, range) in elements.enumerated() {
            if index > 0 { output.writeString(",") }
            if let element = body.getSlice(at: body.readerIndex + range.lowerBound, length: range.count) { output.writeImmutableBuffer(await filterMessage(element)) }
        }
        output.writeString("]")
        return output
    }

    private func filterMessage(_ body: ByteBuffer) async -> ByteBuffer {
        guard let message = try? JSONRPCMessage(parsing: body), message.isResponse, let rawID = message.rawID,
              let listing = filtering.listings[rawID]
        else { return body }
        guard var page = ListFiltering.filter(body, listing: listing, view: filtering.view, markPrivate: filtering.markPrivate) else {
            // A result without the list: nothing in it can be shown safely.
            return JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.internalError, message: "Internal error: the server's \(listing.array) answer could not be read")
        }
        var fetched = 0
        while page.kept == 0, let cursor = page.nextCursor, let nextPage, fetched < CallPolicyEnforcement.maxExtraPages {
            fetched += 1
            guard let next = await nextPage(cursor),
                  let filtered = ListFiltering.filter(next, listing: listing, view: filtering.view, markPrivate: filtering.markPrivate)
            else { break }
            page = filtered
        }
        return page.message
    }
}

/// Passes a response body on with its list answers filtered.
struct FilteringWriter: ResponseBodyWriter {
    var parent: any ResponseBodyWriter
    let filter: ListAnswerFilter
    let eventStream: Bool
    private var pending = ByteBuffer()
    private var decoder = SSEDecoder()

    init(parent: any ResponseBodyWriter, filter: ListAnswerFilter, eventStream: Bool) {
        self.parent = parent
        self.filter = filter
        self.eventStream = eventStream
    }

    mutating func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        pending.writeBuffer(&buffer)
        guard eventStream else { return }
        while let event = try decoder.decode(buffer: &pending) {
            try await parent.write(await Self.encode(event, filter: filter))
        }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        if eventStream {
            var decoder = self.decoder
            var pending = self.pending
            while let event = try decoder.decodeLast(buffer: &pending, seenEOF: true) {
                try await parent.write(await Self.encode(event, filter: filter))
            }
        } else if pending.readableBytes > 0 {
            try await parent.write(await filter.filter(pending))
        }
        try await parent.finish(trailingHeaders)
    }

    /// The event again, its data filtered when it is a list answer.
    static func encode(_ event: SSEEvent, filter: ListAnswerFilter) async -> ByteBuffer {
        let data = event.data.readableBytes > 0 ? await filter.filter(event.data) : event.data
        var output = ByteBuffer()
        if let id = event.id { output.writeString("id: \(id)\n") }
        if let name = event.event { output.writeString("event: \(name)\n") }
        let text = String(buffer: data)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) { output.writeString("data: \(line)\n") }
        output.writeString("\n")
        return output
    }
}

/// Keeps a whole response body (a further page, read by the gateway itself).
final class CollectingWriter: ResponseBodyWriter, Sendable {
    private let buffer = Mutex(ByteBuffer())

    var collected: ByteBuffer { buffer.withLock { $0 } }

    func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        self.buffer.withLock { _ = $0.writeBuffer(&buffer) }
    }

    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
