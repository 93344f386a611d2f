/// An AsyncStream iterator handed from one task to another (a handler, then a response body
/// writer). It is used by one task at a time, never concurrently.
package final class IteratorBox<Element: Sendable>: @unchecked Sendable {
    private var iterator: AsyncStream<Element>.Iterator

    package init(_ iterator: AsyncStream<Element>.Iterator) {
        self.iterator = iterator
    }

    package func next() async -> Element? {
        await iterator.next()
    }
}
