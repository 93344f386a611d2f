import CoreMetrics
import Prometheus
import Synchronization
import ThreadShards

/// The gateway's Prometheus series, recorded through swift-metrics and rendered by
/// swift-prometheus. Handed to the stages that see each event; nil where metrics are off, so an
/// instance without `metrics:` spends nothing on them.
///
/// Labels are bounded: routers and services come from the configuration, and the two labels a
/// client chooses (the MCP method and the tool name) keep their first ``LabelBudget`` values and
/// fold the rest into `_other`. No label carries a user.
public final class GatewayMetrics: Sendable {
    public enum Name {
        public static let operationDuration = "mcp_server_operation_duration_seconds"
        public static let upstreamDuration = "mcp_gateway_upstream_duration_seconds"
        public static let sessions = "mcp_gateway_sessions"
        public static let stdioChildren = "mcp_gateway_stdio_children"
        public static let stdioSpawnFailures = "mcp_gateway_stdio_spawn_failures_total"
        public static let authFailures = "mcp_gateway_auth_failures_total"
        public static let rateLimited = "mcp_gateway_rate_limited_total"
        public static let tokensIssued = "mcp_gateway_tokens_issued_total"
        public static let configReloads = "mcp_gateway_config_reloads_total"
        public static let storeUp = "mcp_gateway_store_up"
        public static let requests = "mcp_gateway_http_requests_total"
    }

    /// The per-request series' names, with the help line a scrape shows.
    private enum Descriptor {
        // Computed: the type is not `Sendable`; each is made once per series, when it is first made.
        static var operationDuration: MetricNameDescriptor { MetricNameDescriptor(
            metricName: Name.operationDuration, unitName: "", helpText: "Duration of MCP requests through a router, in seconds (OpenTelemetry MCP semantic conventions)."
        ) }
        static var upstreamDuration: MetricNameDescriptor { MetricNameDescriptor(
            metricName: Name.upstreamDuration, unitName: "", helpText: "Time until an upstream answered (its response head, or a stdio child's reply), in seconds."
        ) }
        static var requests: MetricNameDescriptor { MetricNameDescriptor(metricName: Name.requests, unitName: "", helpText: "HTTP requests answered, by router and status class.") }
    }

    private let registry: PrometheusCollectorRegistry
    private let factory: any MetricsFactory
    /// The per-request series are made on the registry directly, not through swift-metrics: a
    /// `Recorder` converts each value through a generic `BinaryFloatingPoint` initializer and an
    /// existential handler, which cost more than the histogram's own work.
    private let latencyBuckets: [Double]
    private let methods = LabelBudget(limit: 64)
    private let tools = LabelBudget(limit: 512)
    /// The gauge label sets written at the last scrape, so a series that disappeared reads 0.
    private let lastGauges = Mutex<[String: Set<[String]>]>([:])
    private let lastReloads = Mutex<(accepted: Int, rejected: Int)>((0, 0))
    /// Sessions seen through this instance: by the id's hash (the id itself is not kept), the
    /// router and when it was last used.
    private let openSessions = Mutex<[Int: (router: String, lastUsed: ContinuousClock.Instant)]>([:])
    /// A session unused for this long no longer counts as open (its child or upstream has
    /// likely reaped it; a DELETE ends it at once).
    public static let sessionWindow: Duration = .seconds(30 * 60)
    /// The handles of the per-request series by their labels, made once: making one through the
    /// factory on every request (a registry lookup under its lock, a new handle) cost more than
    /// the observation itself. As bounded as the series they stand for.
    private let handles = Mutex(Handles())

    private struct Handles {
        struct Operation: Hashable {
            let method: String, tool: String, router: String, errorType: String
        }

        struct Request: Hashable {
            let router: String, code: String
        }

        var operations: [Operation: ValueHistogram] = [:]
        var requests: [Request: Prometheus.Counter] = [:]
        var upstreams: [String: ValueHistogram] = [:]
    }
    static let maxTrackedSessions = 100_000

