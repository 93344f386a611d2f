import Foundation
import GatewayConfig
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The certificate of one TLS entry point, reloaded when its files change. Every TLS handshake asks
/// for the pair in force (NIOSSL's context callback), so a renewed certificate (certbot, acme.sh)
/// is served to new connections without a restart; connections already open keep theirs. A new
/// pair that cannot be used (unreadable, not PEM, a key that does not match the certificate, or
/// the moment between a renewal writing one file and the other) is logged, and the previous pair
/// stays in force.
final class CertificateReloader: Sendable {
    struct Pair: Sendable {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        let fingerprint: [FileFingerprint?]
    }

    let entryPoint: String
    let settings: TLSSettings
    private let logger: Logger
    private let current: Mutex<Pair>
    /// The last fingerprint that failed, so a broken pair is logged once, not every poll.
    private let lastFailure = Mutex<[FileFingerprint?]?>(nil)

    /// Loads the pair; a pair that cannot be used stops the start-up with the reason.
    init(entryPoint: String, settings: TLSSettings, logger: Logger) throws(GatewayStartupError) {
        self.entryPoint = entryPoint
        self.settings = settings
        self.logger = logger
        do {
            current = Mutex(try Self.load(settings))
        } catch {
            throw GatewayStartupError("entryPoints.\(entryPoint).tls: \(error.reason)")
        }
    }

    struct LoadError: Error {
        let reason: String
    }

    /// Reads and checks a pair: both files parse, and the key belongs to the leaf certificate
    /// (BoringSSL refuses a context whose key does not match).
    static func load(_ settings: TLSSettings) throws(LoadError) -> Pair {
        let fingerprint = [FileFingerprint.read(settings.certFile), FileFingerprint.read(settings.keyFile)]
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(settings.certFile) } catch {
            throw LoadError(reason: "cannot read the certificate chain \(settings.certFile): \(error)")
        }
        guard !chain.isEmpty else { throw LoadError(reason: "\(settings.certFile) holds no PEM certificate") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: settings.keyFile, format: .pem) } catch {
            throw LoadError(reason: "cannot read the private key \(settings.keyFile): \(error)")
        }
        do {
            _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw LoadError(reason: "the private key \(settings.keyFile) does not match the certificate \(settings.certFile) (\(error))")
        }
        return Pair(chain: chain, key: key, fingerprint: fingerprint)
    }

    /// The server configuration: the pair loaded at start-up, replaced per handshake by the one in
    /// force; `http2` offers h2 by ALPN.
    func configuration() -> TLSConfiguration {
        let pair = current.withLock { $0 }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: pair.chain.map { .certificate($0) }, privateKey: .privateKey(pair.key))
        configuration.minimumTLSVersion = settings.minVersion == .tls13 ? .tlsv13 : .tlsv12
        configuration.sslContextCallback = { [self] _, promise in
            let pair = current.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.chain.map { .certificate($0) }
            override.privateKey = .privateKey(pair.key)
            promise.succeed(override)
        }
        return configuration
    }

    /// Reloads the pair when either file changed (blocking reads on NIO's thread pool).
    func refresh() async {
        let fingerprint = [FileFingerprint.read(settings.certFile), FileFingerprint.read(settings.keyFile)]
        guard fingerprint != current.withLock({ $0.fingerprint }) else { return }
        let settings = self.settings
        let result: Result<Pair, LoadError>
        do {
            result = try await NIOThreadPool.singleton.runIfActive { () -> Result<Pair, LoadError> in
                do throws(LoadError) { return .success(try Self.load(settings)) } catch { return .failure(error) }
            }
        } catch {
            return
        }
        switch result {
        case .success(let pair):
            current.withLock { $0 = pair }
            lastFailure.withLock { $0 = nil }
            logger.notice("TLS certificate reloaded", metadata: ["entryPoint": "\(entryPoint)", "certFile": "\(settings.certFile)"])
        case .failure(let error):
            let first = lastFailure.withLock { last in
                defer { last = fingerprint }
                return last != fingerprint
            }
            if first {
                logger.error("the changed TLS certificate cannot be used; the previous one stays in force", metadata: [
                    "entryPoint": "\(entryPoint)", "reason": "\(error.reason)",
                ])
            }
        }
    }
}

/// Polls the TLS entry points' certificate files (every `interval`) until shutdown.
struct CertificateWatchService: Service {
    let reloaders: [CertificateReloader]
    let interval: Duration

    /// Runs until shutdown: a service of the group that returns early would stop the gateway.
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                guard (try? await Task.sleep(for: interval)) != nil else { return }
                for reloader in reloaders { await reloader.refresh() }
            }
        }
    }
}
