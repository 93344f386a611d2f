import GatewayConfig
import Testing

@Suite struct AddressRangeTests {
    @Test func rangesContainTheirAddresses() throws {
        let private10 = try #require(AddressRange("10.0.0.0/8"))
        #expect(private10.contains(try #require(IPAddress("10.200.3.4"))))
        #expect(!private10.contains(try #require(IPAddress("11.0.0.1"))))
        let loopback = try #require(AddressRange("127.0.0.1"))
        #expect(loopback.contains(try #require(IPAddress("127.0.0.1"))))
        #expect(!loopback.contains(try #require(IPAddress("127.0.0.2"))))
        let v6 = try #require(AddressRange("fd00::/8"))
        #expect(v6.contains(try #require(IPAddress("fd12:3456::1"))))
        #expect(!v6.contains(try #require(IPAddress("fe80::1"))))
        // An IPv4 range never contains an IPv6 address that merely shares bits.
        #expect(!private10.contains(try #require(IPAddress("::a00:1"))))
        #expect(AddressRange("10.0.0.0/33") == nil && AddressRange("nonsense") == nil && AddressRange("::/129") == nil)
    }

    @Test func ipv6ClientsAreLimitedPerSlash64() throws {
        let one = try #require(IPAddress("2001:db8:1:2::1"))
        let other = try #require(IPAddress("2001:db8:1:2:ffff::9"))
        #expect(one.rateLimitKey == other.rateLimitKey)
        let elsewhere = try #require(IPAddress("2001:db8:1:3::1"))
        #expect(elsewhere.rateLimitKey != one.rateLimitKey)
        let v4 = try #require(IPAddress("192.0.2.7"))
        #expect(v4.rateLimitKey == "192.0.2.7")
    }

    @Test func surroundingSpacesAreTrimmedAndInnerOnesRefused() throws {
        #expect(IPAddress(" 10.0.0.1\t")?.description == "10.0.0.1")
        #expect(IPAddress("\t::1")?.description == "0:0:0:0:0:0:0:1")
        #expect(IPAddress("10.0.0.1")?.rateLimitKey == "10.0.0.1")
        #expect(IPAddress("10.0. 0.1") == nil)
        #expect(IPAddress("") == nil)
    }
}
