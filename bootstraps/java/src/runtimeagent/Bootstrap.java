package runtimeagent;

import java.io.ByteArrayInputStream;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Java bootstrap: pid 1 of a sandbox, runs one function's handler.
 *
 * <p>Started by nsjail through {@code /bin/sh -c "exec java ... runtimeagent.Bootstrap"}
 * (the shell only sizes the heap from the function's memory; see
 * runtime/core/runtimes.py). Stdlib only, nothing from the agent. Config
 * arrives in the environment, as for the Python bootstrap: {@code _HANDLER}
 * ("package.Class::method" or "package.Class"), {@code AWS_LAMBDA_FUNCTION_NAME},
 * {@code AWS_LAMBDA_FUNCTION_VERSION}, {@code AWS_LAMBDA_FUNCTION_MEMORY_SIZE},
 * {@code AWS_LAMBDA_LOG_GROUP_NAME}, {@code AWS_LAMBDA_LOG_STREAM_NAME},
 * {@code LAMBDA_TASK_ROOT}.
 *
 * <p>The control socket is fd 0 ({@code _RUNTIME_CONTROL_FD=0}): without
 * native code Java can name no inherited descriptor but 0, 1 and 2. It is
 * read and written as {@code FileDescriptor.in} through FileInputStream and
 * FileOutputStream, plain read(2) and write(2), which work on a stream
 * socket; {@code System.inheritedChannel()} would also do (JDK 16+), but its
 * first use initialises NIO and, through UnixDomainSockets' SecureRandom, the
 * JCA providers: about 10 ms of every cold start. {@code System.in} is
 * replaced by an empty stream so that the function never reads control
 * frames. Wire protocol, the same as bootstraps/python/bootstrap.py. Every
 * frame:
 *
 * <pre>
 *     0        1                5
 *     +--------+----------------+---------------------------+
 *     | kind   | length (u32 BE)| body (length bytes)       |
 *     +--------+----------------+---------------------------+
 *
 * bootstrap -&gt; agent, once, after loading the handler:
 *     "R"  ready        body: u64 BE start_ns | u64 BE loaded_ns (wall clock
 *                       when main() began and once the handler was loaded)
 *     "E"  init error   body: JSON {"errorMessage","errorType","stackTrace"};
 *                       the bootstrap exits after sending it
 * agent -&gt; bootstrap, one at a time:
 *     "I"  invoke       body: request id \n deadline (epoch ms, decimal) \n
 *                       invoked ARN \n client context JSON or empty \n payload
 * bootstrap -&gt; agent, one per invoke:
 *     "S"  success      body: u64 BE handler_ns | result as JSON
 *     "F"  error        body: u64 BE handler_ns | error JSON as for "E"
 * </pre>
 *
 * <p>No stem cells ("P"): their code arrives as an fd by SCM_RIGHTS, which
 * Java cannot receive without native code. Errors carry the exception's class
 * name as errorType and its Java stack trace (the bootstrap's own frames
 * removed), with a "cause" document when there is one, as on AWS. System.out
 * and System.err are flushed before each reply, so every line of an
 * invocation is in the pipe before the agent sees its result. EOF on the
 * control socket means the agent is gone: the bootstrap exits, and with it
 * (pid 1) the whole sandbox.
 */
public final class Bootstrap {
    static final int MAX_RESPONSE = 6 * 1024 * 1024;

    // Wall clock from milliseconds plus the monotonic clock: java.time's
    // Instant.now() would link method handles on every cold start.
    private static final long WALL0_NS = System.currentTimeMillis() * 1_000_000L;
    private static final long MONO0_NS = System.nanoTime();

    /** The reply when even building one runs out of memory: made before the function runs. */
    private static final byte[] OUT_OF_MEMORY = frame('F', 0, error("java.lang.OutOfMemoryError",
            "Java heap space", null));
    private static final byte[] INIT_OUT_OF_MEMORY = frame('E', -1, error("java.lang.OutOfMemoryError",
            "Java heap space", null));

    private final FileInputStream in;
    private final FileOutputStream out;
    private final byte[] head = new byte[5];
    private final byte[] scratch = new byte[65536];