    public init() {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        self.registry = registry
        self.factory = factory
        // Durations are recorded as seconds in a floating-point histogram: each observation
        // compares against every bucket bound, and `Double` compares cost a fraction of
        // `Duration`'s 128-bit ones (two observations on every proxied request).
        self.latencyBuckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
        // Counters a scrape should show from the start (at 0), for series without labels a
        // request chooses.
        for result in ["accepted", "rejected"] {
            _ = Counter(label: Name.configReloads, dimensions: [("result", result)], factory: factory)
        }
    }

    // MARK: observations folded in batches

    /// Per-request observations made on one thread since they were last folded into the shared
    /// series. Each event loop records two durations and a count per request: into the shared
    /// histograms directly, both cores wrote the same locks and buckets every time. A thread folds
    /// its observations in every `foldEvery`; a scrape folds every thread's first, so it shows
    /// every observation made before it (but for a batch another thread is folding at that
    /// moment, which the next scrape shows).
    private struct Unfolded: Sendable {
        var durations: [(histogram: Series<ValueHistogram>, seconds: Double)] = []
        var counts: [Series<Prometheus.Counter>] = []
    }

    /// A series' handle, not counted as a reference: every handle is kept in `handles` (never
    /// removed) for as long as this instance lives. Counting a reference to the shared handle on
    /// every observation, from every core, is the traffic the per-thread batches avoid.
    fileprivate struct Series<Handle: AnyObject>: @unchecked Sendable {
        private let handle: Unmanaged<Handle>
        init(_ handle: Handle) { self.handle = .passUnretained(handle) }
        func use(_ body: (Handle) -> Void) { handle._withUnsafeGuaranteedRef(body) }
    }
    private let unfolded = PerThread<Unfolded> { Unfolded() }
    static let foldEvery = 64

    private func observe(_ histogram: ValueHistogram, _ duration: Duration) {
        observe(histogram, seconds: duration.histogramSeconds)
    }

    private func observe(_ histogram: ValueHistogram, seconds: Double) {
        observe(Series(histogram), seconds: seconds)
    }

    private func count(_ counter: Prometheus.Counter) {
        count(Series(counter))
    }

    private func count(_ counter: Series<Prometheus.Counter>) {
        gather { $0.counts.append(counter) }
    }

    private func observe(_ histogram: Series<ValueHistogram>, seconds: Double) {
        gather { $0.durations.append((histogram, seconds)) }
    }

    /// `add`'s observations into this thread's batch, under its lock; a full batch is folded
    /// into the shared series outside it.
    private func gather(_ add: (inout Unfolded) -> Void) {
        let full = unfolded.withLock { unfolded -> Unfolded? in
            add(&unfolded)
            return unfolded.durations.count >= Self.foldEvery || unfolded.counts.count >= Self.foldEvery ? Self.take(&unfolded) : nil
        }
        if let full { Self.fold(full) }
    }

    /// What `unfolded` held, leaving it empty with the same room.
    private static func take(_ unfolded: inout Unfolded) -> Unfolded {
        let taken = unfolded
        unfolded.durations.removeAll(keepingCapacity: true)
        unfolded.counts.removeAll(keepingCapacity: true)
        return taken
    }

    /// Recorded outside the thread's lock (the series have their own).
    private static func fold(_ taken: Unfolded) {
        for (histogram, seconds) in taken.durations { histogram.use { $0.record(seconds) } }
        for counter in taken.counts { counter.use { $0.increment() } }
    }

    /// Every thread's observations into the shared series (before a scrape renders them).
    private func foldAll() {
        var everything = Unfolded()
        unfolded.forEach { unfolded in
            everything.durations.append(contentsOf: unfolded.durations)
            everything.counts.append(contentsOf: unfolded.counts)
            unfolded.durations.removeAll(keepingCapacity: true)
            unfolded.counts.removeAll(keepingCapacity: true)
        }
        Self.fold(everything)
    }

