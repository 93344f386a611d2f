/// This process among the gateway instances sharing a store: a random id per start (a restarted
/// instance is a new one). Session records name it, and the `requestState` handles this process
/// hands out carry it, so another instance knows where to send a retry.
public enum ProcessInstance {
    public static let id: String = {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef")
        return String((0..<32).map { _ in digits[Int.random(in: 0..<16, using: &generator)] })
    }()
}
