import GatewayAuth
import GatewayConfig
import Testing

/// Who the client is behind trusted proxies: `X-Forwarded-For` believed only as far as trusted
/// hops vouch for it, read from the right.
@Suite struct ClientAddressTests {
    static let proxies = ["10.0.0.0/8", "2001:db8:ffff::/48"].compactMap { AddressRange($0) }

    @Test func aPeerThatIsNotAProxyIsTheClientWhateverItForwards() {
        #expect(ClientAddress.resolve(peer: "198.51.100.7", forwardedFor: ["203.0.113.9"], trusted: Self.proxies) == "198.51.100.7")
    }

    @Test func theFirstUntrustedHopFromTheRightIsTheClientAndWhatItClaimsIsIgnored() {
        // The client wrote a forged address of its own to the left; the proxies appended the rest.
        let hops = ["6.6.6.6, 203.0.113.9", "10.1.2.3"]
        #expect(ClientAddress.resolve(peer: "10.0.0.1", forwardedFor: hops, trusted: Self.proxies) == "203.0.113.9")
    }

    @Test func anUnreadableHopStopsTheWalkAtTheLastAddressVouchedFor() {
        #expect(ClientAddress.resolve(peer: "10.0.0.1", forwardedFor: ["203.0.113.9, not-an-address, 10.0.0.2"], trusted: Self.proxies) == "10.0.0.2")
        #expect(ClientAddress.resolve(peer: "10.0.0.1", forwardedFor: ["unknown"], trusted: Self.proxies) == "10.0.0.1")
    }

    @Test func ipv6HopsAreCanonical() {
        #expect(ClientAddress.resolve(peer: "10.0.0.1", forwardedFor: ["2001:DB8:0::5"], trusted: Self.proxies) == "2001:db8:0:0:0:0:0:5")
    }

    /// A bridged session (legacy SSE, WebSocket) runs stage 1 again on the address stage 1 already
    /// resolved, with the same headers: that must not walk a step further to the left, whatever
    /// the proxies' ranges cover (here the clients are in a trusted range too).
    @Test(arguments: [
        (peer: "10.0.0.1", hops: ["6.6.6.6, 10.9.9.9"]),
        (peer: "10.0.0.1", hops: ["6.6.6.6, 203.0.113.9, 10.9.9.9"]),
        (peer: "10.0.0.1", hops: ["garbage, 10.9.9.9"]),
        (peer: "10.0.0.1", hops: ["10.8.8.8", "10.9.9.9"]),
        (peer: "10.0.0.1", hops: []),
        (peer: "203.0.113.1", hops: ["10.9.9.9"]),
    ])
    func resolvingTwiceNamesTheSameClient(peer: String, hops: [String]) {
        let once = ClientAddress.resolve(peer: peer, forwardedFor: hops, trusted: Self.proxies)
        #expect(ClientAddress.resolve(peer: once, forwardedFor: hops, trusted: Self.proxies) == once)
    }
}
