public import Logging

/// `log.format: text`: swift-log's `StreamLogHandler` lines, with the logger's metadata kept here
/// and handed to it only when a line is written. `StreamLogHandler` formats all of its metadata
/// again whenever any of it changes, and metadata changes on every request (Hummingbird's
/// `hb.request.id`) although most requests log nothing at the configured level.
public struct TextLogHandler: LogHandler {
    private var inner: StreamLogHandler
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    public var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    /// Writes to standard error, as `StreamLogHandler.standardError` does.
    public static func standardError(label: String) -> TextLogHandler {
        TextLogHandler(StreamLogHandler.standardError(label: label))
    }

    /// Writes through `inner`, whose own metadata should be empty.
    public init(_ inner: StreamLogHandler) {
        self.inner = inner
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        if !metadata.isEmpty {
            // The line's own metadata wins over the logger's, as in `StreamLogHandler`.
            event.metadata = metadata.merging(event.metadata ?? [:]) { _, explicit in explicit }
        }
        inner.log(event: event)
    }
}