    private Bootstrap(FileInputStream in, FileOutputStream out) {
        this.in = in;
        this.out = out;
    }

    static long wallNs() {
        return WALL0_NS + (System.nanoTime() - MONO0_NS);
    }

    public static void main(String[] args) throws IOException {
        long startNs = wallNs();
        Map<String, String> env = System.getenv();
        if (!"0".equals(env.get("_RUNTIME_CONTROL_FD"))) {
            System.err.println("[ERROR] the control socket must be fd 0 (_RUNTIME_CONTROL_FD=0)");
            System.exit(2);
        }
        Bootstrap boot = new Bootstrap(new FileInputStream(FileDescriptor.in), new FileOutputStream(FileDescriptor.in));
        System.setIn(new ByteArrayInputStream(new byte[0])); // the function never reads control frames
        if (!env.getOrDefault("_RUNTIME_STEM_CELL", "").isEmpty()) {
            boot.initFailed("Runtime.Unsupported", "no stem cells in Java", null);
        }
        String taskRoot = env.getOrDefault("LAMBDA_TASK_ROOT", "/var/task");
        Handler handler = null;
        try {
            ClassLoader loader = Handler.codeLoader(taskRoot);
            Thread.currentThread().setContextClassLoader(loader);
            handler = Handler.load(env.getOrDefault("_HANDLER", ""), loader);
        } catch (Handler.InitError e) {
            boot.initFailed(e.errorType, e.getMessage(), e.getCause());
        } catch (Throwable t) {
            boot.initFailed("Runtime.Unknown", String.valueOf(t), t);
        }
        boot.sendReady(startNs);
        boot.serve(handler, new LambdaContext.Function(env));
    }

    /** Sends "E" and exits: the agent destroys the environment. */
    private void initFailed(String type, String message, Throwable cause) throws IOException {
        byte[] reply;
        try {
            System.err.println("[ERROR] " + type + ": " + message);
            reply = frame('E', -1, error(type, message, cause));
        } catch (OutOfMemoryError e) {
            reply = INIT_OUT_OF_MEMORY;
        }
        out.write(reply);
        System.exit(1);
    }

    private void sendReady(long startNs) throws IOException {
        ByteBuffer frame = ByteBuffer.allocate(21);
        out.write(frame.put((byte) 'R').putInt(16).putLong(startNs).putLong(wallNs()).array());
    }

    private void serve(Handler handler, LambdaContext.Function function) throws IOException {
        while (true) {
            byte[] frame;
            try {
                byte[] body = readFrame();
                if (body == null) {
                    System.exit(0); // EOF: the agent is gone
                }
                frame = invoke(handler, function, body);
            } catch (OutOfMemoryError e) {
                // The heap is full of what the function keeps: even the error
                // document may not fit, so the reply was built at start.
                frame = OUT_OF_MEMORY;
            }
            System.out.flush();
            System.err.flush();
            out.write(frame); // write(2) until all of it is written
        }
    }

    /** One invocation: the reply frame for one "I" frame's body. */
    private static byte[] invoke(Handler handler, LambdaContext.Function function, byte[] body) {
        int[] nl = new int[4];
        for (int i = 0, at = -1; i < 4; i++) {
            at = indexOf(body, (byte) '\n', at + 1);
            if (at < 0) {
                System.exit(2);
            }
            nl[i] = at;
        }
        String requestId = text(body, 0, nl[0]);
        long deadline = Long.parseLong(text(body, nl[0] + 1, nl[1]));
        String arn = text(body, nl[1] + 1, nl[2]);
        String clientContext = text(body, nl[2] + 1, nl[3]);
        byte[] payload = java.util.Arrays.copyOfRange(body, nl[3] + 1, body.length);
        long t0 = System.nanoTime();
        char kind;
        byte[] reply;
        try {
            reply = handler.invoke(payload, new LambdaContext(function, requestId, deadline, arn, clientContext));
            kind = 'S';
            if (reply.length > MAX_RESPONSE) { // refused here, so the environment stays warm
                kind = 'F';
                reply = error("Function.ResponseSizeTooLarge", "Response payload size (" + reply.length
                        + " bytes) exceeded maximum allowed payload size (" + MAX_RESPONSE + " bytes).", null);
            }
        } catch (Convert.MarshalException e) {
            kind = 'F';
            reply = error("Runtime.MarshalError", "Unable to marshal response: " + e.getMessage(), null);
            System.err.println("[ERROR] Runtime.MarshalError: " + e.getMessage());
        } catch (Throwable t) { // OutOfMemoryError and StackOverflowError too: the caller gets them
            kind = 'F';
            reply = error(t.getClass().getName(), message(t), t);
            System.err.println("[ERROR] " + t.getClass().getName() + ": " + message(t));
        }
        return frame(kind, System.nanoTime() - t0, reply);
    }