    // MARK: what the stages record

    /// The handles one connection recorded with last, by the values they were asked for: its
    /// next request of the same kind (the usual case: one client calling one router) records
    /// without the shared lookup and its locks. One per connection, on its event loop.
    public struct LocalHandles {
        // The handles unretained (`Series`): they live as long as the instance, and retaining a
        // handle both cores record into moved its reference count between their caches on
        // every request.
        fileprivate var operation: (method: String, tool: String?, router: String, errorType: String?, histogram: Series<ValueHistogram>)?
        fileprivate var request: (router: String, code: String, counter: Series<Prometheus.Counter>)?
        fileprivate var upstream: (service: String, histogram: Series<ValueHistogram>)?
        /// The instance the handles are of, kept alive with them (held, not retained per request).
        fileprivate var owner: GatewayMetrics?

        public init() {}
    }

    /// `handles` emptied when they are another instance's (their handles live as long as it does).
    private func adopt(_ handles: inout LocalHandles) {
        guard handles.owner !== self else { return }
        handles = LocalHandles()
        handles.owner = self
    }

    /// `operation(method:tool:router:errorType:duration:)` through a connection's handles, with
    /// the duration in seconds (a `Duration`'s 128-bit arithmetic costs more than the histogram).
    public func operation(method: String, tool: String?, router: String, errorType: String?, seconds: Double, handles: inout LocalHandles) {
        // A label value, once admitted or folded into `_other`, stays so: the handle found for
        // these values stands for them as long as this instance runs.
        observe(operationHistogram(method: method, tool: tool, router: router, errorType: errorType, handles: &handles), seconds: seconds)
    }

    private func operationHistogram(method: String, tool: String?, router: String, errorType: String?, handles: inout LocalHandles) -> Series<ValueHistogram> {
        adopt(&handles)
        if let last = handles.operation, last.method == method, last.router == router, last.errorType == errorType,
           method != "tools/call" || last.tool == tool {
            return last.histogram
        }
        let histogram = Series(operationHistogram(method: method, tool: tool, router: router, errorType: errorType))
        handles.operation = (method, tool, router, errorType, histogram)
        return histogram
    }

    /// A relayed request's three per-request observations at once, at its end: its count, the
    /// upstream's time to answer and the operation's duration (nil `method`: not an MCP request),
    /// appended under one lock rather than three.
    public func relayed(
        router: String, status: Int, service: String, upstreamSeconds: Double,
        method: String?, tool: String?, errorType: String?, seconds: Double, handles: inout LocalHandles
    ) {
        let counter = requestCounter(router: router, status: status, handles: &handles)
        let upstream = upstreamHistogram(service: service, handles: &handles)
        let operation = method.map { operationHistogram(method: $0, tool: tool, router: router, errorType: errorType, handles: &handles) }
        gather { unfolded in
            unfolded.counts.append(counter)
            unfolded.durations.append((upstream, upstreamSeconds))
            if let operation { unfolded.durations.append((operation, seconds)) }
        }
    }

    /// `request(router:status:)` through a connection's handles.
    public func request(router: String, status: Int, handles: inout LocalHandles) {
        count(requestCounter(router: router, status: status, handles: &handles))
    }

    private func requestCounter(router: String, status: Int, handles: inout LocalHandles) -> Series<Prometheus.Counter> {
        adopt(&handles)
        let code = Self.statusClass(status)
        if let last = handles.request, last.code == code, last.router == router { return last.counter }
        let counter = Series(requestCounter(router: router, code: code))
        handles.request = (router, code, counter)
        return counter
    }

    /// `upstream(service:duration:)` through a connection's handles, in seconds.
    public func upstream(service: String, seconds: Double, handles: inout LocalHandles) {
        observe(upstreamHistogram(service: service, handles: &handles), seconds: seconds)
    }

