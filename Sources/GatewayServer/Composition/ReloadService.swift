import CProcessSpawn
import MCPTransport
import Foundation
import GatewayConfig
import GatewayStore
import GatewayStdio
import GatewayUpstream
import Logging
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// Watches gateway.yaml (polling its identity and content) and listens for SIGHUP. A valid new
/// file is compiled aside and swapped in atomically; an invalid one is logged and ignored.
struct ReloadService: Service, CustomStringConvertible {
    /// What service-lifecycle logs: the watched file, nothing the loader holds.
    var description: String { "ReloadService(\(path))" }

    let path: String
    let loader: ConfigurationLoader
    let holder: ConfigurationHolder
    let clients: UpstreamClients
    let stdio: StdioRegistry
    /// Where the rebuilt middlewares count (rate limits).
    let store: any KeyValueStore
    let pollInterval: Duration
    let logger: Logger

    func run() async throws {
        let (triggers, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let signals = await UnixSignalsSequence(trapping: .sighup)
        let path = path
        let pollInterval = pollInterval
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await _ in signals { continuation.yield("SIGHUP") }
                }
                group.addTask {
                    var last = FileFingerprint.read(path)
                    while !Task.isCancelled {
                        // Cancellation here is the graceful shutdown: end quietly.
                        guard (try? await Task.sleep(for: pollInterval)) != nil else { return }
                        let now = FileFingerprint.read(path)
                        if now != last {
                            last = now
                            continuation.yield("file changed")
                        }
                    }
                }
                group.addTask {
                    var lastText = await Self.readFile(path)
                    for await reason in triggers {
                        let text = await Self.readFile(path)
                        // Editors often touch a file without changing it; SIGHUP always reloads.
                        if reason != "SIGHUP", text == lastText { continue }
                        lastText = text
                        reload(reason: reason, text: text)
                    }
                }
            }
        }
    }

    /// Reads the file on NIO's blocking-I/O pool: tasks run on the event loops, which must not block.
    static func readFile(_ path: String) async -> String? {
        try? await NIOThreadPool.singleton.runIfActive {
            try String(contentsOfFile: path, encoding: .utf8)
        }
    }

    func reload(reason: String, text: String?) {
        let old = holder.current
        let candidate: GatewayConfiguration
        do throws(ConfigError) {
            guard let text else {
                throw ConfigError([ConfigDiagnostic(file: path, line: 1, column: 1, keyPath: "", message: "cannot read the file")])
            }
            candidate = try loader.load(yaml: text, file: path)
        } catch {
            holder.recordRejectedReload()
            logger.error("configuration reload rejected; the previous configuration stays in force", metadata: [
                "reason": "\(reason)", "problems": "\(error.diagnostics.count)",
            ])
            for diagnostic in error.diagnostics {
                logger.error("\(diagnostic.description)")
            }
            return
        }
        let merged = Self.applyingDynamicPart(of: candidate, to: old.configuration, logger: logger)
        let runtime = RuntimeConfiguration(configuration: merged, generation: old.generation + 1, clients: clients, stdio: stdio, store: store)
        holder.replace(with: runtime)
        logger.info("configuration reloaded", metadata: [
            "reason": "\(reason)", "generation": "\(runtime.generation)", "routers": "\(merged.routers.count)",
            "services": "\(merged.services.count)",
        ])
    }

    /// Routers, services and the global allow-list reload live; entry points, publicURL, the rest of
    /// auth, and store are read at start-up only. Changes to those are logged and wait for a restart.
    static func applyingDynamicPart(of candidate: GatewayConfiguration, to running: GatewayConfiguration, logger: Logger) -> GatewayConfiguration {
        var restartNeeded: [String] = []
        if candidate.entryPoints != running.entryPoints { restartNeeded.append("entryPoints") }
        if candidate.publicURL != running.publicURL { restartNeeded.append("publicURL") }
        let authChanged: Bool
        switch (candidate.auth, running.auth) {
        case (let new?, let old?): authChanged = !new.equalsIgnoringAllowList(old)
        default: authChanged = candidate.auth != running.auth
        }
        if authChanged { restartNeeded.append("auth") }
        if candidate.store != running.store { restartNeeded.append("store") }
        if candidate.log != running.log { restartNeeded.append("log") }
        if candidate.audit != running.audit { restartNeeded.append("audit") }
        if candidate.metrics != running.metrics { restartNeeded.append("metrics") }
        if candidate.tracing != running.tracing { restartNeeded.append("tracing") }
        if candidate.cluster != running.cluster { restartNeeded.append("cluster") }
        if candidate.shutdownGrace != running.shutdownGrace { restartNeeded.append("shutdownGrace") }
        if candidate.limits != running.limits { restartNeeded.append("limits") }
        if !restartNeeded.isEmpty {
            logger.warning("these settings changed but take effect only after a restart; the running values stay in force", metadata: [
                "keys": "\(restartNeeded.joined(separator: ", "))",
            ])
        }
        var merged = running
        merged.routers = candidate.routers
        merged.services = candidate.services
        merged.middlewares = candidate.middlewares
        // The keys sealing users' upstream tokens reload live, so a key can be rotated
        // (`admin rotate-store-key`) without a restart.
        merged.storeKeys = candidate.storeKeys
        // The admin page's allow-list reloads live too (adding or removing `admin:` needs a restart).
        if merged.admin != nil, let admin = candidate.admin { merged.admin = admin }
        if (candidate.admin == nil) != (running.admin == nil) {
            logger.warning("admin was added or removed: that takes effect after a restart")
        }
        // Allow-lists reload live: removing a user cuts them off without a restart.
        if let allow = candidate.auth?.allow, merged.auth != nil {
            merged.auth?.allow = allow
        }
        // So do API keys: a removed key stops working at the next request.
        if merged.auth != nil {
            merged.auth?.apiKeys = candidate.auth?.apiKeys ?? []
            // And machine clients: a removed one's tokens stop at its next request.
            merged.auth?.machineClients = candidate.auth?.machineClients ?? []
            // And external issuers: a removed issuer's tokens are refused at the next request.
            merged.auth?.jwtIssuers = candidate.auth?.jwtIssuers ?? []
        }
        return merged
    }
}

/// Identity of a file for change detection: an editor's rename-over-write changes the inode.
struct FileFingerprint: Equatable, Sendable {
    var inode: UInt64
    var size: Int64
    var modified: Int
    var modifiedNanoseconds: Int

    /// One stat(2) (the watcher reads it every interval; Foundation's `attributesOfItem` also
    /// reads /etc/passwd and /etc/group to name the owner, each time).
    static func read(_ path: String) -> FileFingerprint? {
        var inode: UInt64 = 0
        var size: Int64 = 0
        var seconds: Int64 = 0
        var nanoseconds: Int64 = 0
        guard mcpgw_file_fingerprint(path, &inode, &size, &seconds, &nanoseconds) == 0 else { return nil }
        return FileFingerprint(inode: inode, size: size, modified: Int(seconds), modifiedNanoseconds: Int(nanoseconds))
    }
}
