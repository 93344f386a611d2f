import CProcessSpawn
import Foundation
public import Logging
public import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How a child ended.
public enum ChildExit: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

public struct SpawnError: Error, CustomStringConvertible {
    public var command: String
    public var reason: String
    public var description: String { "cannot start \(command): \(reason)" }
}

/// A child process speaking newline-delimited JSON-RPC on stdin/stdout. Its pipes are NIO
/// channels (no thread per child, nothing blocks an event loop); stderr is drained continuously
/// into the log. The child runs in its own process group so that signals reach its descendants.
public final class ChildProcess: Sendable {
    public let pid: Int32
    public let command: String
    /// Completes once the child has been reaped.
    public let exit: EventLoopFuture<ChildExit>
    private let channel: any Channel
    private let eventLoop: any EventLoop
    private let reaper: Reaper

    public struct Options: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
        public var command: String
        public var arguments: [String]
        /// The child's environment: the service's `env` (API keys among it) and the caller's
        /// identity. Described by names only.
        public var environment: [String: String]
        public var workingDirectory: String?
        public var maxLineBytes: Int

        public init(command: String, arguments: [String], environment: [String: String], workingDirectory: String?, maxLineBytes: Int = 256 * 1024 * 1024) {
            self.command = command
            self.arguments = arguments
            self.environment = environment
            self.workingDirectory = workingDirectory
            self.maxLineBytes = maxLineBytes
        }

        public var description: String {
            "ChildProcess.Options(command: \(command), arguments: \(arguments.count), environment: \(environment.keys.sorted().joined(separator: ",")))"
        }

        public var debugDescription: String { description }
    }

    /// Spawns the child. `onLine` receives each stdout line (on the child's event loop);
    /// `onStderr` each stderr line.
    public static func spawn(
        _ options: Options,
        eventLoop: any EventLoop,
        logger: Logger,
        onLine: @escaping @Sendable (ByteBuffer) -> Void,
        onStderr: @escaping @Sendable (ByteBuffer) -> Void
    ) async throws -> ChildProcess {
        // PATH lookup (stat per entry) and posix_spawn block: they run on the thread pool, not
        // on the event loop serving the request that needed a child.
        let spawned = try await NIOThreadPool.singleton.runIfActive { () throws -> (pid: pid_t, stdin: Int32, stdout: Int32, stderr: Int32) in
            guard let executable = resolveExecutable(options.command, path: options.environment["PATH"] ?? "/usr/bin:/bin") else {
                throw SpawnError(command: options.command, reason: "not found in PATH")
            }
            let argv = [options.command] + options.arguments
            let envp = options.environment.map { "\($0.key)=\($0.value)" }.sorted()
            var pid: pid_t = 0
            var stdinFD: Int32 = -1, stdoutFD: Int32 = -1, stderrFD: Int32 = -1
            let result = withCStrings(argv) { argvPointer in
                withCStrings(envp) { envpPointer in
                    if let cwd = options.workingDirectory {
                        return cwd.withCString { mcpgw_spawn(executable, argvPointer, envpPointer, $0, &pid, &stdinFD, &stdoutFD, &stderrFD) }
                    }
                    return mcpgw_spawn(executable, argvPointer, envpPointer, nil, &pid, &stdinFD, &stdoutFD, &stderrFD)
                }
            }
            guard result == 0 else {
                throw SpawnError(command: options.command, reason: String(cString: strerror(result)))
            }
            return (pid, stdinFD, stdoutFD, stderrFD)
        }
        let (pid, stdinFD, stdoutFD, stderrFD) = spawned

        let exitPromise = eventLoop.makePromise(of: ChildExit.self)
        let reaper = Reaper(pid: pid, eventLoop: eventLoop, promise: exitPromise)
        let maxLine = options.maxLineBytes
        let stdioChannel: any Channel
        do {
            stdioChannel = try await NIOPipeBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFramer(maxLength: maxLine)))
                        try channel.pipeline.syncOperations.addHandler(LineHandler(
                            onLine: onLine,
                            onOversized: { bytes in
                                logger.error("child wrote a line longer than the limit; dropped", metadata: ["bytes": "\(bytes)", "limit": "\(maxLine)"])
                            },
                            onClose: { reaper.start() }
                        ))
                    }
                }
                .takingOwnershipOfDescriptors(input: stdoutFD, output: stdinFD)
                .get()
        } catch {
            close(stdoutFD)
            close(stdinFD)
            close(stderrFD)
            kill(-pid, SIGKILL)
            reaper.start()
            throw SpawnError(command: options.command, reason: "cannot attach pipes: \(error)")
        }
        do {
            _ = try await NIOPipeBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFramer(maxLength: 64 * 1024)))
                        try channel.pipeline.syncOperations.addHandler(LineHandler(onLine: onStderr, onOversized: { _ in }, onClose: {}))
                    }
                }
                .takingOwnershipOfDescriptor(input: stderrFD)
                .get()
        } catch {
            close(stderrFD)
        }
        return ChildProcess(pid: pid, command: options.command, reaper: reaper, channel: stdioChannel, eventLoop: eventLoop)
    }

    private init(pid: pid_t, command: String, reaper: Reaper, channel: any Channel, eventLoop: any EventLoop) {
        self.pid = pid
        self.command = command
        self.exit = reaper.promise.futureResult
        self.reaper = reaper
        self.channel = channel
        self.eventLoop = eventLoop
    }

    /// Writes one message followed by a newline.
    public func send(_ message: ByteBuffer) {
        var framed = message
        framed.writeInteger(UInt8(ascii: "\n"))
        channel.writeAndFlush(framed, promise: nil)
    }

    public var isRunning: Bool { !reaper.reaped }

    /// Sends `signal` to the child's process group.
    public func signal(_ signal: Int32) {
        guard isRunning else { return }
        kill(-pid, signal)
    }

    /// Ends the child politely: stdin closed, SIGTERM after `grace`, SIGKILL after another `grace`.
    /// Returns when the child has been reaped.
    @discardableResult
    public func terminate(grace: Duration) async -> ChildExit {
        if isRunning {
            channel.close(mode: .output, promise: nil)
            let nanos = Int64(grace.components.seconds) * 1_000_000_000 + grace.components.attoseconds / 1_000_000_000
            let term = eventLoop.scheduleTask(in: .nanoseconds(nanos)) { [self] in self.signal(SIGTERM) }
            let killTask = eventLoop.scheduleTask(in: .nanoseconds(nanos * 2)) { [self] in self.signal(SIGKILL) }
            exit.whenComplete { _ in
                term.cancel()
                killTask.cancel()
            }
        }
        return (try? await exit.get()) ?? .signaled(SIGKILL)
    }

    private static func resolveExecutable(_ command: String, path: String) -> String? {
        if command.contains("/") { return access(command, X_OK) == 0 ? command : nil }
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(command)"
            // A file (not a directory) this process may execute.
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }
}

