package import Logging

extension Logger {
    /// The logger handed to AsyncHTTPClient for a request: never below `info`. At `debug` and
    /// `trace` the client logs request URLs, response heads and the first bytes of each body
    /// part, which carry what must not be logged (credentials in a query, upstream session ids,
    /// a token endpoint's `access_token`).
    package var forHTTPClient: Logger {
        var logger = self
        if logger.logLevel < .info { logger.logLevel = .info }
        return logger
    }
}
