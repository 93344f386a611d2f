import NIOFoundationEssentialsCompat
import Foundation
import GatewayConfig
import Hummingbird
import HTTPTypes
import Logging
import MCPAggregation
import MCPMessages
import MCPTransport
import MCPTranslation
import NIOCore
import Synchronization
import GatewayAuth
import AuthorizationServer

/// One client request to a group, with what serving it needs.
struct Serving: Sendable {
    let server: GroupServer
    let group: GroupRoute
    let request: Request
    let context: GatewayRequestContext
    let dispatch: EraDispatch
    let router: String
    /// A session-based client's session: members keep a session per client session.
    var memberScope: String?

    var catalogueKey: String { "\(router)\u{0}\(context.caller?.claims.sub ?? "")" }

    /// Answers one request (2026-07-28 form: stamped for a session-based client's session).
    func answer(_ message: JSONRPCMessage, session: (id: String, session: GroupServer.Session)?) async throws(GatewayError) -> Response {
        guard message.isRequest, let method = message.method else { return Response(status: .accepted) }
        let rawID = message.rawID
        let modern = session == nil
        if group.passthrough, method != "ping", let member = group.members.first {
            let name = message.string(at: ["params", "name"]) ?? message.string(at: ["params", "uri"])
            return try await forward(message, method: method, name: name, to: member, session: session)
        }
        switch method {
        case "server/discover":
            let discovered = await discoverMembers()
            return MCPResponses.jsonResponse(GroupServer.response(rawID: rawID, result: [
                "resultType": "complete", "supportedVersions": ModernProtocol.versions, "capabilities": discovered.capabilities,
                "_meta": [ModernProtocol.metaPrefix + "serverInfo": ["name": group.configuration.name, "version": "mcp-gateway"]],
            ]), headers: [:])
        case "ping", "logging/setLevel":
            return MCPResponses.jsonResponse(GroupServer.response(rawID: rawID, result: modern ? ["resultType": "complete"] : [:]), headers: [:])
        case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
            let catalogue = await catalogue()
            let (key, items): (String, String) = switch method {
            case "tools/list": ("tools", catalogue.rendered.tools)
            case "prompts/list": ("prompts", catalogue.rendered.prompts)
            case "resources/list": ("resources", catalogue.rendered.resources)
            default: ("resourceTemplates", catalogue.rendered.templates)
            }
            // Lists are per caller (members may show each caller other things) and change with
            // the members: nothing is promised fresh.
            let modernMembers = modern ? #""resultType":"complete","ttlMs":0,"cacheScope":"private","# : ""
            return MCPResponses.jsonResponse(ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":{\(modernMembers)\"\(key)\":\(items)}}"), headers: [:])
        case "tools/call", "prompts/get":
            let name = message.string(at: ["params", "name"]) ?? ""
            let catalogue = await catalogue()
            if method == "tools/call", let broadcast = catalogue.broadcast(name) {
                return await self.broadcast(broadcast, message: message, modern: modern)
            }
            guard let item = method == "tools/call" ? catalogue.tool(name) : catalogue.prompt(name) else {
                if let down = catalogue.downMember(for: name) {
                    return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(
                        rawID: rawID, code: JSONRPCErrorResponse.internalError, message: "Internal error: member \(down) of this server is unavailable; retry later"
                    ), headers: [:])
                }
                return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(
                    rawID: rawID, code: JSONRPCErrorResponse.invalidParams, message: "\(method == "tools/call" ? "Unknown tool" : "Unknown prompt"): \(name)"
                ), headers: [:])
            }
            guard let member = group.member(item.member),
                  let renamed = message.replacingValue(at: ["params", "name"], withRawJSON: JSONRPCErrorResponse.jsonString(item.original))
            else { throw .pipelineOrder(stage: "GroupServer") }
            return try await forward(renamed, method: method, name: item.original, to: member, session: session)
        case "resources/read", "resources/subscribe", "resources/unsubscribe":
            let uri = message.string(at: ["params", "uri"]) ?? ""
            guard let owner = await catalogue().member(forURI: uri), let member = group.member(owner) else {
                return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(
                    rawID: rawID, code: modern ? JSONRPCErrorResponse.invalidParams : -32002, message: "Resource not found",
                    dataJSON: "{\"uri\":\(JSONRPCErrorResponse.jsonString(uri))}"
                ), headers: [:])
            }
            return try await forward(message, method: method, name: uri, to: member, session: session)
        case "completion/complete":
            let catalogue = await catalogue()
            var target: (member: String, message: JSONRPCMessage)?
            if message.string(at: ["params", "ref", "type"]) == "ref/prompt", let name = message.string(at: ["params", "ref", "name"]), let item = catalogue.prompt(name),
               let renamed = message.editing("params", { params in
                   var ref = params["ref"] as? [String: Any] ?? [:]
                   ref["name"] = item.original
                   params["ref"] = ref
               })
            {
                target = (item.member, renamed)
            } else if let uri = message.string(at: ["params", "ref", "uri"]), let owner = catalogue.member(forURI: uri) {
                target = (owner, message)
            }
            guard let target, let member = group.member(target.member) else {
                return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.invalidParams, message: "Invalid params: no member serves this reference"), headers: [:])
            }
            return try await forward(target.message, method: method, name: nil, to: member, session: session)
        case "subscriptions/listen" where modern:
            return listen(message)
        default:
            return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.methodNotFound, message: "Method not found: \(method)"), headers: [:])
        }
    }

    // MARK: list changes

    static let listChanges: [(flag: String, method: String)] = [
        ("toolsListChanged", "notifications/tools/list_changed"), ("promptsListChanged", "notifications/prompts/list_changed"),
        ("resourcesListChanged", "notifications/resources/list_changed"),
    ]

    /// Listens (`subscriptions/listen`) to every member's list changes until cancelled; each one
    /// makes the caller's merged lists be read again and is passed to `changed` (its method).
    func listenToMembers(_ changed: @escaping @Sendable (String) -> Void) async {
        let flags = Self.listChanges.map { "\"\($0.flag)\":true" }.joined(separator: ",")
        await withTaskGroup(of: Void.self) { tasks in
            for member in group.members {
                tasks.addTask {
                    let id = "\"mcpgw-listen-\(UInt64.random(in: 1...UInt64.max))\""
                    guard let message = try? JSONRPCMessage(parsing: ByteBuffer(string:
                        "{\"jsonrpc\":\"2.0\",\"id\":\(id),\"method\":\"subscriptions/listen\",\"params\":{\"notifications\":{\(flags)},\"_meta\":\(GroupServer.ownMeta)}}"))
                    else { return }
                    let next = feed(message, method: "subscriptions/listen", name: nil, to: member, tracking: nil)
                    while let (bytes, final) = await next(), !final {
                        guard let method = (try? JSONRPCMessage(parsing: bytes))?.method, Self.listChanges.contains(where: { $0.method == method }) else { continue }
                        server.forgetCatalogue(catalogueKey)
                        changed(method)
                    }
                }
            }
        }
    }

    /// A 2026-07-28 client's `subscriptions/listen` on the group: acknowledged for the list changes
    /// it asks for (resource subscriptions are not offered), then the members' list changes.
    func listen(_ message: JSONRPCMessage) -> Response {
        let rawID = message.rawID ?? "null"
        let wanted = Self.listChanges.filter { message.value(at: ["params", "notifications", $0.flag]) == "true" }
        let granted = wanted.map { "\"\($0.flag)\":true" }.joined(separator: ",")
        let meta = "\"_meta\":{\"io.modelcontextprotocol/subscriptionId\":\(rawID)}"
        let acknowledged = ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/subscriptions/acknowledged\",\"params\":{\(meta),\"notifications\":{\(granted)}}}")
        let wantedMethods = Set(wanted.map(\.method))
        return Response(status: .ok, headers: MCPResponses.eventStreamHeaders, body: listChangeBody(first: SSEEncoding.event(id: nil, data: acknowledged)) { method in
            guard wantedMethods.contains(method) else { return nil }
            return SSEEncoding.event(id: nil, data: ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"\(method)\",\"params\":{\(meta)}}"))
        })
    }

    /// A stream of the members' list changes (as `event` writes them; nil: not wanted) after
    /// `first`, with keep-alives, until the client leaves.
    func listChangeBody(first: ByteBuffer, event: @escaping @Sendable (String) -> ByteBuffer?) -> ResponseBody {
        let request = self.request
        let serving = self
        return ResponseBody { writer in
            try await writer.write(first)
            let (events, into) = AsyncStream<ByteBuffer>.makeStream()
            try await request.cancellingOnInboundClose {
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask {
                        await serving.listenToMembers { method in
                            if let bytes = event(method) { into.yield(bytes) }
                        }
                    }
                    tasks.addTask {
                        while true {
                            try await Task.sleep(for: .seconds(15))
                            into.yield(ByteBuffer(string: ": keep-alive\n\n"))
                        }
                    }
                    for await bytes in events { try await writer.write(bytes) }
                }
            }
            try await writer.finish(nil)
        }
    }

    // MARK: members

    /// `message` (2026-07-28 form) for `member`, through the era dispatch, as the member's own
    /// route. With `clientBody`, the member's answer is cancelled when the client leaves (the
    /// client's request body is watched for its close); without, the request is the gateway's own.
    func send(_ message: JSONRPCMessage, method: String, name: String?, to member: GroupRoute.Member, clientBody: Bool) async throws(GatewayError) -> Response {
        var head = request.head
        head.method = .post
        head.headerFields[MCPHeaders.protocolVersion] = ModernProtocol.versions[0]
        head.headerFields[ModernProtocol.methodHeader] = method
        head.headerFields[ModernProtocol.nameHeader] = name.map(ModernProtocol.encodeHeader)
        head.headerFields[MCPHeaders.sessionID] = nil
        head.headerFields[HTTPField.Name("Last-Event-ID")!] = nil
        head.headerFields[.accept] = "application/json, text/event-stream"
        let memberRequest = Request(head: head, body: clientBody ? request.body : RequestBody(buffer: message.bytes))
        var memberContext = context
        memberContext.route = member.route
        memberContext.memberScope = memberScope
        memberContext.call = MCPCall(protocolVersion: ModernProtocol.versions[0], sessionID: nil, body: message.bytes)
        return try await dispatch.respond(to: memberRequest, context: memberContext)
    }

    /// The member's answer to a request of the gateway's own: its response message, or why not.
    func ask(_ member: GroupRoute.Member, method: String, params: String = "{}", name: String? = nil) async -> Result<JSONObject, BroadcastFailure> {
        let id = "\"mcpgw-group-\(UInt64.random(in: 1...UInt64.max))\""
        var paramsObject = ((try? JSONSerialization.jsonObject(with: Data(params.utf8))) as? [String: Any]) ?? [:]
        var meta = paramsObject["_meta"] as? [String: Any] ?? [:]
        for (key, value) in ((try? JSONSerialization.jsonObject(with: Data(GroupServer.ownMeta.utf8))) as? [String: Any]) ?? [:] where meta[key] == nil { meta[key] = value }
        paramsObject["_meta"] = meta
        guard let paramsData = try? JSONSerialization.data(withJSONObject: paramsObject, options: [.withoutEscapingSlashes]),
              let message = try? JSONRPCMessage(parsing: ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(id),\"method\":\(JSONRPCErrorResponse.jsonString(method)),\"params\":\(String(decoding: paramsData, as: UTF8.self))}"))
        else { return .failure(BroadcastFailure("the request could not be written")) }
        let answer: Result<ByteBuffer, BroadcastFailure> = await GatewayMadeRequest.$isActive.withValue(true) {
            do throws(GatewayError) {
                let response = try await send(message, method: method, name: name, to: member, clientBody: false)
                guard let bytes = await CallPolicyEnforcement.answer(of: response, rawID: id) else {
                    return .failure(BroadcastFailure("\(member.name) answered HTTP \(response.status.code) without a JSON-RPC response"))
                }
                return .success(bytes)
            } catch {
                return .failure(BroadcastFailure("\(member.name) is unavailable: \(error.message)"))
            }
        }
        switch answer {
        case .failure(let failure): return .failure(failure)
        case .success(let bytes):
            guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] else {
                return .failure(BroadcastFailure("\(member.name) answered something that is not JSON"))
            }
            return .success(JSONObject(object))
        }
    }

    /// The members' capabilities, merged (each kind an object; `listChanged` where any member has it).
    func discoverMembers() async -> (capabilities: [String: Any], down: [String]) {
        let results = await withTaskGroup(of: (String, Result<JSONObject, BroadcastFailure>).self) { tasks in
            for member in group.members { tasks.addTask { (member.name, await ask(member, method: "server/discover")) } }
            var results: [String: Result<JSONObject, BroadcastFailure>] = [:]
            for await (name, result) in tasks { results[name] = result }
            return results
        }
        var capabilities: [String: Any] = [:]
        var down: [String] = []
        for member in group.members {
            guard case .success(let object)? = results[member.name], let result = object["result"] as? [String: Any] else {
                down.append(member.name)
                continue
            }
            for (key, value) in result["capabilities"] as? [String: Any] ?? [:] {
                var merged = capabilities[key] as? [String: Any] ?? [:]
                for (inner, innerValue) in value as? [String: Any] ?? [:] where merged[inner] == nil || (innerValue as? Bool) == true { merged[inner] = innerValue }
                capabilities[key] = merged
            }
        }
        if !down.isEmpty { server.logger.warning("group members did not answer server/discover", metadata: ["group": "\(group.configuration.name)", "members": "\(down.joined(separator: ","))"]) }
        return (capabilities, down)
    }

    /// The caller's merged lists (reused for a few seconds).
    func catalogue() async -> GroupCatalogue {
        if let cached = server.cachedCatalogue(catalogueKey) { return cached }
        typealias Lists = (tools: [(String, JSONObject)], prompts: [(String, JSONObject)], resources: [(String, JSONObject)], templates: [(String, JSONObject)], failure: String?)
        let gathered = await withTaskGroup(of: (String, Lists).self) { tasks in
            for member in group.members {
                tasks.addTask {
                    var lists: Lists = ([], [], [], [], nil)
                    for (method, key, nameKey) in [("tools/list", "tools", "name"), ("prompts/list", "prompts", "name"), ("resources/list", "resources", "uri"), ("resources/templates/list", "resourceTemplates", "uriTemplate")] {
                        var cursor: String?
                        var pages = 0
                        repeat {
                            pages += 1
                            let params = cursor.map { "{\"cursor\":\(JSONRPCErrorResponse.jsonString($0))}" } ?? "{}"
                            switch await ask(member, method: method, params: params) {
                            case .failure(let failure):
                                lists.failure = failure.message
                                cursor = nil
                            case .success(let object):
                                guard let result = object["result"] as? [String: Any] else {
                                    // A member without this kind (method not found) simply has none.
                                    cursor = nil
                                    continue
                                }
                                let items = (result[key] as? [[String: Any]] ?? []).compactMap { item in (item[nameKey] as? String).map { ($0, JSONObject(item)) } }
                                switch key {
                                case "tools": lists.tools += items
                                case "prompts": lists.prompts += items
                                case "resources": lists.resources += items
                                default: lists.templates += items
                                }
                                cursor = result["nextCursor"] as? String
                            }
                        } while cursor != nil && pages < GroupServer.maxPages && lists.failure == nil
                        if lists.failure != nil { break }
                    }
                    return (member.name, lists)
                }
            }
            var gathered: [String: Lists] = [:]
            for await (name, lists) in tasks { gathered[name] = lists }
            return gathered
        }
        var catalogue = GroupCatalogue()
        catalogue.separator = group.configuration.separator
        var toolLists: [MemberItems] = [], promptLists: [MemberItems] = [], resourceLists: [MemberItems] = [], templateLists: [MemberItems] = []
        var down: [String] = []
        for member in group.members {
            guard let lists = gathered[member.name] else { continue }
            if let failure = lists.failure {
                // A member that is down is left out of the lists; a call of one of its names
                // (by prefix, or as it last listed them) answers an error naming it.
                down.append(member.name)
                catalogue.down[member.name] = server.lastKnownNames(group: group.configuration.name, member: member.name)
                server.logger.warning("group member left out of the lists", metadata: ["group": "\(group.configuration.name)", "member": "\(member.name)", "reason": "\(failure)"])
                continue
            }
            server.rememberNames(group: group.configuration.name, member: member.name, names: Set(lists.tools.map(\.0) + lists.prompts.map(\.0)))
            toolLists.append(MemberItems(member: member.name, items: lists.tools))
            promptLists.append(MemberItems(member: member.name, items: lists.prompts))
            resourceLists.append(MemberItems(member: member.name, items: lists.resources))
            templateLists.append(MemberItems(member: member.name, items: lists.templates))
        }
        let tools = GroupCatalogue.expose(toolLists, group: group.configuration)
        let prompts = GroupCatalogue.expose(promptLists, group: group.configuration)
        let resources = GroupCatalogue.byURI(resourceLists)
        catalogue.tools = tools.items
        catalogue.prompts = prompts.items
        catalogue.resources = resources.items
        catalogue.templates = GroupCatalogue.byURI(templateLists).items
        catalogue.clashes = tools.clashes + prompts.clashes + resources.clashes
        if group.configuration.broadcast { catalogue.addBroadcasts(from: toolLists, members: group.members.map(\.name), tags: group.tags) }
        if !catalogue.clashes.isEmpty {
            server.logger.error("group members clash: the first member keeps each name", metadata: ["group": "\(group.configuration.name)", "names": "\(catalogue.clashes.joined(separator: ","))"])
        }
        catalogue.render()
        server.record(group: group.configuration.name, down: down, clashes: catalogue.clashes)
        server.remember(catalogue, key: catalogueKey)
        return catalogue
    }

    /// A call for one member. A 2026-07-28 client gets the member's answer as it is (cancelled
    /// when it leaves); a session-based client gets it relayed on its session, the member's asks
    /// put to the client and the call retried with the answers.
    func forward(_ message: JSONRPCMessage, method: String, name: String?, to member: GroupRoute.Member, session: (id: String, session: GroupServer.Session)?) async throws(GatewayError) -> Response {
        guard let session else {
            do {
                return try await send(message, method: method, name: name, to: member, clientBody: true)
            } catch {
                return MCPResponses.jsonResponse(Self.unavailable(member, message: message, error: error), headers: [:])
            }
        }
        let canAsk = EraRewrite.declares(stamp: session.session.meta, anyOf: ["elicitation", "sampling", "roots"])
        let tracking = (session: session.id, rawID: message.rawID ?? "null")
        let exchange: BridgedExchange = { outgoing in feed(outgoing, method: method, name: name, to: member, tracking: tracking) }
        return await MCPResponses.relayBridged(
            original: message, feed: feed(message, method: method, name: name, to: member, tracking: tracking), sessionKey: session.id, asks: server.asks,
            canAsk: canAsk, exchange: exchange
        )
    }

    static func unavailable(_ member: GroupRoute.Member, message: JSONRPCMessage, error: GatewayError) -> ByteBuffer {
        JSONRPCErrorResponse.make(rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "Internal error: member \(member.name) is unavailable: \(error.message)")
    }

    /// The member's messages for one request, read as they come (progress first, the answer last).
    func feed(_ message: JSONRPCMessage, method: String, name: String?, to member: GroupRoute.Member, tracking: (session: String, rawID: String)?) -> BridgedMessages {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let serving = self
        // A `notifications/cancelled` of the client ends the feed, and so the member's request.
        var untrack: @Sendable () -> Void = {}
        if let tracking {
            untrack = server.trackInFlight(session: tracking.session, rawID: tracking.rawID) { continuation.finish() }
        }
        let stopTracking = untrack
        let task = GatewayMadeRequest.$isActive.withValue(true) {
            Task {
                defer { stopTracking() }
                do throws(GatewayError) {
                    let response = try await serving.send(message, method: method, name: name, to: member, clientBody: false)
                    let eventStream = MediaTypes.isEventStream(response.headers[.contentType])
                    try? await response.body.write(MessageFeedWriter(into: continuation, eventStream: eventStream))
                } catch {
                    continuation.yield(Self.unavailable(member, message: message, error: error))
                }
                continuation.finish()
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        let messages = IteratorBox(stream.makeAsyncIterator())
        return {
            guard let bytes = await messages.next() else { return nil }
            return (bytes, (try? JSONRPCMessage(parsing: bytes))?.isResponse ?? false)
        }
    }

    // MARK: broadcast

    func broadcast(_ tool: BroadcastTool, message: JSONRPCMessage, modern: Bool) async -> Response {
        let rawID = message.rawID
        let calledTool: String
        var arguments = message.value(at: ["params", "arguments"]) ?? "{}"
        if let name = tool.tool {
            calledTool = name
        } else {
            guard let named = message.string(at: ["params", "arguments", "tool"]), !named.isEmpty else {
                return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.invalidParams, message: "Invalid params: arguments.tool names the tool to call"), headers: [:])
            }
            calledTool = named
            arguments = message.value(at: ["params", "arguments", "arguments"]) ?? "{}"
        }
        let timeout = group.configuration.broadcastTimeout
        let targets = tool.members.compactMap(group.member)
        let params = "{\"name\":\(JSONRPCErrorResponse.jsonString(calledTool)),\"arguments\":\(arguments)}"
        let outcomes = await withTaskGroup(of: BroadcastOutcome.self) { tasks in
            for member in targets {
                tasks.addTask {
                    let started = ContinuousClock.now
                    let answer = await withTaskGroup(of: Result<JSONObject, BroadcastFailure>?.self) { race in
                        race.addTask { await ask(member, method: "tools/call", params: params, name: calledTool) }
                        race.addTask {
                            guard (try? await Task.sleep(for: timeout)) != nil else { return nil }
                            return .failure(BroadcastFailure("no answer within \(timeout)"))
                        }
                        let first = await race.next() ?? nil
                        race.cancelAll()
                        return first ?? .failure(BroadcastFailure("cancelled"))
                    }
                    let elapsed = ContinuousClock.now - started
                    let milliseconds = Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
                    let result: Result<JSONObject, BroadcastFailure> = switch answer {
                    case .success(let object):
                        if let result = object["result"] as? [String: Any] {
                            .success(JSONObject(result))
                        } else {
                            .failure(BroadcastFailure(((object["error"] as? [String: Any])?["message"] as? String) ?? "no result"))
                        }
                    case .failure(let failure): .failure(failure)
                    }
                    return BroadcastOutcome(member: member.name, milliseconds: milliseconds, result: result)
                }
            }
            var outcomes: [BroadcastOutcome] = []
            for await outcome in tasks { outcomes.append(outcome) }
            return outcomes.sorted { lhs, rhs in (targets.firstIndex { $0.name == lhs.member } ?? 0) < (targets.firstIndex { $0.name == rhs.member } ?? 0) }
        }
        var result = BroadcastOutcome.combined(outcomes, tool: calledTool).value
        if modern { result["resultType"] = "complete" }
        return MCPResponses.jsonResponse(GroupServer.response(rawID: rawID, result: result), headers: [:])
    }
}

/// Reads a member's answer body into messages: each SSE event's data, or the one JSON body.
struct MessageFeedWriter: ResponseBodyWriter {
    /// Takes each message, in order; the writer waits for it to be taken.
    let deliver: @Sendable (ByteBuffer) async -> Void
    let eventStream: Bool
    private var pending = ByteBuffer()
    private var decoder = SSEDecoder()

    init(deliver: @escaping @Sendable (ByteBuffer) async -> Void, eventStream: Bool) {
        self.deliver = deliver
        self.eventStream = eventStream
    }

    init(into continuation: AsyncStream<ByteBuffer>.Continuation, eventStream: Bool) {
        self.init(deliver: { continuation.yield($0) }, eventStream: eventStream)
    }

    mutating func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        pending.writeBuffer(&buffer)
        guard eventStream else { return }
        while let event = try decoder.decode(buffer: &pending) {
            if event.data.readableBytes > 0 { await deliver(event.data) }
        }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        if eventStream {
            var decoder = self.decoder
            var pending = self.pending
            while let event = try decoder.decodeLast(buffer: &pending, seenEOF: true) {
                if event.data.readableBytes > 0 { await deliver(event.data) }
            }
        } else if pending.readableBytes > 0 {
            await deliver(pending)
        }
    }
}
