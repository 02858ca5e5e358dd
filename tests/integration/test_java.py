"""The built-in Java runtime: handlers of every style run in a real sandbox.

The functions are compiled here with the host's javac against the agent's
own bootstrap.jar (the AWS-style interfaces live in it), all in one javac
run, and deployed as zips of class files, as a Lambda Java function is.
"""

import io
import json
import re
import shutil
import socket
import struct
import subprocess
import zipfile

import grpc
import pytest

from framework.agent import error_type
from runtime.core.runtimes import JAVA_JAR, bootstrap_root, discover
from runtime.v1 import functions_pb2, invoker_pb2, logs_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

JAVAC = shutil.which("javac")
if JAVAC is None:
    pytest.skip("no `javac` on PATH: no JDK, so the Java runtime is not offered on this host (scripts/setup-host.sh "
                "installs openjdk-17-jdk-headless)", allow_module_level=True)
_VERSION = subprocess.run([JAVAC, "-version"], capture_output=True, text=True, check=True)
# Named as Lambda names it from the JDK's major version: javac 17.0.15 -> java17.
RUNTIME = "java" + re.search(r"javac (\d+)", _VERSION.stdout + _VERSION.stderr).group(1)
JAR = bootstrap_root() / "java" / JAVA_JAR

SOURCES = {
    # (event, Context) with a Map event; a static counter shows warm reuse.
    "example/Counter.java": """
package example;
import com.amazonaws.services.lambda.runtime.Context;
import java.util.*;
public class Counter {
    static int count;
    public Map<String, Object> handle(Map<String, Object> event, Context context) {
        count++;
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("count", count);
        out.put("echo", event);
        out.put("java", System.getProperty("java.version"));
        out.put("cwd", System.getProperty("user.dir"));
        out.put("controlFd", System.getenv("_RUNTIME_CONTROL_FD"));
        out.put("maxHeapMb", Runtime.getRuntime().maxMemory() / (1024 * 1024));
        out.put("uuid", UUID.randomUUID().toString().length());
        try {
            out.put("stdin", System.in.read());
        } catch (java.io.IOException e) {
            out.put("stdin", e.toString());
        }
        return out;
    }
}
""",
    # Every signature AWS's Java runtime accepts, one method each.
    "example/Styles.java": """
package example;
import com.amazonaws.services.lambda.runtime.Context;
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;
public class Styles {
    public String none() { return "none"; }
    public int event(List<Integer> numbers) { int s = 0; for (int n : numbers) s += n; return s; }
    public String eventContext(String name, Context c) { return name + "@" + c.getFunctionName(); }
    public String context(Context c) { return c.getAwsRequestId(); }
    public static Map<String, Object> staticEvent(Map<String, Object> e) { return Map.of("static", e.get("x")); }
    public void streams(InputStream in, OutputStream out) throws IOException {
        out.write(("{\\"raw\\":" + new String(in.readAllBytes(), StandardCharsets.UTF_8) + "}").getBytes());
    }
    public void streamsContext(InputStream in, OutputStream out, Context c) throws IOException {
        out.write(new String(in.readAllBytes(), StandardCharsets.UTF_8).toUpperCase().getBytes());
    }
    public void nothing(Map<String, Object> e) { }
    // Overloads: the longest signature wins, then the one ending in Context.
    public String pick(Object e) { return "one"; }
    public String pick(Object e, Context c) { return "two"; }
}
""",
    "example/Upper.java": """
package example;
import com.amazonaws.services.lambda.runtime.*;
import java.util.Map;
public class Upper implements RequestHandler<Map<String, String>, String> {
    @Override
    public String handleRequest(Map<String, String> event, Context context) {
        context.getLogger().log("upper " + event.get("text"));
        return event.get("text").toUpperCase();
    }
}
""",
    "example/Reverse.java": """
package example;
import com.amazonaws.services.lambda.runtime.*;
import java.io.*;
public class Reverse implements RequestStreamHandler {
    @Override
    public void handleRequest(InputStream in, OutputStream out, Context context) throws IOException {
        byte[] b = in.readAllBytes();
        for (int i = b.length - 1; i >= 0; i--) out.write(b[i]);
    }
}
""",
    # A POJO event (setters, public fields, nested beans, enums, records) and POJO results.
    "example/Orders.java": """
package example;
import com.amazonaws.services.lambda.runtime.Context;
import java.util.*;
public class Orders {
    public enum Status { NEW, PAID }
    public static class Item {
        public String sku;
        public int quantity;
        public double price;
    }
    public static class Order {
        private String id;
        private Status status;
        private List<Item> items;
        public Map<String, Long> tags;
        public boolean gift;
        public String getId() { return id; }
        public void setId(String id) { this.id = id; }
        public Status getStatus() { return status; }
        public void setStatus(Status status) { this.status = status; }
        public List<Item> getItems() { return items; }
        public void setItems(List<Item> items) { this.items = items; }
    }
    public static class Receipt {
        private final String orderId;
        private final double total;
        public final List<String> skus = new ArrayList<>();
        Receipt(String orderId, double total) { this.orderId = orderId; this.total = total; }
        public String getOrderId() { return orderId; }
        public double getTotal() { return total; }
        public boolean isPaid() { return true; }
    }
    public record Point(int x, int y, String label) {}
    public Receipt handle(Order order, Context context) {
        double total = 0;
        Receipt r = new Receipt(order.getId() + "/" + order.getStatus() + "/" + order.tags + "/" + order.gift, 0);
        for (Item i : order.getItems()) { total += i.quantity * i.price; r.skus.add(i.sku); }
        Receipt done = new Receipt(r.getOrderId(), total);
        done.skus.addAll(r.skus);
        return done;
    }
    public Point record(Point p) { return new Point(p.y(), p.x(), p.label() + "!"); }
    public Object cycle(Map<String, Object> e) { List<Object> l = new ArrayList<>(); l.add(l); return l; }
    public String big(Map<String, Integer> e) { return "x".repeat(e.get("n")); }
}
""",
    "example/Ctx.java": """
package example;
import com.amazonaws.services.lambda.runtime.*;
import java.util.*;
public class Ctx {
    public Map<String, Object> handle(Object event, Context c) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("requestId", c.getAwsRequestId());
        out.put("functionName", c.getFunctionName());
        out.put("functionVersion", c.getFunctionVersion());
        out.put("memory", c.getMemoryLimitInMB());
        out.put("arn", c.getInvokedFunctionArn());
        out.put("group", c.getLogGroupName());
        out.put("stream", c.getLogStreamName());
        out.put("remaining", c.getRemainingTimeInMillis());
        out.put("identity", c.getIdentity());
        ClientContext cc = c.getClientContext();
        out.put("custom", cc == null ? null : cc.getCustom());
        out.put("env", cc == null ? null : cc.getEnvironment());
        out.put("appTitle", cc == null ? null : cc.getClient().getAppTitle());
        return out;
    }
}
""",
    "example/Thrower.java": """
package example;
import java.util.Map;
public class Thrower {
    public static class ValidationException extends RuntimeException {
        public ValidationException(String m, Throwable cause) { super(m, cause); }
    }
    public String handle(Map<String, Object> event) throws Exception {
        if (event.containsKey("checked")) throw new java.io.IOException("disk on fire");
        if (event.containsKey("npe")) { Object o = null; return o.toString(); }
        return check((String) event.get("field"));
    }
    private String check(String field) {
        try {
            Integer.parseInt(field);
        } catch (NumberFormatException e) {
            throw new ValidationException("bad field: " + field, e);
        }
        return "ok";
    }
}
""",
    "example/Broken.java": """
package example;
public class Broken {
    static final int VALUE = Integer.parseInt(System.getenv().getOrDefault("BROKEN", "nope"));
    public int handle(Object e) { return VALUE; }
}
""",
    "example/Hog.java": """
package example;
import java.util.*;
public class Hog {
    static final List<byte[]> kept = new ArrayList<>();
    public Map<String, Object> handle(Map<String, Integer> e) {
        List<byte[]> chunks = e.containsKey("keep") ? kept : new ArrayList<>();
        for (int i = 0; i < e.get("mb") * 16; i++) chunks.add(new byte[64 * 1024]);
        return Map.of("allocatedMb", chunks.size() / 16, "maxHeapMb", Runtime.getRuntime().maxMemory() >> 20);
    }
}
""",
    "example/Sleeper.java": """
package example;
import java.util.Map;
public class Sleeper {
    static int calls;
    public int handle(Map<String, Object> e) throws InterruptedException {
        calls++;
        if (e.containsKey("spin")) for (;;) { }
        if (e.containsKey("sleep")) Thread.sleep(30_000);
        if (e.containsKey("exit")) System.exit(3);
        return calls;
    }
}
""",
    "example/Logger.java": """
package example;
import com.amazonaws.services.lambda.runtime.*;
public class Logger {
    public String handle(String who, Context c) {
        System.out.println("hello " + who);
        System.err.println("oops on stderr");
        c.getLogger().log("via LambdaLogger");
        LambdaRuntime.getLogger().log("via LambdaRuntime\\n");
        System.out.print("partial line without newline");
        return "logged";
    }
}
""",
    # Its helper goes into lib/helper.jar: classes come from jars in lib/ too.
    "example/UsesLib.java": """
package example;
public class UsesLib {
    public String handle(Object e) { return lib.Helper.greet("jar"); }
}
""",
    "lib/Helper.java": """
package lib;
public class Helper {
    public static String greet(String who) { return "hello from " + who; }
}
""",
}


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> dict[str, bytes]:
    """Every test function's classes, compiled once: path in the zip -> bytes."""
    src = tmp_path_factory.mktemp("java-src")
    out = tmp_path_factory.mktemp("java-classes")
    for name, text in SOURCES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    subprocess.run([JAVAC, "--release", "17", "-cp", str(JAR), "-d", str(out),
                    *[str(src / name) for name in SOURCES]], check=True, capture_output=True, timeout=300)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.class"))}


