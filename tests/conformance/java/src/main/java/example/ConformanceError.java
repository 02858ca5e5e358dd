package example;

/** The handled error: the RIC reports it through /invocation/{id}/error. */
public class ConformanceError extends RuntimeException {
    public ConformanceError(String message) {
        super(message);
    }
}
