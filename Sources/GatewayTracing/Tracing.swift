public import GatewayConfig
public import GatewayStore
public import HTTPTypes
public import Instrumentation
public import Logging
import OTel
public import ServiceLifecycle
import Tracing

/// The gateway's OpenTelemetry traces: swift-otel's OTLP/HTTP backend installed as the process's
/// tracer (`tracing:`), W3C `traceparent` read from and written to HTTP headers, and the store's
/// operations as client spans. Without `tracing:` nothing here runs: the stages test a flag
/// before they create a span.
public enum GatewayTracing {
    /// Installs the tracer and returns the service that exports spans (run it in the service
    /// group: it flushes at shutdown). Call once per process.
    public static func bootstrap(_ configuration: TracingConfiguration, logger: Logger) throws -> any Service {
        var otel = OTel.Configuration.default
        otel.serviceName = configuration.serviceName
        otel.metrics.enabled = false
        otel.logs.enabled = false
        otel.traces.enabled = true
        otel.traces.exporter = .otlp
        otel.traces.otlpExporter.protocol = .httpProtobuf
        var endpoint = configuration.endpoint
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        otel.traces.otlpExporter.endpoint = endpoint + "/v1/traces"
        // A sampled parent is followed; new traces are kept at the configured ratio.
        otel.traces.sampler = .parentBasedTraceIDRatio(ratio: configuration.sampleRatio) ?? .parentBasedAlwaysOn
        // Short batches: spans reach the collector within a second.
        otel.traces.batchSpanProcessor.scheduleDelay = .milliseconds(500)
        otel.propagators = [.traceContext]
        otel.diagnosticLogger = .custom(logger)
        otel.diagnosticLogLevel = .warning
        let backend = try OTel.makeTracingBackend(configuration: otel)
        InstrumentationSystem.bootstrap(backend.factory)
        return backend.service
    }

    /// The trace id of `context`'s span (32 hex digits), for the audit log; nil without one.
    public static func traceID(of context: ServiceContext) -> String? {
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryInjector())
        guard let traceparent = carrier["traceparent"] else { return nil }
        let parts = traceparent.split(separator: "-")
        return parts.count == 4 ? String(parts[1]) : nil
    }

    /// The `traceparent` value that makes `context`'s span the parent of the receiver's work.
    public static func traceparent(of context: ServiceContext) -> String? {
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryInjector())
        return carrier["traceparent"]
    }
}

/// Reads W3C trace context from a request's header fields.
public struct HTTPFieldsExtractor: Extractor {
    public init() {}

    public func extract(key: String, from carrier: HTTPFields) -> String? {
        guard let name = HTTPField.Name(key) else { return nil }
        return carrier[name]
    }
}

/// Writes W3C trace context into an outgoing request's header fields (replacing what was there).
public struct HTTPFieldsInjector: Injector {
    public init() {}

    public func inject(_ value: String, forKey key: String, into carrier: inout HTTPFields) {
        guard let name = HTTPField.Name(key) else { return }
        carrier[name] = value
    }
}

struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}

/// The store with each operation a client span (`redis GET`, …) under the request's span.
public struct TracedStore: KeyValueStore {
    let base: any KeyValueStore
    let system: String

    public init(_ base: any KeyValueStore, system: String = "redis") {
        self.base = base
        self.system = system
    }

    private func traced<T>(_ operation: String, _ body: () async throws(StoreError) -> T) async throws(StoreError) -> T {
        let span = startSpan("\(system) \(operation)", context: ServiceContext.current ?? .topLevel, ofKind: .client)
        span.attributes["db.system.name"] = system
        span.attributes["db.operation.name"] = operation
        defer { span.end() }
        do {
            return try await body()
        } catch {
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error))
            throw error
        }
    }

    public func get(_ key: String) async throws(StoreError) -> [UInt8]? { try await traced("GET") { () async throws(StoreError) in try await base.get(key) } }
    public func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) {
        try await traced("SET") { () async throws(StoreError) in try await base.set(key, value, ttl: ttl) }
    }
    public func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool {
        try await traced("SET NX") { () async throws(StoreError) in try await base.setIfAbsent(key, value, ttl: ttl) }
    }
    public func replaceIfEqual(_ key: String, expected: [UInt8], with value: [UInt8]) async throws(StoreError) -> Bool {
        try await traced("EVAL compare-and-set") { () async throws(StoreError) in try await base.replaceIfEqual(key, expected: expected, with: value) }
    }
    public func take(_ key: String) async throws(StoreError) -> [UInt8]? { try await traced("GETDEL") { () async throws(StoreError) in try await base.take(key) } }
    public func delete(_ keys: [String]) async throws(StoreError) -> Int { try await traced("DEL") { () async throws(StoreError) in try await base.delete(keys) } }
    public func increment(_ key: String, window: Duration) async throws(StoreError) -> Int {
        try await traced("INCR") { () async throws(StoreError) in try await base.increment(key, window: window) }
    }
    public func rateLimit(_ key: String, interval: Duration, burst: Int) async throws(StoreError) -> RateLimitDecision {
        try await traced("EVALSHA rate-limit") { () async throws(StoreError) in try await base.rateLimit(key, interval: interval, burst: burst) }
    }
    public func timeToLive(_ key: String) async throws(StoreError) -> Duration? { try await traced("PTTL") { () async throws(StoreError) in try await base.timeToLive(key) } }
    public func addToSet(_ key: String, _ members: [String], ttl: Duration?) async throws(StoreError) {
        try await traced("SADD") { () async throws(StoreError) in try await base.addToSet(key, members, ttl: ttl) }
    }
    public func setMembers(_ key: String) async throws(StoreError) -> [String] { try await traced("SMEMBERS") { () async throws(StoreError) in try await base.setMembers(key) } }
    public func removeFromSet(_ key: String, _ members: [String]) async throws(StoreError) {
        try await traced("SREM") { () async throws(StoreError) in try await base.removeFromSet(key, members) }
    }
    public func ping() async throws(StoreError) { try await traced("PING") { () async throws(StoreError) in try await base.ping() } }
}
