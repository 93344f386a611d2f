package import GatewayAuth
package import GatewayCluster

/// Where a session that this process does not hold is, for the transports that keep a session's
/// state in memory (stdio children, groups, session-based clients bridged to 2026-07-28-only
/// upstreams). Ownership has been checked (`SessionBindings.check`) before it is asked.
package struct SessionLocator: Sendable {
    package let bindings: SessionBindings
    /// nil: one process; a session not held here is not found.
    package let cluster: ClusterMembership?
    /// `cluster:` is configured: requests can be forwarded to the instance holding their session.
    package let forwards: Bool

    package init(bindings: SessionBindings, cluster: ClusterMembership?, forwards: Bool) {
        self.bindings = bindings
        self.cluster = cluster
        self.forwards = forwards
    }

    /// The record of a session no live instance holds (its instance is gone or stopping, or
    /// released it): the caller takes it over. Throws `heldElsewhere` for one another live instance
    /// holds (the pipeline forwards the request there), and 404 for one that ended on this
    /// instance or is not the caller's. `atHopLimit`: the request was forwarded as often as it may
    /// be, so it is never sent on again.
    /// `needsChild`: the request carries a request for the session's child. Anything else (answers
    /// and notifications for what the child is running, such as an elicitation's result or a
    /// cancellation, and the session's GET stream) goes to a stopping instance still holding the
    /// child, rather than starting a new child that never asked.
    package func orphan(_ id: String, owner: SessionOwner, atHopLimit: Bool, needsChild: Bool = true) async throws(GatewayError) -> SessionRecord {
        guard let cluster else { throw .sessionNotFound }
        let record: SessionRecord
        let placement: ClusterMembership.Placement
        do {
            guard let current = try await bindings.currentRecord(id), current.owner == owner else { throw SessionRefusal.notFound }
            record = current
            placement = try await cluster.placement(of: record.instance)
        } catch let refusal as SessionRefusal {
            throw GatewayError(refusal)
        } catch {
            throw .storeUnavailable
        }
        switch placement {
        case .here:
            // Ended on this instance (DELETE, idle, its child exited): the client starts anew.
            throw .sessionNotFound
        case .live(let url):
            if atHopLimit { throw .sessionNotFound }
            guard forwards, let url, let instance = record.instance else { throw .clusterUnreachable(instance: record.instance ?? "?") }
            throw .heldElsewhere(instance: instance, url: url)
        case .draining(let url?) where !needsChild && !atHopLimit && forwards:
            throw .heldElsewhere(instance: record.instance ?? "", url: url)
        case .draining, .gone:
            // A stopping instance takes nothing over: a serving one does.
            if cluster.isDraining, forwards, !atHopLimit, let peer = await cluster.servingPeer() {
                throw .heldElsewhere(instance: peer.id, url: peer.url)
            }
            return record
        }
    }

    /// A stopping instance's request for a session it still holds: sent to the instance that has
    /// taken the session over meanwhile, if one has; else a new request (`needsChild`) goes to
    /// any serving instance (which takes the session over), while answers and notifications for
    /// what the child here still runs stay here (nil).
    /// `forwarded`: another instance sent the request here (it thought this one serving); it is
    /// told this one is stopping and takes the session over itself.
    package func whileDraining(_ id: String, needsChild: Bool, atHopLimit: Bool, forwarded: Bool) async -> GatewayError? {
        guard let cluster, cluster.isDraining, forwards, !atHopLimit else { return nil }
        if let record = try? await bindings.currentRecord(id), let holder = record.instance, holder != bindings.instanceID,
           case .live(let url?) = try? await cluster.placement(of: holder)
        {
            return .heldElsewhere(instance: holder, url: url)
        }
        guard needsChild else { return nil }
        return forwarded ? .instanceDraining : await elsewhereForNewSession(atHopLimit: atHopLimit)
    }

    /// A stopping instance starts no session: the address of a serving one to forward the
    /// request to, when there is one.
    package func elsewhereForNewSession(atHopLimit: Bool) async -> GatewayError? {
        guard let cluster, forwards, cluster.isDraining, !atHopLimit, let peer = await cluster.servingPeer() else { return nil }
        return .heldElsewhere(instance: peer.id, url: peer.url)
    }

    /// Records that this instance holds a session it took over.
    package func adopt(_ id: String, record: SessionRecord) async throws(GatewayError) {
        // From the instance it was taken from, or from none if that one released it meanwhile.
        let moved: Bool
        do { moved = try await bindings.move(id, from: [record.instance, nil], to: bindings.instanceID) } catch { throw GatewayError(error) }
        guard !moved else { return }
        // Another instance took it over first: the request goes there.
        if let current = try? await bindings.currentRecord(id), let holder = current.instance, holder != bindings.instanceID,
           case .live(let url?) = try? await cluster?.placement(of: holder), forwards
        {
            throw .heldElsewhere(instance: holder, url: url)
        }
        throw .sessionNotFound
    }
}
