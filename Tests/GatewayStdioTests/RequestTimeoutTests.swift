import NIOCore
import Testing
@testable import GatewayStdio

/// `requestTimeout` becomes an event-loop timer: the duration must arrive as the same time.
@Suite struct RequestTimeoutTests {
    @Test func durationsBecomeTheSameTimeAmount() {
        #expect(LegacySession.timeAmount(.seconds(1)) == .seconds(1))
        #expect(LegacySession.timeAmount(.milliseconds(1500)) == .milliseconds(1500))
        #expect(LegacySession.timeAmount(.nanoseconds(7)) == .nanoseconds(7))
        #expect(LegacySession.timeAmount(.seconds(3600) + .microseconds(5)) == .nanoseconds(3_600_000_005_000))
        #expect(LegacySession.timeAmount(.zero) == .nanoseconds(0))
        // Beyond what a time amount holds: saturated, never wrapped to the past.
        #expect(LegacySession.timeAmount(.seconds(Int64.max)) == .nanoseconds(.max))
        #expect(LegacySession.timeAmount(.seconds(-5)) == .nanoseconds(0))
    }
}
