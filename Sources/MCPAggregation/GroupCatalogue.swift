import Foundation
package import GatewayConfig

/// A JSON object as JSONSerialization reads and writes it. Sendable by convention: it holds
/// only JSON values (strings, numbers, booleans, arrays, objects), never shared mutable state.
package struct JSONObject: @unchecked Sendable {
    package var value: [String: Any]

    package init(_ value: [String: Any]) {
        self.value = value
    }

    package subscript(key: String) -> Any? {
        get { value[key] }
        set { value[key] = newValue }
    }
}

/// What one member listed of one kind: each item's name (or URI) and its JSON object.
package struct MemberItems: Sendable {
    package var member: String
    package var items: [(name: String, json: JSONObject)]

    package init(member: String, items: [(name: String, json: JSONObject)]) {
        self.member = member
        self.items = items
    }
}

/// One item as a group exposes it: the name the client sees, and where it comes from.
package struct ExposedItem: Sendable {
    package var exposed: String
    package var member: String
    package var original: String
    /// The member's JSON object, its name replaced by `exposed`.
    package var json: JSONObject
}

/// A group's tools, prompts and resources as one server's, built from its members' lists. Names
/// follow `prefix`: `always` `<member><separator><name>`; `conditional` only names that more than
/// one member has; `never` names as they are, the first member (in `members` order) winning a
/// clash (reported in `clashes`). Resources keep their URIs (a URI names one thing): on a clash
/// the first member wins, likewise reported.
package struct GroupCatalogue: Sendable {
    package var tools: [ExposedItem] = []
    package var prompts: [ExposedItem] = []
    package var resources: [ExposedItem] = []
    package var templates: [ExposedItem] = []
    /// Names (and URIs) that several members have and that `never` (or URIs) could not keep apart.
    package var clashes: [String] = []
    /// The broadcast tools (`broadcast__…`), when the group has `broadcast: true`.
    package var broadcasts: [BroadcastTool] = []
    /// Members that did not answer, with the tool and prompt names they had when they last did.
    package var down: [String: Set<String>] = [:]
    package var separator = "__"

    /// Each list as JSON array text, written once per catalogue (`render()`), so a list answer
    /// costs no encoding.
    package var rendered = (tools: "[]", prompts: "[]", resources: "[]", templates: "[]")

    package mutating func render() {
        func array(_ items: [JSONObject]) -> String {
            (try? JSONSerialization.data(withJSONObject: items.map(\.value), options: [.withoutEscapingSlashes])).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        }
        rendered = (array(tools.map(\.json) + broadcasts.map(\.json)), array(prompts.map(\.json)), array(resources.map(\.json)), array(templates.map(\.json)))
    }

    package static let broadcastPrefix = "broadcast__"
    package static let byTagPrefix = "broadcast__by_tag__"

    package init() {}

    /// Names exposed from `lists` (in member order) under `group`'s naming.
    package static func expose(_ lists: [MemberItems], group: GroupServiceConfiguration, key: String = "name") -> (items: [ExposedItem], clashes: [String]) {
        var owners: [String: Int] = [:]
        for list in lists {
            for name in Set(list.items.map(\.name)) { owners[name, default: 0] += 1 }
        }
        var items: [ExposedItem] = []
        var taken: Set<String> = []
        var clashes: [String] = []
        for list in lists {
            for (name, json) in list.items {
                let prefixed: Bool = switch group.prefix {
                case .always: true
                case .conditional: (owners[name] ?? 0) > 1
                case .never: false
                }
                let exposed = prefixed ? "\(list.member)\(group.separator)\(name)" : name
                guard taken.insert(exposed).inserted else {
                    clashes.append(exposed)
                    continue
                }
                var renamed = json
                renamed[key] = exposed
                items.append(ExposedItem(exposed: exposed, member: list.member, original: name, json: renamed))
            }
        }
        return (items, Array(Set(clashes)).sorted())
    }

    /// Resources by URI: kept as they are, the first member winning a clash.
    package static func byURI(_ lists: [MemberItems]) -> (items: [ExposedItem], clashes: [String]) {
        var items: [ExposedItem] = []
        var taken: Set<String> = []
        var clashes: [String] = []
        for list in lists {
            for (uri, json) in list.items {
                guard taken.insert(uri).inserted else {
                    clashes.append(uri)
                    continue
                }
                items.append(ExposedItem(exposed: uri, member: list.member, original: uri, json: json))
            }
        }
        return (items, Array(Set(clashes)).sorted())
    }

    package func tool(_ exposed: String) -> ExposedItem? { tools.first { $0.exposed == exposed } }

    /// The member that is down and would serve `exposed` (by its prefix, or by the names it had
    /// when it last answered), so the call's error can name it.
    package func downMember(for exposed: String) -> String? {
        for (member, names) in down.sorted(by: { $0.key < $1.key }) {
            if exposed.hasPrefix(member + separator) || names.contains(exposed) { return member }
        }
        return nil
    }
    package func prompt(_ exposed: String) -> ExposedItem? { prompts.first { $0.exposed == exposed } }
    package func broadcast(_ exposed: String) -> BroadcastTool? { broadcasts.first { $0.name == exposed } }

    /// The member serving `uri`: a listed resource, else the resource template whose literal
    /// start is the longest prefix of `uri`.
    package func member(forURI uri: String) -> String? {
        if let listed = resources.first(where: { $0.exposed == uri }) { return listed.member }
        var best: (length: Int, member: String)?
        for template in templates {
            let literal = String(template.original.prefix { $0 != "{" })
            guard !literal.isEmpty, uri.hasPrefix(literal), literal.count > (best?.length ?? 0) else { continue }
            best = (literal.count, template.member)
        }
        return best?.member
    }

    // MARK: broadcast

    /// Adds `broadcast__<tool>` for every tool more than one member lists, and
    /// `broadcast__by_tag__<tag>` for every tag of a member: that one goes to every member with
    /// the tag (`members`, in order), whether it answered the lists or not, so one that is down
    /// shows in the result as failed.
    package mutating func addBroadcasts(from lists: [MemberItems], members allMembers: [String], tags: [String: [String]]) {
        var members: [String: [String]] = [:]
        var schemas: [String: JSONObject] = [:]
        var order: [String] = []
        for list in lists {
            for (name, json) in list.items {
                if members[name] == nil { order.append(name) }
                members[name, default: []].append(list.member)
                if schemas[name] == nil { schemas[name] = json }
            }
        }
        for name in order where (members[name]?.count ?? 0) > 1 {
            let targets = members[name] ?? []
            var json = schemas[name] ?? JSONObject([:])
            json["name"] = Self.broadcastPrefix + name
            json["description"] = "Calls \(name) on every member that has it (\(targets.joined(separator: ", "))) at once and returns each result."
            json["outputSchema"] = nil
            broadcasts.append(BroadcastTool(name: Self.broadcastPrefix + name, tool: name, members: targets, json: json))
        }
        let tagged = Set(tags.values.flatMap { $0 })
        for tag in tagged.sorted() {
            let targets = allMembers.filter { tags[$0]?.contains(tag) ?? false }
            let properties: [String: Any] = [
                "tool": ["type": "string", "description": "the tool's name as each member calls it"],
                "arguments": ["type": "object", "description": "the tool's arguments"],
            ]
            let json = JSONObject([
                "name": Self.byTagPrefix + tag,
                "description": "Calls one tool on every member tagged \(tag) (\(targets.joined(separator: ", "))) at once and returns each result.",
                "inputSchema": ["type": "object", "required": ["tool"], "properties": properties] as [String: Any],
            ])
            broadcasts.append(BroadcastTool(name: Self.byTagPrefix + tag, tool: nil, members: targets, json: json))
        }
    }
}