def code(classes: dict[str, bytes], *, lib_jar: bool = False) -> dict[str, bytes]:
    """The deployment zip's files: classes at the top, or lib/ classes in lib/helper.jar."""
    files = {k: v for k, v in classes.items() if not (lib_jar and k.startswith("lib/"))}
    if lib_jar:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as jar:
            for name, data in classes.items():
                if name.startswith("lib/"):
                    jar.writestr(name, data)
        files["lib/helper.jar"] = buf.getvalue()
    return files


def create(client, classes, name, handler, **spec):
    return client.create(name, code(classes, lib_jar=spec.pop("lib_jar", False)), handler=handler,
                         runtime=spec.pop("runtime", RUNTIME), **spec)


def test_runtime_is_offered(client):
    runtimes = {r.name for r in client.functions.ListRuntimes(functions_pb2.ListRuntimesRequest(), timeout=30).runtimes}
    assert RUNTIME in runtimes, f"javac is here but the agent offers no {RUNTIME} (was bootstrap.jar built?)"


def test_method_handler_and_warm_reuse(client, classes):
    create(client, classes, "java-counter", "example.Counter::handle")
    resp, body = client.invoke_json("java-counter", {"name": "ada"})
    assert resp.function_error == "", body
    assert body["count"] == 1 and body["echo"] == {"name": "ada"}
    assert body["java"].split(".")[0] == RUNTIME[4:]
    assert body["cwd"] == "/var/task" and body["uuid"] == 36
    assert body["controlFd"] == "0" and body["stdin"] == -1, "System.in never carries control frames"
    assert 75 <= body["maxHeapMb"] <= 100, "heap sized from the function's 128 MB"
    assert resp.start_kind == invoker_pb2.COLD
    assert resp.timings.init_us > 0 and resp.timings.sandbox_us > 0 and resp.timings.code_load_us > 0

    resp2, body2 = client.invoke_json("java-counter", {})
    assert body2["count"] == 2, "static state is kept between invocations (warm start)"
    assert resp2.start_kind == invoker_pb2.WARM and resp2.timings.init_us == 0


