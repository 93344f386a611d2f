import GatewayStore

/// Records sealed with ``SecretSealer`` and listed in an index set of the store (users'
/// connections, the gateway's client registrations): what `admin rotate-store-key` seals again
/// under the current key.
struct SealedRecordIndex: Sendable {
    let store: any KeyValueStore
    let indexKey: String
    /// An index member's record: its store key and the context it was sealed under (nil: not one).
    let record: @Sendable (String) -> (key: String, context: String)?
    /// How a member no configured key opens is named in the result (never a secret).
    let name: @Sendable (String) -> String

    /// Seals every record again under `sealer`'s current key: how many were resealed, how many
    /// were already under it, and the ones no configured key opens (left as they are). Members
    /// whose record is gone are dropped from the index.
    func reseal(with sealer: SecretSealer) async throws(StoreError) -> (resealed: Int, unchanged: Int, failed: [String]) {
        var (resealed, unchanged, failed) = (0, 0, [String]())
        for member in try await store.setMembers(indexKey) {
            guard let (key, context) = record(member) else { continue }
            guard let raw = try await store.get(key) else {
                try? await store.removeFromSet(indexKey, [member])
                continue
            }
            let text = String(decoding: raw, as: UTF8.self)
            if SecretSealer.keyID(of: text) == sealer.currentKeyID {
                unchanged += 1
                continue
            }
            guard let plain = try? sealer.open(text, context: context), let again = try? sealer.seal(plain, context: context) else {
                failed.append(name(member))
                continue
            }
            try await store.set(key, Array(again.utf8), ttl: nil)
            resealed += 1
        }
        return (resealed, unchanged, failed)
    }
}