    private func upstreamHistogram(service: String, handles: inout LocalHandles) -> Series<ValueHistogram> {
        adopt(&handles)
        if let last = handles.upstream, last.service == service { return last.histogram }
        let histogram = Series(upstreamHistogram(service: service))
        handles.upstream = (service, histogram)
        return histogram
    }

    /// One MCP request through a router: the OpenTelemetry MCP semantic conventions' operation
    /// duration. `errorType`: the JSON-RPC error code or the HTTP status of a failed request.
    public func operation(method: String, tool: String?, router: String, errorType: String?, duration: Duration) {
        observe(operationHistogram(method: method, tool: tool, router: router, errorType: errorType), duration)
    }

    private func operationHistogram(method: String, tool: String?, router: String, errorType: String?) -> ValueHistogram {
        let methodLabel = methods.admit(method)
        let toolLabel = method == "tools/call" ? tool.map { tools.admit($0) } ?? "" : ""
        let key = Handles.Operation(method: methodLabel, tool: toolLabel, router: router, errorType: errorType ?? "")
        return handles.withLock { handles in
            if let made = handles.operations[key] { return made }
            let made = registry.makeValueHistogram(descriptor: Descriptor.operationDuration, labels: [
                ("mcp_method_name", key.method), ("gen_ai_tool_name", key.tool), ("router", key.router), ("error_type", key.errorType),
            ], buckets: latencyBuckets)
            handles.operations[key] = made
            return made
        }
    }

    /// Every request an entry point answered, by router (empty: the gateway's own endpoints).
    public func request(router: String, status: Int) {
        count(requestCounter(router: router, code: Self.statusClass(status)))
    }

    private func requestCounter(router: String, code: String) -> Prometheus.Counter {
        let key = Handles.Request(router: router, code: code)
        return handles.withLock { handles in
            if let made = handles.requests[key] { return made }
            let made = registry.makeCounter(descriptor: Descriptor.requests, labels: [("router", key.router), ("code", key.code)])
            handles.requests[key] = made
            return made
        }
    }

    /// How long the upstream took to answer (the response head, or the stdio child's reply).
    public func upstream(service: String, duration: Duration) {
        observe(upstreamHistogram(service: service), duration)
    }

    private func upstreamHistogram(service: String) -> ValueHistogram {
        handles.withLock { handles in
            if let made = handles.upstreams[service] { return made }
            let made = registry.makeValueHistogram(descriptor: Descriptor.upstreamDuration, labels: [("service", service)], buckets: latencyBuckets)
            handles.upstreams[service] = made
            return made
        }
    }

    public func authFailure(router: String, reason: String) {
        Counter(label: Name.authFailures, dimensions: [("router", router), ("reason", reason)], factory: factory).increment()
    }

    public func rateLimited(router: String) {
        Counter(label: Name.rateLimited, dimensions: [("router", router)], factory: factory).increment()
    }

    public func tokenIssued(grantType: String) {
        Counter(label: Name.tokensIssued, dimensions: [("grant_type", grantType)], factory: factory).increment()
    }

    public func stdioSpawnFailure(service: String) {
        Counter(label: Name.stdioSpawnFailures, dimensions: [("service", service)], factory: factory).increment()
    }

    /// A request in a session, or the answer that created one.
    public func sessionUsed(router: String, id: String) {
        let now = ContinuousClock.now
        openSessions.withLock { sessions in
            if sessions.count >= Self.maxTrackedSessions, sessions[id.hashValue] == nil { Self.prune(&sessions, now: now) }
            guard sessions.count < Self.maxTrackedSessions || sessions[id.hashValue] != nil else { return }
            sessions[id.hashValue] = (router, now)
        }
    }

    /// A session ended by its client (DELETE).
    public func sessionEnded(router: String, id: String) {
        _ = openSessions.withLock { $0.removeValue(forKey: id.hashValue) }
    }