@pytest.mark.parametrize("method, payload, expected", [
    ("none", {}, "none"),
    ("event", [1, 2, 39], 42),
    ("eventContext", "ada", "ada@java-styles-eventContext"),
    ("staticEvent", {"x": [1]}, {"static": [1]}),
    ("nothing", {}, None),
    ("pick", {}, "two"),
])
def test_handler_signatures(client, classes, method, payload, expected):
    name = f"java-styles-{method}"
    create(client, classes, name, f"example.Styles::{method}")
    resp, body = client.invoke_json(name, payload)
    assert resp.function_error == "", body
    assert body == expected


def test_context_only_and_stream_handlers(client, classes):
    create(client, classes, "java-ctx-only", "example.Styles::context")
    resp, body = client.invoke_json("java-ctx-only")
    assert body == resp.request_id

    create(client, classes, "java-streams", "example.Styles::streams")
    assert client.invoke_json("java-streams", {"a": [1, 2]})[1] == {"raw": {"a": [1, 2]}}

    create(client, classes, "java-streams-ctx", "example.Styles::streamsContext")
    assert client.invoke_json("java-streams-ctx", {"k": "v"})[1] == {"K": "V"}


def test_handler_interfaces_by_class_name(client, classes):
    create(client, classes, "java-upper", "example.Upper")
    resp, body = client.invoke_json("java-upper", {"text": "shout"}, log_type=1)
    assert (resp.function_error, body) == ("", "SHOUT")
    assert "upper shout\n" in resp.log_result

    create(client, classes, "java-reverse", "example.Reverse")
    assert client.invoke("java-reverse", raw=b'"abc"').payload == b'"cba"'


