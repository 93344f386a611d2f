import Foundation
import AuthorizationServer
import Testing

@Suite struct PasswordHashTests {
    @Test func hashesAndVerifies() throws {
        let encoded = try PasswordHash.hash("correct horse battery staple", logN: 14)
        #expect(encoded.hasPrefix("$scrypt$ln=14,r=8,p=1$"))
        #expect(PasswordHash.verify("correct horse battery staple", against: encoded))
        #expect(!PasswordHash.verify("correct horse battery stapl", against: encoded))
        #expect(!PasswordHash.verify("", against: encoded))
        // A fresh salt every time.
        #expect(try PasswordHash.hash("same", logN: 14) != PasswordHash.hash("same", logN: 14))
    }

    @Test func rejectsTamperedWeakAndForeignHashes() throws {
        let encoded = try PasswordHash.hash("pw", logN: 14)
        var parts = encoded.split(separator: "$", omittingEmptySubsequences: false).map(String.init)
        parts[4] = String(parts[4].reversed())
        #expect(!PasswordHash.verify("pw", against: parts.joined(separator: "$")))
        let weak = encoded.replacingOccurrences(of: "ln=14", with: "ln=10")
        #expect(PasswordHash.parse(weak) == nil)
        #expect(!PasswordHash.verify("pw", against: weak))
        #expect(PasswordHash.parse("pw") == nil)
        #expect(PasswordHash.parse("$2b$12$abcdefghijklmnopqrstuv") == nil)
    }
}
