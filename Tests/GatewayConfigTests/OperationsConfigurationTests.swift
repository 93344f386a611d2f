import GatewayConfig
import Testing

/// `metrics:` and the TLS keys of entry points (`tls`, `http2`, `redirectTo`) as the loader reads them.
@Suite struct OperationsConfigurationTests {
    static func yaml(entryPoints: String, extra: String = "") -> String { """
    entryPoints:
    \(entryPoints)
    publicURL: "https://localhost"
    \(extra)
    routers:
      r:
        rule: "PathPrefix(`/r`)"
        service: s
    services:
      s: { http: { url: "http://127.0.0.1:1/mcp" } }
    """ }

    @Test func tlsEntryPointsWithHTTP2AndARedirect() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(entryPoints: """
          web: { address: ":80", redirectTo: websecure }
          websecure:
            address: ":443"
            http2: true
            tls: { certFile: /etc/ssl/gw.pem, keyFile: /etc/ssl/gw-key.pem, minVersion: 1.3 }
        """, extra: "metrics: { prometheus: {} }\ntracing: { otlp: { endpoint: \"http://127.0.0.1:4318/\" }, sampleRatio: 0.25 }"))
        let secure = try #require(configuration.entryPoints.first { $0.name == "websecure" })
        #expect(secure.tls == TLSSettings(certFile: "/etc/ssl/gw.pem", keyFile: "/etc/ssl/gw-key.pem", minVersion: .tls13))
        #expect(secure.http2)
        #expect(configuration.entryPoints.first { $0.name == "web" }?.redirectTo == "websecure")
        let tracing = try #require(configuration.tracing)
        #expect(tracing.endpoint == "http://127.0.0.1:4318" && tracing.serviceName == "mcp-gateway" && tracing.sampleRatio == 0.25)
        // Every default: /metrics, every entry point, loopback clients.
        let metrics = try #require(configuration.metrics)
        #expect(metrics.path == "/metrics" && metrics.entryPoint == nil && metrics.allowFrom == MetricsConfiguration.loopback)
    }

    @Test func theFastRelayIsOnUnlessAnEntryPointTurnsItOff() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(entryPoints: """
          web: { address: ":80" }
          careful: { address: ":81", fastRelay: false }
        """))
        #expect(configuration.entryPoints.first { $0.name == "web" }?.fastRelay == true)
        #expect(configuration.entryPoints.first { $0.name == "careful" }?.fastRelay == false)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(entryPoints: """
              web: { address: ":80", fastRelay: sometimes }
            """), file: "f.yaml")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("f.yaml:2:37: entryPoints.web.fastRelay: expected true or false"), "\(error)")
        }
    }

    @Test func sessionLimitsDefaultTo1024AndTakeWholeNumbers() throws {
        let plain = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(entryPoints: "  web: { address: \":80\" }"))
        #expect(plain.limits == SessionLimits(webSocketSessions: 1024, legacySSESessions: 1024))
        let raised = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(entryPoints: "  web: { address: \":80\" }", extra: "limits: { webSocketSessions: 20000, connections: 30000 }"))
        #expect(raised.limits == SessionLimits(webSocketSessions: 20000, legacySSESessions: 1024, connections: 30000))
        #expect(plain.limits.connections == nil)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(
                yaml: Self.yaml(entryPoints: "  web: { address: \":80\" }", extra: "limits: { webSocketSessions: 0, legacySSESessions: lots, sessions: 5 }"), file: "l.yaml"
            )
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("l.yaml:4:58: limits.sessions: unknown key \"sessions\"; allowed here: connections, webSocketSessions, legacySSESessions"), "\(text)")
            #expect(text.contains("l.yaml:4:30: limits.webSocketSessions: must be between 1 and 1000000, got 0"), "\(text)")
            #expect(text.contains("l.yaml:4:52: limits.legacySSESessions: expected a whole number, got \"lots\""), "\(text)")
        }
    }

    @Test func everyMistakeIsReportedWithItsPosition() {
        let yaml = Self.yaml(entryPoints: """
          web: { address: ":80", redirectTo: plain, http2: true }
          plain: { address: ":81", redirectTo: nowhere }
          websecure: { address: ":443", tls: { certFile: a.pem, minVersion: "1.1" } }
        """, extra: """
        metrics:
          prometheus: { path: "metrics", entryPoint: admin, allowFrom: ["10.0.0.0/33"] }
        tracing: { otlp: { endpoint: "udp://x" }, sampleRatio: 2 }
        """)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "o.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("o.yaml:2:52: entryPoints.web.http2: http2 needs tls on the same entry point"), "\(text)")
            #expect(text.contains("entryPoints.web.redirectTo: redirectTo must name another entry point that has tls"), "\(text)")
            #expect(text.contains("entryPoints.plain.redirectTo: unknown entry point \"nowhere\" (defined: web, plain, websecure)"), "\(text)")
            #expect(text.contains("entryPoints.websecure.tls: tls needs certFile and keyFile"), "\(text)")
            #expect(text.contains("metrics.prometheus.path: path must start with /"), "\(text)")
            #expect(text.contains("metrics.prometheus.entryPoint: unknown entry point \"admin\""), "\(text)")
            #expect(text.contains("metrics.prometheus.allowFrom[0]: \"10.0.0.0/33\" is not an address or CIDR range"), "\(text)")
            #expect(text.contains("tracing.otlp.endpoint: \"udp://x\" is not an absolute http(s) URL"), "\(text)")
        }
    }
}

/// `cluster:` and the top-level `shutdownGrace`.
@Suite struct ClusterConfigurationTests {
    static func yaml(_ extra: String) -> String { OperationsConfigurationTests.yaml(entryPoints: "  web: { address: \":8080\" }", extra: extra) }

    @Test func aClusterWithItsSecretFromTheEnvironment() throws {
        let configuration = try ConfigurationLoader(environment: ["MCPGW_CLUSTER_SECRET": String(repeating: "k", count: 44), "POD_IP": "10.0.0.5"]).load(yaml: Self.yaml("""
        store: { redis: { url: "redis://127.0.0.1:6379/0" } }
        cluster: { advertiseURL: "http://${POD_IP}:8080/", secret: "env://MCPGW_CLUSTER_SECRET", heartbeatTimeout: 5s }
        shutdownGrace: 30s
        """))
        let cluster = try #require(configuration.cluster)
        #expect(cluster.advertiseURL == "http://10.0.0.5:8080" && cluster.secret.count == 44 && cluster.heartbeatTimeout == .seconds(5))
        #expect(configuration.shutdownGrace == .seconds(30))
        // The secret never prints.
        #expect(!"\(cluster)".contains("kkkk") && !String(reflecting: cluster).contains("kkkk"))
    }

    @Test func withoutClusterTheDefaultsHold() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(""))
        #expect(configuration.cluster == nil && configuration.shutdownGrace == .seconds(15))
    }

    @Test func everyClusterMistakeIsReportedWithItsPosition() {
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("""
            cluster: { advertiseURL: "10.0.0.5:8080", secret: "short", heartbeatTimeout: 1s, gossip: true }
            shutdownGrace: soon
            """), file: "c.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("c.yaml:5:"), "\(text)")
            #expect(text.contains("cluster: cluster needs store.redis"), "\(text)")
            #expect(text.contains("cluster.advertiseURL: \"10.0.0.5:8080\" is not an absolute http(s) URL"), "\(text)")
            #expect(text.contains("cluster.secret: the cluster secret must be at least 32 characters"), "\(text)")
            #expect(text.contains("cluster.heartbeatTimeout: heartbeatTimeout must be at least 3s"), "\(text)")
            #expect(text.contains("gossip"), "\(text)")
            #expect(text.contains("shutdownGrace: expected a duration"), "\(text)")
        }
    }
}