def test_pojo_event_and_results(client, classes):
    create(client, classes, "java-orders", "example.Orders::handle")
    order = {"id": "o-1", "status": "PAID", "gift": True, "tags": {"prio": "7"}, "unknown": {"ignored": 1},
             "items": [{"sku": "a", "quantity": 2, "price": 1.5}, {"sku": "b", "quantity": "3", "price": 2}]}
    resp, body = client.invoke_json("java-orders", order)
    assert resp.function_error == "", body
    # fields first in declaration order, then getters without a field; scalars coerced ("3" -> 3, "7" -> 7L)
    assert body == {"orderId": "o-1/PAID/{prio=7}/true", "total": 9.0, "skus": ["a", "b"], "paid": True}

    create(client, classes, "java-record", "example.Orders::record")
    assert client.invoke_json("java-record", {"x": 1, "y": 2, "label": "p"})[1] == {"x": 2, "y": 1, "label": "p!"}

    resp, body = client.invoke_json("java-orders", {"items": [{"quantity": "many"}]})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "java.lang.RuntimeException"
    assert body["errorMessage"] == ('An error occurred during JSON parsing: items[0].quantity: cannot convert the '
                                    'JSON string "many" to int')


def test_unserialisable_result_is_marshal_error(client, classes):
    create(client, classes, "java-cycle", "example.Orders::cycle")
    resp, body = client.invoke_json("java-cycle")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"
    assert body["errorMessage"].startswith("Unable to marshal response: ")


def test_response_too_large(client, classes):
    create(client, classes, "java-big", "example.Orders::big", memory_mb=512)
    assert len(client.invoke_json("java-big", {"n": 6 * 1024 * 1024 - 100})[1]) == 6 * 1024 * 1024 - 100
    resp, body = client.invoke_json("java-big", {"n": 6 * 1024 * 1024})
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    assert client.invoke_json("java-big", {"n": 1})[0].start_kind == invoker_pb2.WARM


def test_context(client, classes):
    create(client, classes, "java-ctx", "example.Ctx::handle", memory_mb=256)
    resp = client.invoke("java-ctx", {}, client_context=b'{"client": {"app_title": "demo"}, '
                                                          b'"custom": {"a": "line\\nbreak"}, "env": {"k": "v"}}')
    body = json.loads(resp.payload)
    assert body["requestId"] == resp.request_id
    assert body["functionName"] == "java-ctx" and body["functionVersion"] == "$LATEST"
    assert body["memory"] == 256
    assert body["arn"].endswith(":function:java-ctx")
    assert body["group"] == "/aws/lambda/java-ctx" and "[$LATEST]" in body["stream"]
    assert 0 < body["remaining"] <= 3000
    assert body["identity"] is None
    assert body["custom"] == {"a": "line\nbreak"} and body["env"] == {"k": "v"} and body["appTitle"] == "demo"
    assert json.loads(client.invoke("java-ctx", {}).payload)["custom"] is None