    private static func prune(_ sessions: inout [Int: (router: String, lastUsed: ContinuousClock.Instant)], now: ContinuousClock.Instant) {
        sessions = sessions.filter { now - $0.value.lastUsed < sessionWindow }
    }

    // MARK: what a scrape reads

    /// What the gateway reads off its parts just before rendering (gauges and totals it keeps
    /// elsewhere).
    public struct Snapshot: Sendable {
        /// Routers (so each reads 0 before its first session).
        public var routers: [String] = []
        /// Stdio children by service and state (`session`, `pool`, `spare`).
        public var stdioChildren: [String: [String: Int]] = [:]
        /// Accepted and rejected reloads since start (running totals).
        public var acceptedReloads = 0
        public var rejectedReloads = 0
        /// nil: state lives in memory (always up).
        public var storeUp: Bool?

        public init() {}
    }

    /// The text exposition format, after the snapshot's values are written.
    public func exposition(_ snapshot: Snapshot) -> [UInt8] {
        foldAll()
        let now = ContinuousClock.now
        var sessions = Dictionary(uniqueKeysWithValues: snapshot.routers.map { ($0, 0) })
        openSessions.withLock { open in
            Self.prune(&open, now: now)
            for entry in open.values { sessions[entry.router, default: 0] += 1 }
        }
        setGauges(Name.sessions, sessions.map { ([$0.key], $0.value) }, labels: ["router"])
        var children: [([String], Int)] = []
        for (service, states) in snapshot.stdioChildren {
            for state in ["session", "pool", "spare"] { children.append(([service, state], states[state] ?? 0)) }
        }
        setGauges(Name.stdioChildren, children, labels: ["service", "state"])
        setGauges(Name.storeUp, [([], (snapshot.storeUp ?? true) ? 1 : 0)], labels: [])
        let (newAccepted, newRejected) = lastReloads.withLock { last in
            defer { last = (snapshot.acceptedReloads, snapshot.rejectedReloads) }
            return (max(0, snapshot.acceptedReloads - last.accepted), max(0, snapshot.rejectedReloads - last.rejected))
        }
        if newAccepted > 0 { Counter(label: Name.configReloads, dimensions: [("result", "accepted")], factory: factory).increment(by: newAccepted) }
        if newRejected > 0 { Counter(label: Name.configReloads, dimensions: [("result", "rejected")], factory: factory).increment(by: newRejected) }
        return registry.emitToBuffer()
    }

    /// Writes each value, and 0 for a label set written before but absent now (a router removed
    /// by a reload, a service with no children left).
    private func setGauges(_ name: String, _ values: [([String], Int)], labels: [String]) {
        let current = Set(values.map(\.0))
        let stale = lastGauges.withLock { last in
            defer { last[name] = current }
            return (last[name] ?? []).subtracting(current)
        }
        for (labelValues, value) in values + stale.map({ ($0, 0) }) {
            Gauge(label: name, dimensions: Array(zip(labels, labelValues)), factory: factory).record(value)
        }
    }

    static func statusClass(_ status: Int) -> String {
        switch status {
        case 200..<300: "2xx"
        case 300..<400: "3xx"
        case 400..<500: "4xx"
        default: "5xx"
        }
    }
}

/// The values a client-chosen label may take: the first `limit` distinct ones are kept as they
/// are, later ones read `_other`, so a client inventing tool names cannot grow the series.
final class LabelBudget: Sendable {
    private let limit: Int
    private let seen = Mutex<Set<String>>([])

    init(limit: Int) {
        self.limit = limit
    }

    func admit(_ value: String) -> String {
        // Long or odd values are not worth a series either.
        guard value.utf8.count <= 128 else { return "_other" }
        return seen.withLock { seen in
            if seen.contains(value) { return value }
            guard seen.count < limit else { return "_other" }
            seen.insert(value)
            return value
        }
    }
}

extension Duration {
    /// Seconds as a histogram observes them.
    var histogramSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
