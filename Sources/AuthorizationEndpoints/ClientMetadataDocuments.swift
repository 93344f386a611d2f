import NIOHTTP1
import NIOFoundationEssentialsCompat
import AsyncHTTPClient
package import AuthorizationServer
package import Foundation
package import GatewayConfig
package import Logging
import NIOCore
import NIOPosix
package import NIOSSL
import Synchronization

/// Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document
/// describing the client. Fetched with care, since the URL comes from whoever sends a request:
/// https only, a timeout, a 64 KiB cap, redirects only within the same host, and never to private,
/// loopback or link-local addresses unless allowed (the address checked is the one connected to).
/// Cached per the response's caching headers, in a bounded cache. Pinned documents from
/// gateway.yaml stand in when a fetch fails.
package final class ClientMetadataDocuments: ClientMetadataDocumentSource {
    package struct CacheEntry {
        package var metadata: ClientMetadata
        package var expires: Date
    }

    package static let maxDocumentBytes = 64 * 1024
    package static let maxCacheEntries = 256
    package static let maxCacheSeconds: TimeInterval = 86400
    package static let defaultCacheSeconds: TimeInterval = 300
    package static let maxRedirects = 3
    /// After a failed fetch of a pinned client's document, the pin answers without another
    /// attempt for this long (Claude's document is often unreachable from datacenters; each
    /// attempt would cost a sign-in up to the fetch timeout).
    package static let pinnedFallbackSeconds: TimeInterval = 60
    /// A document that could not be used is not fetched again for this long: each attempt is
    /// work done for whoever names a URL.
    package static let failureMemorySeconds: TimeInterval = 30
    /// Fetches per minute, per document host and in all: `client_id` URLs come from anyone, and
    /// the gateway must not become a tool for hammering a host (or for probing many).
    package static let fetchesPerHostPerMinute = 10
    package static let fetchesPerMinute = 120

    package let configuration: ClientMetadataConfiguration
    package let pinned: [String: ClientMetadata]
    package let tls: TLSConfiguration
    package let logger: Logger
    private let cache = Mutex<[String: CacheEntry]>([:])
    private let failedPinnedFetches = Mutex<[String: Date]>([:])
    private let failedFetches = Mutex<[String: Date]>([:])
    /// `private_key_jwt` clients' key sets fetched from their `jwks_uri`.
    private let keySets = Mutex<[String: (set: [String: Any], expires: Date, fetched: Date)]>([:])
    private let fetchBudget = Mutex<(window: Date, perHost: [String: Int], total: Int)>((Date.distantPast, [:], 0))
    /// Name lookups block a thread and may hang on a broken resolver: they get their own threads
    /// (not the shared pool that password checks and config reads use) and a deadline.
    private let resolver: NIOThreadPool

    package init(configuration: ClientMetadataConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile = configuration.caFile {
            tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caFile))]
        }
        self.tls = tls
        var pinned: [String: ClientMetadata] = [:]
        for (clientID, document) in configuration.pinned {
            var json = document.document
            if json["client_id"] == nil { json["client_id"] = clientID }
            pinned[clientID] = try ClientMetadataValidator.validateDocument(json, url: clientID)
        }
        self.pinned = pinned
        resolver = NIOThreadPool(numberOfThreads: 2)
        resolver.start()
    }

    deinit {
        resolver.shutdownGracefully { _ in }
    }

    package func metadata(for clientID: String) async throws(ClientLookupError) -> (ClientMetadata, pinned: Bool)? {
        guard configuration.enabled else { return nil }
        let now = Date()
        if let entry = cache.withLock({ $0[clientID] }), entry.expires > now {
            return (entry.metadata, false)
        }
        if let document = pinned[clientID], let failed = failedPinnedFetches.withLock({ $0[clientID] }),
           now.timeIntervalSince(failed) < Self.pinnedFallbackSeconds {
            return (document, true)
        }
        do throws(FetchError) {
            if let failed = failedFetches.withLock({ $0[clientID] }), now.timeIntervalSince(failed) < Self.failureMemorySeconds {
                throw FetchError(description: "it failed less than \(Int(Self.failureMemorySeconds)) s ago")
            }
            try takeFetchBudget(clientID, now: now)
            let (metadata, lifetime) = try await fetchWithinDeadline(clientID)
            if lifetime > 0 {
                cache.withLock { cache in
                    if cache.count >= Self.maxCacheEntries {
                        cache = cache.filter { $0.value.expires > now }
                        if cache.count >= Self.maxCacheEntries, let oldest = cache.min(by: { $0.value.expires < $1.value.expires })?.key {
                            cache[oldest] = nil
                        }
                    }
                    cache[clientID] = CacheEntry(metadata: metadata, expires: now.addingTimeInterval(lifetime))
                }
            }
            return (metadata, false)
        } catch {
            if let document = pinned[clientID] {
                failedPinnedFetches.withLock { $0[clientID] = Date() }
                logger.info("client metadata fetch failed; using the pinned document", metadata: ["client_id": "\(clientID)", "reason": "\(error.description)"])
                return (document, true)
            }
            failedFetches.withLock { failed in
                if failed.count >= Self.maxCacheEntries { failed = failed.filter { now.timeIntervalSince($0.value) < Self.failureMemorySeconds } }
                if failed.count < Self.maxCacheEntries { failed[clientID] = now }
            }
            // The reason stays in the log: told to the browser, it would make the gateway an
            // oracle for what answers where on networks the requester cannot see.
            logger.notice("client metadata document unusable", metadata: ["client_id": "\(clientID)", "reason": "\(error.description)"])
            throw .unusableDocument("The application's metadata document \(clientID) could not be fetched or is not a valid client metadata document. The gateway's log says why.")
        }
    }

    private func takeFetchBudget(_ clientID: String, now: Date) throws(FetchError) {
        let host = URLComponents(string: clientID)?.host?.lowercased() ?? ""
        let allowed = fetchBudget.withLock { budget -> Bool in
            if now.timeIntervalSince(budget.window) >= 60 { budget = (now, [:], 0) }
            guard budget.total < Self.fetchesPerMinute, budget.perHost[host, default: 0] < Self.fetchesPerHostPerMinute else { return false }
            budget.total += 1
            budget.perHost[host, default: 0] += 1
            return true
        }
        if !allowed { throw FetchError(description: "too many metadata document fetches this minute") }
    }

    /// One deadline for the whole fetch: name resolution, every redirect, the body. The task
    /// calling this being cancelled (the browser went away) cancels the fetch too. The answer does
    /// not wait for the cancelled fetch to wind down.
    private func fetchWithinDeadline(_ clientID: String) async throws(FetchError) -> (ClientMetadata, TimeInterval) {
        try await withinDeadline { () async throws(FetchError) in
            let (json, cacheControl) = try await self.fetchJSON(clientID)
            let metadata: ClientMetadata
            do throws(RegistrationError) { metadata = try ClientMetadataValidator.validateDocument(json, url: clientID) } catch {
                throw FetchError(description: error.description)
            }
            return (metadata, Self.cacheLifetime(cacheControl))
        }
    }

    private func withinDeadline<Success: Sendable>(_ work: @escaping @Sendable () async throws(FetchError) -> Success) async throws(FetchError) -> Success {
        let timeout = configuration.fetchTimeout
        let outcome = FirstOutcome<Success, FetchError>()
        let fetching = Task {
            do throws(FetchError) { outcome.settle(.success(try await work())) } catch { outcome.settle(.failure(error)) }
        }
        let timer = Task {
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            outcome.settle(.failure(FetchError(description: "fetching it took longer than \(timeout)")))
        }
        defer {
            fetching.cancel()
            timer.cancel()
        }
        return try await withTaskCancellationHandler {
            await outcome.value
        } onCancel: {
            outcome.settle(.failure(FetchError(description: "the request was cancelled")))
        }.get()
    }

    /// The key set of a `private_key_jwt` client: its document's inline `jwks`, or its `jwks_uri`
    /// fetched with the same care as documents (https, one deadline, size cap, no private
    /// addresses unless allowed, the fetch budget) and cached like them. `refresh`: fetch again
    /// even if cached (an assertion named a key id not in the cached set; at most once a minute).
    package func keySet(for metadata: ClientMetadata, refresh: Bool = false) async throws(ClientLookupError) -> [String: Any] {
        if let inline = metadata.jwks, let set = (try? JSONSerialization.jsonObject(with: Data(inline.utf8))) as? [String: Any] { return set }
        guard let uri = metadata.jwks_uri else { throw .unusableDocument("the client publishes no keys") }
        let now = Date()
        if let entry = keySets.withLock({ $0[uri] }), entry.expires > now, !(refresh && now.timeIntervalSince(entry.fetched) >= 60) {
            return entry.set
        }
        do throws(FetchError) {
            try takeFetchBudget(uri, now: now)
            let (set, lifetime) = try await withinDeadline { () async throws(FetchError) in
                let (json, cacheControl) = try await self.fetchJSON(uri)
                guard json["keys"] is [Any] else { throw FetchError(description: "it is not a JSON Web Key Set") }
                return (JSONBox(json), Self.cacheLifetime(cacheControl))
            }
            keySets.withLock { sets in
                if sets.count >= Self.maxCacheEntries { sets = sets.filter { $0.value.expires > now } }
                if sets.count < Self.maxCacheEntries { sets[uri] = (set.object, now.addingTimeInterval(max(lifetime, 60)), now) }
            }
            return set.object
        } catch {
            logger.notice("client key set unusable", metadata: ["jwks_uri": "\(uri)", "reason": "\(error.description)"])
            throw .unusableDocument("the client's keys could not be fetched")
        }
    }

    package struct FetchError: Error, CustomStringConvertible {
        package var description: String
    }

    /// One JSON object from `start` (documents, key sets), following same-host redirects.
    private func fetchJSON(_ start: String) async throws(FetchError) -> ([String: Any], cacheControl: String?) {
        var url = start
        for _ in 0...Self.maxRedirects {
            guard let components = URLComponents(string: url), components.scheme == "https", let host = components.host, !host.isEmpty else {
                throw FetchError(description: "only https URLs are fetched")
            }
            let address = try await resolve(host)
            var clientConfiguration = HTTPClient.Configuration(
                tlsConfiguration: tls, redirectConfiguration: .disallow,
                timeout: .init(connect: .nanoseconds(Int64(configuration.fetchTimeout.timeInterval * 1e9)), read: .nanoseconds(Int64(configuration.fetchTimeout.timeInterval * 1e9))),
                decompression: .disabled
            )
            // Connect to the address that was checked, not to whatever a second lookup returns.
            clientConfiguration.dnsOverride = [host: address]
            let client = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: clientConfiguration)
            let outcome: Result<(status: UInt, location: String?, cacheControl: String?, body: ByteBuffer), FetchError>
            do {
                var request = HTTPClientRequest(url: url)
                request.headers.add(name: "Accept", value: "application/json")
                request.headers.add(name: "User-Agent", value: "mcp-gateway")
                let response = try await client.execute(request, timeout: .nanoseconds(Int64(configuration.fetchTimeout.timeInterval * 1e9)))
                let body = try await response.body.collect(upTo: Self.maxDocumentBytes)
                outcome = .success((response.status.code, response.headers.first(name: "location"), response.headers.first(name: "cache-control"), body))
            } catch let error as NIOTooManyBytesError {
                _ = error
                outcome = .failure(FetchError(description: "the document is larger than 64 KiB"))
            } catch {
                outcome = .failure(FetchError(description: "fetching it failed (\(error))"))
            }
            try? await client.shutdown()
            let answer = try outcome.get()
            if (300..<400).contains(answer.status) {
                guard let location = answer.location, let next = URL(string: location, relativeTo: URL(string: url))?.absoluteURL,
                      next.scheme == "https", next.host?.lowercased() == host.lowercased()
                else { throw FetchError(description: "it redirects to another host, which is not followed") }
                url = next.absoluteString
                continue
            }
            guard answer.status == 200 else { throw FetchError(description: "the server answered HTTP \(answer.status)") }
            guard let json = (try? JSONSerialization.jsonObject(with: Data(buffer: answer.body))) as? [String: Any] else {
                throw FetchError(description: "it is not a JSON object")
            }
            return (json, answer.cacheControl)
        }
        throw FetchError(description: "too many redirects")
    }

    package static func cacheLifetime(_ cacheControl: String?) -> TimeInterval {
        guard let cacheControl = cacheControl?.lowercased() else { return defaultCacheSeconds }
        let directives = cacheControl.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if directives.contains("no-store") || directives.contains("no-cache") { return 0 }
        for directive in directives where directive.hasPrefix("max-age=") {
            if let seconds = TimeInterval(directive.dropFirst("max-age=".count)) { return min(max(0, seconds), maxCacheSeconds) }
        }
        return defaultCacheSeconds
    }

    /// The first address of `host` this gateway may connect to.
    private func resolve(_ host: String) async throws(FetchError) -> String {
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        let addresses: [String]
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let timeout = configuration.fetchTimeout
        let answer = loop.makePromise(of: [String].self)
        let deadline = loop.scheduleTask(in: .nanoseconds(Int64(timeout.timeInterval * 1e9))) {
            answer.fail(FetchError(description: "resolving \(host) took longer than \(timeout)"))
        }
        // A lookup that outlives its deadline finishes on its thread; its late answer is ignored.
        resolver.runIfActive(eventLoop: loop) { Self.lookup(bare) }.whenComplete { result in
            deadline.cancel()
            answer.completeWith(result)
        }
        do {
            addresses = try await answer.futureResult.get()
        } catch let error as FetchError {
            throw error
        } catch {
            throw FetchError(description: "name resolution failed")
        }
        guard !addresses.isEmpty else { throw FetchError(description: "\(host) does not resolve") }
        if configuration.allowPrivateAddresses { return addresses[0] }
        guard let usable = addresses.first(where: { !Self.isPrivate($0) }) else {
            throw FetchError(description: "\(host) resolves only to private, loopback or link-local addresses")
        }
        return usable
    }

    package static func lookup(_ host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(entry.pointee.ai_addr, entry.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !addresses.contains(text) { addresses.append(text) }
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }

    /// Whether `address` is one a fetch may not connect to (see `IPAddress.isPublicUnicast`).
    package static func isPrivate(_ address: String) -> Bool {
        guard let parsed = IPAddress(address) else { return true }
        return !parsed.isPublicUnicast
    }
}

/// The first of several racing outcomes; later ones are ignored.
package final class FirstOutcome<Success: Sendable, Failure: Error>: Sendable {
    private let state = Mutex<(result: Result<Success, Failure>?, waiter: CheckedContinuation<Result<Success, Failure>, Never>?)>((nil, nil))

    package func settle(_ result: Result<Success, Failure>) {
        let waiter = state.withLock { state -> CheckedContinuation<Result<Success, Failure>, Never>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: result)
    }

    package var value: Result<Success, Failure> {
        get async {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Result<Success, Failure>? in
                    if let result = state.result { return result }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}

/// A JSON object crossing a task boundary (it is immutable once parsed).
struct JSONBox: @unchecked Sendable {
    let object: [String: Any]
    init(_ object: [String: Any]) { self.object = object }
}