/// Reaps the child without blocking: after its stdout closes (it exited, or is about to),
/// `waitpid(WNOHANG)` is retried on the event loop with a growing interval.
private final class Reaper: Sendable {
    let pid: pid_t
    let eventLoop: any EventLoop
    let promise: EventLoopPromise<ChildExit>
    private let started = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    var reaped: Bool { done.load(ordering: .acquiring) }

    init(pid: pid_t, eventLoop: any EventLoop, promise: EventLoopPromise<ChildExit>) {
        self.pid = pid
        self.eventLoop = eventLoop
        self.promise = promise
    }

    func start() {
        guard started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        eventLoop.execute { self.poll(delayMillis: 1) }
    }

    private func poll(delayMillis: Int64) {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid {
            let exitStatus: ChildExit = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
            done.store(true, ordering: .releasing)
            promise.succeed(exitStatus)
            return
        }
        if result == -1, errno != EINTR {
            done.store(true, ordering: .releasing)
            promise.succeed(.exited(-1))
            return
        }
        eventLoop.scheduleTask(in: .milliseconds(delayMillis)) { self.poll(delayMillis: min(delayMillis * 2, 200)) }
    }
}

private final class LineHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = LineFramer.LineEvent

    let onLine: @Sendable (ByteBuffer) -> Void
    let onOversized: @Sendable (Int) -> Void
    let onClose: @Sendable () -> Void

    init(onLine: @escaping @Sendable (ByteBuffer) -> Void, onOversized: @escaping @Sendable (Int) -> Void, onClose: @escaping @Sendable () -> Void) {
        self.onLine = onLine
        self.onOversized = onOversized
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .line(let line): onLine(line)
        case .oversized(let bytes): onOversized(bytes)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // EPIPE on write (the child closed stdin) or a read error: the channel closes, and the
        // reaper collects the exit status.
        context.close(promise: nil)
    }
}

/// A NULL-terminated C string array for `argv`/`envp`, valid during `body`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>?) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { buffer in
        body(buffer.baseAddress)
    }
}