def line(text: str, source: str = "example/Thrower.java") -> int:
    """The line number of the first line of ``source`` holding ``text``."""
    return next(i for i, ln in enumerate(SOURCES[source].split("\n"), 1) if text in ln)


def test_exception_with_stack_trace_and_cause(client, classes):
    create(client, classes, "java-throw", "example.Thrower::handle")
    resp, body = client.invoke_json("java-throw", {"field": "x1"})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "example.Thrower$ValidationException"
    assert body["errorMessage"] == "bad field: x1"
    assert body["stackTrace"][:2] == [f"example.Thrower.check(Thrower.java:{line('throw new Validation')})",
                                      f"example.Thrower.handle(Thrower.java:{line('return check(')})"]
    assert not any("runtimeagent" in f or "reflect" in f for f in body["stackTrace"]), "only the function's frames"
    assert body["cause"]["errorType"] == "java.lang.NumberFormatException"
    assert body["cause"]["stackTrace"]

    _, body = client.invoke_json("java-throw", {"checked": 1})
    assert (body["errorType"], body["errorMessage"]) == ("java.io.IOException", "disk on fire")
    resp, body = client.invoke_json("java-throw", {"npe": 1})
    assert body["errorType"] == "java.lang.NullPointerException"
    assert resp.start_kind == invoker_pb2.WARM, "the environment survives a thrown exception"
    assert client.invoke_json("java-throw", {"field": "1"})[1] == "ok"


def test_init_errors(client, classes):
    create(client, classes, "java-no-class", "example.Nope::handle")
    resp, body = client.invoke_json("java-no-class")
    assert resp.function_error == "Unhandled"
    assert (body["errorType"], body["errorMessage"]) == ("java.lang.ClassNotFoundException",
                                                         "Class not found: example.Nope")

    create(client, classes, "java-no-method", "example.Counter::missing")
    _, body = client.invoke_json("java-no-method")
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == ("No public method named missing with appropriate method signature found on "
                                    "class example.Counter")

    create(client, classes, "java-no-interface", "example.Counter")
    _, body = client.invoke_json("java-no-interface")
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert "does not implement RequestHandler or RequestStreamHandler" in body["errorMessage"]

    create(client, classes, "java-broken", "example.Broken::handle")
    _, body = client.invoke_json("java-broken")
    assert body["errorType"] == "java.lang.NumberFormatException"
    assert body["errorMessage"].startswith("Error loading class example.Broken: ")
    assert any("example.Broken.<clinit>" in f for f in body["stackTrace"]), body