    // -- the wire ----------------------------------------------------------------
    private byte[] readFrame() throws IOException {
        if (!readFully(head, head.length)) {
            return null;
        }
        ByteBuffer h = ByteBuffer.wrap(head);
        byte kind = h.get();
        int length = h.getInt();
        if (kind != 'I' || length < 0) {
            System.exit(2); // only "I" frames, one at a time
        }
        byte[] body;
        try {
            body = new byte[length];
        } catch (OutOfMemoryError e) {
            // Read the frame into the scratch buffer so the next one starts in step.
            for (int left = length; left > 0; left -= scratch.length) {
                if (!readFully(scratch, Math.min(left, scratch.length))) {
                    return null;
                }
            }
            throw e;
        }
        return readFully(body, length) ? body : null;
    }

    private boolean readFully(byte[] buf, int length) throws IOException {
        for (int off = 0; off < length;) {
            int n = in.read(buf, off, length - off);
            if (n < 0) {
                return false;
            }
            off += n;
        }
        return true;
    }

    /** One frame; {@code handlerNs} is left out when negative ("E" has none). */
    static byte[] frame(char kind, long handlerNs, byte[] body) {
        int numbers = handlerNs < 0 ? 0 : 8;
        ByteBuffer frame = ByteBuffer.allocate(5 + numbers + body.length);
        frame.put((byte) kind).putInt(numbers + body.length);
        if (numbers > 0) {
            frame.putLong(handlerNs);
        }
        return frame.put(body).array();
    }

    private static int indexOf(byte[] data, byte b, int from) {
        for (int i = from; i < data.length; i++) {
            if (data[i] == b) {
                return i;
            }
        }
        return -1;
    }

    private static String text(byte[] data, int from, int to) {
        return new String(data, from, to - from, StandardCharsets.UTF_8);
    }

    // -- errors --------------------------------------------------------------------
    private static String message(Throwable t) {
        return t.getMessage() == null ? t.getClass().getName() : t.getMessage();
    }

    static byte[] error(String type, String message, Throwable t) {
        Map<String, Object> doc = document(type, message, t, 0);
        return Json.write(doc).getBytes(StandardCharsets.UTF_8);
    }

    private static Map<String, Object> document(String type, String message, Throwable t, int depth) {
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("errorMessage", message);
        doc.put("errorType", type);
        List<Object> trace = new ArrayList<>();
        if (t != null) {
            for (StackTraceElement frame : t.getStackTrace()) {
                // The function's frames only: stop at the bootstrap and the reflection that called the handler.
                String cls = frame.getClassName();
                if (cls.startsWith("runtimeagent.")) {
                    break;
                }
                trace.add(frame.toString());
            }
            while (!trace.isEmpty() && isReflection((String) trace.get(trace.size() - 1))) {
                trace.remove(trace.size() - 1);
            }
        }
        doc.put("stackTrace", trace);
        Throwable cause = t == null ? null : t.getCause();
        if (cause != null && cause != t && depth < 8) {
            doc.put("cause", document(cause.getClass().getName(), message(cause), cause, depth + 1));
        }
        return doc;
    }

    private static boolean isReflection(String frame) {
        return frame.startsWith("java.base/jdk.internal.reflect.") || frame.startsWith("java.base/java.lang.reflect.");
    }

    /** Throws any Throwable from code whose signature does not declare it. */
    @SuppressWarnings("unchecked")
    static <T extends Throwable> T rethrow(Throwable t) throws T {
        throw (T) t;
    }
}
