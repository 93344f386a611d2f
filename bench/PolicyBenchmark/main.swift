// Policy evaluation cost: one caller's view built per request, then one decision per name, with
// a policy of 100 globs against none, and a 50-tool list answer filtered in its bytes. Run by
// `just bench-policies` (release build); prints a Markdown table for bench/results-policies.md.
import AuthorizationServer
import GatewayConfig
import GatewayPolicies
import NIOCore
import Foundation

func measure(_ label: String, iterations: Int, _ body: () -> Int) -> (String, Double) {
    var sink = 0
    for _ in 0..<(iterations / 10) { sink &+= body() }
    let clock = ContinuousClock()
    var best = Duration.seconds(1_000)
    for _ in 0..<5 {
        let started = clock.now
        for _ in 0..<iterations { sink &+= body() }
        best = min(best, clock.now - started)
    }
    let nanoseconds = Double(best.components.seconds) * 1e9 + Double(best.components.attoseconds) / 1e9
    if sink == 42 { print("") }
    return (label, nanoseconds / Double(iterations))
}

// 100 globs: 60 on the router (40 allow, 20 deny), 40 over four policies the caller matches two of.
let allow = (0..<40).map { "team\($0)_*" }
let deny = (0..<20).map { "*_secret\($0)" }
let policies = (0..<4).map { index in
    CallPolicy.IdentityPolicy(users: index.isMultiple(of: 2) ? ["alice"] : ["bob"], teams: ["acme/t\(index)"], rules: [
        .tools: .init(allow: (0..<5).map { "p\(index)_\($0)_*" }, deny: (0..<5).map { "*_q\(index)_\($0)" }),
    ])
}
let hundred = CompiledCallPolicy(CallPolicy(rules: [.tools: .init(allow: allow, deny: deny)], policies: policies))
let none = CompiledCallPolicy(CallPolicy())
let alice = UserIdentity(login: "alice", orgs: ["acme"], teams: ["acme/t0"])
let names = (0..<50).map { "team\($0 % 45)_tool_number_\($0)" }

var rows: [(String, Double)] = []
rows.append(measure("view per request, no policy", iterations: 200_000) { none.view(for: alice).isUnrestricted ? 1 : 0 })
rows.append(measure("view per request, 100 globs", iterations: 100_000) { hundred.view(for: alice).isUnrestricted ? 1 : 0 })
let view = hundred.view(for: alice)
var index = 0
rows.append(measure("one decision, 100 globs (worst: no exact match)", iterations: 200_000) {
    index = (index + 1) % names.count
    return view.admits(.tools, names[index]) ? 1 : 0
})
let unrestricted = none.view(for: alice)
rows.append(measure("one decision, no policy", iterations: 1_000_000) {
    index = (index + 1) % names.count
    return unrestricted.admits(.tools, names[index]) ? 1 : 0
})
let tools = names.map { #"{"name":"\#($0)","description":"a tool","inputSchema":{"type":"object","properties":{"x":{"type":"string"}}}}"# }.joined(separator: ",")
let answer = ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"result":{"tools":["# + tools + "]}}")
let listing = PolicedMethods.listing("tools/list")!
rows.append(measure("tools/list answer of 50 tools filtered, 100 globs", iterations: 5_000) {
    ListFiltering.filter(answer, listing: listing, view: view, markPrivate: true)?.kept ?? 0
})

print("# Policy evaluation: 100 globs against none")
print("")
print("Release build, best of 5 runs per row (`just bench-policies`). The 100 globs: 60 on the router's `tools` (40 allow, 20 deny), 40 in four policies of which the caller matches two. A decision is `CallerView.admits` for one tool name that matches no exact entry (every glob tried). Target: ≤ 5 µs per decision.")
print("")
print("| measurement | ns |")
print("|---|---|")
for (label, nanoseconds) in rows { print("| \(label) | \(String(format: "%.0f", nanoseconds)) |") }
