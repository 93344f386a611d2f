import ArgumentParser
import AuthorizationServer
import Dispatch
import Foundation
import GatewayAudit
import GatewayAuth
import GatewayConfig
import GatewayServer
import Logging
import NIOCore
import NIOPosix

@main
enum Entry {
    static func main() {
        // Run Swift concurrency on the NIO event loops: a request then stays on the loop that
        // does its I/O instead of hopping between thread pools (measured: see bench/results-http.md).
        // This must happen before any async code runs, hence the synchronous main.
        if !EventLoopsAsGlobalExecutor.install() {
            NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        Task {
            await MCPGateway.main()
            exit(0)
        }
        dispatchMain()
    }
}

struct MCPGateway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp-gateway",
        abstract: "An authenticating reverse proxy for MCP servers.",
        version: GatewayVersion.current,
        subcommands: [Serve.self, Check.self, HashPassword.self, HashKey.self, NewKey.self, Admin.self],
        defaultSubcommand: Serve.self
    )
}

enum GatewayVersion {
    static let current = "0.1.0"
}

struct ConfigOption: ParsableArguments {
    @Option(name: [.short, .long], help: "Path to gateway.yaml.")
    var config: String = "gateway.yaml"
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway.")

    @OptionGroup var options: ConfigOption

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical); overrides log.level.")
    var logLevel: String?

    @Option(help: "How often to check gateway.yaml for changes, in seconds (SIGHUP reloads at once).")
    var watchInterval: Double = 1

    func run() async throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try ConfigurationLoader().load(path: options.config)
        } catch {
            FileHandle.standardError.write(Data("\(error.description)\n\(options.config): \(error.diagnostics.count) problem(s); not starting\n".utf8))
            throw ExitCode(2)
        }
        let levelName = logLevel ?? configuration.log.level
        let level = Logger.Level(rawValue: levelName) ?? .info
        switch configuration.log.format {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = TextLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "mcp-gateway")
        let interval = Duration.milliseconds(Int64(max(0.05, watchInterval) * 1000))
        try await Gateway(options: .init(configPath: options.config, pollInterval: interval), configuration: configuration, logger: logger).run()
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate gateway.yaml and list every problem as file:line:column: message.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            let configuration = try ConfigurationLoader().load(path: options.config)
            print("\(options.config): OK (\(configuration.entryPoints.count) entry point(s), \(configuration.routers.count) router(s), \(configuration.services.count) service(s))")
            // What an operator scaling out needs to know, without failing the check.
            switch (configuration.store, configuration.cluster) {
            case (nil, _):
                print("note: no store: run one instance only (sessions, clients and tokens live in its memory)")
            case (_?, nil):
                print("note: store.redis without cluster: one instance at a time on this store; to run several, give each cluster: {advertiseURL, secret} (docs/deployment.md, \"Several instances\")")
            case (_?, let cluster?):
                print("note: cluster: this instance is reached by the others at \(cluster.advertiseURL); every instance needs the same cluster.secret")
            }
        } catch {
            FileHandle.standardError.write(Data("\(error.description)\n\(options.config): \(error.diagnostics.count) problem(s)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct HashPassword: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password",
        abstract: "Print a scrypt hash of a password for auth.local.users in gateway.yaml.",
        discussion: "Reads the password from standard input (a terminal prompt hides it), e.g. `mcp-gateway hash-password < file`."
    )

    static let minimumLength = 12

    func run() throws {
        let interactive = isatty(STDIN_FILENO) == 1
        var saved = termios()
        if interactive {
            FileHandle.standardError.write(Data("Password: ".utf8))
            tcgetattr(STDIN_FILENO, &saved)
            var silent = saved
            silent.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(STDIN_FILENO, TCSANOW, &silent)
        }
        let line = readLine(strippingNewline: true)
        if interactive {
            tcsetattr(STDIN_FILENO, TCSANOW, &saved)
            FileHandle.standardError.write(Data("\n".utf8))
        }
        guard let password = line, !password.isEmpty else {
            FileHandle.standardError.write(Data("hash-password: no password on standard input\n".utf8))
            throw ExitCode(2)
        }
        // Local sign-in is guessable from the internet (throttled, but still): no short passwords.
        guard password.count >= Self.minimumLength else {
            FileHandle.standardError.write(Data("hash-password: a password needs at least \(Self.minimumLength) characters (this one has \(password.count)); a few random words make a good one\n".utf8))
            throw ExitCode(2)
        }
        print(try PasswordHash.hash(password))
    }
}

struct HashKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-key",
        abstract: "Print the hash of an API key for auth.apiKeys.<name>.hash in gateway.yaml.",
        discussion: "Reads the key from standard input, e.g. `mcp-gateway hash-key < key-file`; the key itself never goes in gateway.yaml."
    )

    func run() throws {
        guard let key = readLine(strippingNewline: true)?.trimmingCharacters(in: .whitespaces), !key.isEmpty else {
            FileHandle.standardError.write(Data("hash-key: no key on standard input\n".utf8))
            throw ExitCode(2)
        }
        guard key.count >= 20, !key.contains(".") else {
            FileHandle.standardError.write(Data("hash-key: a key needs at least 20 characters and no '.' (`mcp-gateway new-key` makes one)\n".utf8))
            throw ExitCode(2)
        }
        print(APIKeys.hashText(key))
    }
}

struct NewKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new-key",
        abstract: "Print a fresh API key (256 random bits) and its hash for auth.apiKeys.",
        discussion: "Give the key to the caller; put only the hash in gateway.yaml."
    )

    func run() throws {
        let key = APIKeys.newKey()
        print("key:  \(key)")
        print("hash: \(APIKeys.hashText(key))")
    }
}
