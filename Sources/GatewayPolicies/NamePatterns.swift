/// A set of shell-style name patterns (`*` any run, `?` one character) compiled once per
/// configuration: names without wildcards are looked up in a hash set, the others matched over
/// their UTF-8 bytes without allocating, so a decision against a hundred globs stays in the
/// microseconds.
package struct NamePatterns: Sendable, Equatable {
    private var exact: Set<String> = []
    private var globs: [[UInt8]] = []

    package init(_ patterns: [String]) {
        for pattern in patterns {
            if pattern.utf8.contains(where: { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") }) {
                globs.append(Array(pattern.utf8))
            } else {
                exact.insert(pattern)
            }
        }
    }

    package var isEmpty: Bool { exact.isEmpty && globs.isEmpty }

    package func matches(_ name: String) -> Bool {
        if exact.contains(name) { return true }
        guard !globs.isEmpty else { return false }
        var name = name
        return name.withUTF8 { bytes in globs.contains { Self.match($0, bytes) } }
    }

    /// Greedy matching with one backtrack point (the last `*`): linear in practice, never
    /// exponential. `?` takes one whole character (a UTF-8 lead byte and its continuations).
    static func match(_ pattern: [UInt8], _ name: UnsafeBufferPointer<UInt8>) -> Bool {
        var p = 0, n = 0, star = -1, mark = 0
        func characterLength(at index: Int) -> Int {
            var end = index + 1
            while end < name.count, name[end] & 0xC0 == 0x80 { end += 1 }
            return end - index
        }
        while n < name.count {
            if p < pattern.count, pattern[p] == UInt8(ascii: "?") {
                p += 1
                n += characterLength(at: n)
            } else if p < pattern.count, pattern[p] == UInt8(ascii: "*") {
                star = p
                mark = n
                p += 1
            } else if p < pattern.count, pattern[p] == name[n] {
                p += 1
                n += 1
            } else if star >= 0 {
                p = star + 1
                mark += characterLength(at: mark)
                n = mark
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}
