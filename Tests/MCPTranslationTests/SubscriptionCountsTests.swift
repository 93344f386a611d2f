import MCPTranslation
import Testing

@Suite struct SubscriptionCountsTests {
    @Test func theServerIsAskedForTheFirstListenerAndReleasedAfterTheLast() {
        var counts = SubscriptionCounts()
        // Mutating calls are evaluated outside #expect (the macro captures values).
        let first = counts.join("memo://one"), second = counts.join("memo://one"), other = counts.join("memo://two")
        #expect(first && !second && other)
        #expect(counts.listeners(of: "memo://one") == 2)
        let notLast = counts.leave("memo://one"), last = counts.leave("memo://one"), never = counts.leave("memo://one")
        #expect(!notLast && last && !never)
        #expect(counts.listeners(of: "memo://one") == 0)
        let otherLast = counts.leave("memo://two")
        #expect(otherLast && counts == SubscriptionCounts())
    }
}
