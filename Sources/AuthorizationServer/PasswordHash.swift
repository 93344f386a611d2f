import Crypto
import CryptoExtras
import Foundation

/// Password hashes for the local identity provider: scrypt (memory-hard), written as
/// `$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>` with base64url salt and hash.
/// `mcp-gateway hash-password` prints one for gateway.yaml.
public enum PasswordHash {
    /// N = 2^15, r = 8: 32 MiB and ~0.1 s per check on this project's machines.
    public static let defaultLogN = 15
    public static let minimumLogN = 14

    public struct Parameters: Equatable, Sendable {
        public var logN: Int
        public var r: Int
        public var p: Int
        public var salt: [UInt8]
        public var hash: [UInt8]
    }

    public static func hash(_ password: String, logN: Int = defaultLogN) throws -> String {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let derived = try derive(password, salt: salt, logN: logN, r: 8, p: 1)
        return "$scrypt$ln=\(logN),r=8,p=1$\(Base64URL.encode(salt))$\(Base64URL.encode(derived))"
    }

    /// Parses an encoded hash; nil when it is not one this gateway writes or accepts (including
    /// parameters too weak to keep).
    public static func parse(_ encoded: String) -> Parameters? {
        let parts = encoded.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0].isEmpty, parts[1] == "scrypt" else { return nil }
        var values: [String: Int] = [:]
        for pair in parts[2].split(separator: ",") {
            let keyValue = pair.split(separator: "=")
            guard keyValue.count == 2, let value = Int(keyValue[1]) else { return nil }
            values[String(keyValue[0])] = value
        }
        guard let logN = values["ln"], let r = values["r"], let p = values["p"], (minimumLogN...20).contains(logN),
              (1...32).contains(r), (1...16).contains(p),
              let salt = Base64URL.decode(parts[3]), salt.count >= 16, let hash = Base64URL.decode(parts[4]), hash.count >= 32
        else { return nil }
        return Parameters(logN: logN, r: r, p: p, salt: salt, hash: hash)
    }

    /// Checks a password against an encoded hash, comparing in constant time.
    public static func verify(_ password: String, against encoded: String) -> Bool {
        guard let parameters = parse(encoded),
              let derived = try? derive(password, salt: parameters.salt, logN: parameters.logN, r: parameters.r, p: parameters.p, length: parameters.hash.count)
        else { return false }
        return derived.count == parameters.hash.count && zip(derived, parameters.hash).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    private static func derive(_ password: String, salt: [UInt8], logN: Int, r: Int, p: Int, length: Int = 32) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(
            from: Array(password.utf8), salt: salt, outputByteCount: length, rounds: 1 << logN, blockSize: r, parallelism: p
        )
        return key.withUnsafeBytes { Array($0) }
    }
}
