import GatewayConfig
import MCPAggregation
import Testing

/// A group's names in each prefix mode, resources by URI, and broadcast tools and results.
@Suite struct GroupCatalogueTests {
    static func list(_ member: String, _ names: [String]) -> MemberItems {
        MemberItems(member: member, items: names.map { ($0, JSONObject(["name": $0, "inputSchema": ["type": "object"]])) })
    }

    static let lists = [list("time", ["now", "echo"]), list("notes", ["add", "echo"]), list("ops", ["restart"])]

    static func group(_ prefix: GroupServiceConfiguration.Prefix, separator: String = "__") -> GroupServiceConfiguration {
        var group = GroupServiceConfiguration(name: "everything", members: ["time", "notes", "ops"])
        group.prefix = prefix
        group.separator = separator
        return group
    }

    @Test func eachPrefixModeNamesAsDocumented() {
        let always = GroupCatalogue.expose(Self.lists, group: Self.group(.always))
        #expect(always.items.map(\.exposed) == ["time__now", "time__echo", "notes__add", "notes__echo", "ops__restart"])
        #expect(always.items.allSatisfy { $0.json["name"] as? String == $0.exposed } && always.clashes.isEmpty)
        let conditional = GroupCatalogue.expose(Self.lists, group: Self.group(.conditional, separator: "."))
        #expect(conditional.items.map(\.exposed) == ["now", "time.echo", "add", "notes.echo", "restart"])
        #expect(conditional.items[1].member == "time" && conditional.items[1].original == "echo")
        let never = GroupCatalogue.expose(Self.lists, group: Self.group(.never))
        #expect(never.items.map(\.exposed) == ["now", "echo", "add", "restart"])
        #expect(never.items[1].member == "time", "the first member wins a clash")
        #expect(never.clashes == ["echo"])
        var catalogue = GroupCatalogue()
        catalogue.tools = always.items
        catalogue.render()
        #expect(catalogue.rendered.tools.contains(#""name":"ops__restart""#) && catalogue.rendered.prompts == "[]")
    }

    @Test func aDownMembersNamesAreRecognised() {
        var catalogue = GroupCatalogue()
        catalogue.down = ["ops": ["restart"]]
        #expect(catalogue.downMember(for: "ops__anything") == "ops")
        #expect(catalogue.downMember(for: "restart") == "ops")
        #expect(catalogue.downMember(for: "time__now") == nil && catalogue.downMember(for: "opsx") == nil)
    }

    @Test func resourcesAreRoutedByURIAndTemplates() {
        var catalogue = GroupCatalogue()
        catalogue.resources = GroupCatalogue.byURI([
            MemberItems(member: "a", items: [("file:///a/readme", JSONObject(["uri": "file:///a/readme"]))]),
            MemberItems(member: "b", items: [("file:///a/readme", JSONObject(["uri": "file:///a/readme"]))]),
        ]).items
        catalogue.templates = GroupCatalogue.byURI([
            MemberItems(member: "b", items: [("file:///docs/{name}", JSONObject([:])), ("file:///docs/private/{name}", JSONObject([:]))]),
            MemberItems(member: "c", items: [("file:///docs/private/{name}", JSONObject([:]))]),
        ]).items
        #expect(catalogue.member(forURI: "file:///a/readme") == "a")
        #expect(catalogue.member(forURI: "file:///docs/x") == "b")
        #expect(catalogue.member(forURI: "file:///docs/private/x") == "b", "b listed that template first")
        #expect(catalogue.member(forURI: "file:///elsewhere") == nil)
    }

    @Test func broadcastsCoverSharedToolsAndTagsAndCombineResults() throws {
        var catalogue = GroupCatalogue()
        catalogue.addBroadcasts(from: Self.lists, members: ["time", "notes", "ops", "down"], tags: ["time": ["prod"], "ops": ["prod", "eu"], "down": ["prod"]])
        #expect(catalogue.broadcasts.map(\.name) == ["broadcast__echo", "broadcast__by_tag__eu", "broadcast__by_tag__prod"])
        #expect(catalogue.broadcast("broadcast__echo")?.members == ["time", "notes"])
        #expect(catalogue.broadcast("broadcast__by_tag__prod")?.members == ["time", "ops", "down"], "a member that listed nothing is still called")
        let combined = BroadcastOutcome.combined([
            BroadcastOutcome(member: "time", milliseconds: 3, result: .success(JSONObject(["content": [["type": "text", "text": "hi"]]]))),
            BroadcastOutcome(member: "notes", milliseconds: 30000, result: .failure(BroadcastFailure("timed out after 30s"))),
        ], tool: "echo")
        let results = try #require((combined["structuredContent"] as? [String: Any])?["results"] as? [[String: Any]])
        #expect(results.count == 2 && results[0]["ok"] as? Bool == true && results[1]["error"] as? String == "timed out after 30s")
        #expect(combined["isError"] as? Bool == false)
        let text = try #require((combined["content"] as? [[String: Any]])?.first?["text"] as? String)
        #expect(text.contains("1 succeeded") && text.contains("time (3 ms): hi") && text.contains("notes (30000 ms) failed"))
    }
}