@pytest.mark.parametrize("memory_mb", [128, 256, 512])
def test_memory_sizes_and_out_of_memory(client, classes, memory_mb):
    name = f"java-hog-{memory_mb}"
    create(client, classes, name, "example.Hog::handle", memory_mb=memory_mb, timeout_seconds=30)
    # Most of the memory is usable heap...
    resp, body = client.invoke_json(name, {"mb": memory_mb // 2})
    assert resp.function_error == "", body
    assert memory_mb * 0.6 < body["maxHeapMb"] < memory_mb
    # ...and more than the memory size is a Java OutOfMemoryError, not a killed sandbox.
    resp, body = client.invoke_json(name, {"mb": memory_mb})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "java.lang.OutOfMemoryError", body
    assert body["errorMessage"] == "Java heap space"
    resp, body = client.invoke_json(name, {"mb": 1})
    assert (resp.function_error, resp.start_kind) == ("", invoker_pb2.WARM), "the garbage was collected"


def test_memory_kept_past_the_limit_is_reported(client, classes):
    create(client, classes, "java-hog-keep", "example.Hog::handle", timeout_seconds=30)
    body = {}
    for _ in range(20):  # keeps 10 MB more each time, until the heap is full
        resp, body = client.invoke_json("java-hog-keep", {"mb": 10, "keep": 1})
        if resp.function_error:
            break
    assert body["errorType"] in ("java.lang.OutOfMemoryError", "Runtime.OutOfMemory"), body


def test_timeout_and_exit(client, classes):
    create(client, classes, "java-sleeper", "example.Sleeper::handle", timeout_seconds=1)
    assert client.invoke_json("java-sleeper")[1] == 1
    for payload in ({"sleep": 1}, {"spin": 1}):
        resp, body = client.invoke_json("java-sleeper", payload)
        assert resp.function_error == "Unhandled"
        assert body["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in body["errorMessage"]
        assert resp.timings.total_us < 5_000_000
    resp, body = client.invoke_json("java-sleeper")
    assert body == 1 and resp.start_kind == invoker_pb2.COLD, "a fresh environment replaced the killed one"

    resp, body = client.invoke_json("java-sleeper", {"exit": 1})
    assert body["errorType"] == "Runtime.ExitError" and "exit status 3" in body["errorMessage"]


def test_output_reaches_the_log_with_the_request_id(client, classes):
    create(client, classes, "java-logger", "example.Logger::handle")
    a = client.invoke("java-logger", "a", log_type=1)
    assert json.loads(a.payload) == "logged"
    assert "hello a\n" in a.log_result and "oops on stderr\n" in a.log_result
    b = client.invoke("java-logger", "b")

    def lines(request_id, stream):
        return [e.message for e in client.logs.GetLogs(
            logs_pb2.GetLogsRequest(function_name="java-logger", request_id=request_id), timeout=30)
            if e.stream == stream]

    assert lines(b.request_id, logs_pb2.STDOUT) == ["hello b", "via LambdaLogger", "via LambdaRuntime",
                                                    "partial line without newline"]
    assert lines(b.request_id, logs_pb2.STDERR) == ["oops on stderr"]


def test_classes_from_lib_jars(client, classes):
    create(client, classes, "java-lib", "example.UsesLib::handle", lib_jar=True)
    resp, body = client.invoke_json("java-lib")
    assert (resp.function_error, body) == ("", "hello from jar")


def test_other_java_runtimes(client, classes):
    """Every other JDK major the agent found runs the same (Java 17) classes."""
    others = sorted(r.name for r in client.functions.ListRuntimes(functions_pb2.ListRuntimesRequest(),
                                                                   timeout=30).runtimes
                    if re.fullmatch(r"java\d+", r.name) and r.name != RUNTIME)
    if not others:
        pytest.skip(f"{RUNTIME} is the only Java runtime on this host")
    for rt in others:
        create(client, classes, f"java-on-{rt}", "example.Upper", runtime=rt)
        resp, body = client.invoke_json(f"java-on-{rt}", {"text": rt})
        assert (resp.function_error, body) == ("", rt.upper()), body


def test_address_space_limit_is_an_init_error(tmp_path):
    """Rootless mode bounds memory with RLIMIT_AS, too little for the JVM: the
    launcher says so in an init error frame rather than failing obscurely."""
    rt = discover()[RUNTIME]
    ours, theirs = socket.socketpair()
    limit_kib = 2048 << 10
    with ours, theirs:
        # The limit is set by a shell, not preexec_fn: Python code run in a child
        # forked from this multi-threaded process (gRPC's threads) can abort it.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f'ulimit -v {limit_kib} && exec "$@"', "sh", *rt.argv], stdin=theirs,
            cwd=tmp_path, env={"_RUNTIME_CONTROL_FD": "0", "PATH": "/usr/bin:/bin"})
        theirs.close()
        ours.settimeout(30)
        data = b""
        while chunk := ours.recv(65536):
            data += chunk
    assert proc.wait(30) == 1
    kind, length = struct.unpack_from(">cI", data)
    assert kind == b"E" and len(data) == 5 + length
    doc = json.loads(data[5:])
    assert doc["errorType"] == "Runtime.Unsupported" and "RLIMIT_AS" in doc["errorMessage"]


@pytest.mark.parametrize("handler", ["example.Counter::", "::handle", "example..Counter", "example/Counter::handle",
                                     "example.Counter::handle::x", "example.Counter.handle()", "1example.Counter",
                                     "example Counter"])
def test_invalid_handler_refused_at_create(client, classes, handler):
    with pytest.raises(grpc.RpcError) as err:
        create(client, classes, "java-bad-handler", handler)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_type(err.value) == "InvalidParameterValueException"
    assert "Java handler" in err.value.details()
