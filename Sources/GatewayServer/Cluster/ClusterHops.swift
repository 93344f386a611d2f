import AsyncHTTPClient
import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayCluster
import GatewayUpstream
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
import MCPTransport
import NIOCore
import NIOHTTP1
import NIOPosix

/// Requests between the instances of a cluster (`cluster:`). A request naming a session another
/// live instance holds is forwarded there once (`forward`), with the caller's verified identity in
/// place of the client's credentials, signed under `cluster.secret`; the instance receiving it
/// (`admit`) trusts that identity only when the signature verifies, and then serves the request
/// itself, never forwarding it again.
struct ClusterHops: Sendable {
    let membership: ClusterMembership
    /// nil without `cluster:`: nothing is forwarded, and a forwarded request is refused.
    let signature: HopSignature?
    let http: HTTPClient
    /// Standalone GET streams relayed from another instance end when this one starts stopping.
    let drain: ShutdownDrain

    /// What the hop carries instead of the client's credentials.
    struct Identity: Codable {
        var claims: AccessTokenClaims?
        var orgs: [String]?
        var teams: [String]?
        var groups: [String]
        var ip: String?
        var proto: String
        /// How many instances forwarded the request so far (at most `maximumHops`).
        var hops: Int?
    }

    /// A stopping instance forwards a request to any serving one, which may find the session
    /// taken over by a third meanwhile: one more hop then, never a loop.
    static let maximumHops = 2
    /// The largest JSON answer relayed from another instance (SSE answers stream unbounded).
    static let maximumAnswer = 256 << 20

    static let identityHeader = HTTPField.Name(HopSignature.identityHeader)!
    static let timeHeader = HTTPField.Name(HopSignature.timeHeader)!
    static let signatureHeader = HTTPField.Name(HopSignature.signatureHeader)!
    static let instanceHeader = HTTPField.Name(HopSignature.instanceHeader)!

