import Synchronization

/// Which protocol era each upstream URL speaks, learned by a probe and kept for `ttl`.
///
/// One probe per URL at a time: requests that find the era unknown wait for the probe already
/// running instead of each sending their own. A stale era is still answered (at once) while one
/// probe in the background refreshes it: when the time to live ran out under load, every request
/// in flight used to probe at once and take the full pipeline meanwhile (the soak saw 46 extra
/// connections and a 2.9 MiB RSS step ten minutes in).
package final class UpstreamEras<Era: Sendable>: Sendable {
    package typealias Probe = @Sendable () async -> Era

    private struct Entry {
        /// The last probe's answer (nil until the first answers).
        var era: Era?
        var checked: ContinuousClock.Instant
        /// The probe running for this URL, if one is.
        var probe: Task<Era, Never>?
    }

    private let entries = Mutex<[String: Entry]>([:])
    package let ttl: Duration

    package init(ttl: Duration) {
        self.ttl = ttl
    }

    /// The era of `url` when one was learned (fresh or not), without waiting: a stale or unknown
    /// one starts `probe()` (made only then) unless a probe of `url` is running.
    package func known(_ url: String, probe: () -> Probe) -> Era? {
        switch entries.withLock({ lookup(url, in: &$0, probe: probe) }) {
        case .known(let era): era
        case .probing: nil
        }
    }

    /// The era of `url`: at once when one was learned (a stale one starts a refresh), otherwise
    /// once the probe (this caller's, or the one already running) answers.
    package func era(of url: String, probe: () -> Probe) async -> Era {
        switch entries.withLock({ lookup(url, in: &$0, probe: probe) }) {
        case .known(let era): era
        case .probing(let running): await running.value
        }
    }

    private enum Lookup {
        /// Learned (a stale one is being refreshed meanwhile).
        case known(Era)
        /// Not learned yet: the probe that will say.
        case probing(Task<Era, Never>)
    }

    /// The era known for `url`, or the probe to wait for; a stale or unknown era gets a probe
    /// (started here when none runs).
    private func lookup(_ url: String, in table: inout [String: Entry], probe: () -> Probe) -> Lookup {
        let now = ContinuousClock.now
        var entry = table[url] ?? Entry(era: nil, checked: now, probe: nil)
        if let era = entry.era, now - entry.checked < ttl { return .known(era) }
        let running: Task<Era, Never>
        if let probing = entry.probe {
            running = probing
        } else {
            let asked = probe()
            // Recorded by the probe itself under this lock, which is held until the entry below
            // (with the task) is stored: the task's end cannot come first.
            running = Task { [self] in
                let era = await asked()
                self.entries.withLock { $0[url] = Entry(era: era, checked: .now, probe: nil) }
                return era
            }
            entry.probe = running
            table[url] = entry
        }
        return entry.era.map(Lookup.known) ?? .probing(running)
    }
}
