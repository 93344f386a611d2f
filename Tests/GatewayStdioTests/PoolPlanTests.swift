import GatewayStdio
import Testing

/// The 2026-07-28 pool's choice of child, on values.
@Suite struct PoolPlanTests {
    @Test func anIdleChildIsReusedBeforeAnythingStarts() {
        #expect(PoolPlan.choose(loads: [3, 0, 1], starting: 0, warmAvailable: true, max: 4) == .use(1))
    }

    @Test func allBusyBelowMaxTakesAWarmChildOrStartsOne() {
        #expect(PoolPlan.choose(loads: [2, 1], starting: 0, warmAvailable: true, max: 3) == .takeWarm)
        #expect(PoolPlan.choose(loads: [2, 1], starting: 0, warmAvailable: false, max: 3) == .start)
        #expect(PoolPlan.choose(loads: [], starting: 0, warmAvailable: false, max: 1) == .start)
        #expect(PoolPlan.choose(loads: [], starting: 0, warmAvailable: true, max: 1) == .takeWarm)
    }

    @Test func aFullPoolSharesTheLeastBusyChild() {
        #expect(PoolPlan.choose(loads: [4, 2, 5], starting: 0, warmAvailable: true, max: 3) == .use(1))
        // Children still starting count toward the maximum.
        #expect(PoolPlan.choose(loads: [2], starting: 1, warmAvailable: true, max: 2) == .use(0))
        #expect(PoolPlan.choose(loads: [], starting: 1, warmAvailable: true, max: 1) == .waitForStarting)
    }
}

/// Reference counts of resource subscriptions shared by listeners.
