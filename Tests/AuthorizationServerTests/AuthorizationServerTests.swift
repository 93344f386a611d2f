import AuthorizationServer
import Foundation
import GatewayStore
import Testing

@Suite struct JWTTests {
    let claims = AccessTokenClaims(
        iss: "https://mcp.example.com", sub: "github:1", aud: "https://mcp.example.com/time/mcp", exp: 2_000_000_000,
        iat: 1_900_000_000, jti: "j1", client_id: "c1", scope: "mcp", login: "octocat"
    )

    @Test func signsAndVerifiesES256() throws {
        let ring = KeyRing(keys: [.generate()])
        let key = try #require(ring.current)
        let token = try JWT.sign(claims, with: key)
        #expect(token.split(separator: ".").count == 3)
        let decoded: AccessTokenClaims = try JWT.verify(token, keys: ring)
        #expect(decoded == claims)
    }

    @Test func rejectsTamperingAlgNoneAndUnknownKeys() throws {
        let ring = KeyRing(keys: [.generate()])
        let key = try #require(ring.current)
        let token = try JWT.sign(claims, with: key)
        let parts = token.split(separator: ".").map(String.init)

        // A payload changed after signing.
        var forged = claims
        forged.sub = "github:2"
        let forgedPayload = Data(try JSONEncoder().encode(forged)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        #expect(throws: JWTError.badSignature) { try JWT.verify("\(parts[0]).\(forgedPayload).\(parts[2])", keys: ring, as: AccessTokenClaims.self) }

        // alg: none.
        let noneHeader = Data(#"{"alg":"none","kid":"\#(key.kid)"}"#.utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "")
        #expect(throws: JWTError.unsupportedAlgorithm("none")) { try JWT.verify("\(noneHeader).\(parts[1]).", keys: ring, as: AccessTokenClaims.self) }

        // Signed by a key the ring does not hold.
        let stranger = try JWT.sign(claims, with: .generate())
        #expect(throws: JWTError.self) { try JWT.verify(stranger, keys: ring, as: AccessTokenClaims.self) }

        #expect(throws: JWTError.malformed) { try JWT.verify("not.a.jwt!", keys: ring, as: AccessTokenClaims.self) }
        #expect(throws: JWTError.malformed) { try JWT.verify("onlyonepart", keys: ring, as: AccessTokenClaims.self) }
    }

    @Test func publishesAValidP256JWK() throws {
        let key = SigningKey.generate()
        let jwk = key.publicJWK
        #expect(jwk["kty"] == "EC" && jwk["crv"] == "P-256" && jwk["alg"] == "ES256" && jwk["kid"] == key.kid)
        #expect(jwk["x"]?.count == 43 && jwk["y"]?.count == 43)
        #expect(jwk["d"] == nil)
    }
}

@Suite struct KeyRingTests {
    @Test func rotationKeepsOldKeysPublishedUntilTheirTokensExpire() throws {
        let start = Date(timeIntervalSince1970: 1_900_000_000)
        var ring = KeyRing(keys: [.generate(now: start)])
        let first = try #require(ring.current)
        let oldToken = try JWT.sign(AccessTokenClaims(iss: "i", sub: "s", aud: "a", exp: 0, iat: 0, jti: "j", client_id: "c", scope: "", login: "l"), with: first)

        ring.rotate(now: start.addingTimeInterval(10))
        let second = try #require(ring.current)
        #expect(second.kid != first.kid)
        #expect(ring.jwks["keys"]?.count == 2)
        // Tokens of the retired key still verify.
        let _: AccessTokenClaims = try JWT.verify(oldToken, keys: ring)

        ring.prune(maxTokenLifetime: 3600, now: start.addingTimeInterval(3000))
        #expect(ring.keys.count == 2)
        ring.prune(maxTokenLifetime: 3600, now: start.addingTimeInterval(3611))
        #expect(ring.keys.map(\.kid) == [second.kid])
        #expect(throws: JWTError.self) { try JWT.verify(oldToken, keys: ring, as: AccessTokenClaims.self) }
    }

    @Test func instancesSharingAStoreAgreeOnOneRing() async throws {
        let store = MemoryStore()
        let rings = try await withThrowingTaskGroup(of: KeyRing.self) { group in
            for _ in 0..<8 {
                group.addTask { try await KeyRingRepository(store: store).loadOrCreate() }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let kids = Set(rings.compactMap { $0.current?.kid })
        #expect(kids.count == 1)
        // A reloaded ring signs tokens the others verify.
        let reloaded = try await KeyRingRepository(store: store).loadOrCreate()
        let token = try JWT.sign(["sub": "x"], with: try #require(reloaded.current))
        let _: [String: String] = try JWT.verify(token, keys: rings[0])
    }

    @Test func rotationIsPersisted() async throws {
        let store = MemoryStore()
        let repository = KeyRingRepository(store: store)
        var ring = try await repository.loadOrCreate()
        ring.rotate()
        try await repository.save(ring)
        let loaded = try await repository.loadOrCreate()
        #expect(loaded.keys.map(\.kid) == ring.keys.map(\.kid))
        #expect(loaded.current?.kid == ring.current?.kid)
    }
}

@Suite struct ClientMetadataTests {
    @Test func claudeCallbacksRegister() throws {
        let metadata = try ClientMetadataValidator.validate([
            "client_name": "Claude",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        ])
        #expect(metadata.token_endpoint_auth_method == .none)
        #expect(!metadata.isConfidential)
    }

    @Test func defaultsFollowRFC7591() throws {
        let metadata = try ClientMetadataValidator.validate(["redirect_uris": ["https://app.example.com/cb"]])
        #expect(metadata.token_endpoint_auth_method == .clientSecretBasic)
        #expect(metadata.grant_types == ["authorization_code"])
        #expect(metadata.response_types == ["code"])
        #expect(metadata.application_type == "web")
    }

    @Test(arguments: [
        ("http://localhost.evil.com/cb", "invalid_redirect_uri"),
        ("http://127.0.0.1.evil.com/cb", "invalid_redirect_uri"),
        ("http://example.com/cb", "invalid_redirect_uri"),
        ("javascript:alert(1)", "invalid_redirect_uri"),
        ("JavaScript:alert(1)", "invalid_redirect_uri"),
        ("data:text/html,<script>alert(1)</script>", "invalid_redirect_uri"),
        ("https://app.example.com/cb#fragment", "invalid_redirect_uri"),
        ("https://user:pass@app.example.com/cb", "invalid_redirect_uri"),
        ("com.example.app:/callback", "invalid_redirect_uri"),
        ("/relative/path", "invalid_redirect_uri"),
        ("https:///nohost", "invalid_redirect_uri"),
    ])
    func hostileRedirectURIsAreRejected(uri: String, code: String) {
        do {
            _ = try ClientMetadataValidator.validate(["redirect_uris": [uri]])
            Issue.record("accepted \(uri)")
        } catch {
            #expect(error.code == code, "\(uri): \(error.description)")
        }
    }

    @Test(arguments: ["http://127.0.0.1:33418/callback", "http://localhost/cb", "http://[::1]:8080/cb", "https://app.example.com/cb?x=1"])
    func acceptableRedirectURIs(uri: String) throws {
        _ = try ClientMetadataValidator.validate(["redirect_uris": [uri]])
    }

    @Test func customSchemesOnlyForNativeApps() throws {
        _ = try ClientMetadataValidator.validate(["redirect_uris": ["com.example.app:/callback"], "application_type": "native"])
        #expect(throws: RegistrationError.self) {
            try ClientMetadataValidator.validate(["redirect_uris": ["myapp:/callback"], "application_type": "native"])
        }
    }

    @Test func grantTypesAreValidated() {
        #expect(throws: RegistrationError.self) {
            try ClientMetadataValidator.validate(["redirect_uris": ["https://a.example/cb"], "grant_types": ["authorization_code", "client_credentials"]])
        }
        #expect(throws: RegistrationError.self) {
            try ClientMetadataValidator.validate(["redirect_uris": ["https://a.example/cb"], "grant_types": ["refresh_token"]])
        }
        #expect(throws: RegistrationError.self) {
            try ClientMetadataValidator.validate(["redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"])
        }
        #expect(throws: RegistrationError.self) {
            try ClientMetadataValidator.validate(["redirect_uris": "https://a.example/cb"])
        }
    }

    @Test func redirectMatchingIsExactExceptLoopbackPorts() {
        let registered = ["https://claude.ai/api/mcp/auth_callback", "http://127.0.0.1/callback"]
        #expect(ClientMetadataValidator.matches(presented: "https://claude.ai/api/mcp/auth_callback", registered: registered))
        #expect(!ClientMetadataValidator.matches(presented: "https://claude.ai/api/mcp/auth_callback/extra", registered: registered))
        #expect(!ClientMetadataValidator.matches(presented: "https://claude.ai/api/mcp/auth_callbackx", registered: registered))
        #expect(!ClientMetadataValidator.matches(presented: "https://claude.ai.evil.com/api/mcp/auth_callback", registered: registered))
        #expect(ClientMetadataValidator.matches(presented: "http://127.0.0.1:51234/callback", registered: registered))
        #expect(!ClientMetadataValidator.matches(presented: "http://127.0.0.1:51234/other", registered: registered))
        #expect(!ClientMetadataValidator.matches(presented: "http://localhost:51234/callback", registered: registered))
    }
}