/// A tool that calls several members at once.
package struct BroadcastTool: Sendable {
    package var name: String
    /// The tool every member is called with; nil for a by-tag broadcast (the caller names it).
    package var tool: String?
    package var members: [String]
    package var json: JSONObject
}

/// What one member answered to a broadcast.
package struct BroadcastOutcome: Sendable {
    package var member: String
    package var milliseconds: Int
    /// The member's `result` object, or why there is none.
    package var result: Result<JSONObject, BroadcastFailure>

    package init(member: String, milliseconds: Int, result: Result<JSONObject, BroadcastFailure>) {
        self.member = member
        self.milliseconds = milliseconds
        self.result = result
    }
}

package struct BroadcastFailure: Error, Sendable {
    package var message: String

    package init(_ message: String) {
        self.message = message
    }
}

extension BroadcastOutcome {
    /// One tool result for all of them: per member its result or error and duration in
    /// `structuredContent.results`, a line per member in the text; an error only when every member
    /// failed.
    package static func combined(_ outcomes: [BroadcastOutcome], tool: String) -> JSONObject {
        var results: [[String: Any]] = []
        var lines: [String] = []
        var succeeded = 0
        for outcome in outcomes {
            var entry: [String: Any] = ["member": outcome.member, "durationMs": outcome.milliseconds]
            switch outcome.result {
            case .success(let result):
                let failed = (result["isError"] as? Bool) ?? false
                entry["ok"] = !failed
                entry["result"] = result.value
                if !failed { succeeded += 1 }
                let text = ((result["content"] as? [Any])?.compactMap { ($0 as? [String: Any])?["text"] as? String } ?? []).joined(separator: " ")
                lines.append("\(outcome.member) (\(outcome.milliseconds) ms)\(failed ? " error" : ""): \(text)")
            case .failure(let failure):
                entry["ok"] = false
                entry["error"] = failure.message
                lines.append("\(outcome.member) (\(outcome.milliseconds) ms) failed: \(failure.message)")
            }
            results.append(entry)
        }
        let summary = "\(tool) on \(outcomes.count) member(s), \(succeeded) succeeded:\n" + lines.joined(separator: "\n")
        return JSONObject([
            "content": [["type": "text", "text": summary]],
            "structuredContent": ["results": results],
            "isError": succeeded == 0 && !outcomes.isEmpty,
        ])
    }
}
