import ArgumentParser
import AuthorizationServer
import Foundation
import GatewayAdmin
import GatewayConfig
import GatewayConnections
import GatewayRedis
import GatewayStore

/// `mcp-gateway admin …`: acts on the store the gateway.yaml names, next to the running gateways.
struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List and revoke clients, sessions and users in the gateway's store.",
        discussion: "Reads the same gateway.yaml as the gateway and acts on its Redis store; the running gateways see each change within seconds.",
        subcommands: [Clients.self, Sessions.self, Users.self, Tokens.self, RotateStoreKey.self]
    )

    struct Options: ParsableArguments {
        @OptionGroup var config: ConfigOption

        @Flag(help: "Print JSON instead of a table.")
        var json = false
    }

    /// The administration of the configured store, or a clear refusal.
    static func open(_ options: Options) -> (Administration, RedisStore) {
        let configuration: GatewayConfiguration
        do {
            configuration = try ConfigurationLoader().load(path: options.config.config)
        } catch {
            fail("\(error.description)\n\(options.config.config): \(error.diagnostics.count) problem(s)", code: 2)
        }
        guard let storeConfiguration = configuration.store else {
            fail("\(options.config.config) has no store: the gateway keeps its state in its own memory, which no other process can reach. Configure store.redis to use the admin commands", code: 2)
        }
        guard let store = RedisStore(url: storeConfiguration.redisURL, keyPrefix: storeConfiguration.keyPrefix) else {
            fail("store.redis.url cannot be used", code: 2)
        }
        return (Administration(configuration: configuration, store: store), store)
    }

    static func fail(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("mcp-gateway admin: \(message)\n".utf8))
        Foundation.exit(code)
    }

    static func run(_ options: Options, _ body: (Administration) async throws(Administration.Failure) -> Void) async {
        let (administration, store) = open(options)
        do {
            try await body(administration)
        } catch {
            await store.shutdown()
            fail(error.description)
        }
        await store.shutdown()
    }

    static func emit(_ value: some Encodable, json: Bool, table: () -> [[String]]) {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
            return
        }
        let rows = table()
        guard let header = rows.first else { return }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
    }

    static func time(_ seconds: Int) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }

    struct Clients: AsyncParsableCommand {
        static let configuration = CommandConfiguration(subcommands: [List.self, Show.self, Revoke.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Registered clients, newest first.")
            @OptionGroup var options: Options

            func run() async {
                await Admin.run(options) { administration throws(Administration.Failure) in
                    let clients = try await administration.clients()
                    emit(clients, json: options.json) {
                        [["CLIENT ID", "NAME", "REGISTERED", "AUTH", "REDIRECT URIS"]] + clients.map {
                            [$0.clientID, $0.clientName ?? "-", time($0.issuedAt), $0.tokenEndpointAuthMethod, $0.redirectURIs.joined(separator: " ")]
                        }
                    }
                }
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "One client's registration (never a secret).")
            @OptionGroup var options: Options
            @Argument(help: "The client id.") var clientID: String

            func run() async {
                await Admin.run(options) { administration throws(Administration.Failure) in
                    guard let client = try await administration.client(clientID) else { fail("no client \(clientID)") }
                    emit(client, json: options.json) {
                        [["FIELD", "VALUE"], ["client_id", client.clientID], ["client_name", client.clientName ?? "-"], ["registered", time(client.issuedAt)],
                         ["token_endpoint_auth_method", client.tokenEndpointAuthMethod], ["grant_types", client.grantTypes.joined(separator: " ")],
                         ["redirect_uris", client.redirectURIs.joined(separator: " ")]]
                    }
                }
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Delete a client: its refresh tokens stop at once, its access tokens within seconds.")
            @OptionGroup var options: Options
            @Argument(help: "The client id.") var clientID: String

            func run() async {
                await Admin.run(options) { administration throws(Administration.Failure) in
                    guard try await administration.revokeClient(clientID) else { fail("no client \(clientID)") }
                    emit(["revoked": clientID], json: options.json) { [["REVOKED"], [clientID]] }
                }
            }
        }
    }

    struct Sessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(subcommands: [List.self, End.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "MCP sessions bound to their owners (by the SHA-256 of their id).")
            @OptionGroup var options: Options

            func run() async {
                await Admin.run(options) { administration throws(Administration.Failure) in
                    let sessions = try await administration.sessionList()
                    emit(sessions, json: options.json) {
                        [["SESSION", "ROUTER", "SUBJECT", "EXPIRES IN"]] + sessions.map { [$0.session, $0.router, $0.subject ?? "-", "\($0.expiresInSeconds)s"] }
                    }
                }
            }
        }

        struct End: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "End a session (by its id or its hash): its client gets 404 and starts a new one.")
            @OptionGroup var options: Options
            @Argument(help: "The session id, or its SHA-256 as `sessions list` prints it.") var session: String

            func run() async {
                await Admin.run(options) { administration throws(Administration.Failure) in
                    guard try await administration.endSession(session) else { fail("no such session") }
                    emit(["ended": session], json: options.json) { [["ENDED"], [session]] }
                }
            }
        }
    }

    struct Users: AsyncParsableCommand {
        static let configuration = CommandConfiguration(subcommands: [List.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Users who signed in, most recently seen first.")
            @OptionGroup var options: Options

            func run() async {
                await Admin.run(options) { administration throws(Administration.Failure) in
                    let users = try await administration.userList()
                    emit(users, json: options.json) {
                        [["LOGIN", "SUBJECT", "FIRST SEEN", "LAST SEEN", "SIGN-INS"]] + users.map {
                            [$0.login, $0.subject, time($0.firstSeen), time($0.lastSeen), "\($0.signIns)"]
                        }
                    }
                }
            }
        }
    }

    struct Tokens: AsyncParsableCommand {
        static let configuration = CommandConfiguration(subcommands: [Revoke.self])

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Revoke every token of a user: refresh tokens at once, access tokens within seconds.",
                discussion: "The user can sign in again while the allow-lists admit them: remove them there to keep them out."
            )
            @OptionGroup var options: Options
            @Option(help: "The user's login.") var user: String

            func run() async {
                await Admin.run(options) { administration throws(Administration.Failure) in
                    let count = try await administration.revokeUser(user)
                    emit(["user": user, "revokedSignIns": "\(count)"], json: options.json) { [["USER", "REVOKED SIGN-INS"], [user, "\(count)"]] }
                }
            }
        }
    }

    struct RotateStoreKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-store-key",
            abstract: "Seal every stored upstream connection and registration again under store.encryptionKey.",
            discussion: """
            To rotate the key: put the new key in store.encryptionKey and the old one in \
            store.previousEncryptionKeys, reload or restart the gateways, run this command, then \
            remove the old key. Connections no configured key opens are listed and left alone; \
            so are the gateway's client registrations at upstream authorization servers.
            """
        )
        @OptionGroup var options: Options

        func run() async {
            let configuration: GatewayConfiguration
            do { configuration = try ConfigurationLoader().load(path: options.config.config) } catch {
                fail("\(error.description)\n\(options.config.config): \(error.diagnostics.count) problem(s)", code: 2)
            }
            guard let keys = configuration.storeKeys else { fail("\(options.config.config) has no store.encryptionKey", code: 2) }
            let (_, store) = open(options)
            let vault = ConnectionVault(store: store, keys: { keys })
            do {
                let result = try await vault.reseal()
                let registrations: (resealed: Int, unchanged: Int, failed: [String])
                do { registrations = try await UpstreamOAuthClient.resealRegistrations(store: store, keys: keys) } catch {
                    await store.shutdown()
                    fail("\(error)")
                }
                await store.shutdown()
                let keyID = SecretSealer(keys: keys).currentKeyID
                let failed = result.failed + registrations.failed.map { "registration:\($0)" }
                emit([
                    "key": keyID, "resealed": "\(result.resealed)", "unchanged": "\(result.unchanged)", "failed": failed.joined(separator: " "),
                    "registrationsResealed": "\(registrations.resealed)", "registrationsUnchanged": "\(registrations.unchanged)",
                ], json: options.json) {
                    [
                        ["KEY", "RESEALED", "ALREADY UNDER IT", "REGISTRATIONS RESEALED", "REGISTRATIONS UNDER IT", "NOT OPENED"],
                        [keyID, "\(result.resealed)", "\(result.unchanged)", "\(registrations.resealed)", "\(registrations.unchanged)", failed.isEmpty ? "-" : failed.joined(separator: " ")],
                    ]
                }
                if !failed.isEmpty { Foundation.exit(1) }
            } catch {
                await store.shutdown()
                fail("\(error)")
            }
        }
    }
}