    /// Headers never sent on a hop: hop-by-hop ones, the client's credentials (the identity
    /// travels signed instead), and any hop header a client made up.
    private static let dropped: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length",
        "authorization", "proxy-authorization", "cookie", "x-api-key",
        HopSignature.identityHeader, HopSignature.timeHeader, HopSignature.signatureHeader, HopSignature.instanceHeader,
    ]

    // MARK: receiving

    /// After `RequestChecks`: a request carrying a hop signature is either another instance's
    /// (the identity it carries becomes the verified caller, and `Authentication` has nothing
    /// left to do) or refused: a made-up or replayed hop never reaches a transport.
    func admit(_ request: inout Request, _ context: inout GatewayRequestContext) async throws(GatewayError) {
        guard let signed = request.headers.value(of: Self.signatureHeader) else { return }
        guard let route = context.route else { throw .pipelineOrder(stage: "ClusterHops") }
        let refused = GatewayError.protocolViolation(ProtocolViolation(
            status: .forbidden, code: -32000, message: "Forbidden: a request forwarded between gateway instances must carry a valid cluster signature"
        ))
        guard let signature, let time = request.headers.value(of: Self.timeHeader), let identityText = request.headers.value(of: Self.identityHeader) else {
            context.logger.warning("refused a request with a cluster hop signature: this instance has no cluster: configured")
            throw refused
        }
        var body = ByteBuffer()
        if request.method == .post { body = try await RequestBodyReader.read(&request, limit: route.maxRequestBodyBytes) }
        let valid = body.withUnsafeReadableBytes { bytes in
            signature.verify(
                method: request.method.rawValue, target: request.uri.description, sessionID: request.headers.value(of: MCPHeaders.sessionID),
                identity: identityText, body: bytes, time: time, signature: signed
            )
        }
        guard valid, let data = Base64URL.decode(identityText), let identity = try? JSONDecoder().decode(Identity.self, from: Data(data)) else {
            context.logger.warning("refused a forwarded request whose cluster signature did not verify (wrong cluster.secret, altered, or older than \(HopSignature.maximumAge) s)", metadata: [
                "from": "\(request.headers.value(of: Self.instanceHeader) ?? "?")", "ip": "\(context.clientIP ?? "")",
            ])
            throw refused
        }
        context.atHopLimit = (identity.hops ?? 1) >= Self.maximumHops
        context.hopCount = identity.hops ?? 1
        context.clientIP = identity.ip
        context.forwardedProto = identity.proto
        if let claims = identity.claims {
            let caller = VerifiedCaller(claims: claims, identity: UserIdentity(login: claims.login, orgs: identity.orgs, teams: identity.teams, groups: identity.groups))
            context.caller = caller
            context.record?.update { fields in
                fields.user = claims.login
                fields.caller = caller
            }
        }
        context.record?.update { $0.hopped = true }
        context.credentialsVerifiedByHop = true
    }

    // MARK: sending

    /// Why a hop did not happen: the instance could not be connected to (it is taken for gone),
    /// or it answered that it is stopping (`draining`).
    struct Unreachable: Error {
        var draining = false
    }

    /// Relays `request` to the instance at `url` and its answer back, streaming both ways; the
    /// client hanging up cancels the hop.
    func forward(_ request: Request, context: GatewayRequestContext, instance: String, url: String) async throws -> Response {
        guard let signature else { throw GatewayError.clusterUnreachable(instance: instance) }
        let target = request.uri.description
        var outbound = HTTPClientRequest(url: url + target)
        outbound.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.dropped.contains(field.name.canonicalName) {
            outbound.headers.add(name: field.name.rawName, value: field.value)
        }
        // Routers may match on the host: the owner sees the one the client named.
        if let authority = request.head.authority { outbound.headers.replaceOrAdd(name: "host", value: authority) }
        let caller = context.caller
        let identity = Identity(
            claims: caller?.claims, orgs: caller?.identity.orgs, teams: caller?.identity.teams, groups: caller?.identity.groups ?? [],
            ip: context.clientIP, proto: context.forwardedProto, hops: context.hopCount + 1
        )
        let identityText = Base64URL.encode(try JSONEncoder().encode(identity))
        let body = context.call?.body ?? ByteBuffer()
        let signed = body.withUnsafeReadableBytes { bytes in
            signature.sign(method: request.method.rawValue, target: target, sessionID: request.headers.value(of: MCPHeaders.sessionID), identity: identityText, body: bytes)
        }
        outbound.headers.add(name: HopSignature.identityHeader, value: identityText)
        outbound.headers.add(name: HopSignature.timeHeader, value: signed.time)
        outbound.headers.add(name: HopSignature.signatureHeader, value: signed.signature)
        outbound.headers.add(name: HopSignature.instanceHeader, value: membership.instanceID)
        if request.method == .post { outbound.body = .bytes(body) }
        let (http, prepared) = (self.http, outbound)
        let answer: HTTPClientResponse
        do {
            answer = try await HTTPProxy.cancellingOnClose(of: context.channel) {
                try await http.execute(prepared, deadline: .now() + .hours(24))
            }
        } catch where Self.isConnectFailure(error) {
            throw Unreachable()
        } catch {
            context.logger.warning("forwarding to the instance holding the session failed", metadata: ["instance": "\(instance)", "error": "\(error)"])
            throw GatewayError.heldElsewhere(instance: instance, url: url)
        }
        // The instance is stopping and hands the session on: taken over here instead.
        if answer.headers.first(name: GatewayError.hopStateHeader.rawName) == "draining" { throw Unreachable(draining: true) }
        var fields = HeaderPolicy.clientResponseHeaders(from: answer.headers)
        let answerBody = answer.body
        guard MediaTypes.isEventStream(fields[.contentType]) else {
            // A JSON answer is read whole first: a hop cut short is then a clear 503 to retry,
            // not a connection closed without an answer.
            let whole: ByteBuffer
            do { whole = try await answerBody.collect(upTo: Self.maximumAnswer) } catch {
                throw GatewayError.heldElsewhere(instance: instance, url: url)
            }
            fields[.contentLength] = nil
            return Response(status: .init(code: Int(answer.status.code)), headers: fields, body: ResponseBody(byteBuffer: whole))
        }
        fields[SSEHeaders.accelBuffering] = "no"
        // Written under `cancellingOnInboundClose`: the connection closes after the stream.
        fields[.connection] = "close"
        let drain = request.method == .get ? self.drain : nil
        let clientRequest = request
        let responseBody = ResponseBody { writer in
            try await clientRequest.cancellingOnInboundClose {
                if let drain {
                    _ = try await drain.runUntilDrained {
                        for try await chunk in answerBody { try await writer.write(chunk) }
                    }
                } else {
                    for try await chunk in answerBody { try await writer.write(chunk) }
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .init(code: Int(answer.status.code)), headers: fields, body: responseBody)
    }

    /// The instance could not be connected to (nothing was sent): refused, reset or timed out
    /// connecting. A failure after the request went out is not one: the request may have run.
    static func isConnectFailure(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError { return error == .connectTimeout }
        if error is NIOConnectionError { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        if let error = error as? IOError { return error.errnoCode == ECONNREFUSED || error.errnoCode == EHOSTUNREACH || error.errnoCode == ENETUNREACH }
        return false
    }
}
