"""The built-in Node.js runtime: handlers of every style run in a real sandbox."""

import json
import shutil
import subprocess

import grpc
import pytest

from framework.agent import assert_dies_and_is_replaced, error_type
from runtime.v1 import invoker_pb2, logs_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

NODE = shutil.which("node")
if NODE is None:
    pytest.skip("no `node` on PATH: the Node.js runtime is not offered on this host", allow_module_level=True)
# Named as Lambda names it from the host's major version: v20.11.1 -> nodejs20.x.
RUNTIME = "nodejs%s.x" % subprocess.run([NODE, "--version"], capture_output=True, text=True,
                                        check=True).stdout.strip().lstrip("v").split(".")[0]


def create(client, name, files, handler="app.handler", **spec):
    return client.create(name, files, handler=handler, runtime=RUNTIME, **spec)


def test_sync_handler_and_warm_reuse(client):
    create(client, "node-sync", {"app.js": """
let count = 0;
exports.handler = (event, context) => {
  count += 1;
  return { count, echo: event, version: process.version };
};
"""})
    resp, body = client.invoke_json("node-sync", {"name": "ada"})
    assert resp.function_error == "", body
    assert body["count"] == 1 and body["echo"] == {"name": "ada"}
    assert body["version"].startswith("v" + RUNTIME[6:-2] + ".")
    assert resp.start_kind == invoker_pb2.COLD
    assert resp.timings.init_us > 0 and resp.timings.sandbox_us > 0 and resp.timings.code_load_us > 0

    resp2, body2 = client.invoke_json("node-sync", {})
    assert body2["count"] == 2, "module state is kept between invocations (warm start)"
    assert resp2.start_kind == invoker_pb2.WARM
    assert resp2.timings.init_us == 0


def test_async_handler_and_context(client):
    create(client, "node-async", {"app.js": """
exports.handler = async (event, context) => {
  await new Promise((resolve) => setTimeout(resolve, 5));
  return {
    requestId: context.awsRequestId, functionName: context.functionName,
    functionVersion: context.functionVersion, memory: context.memoryLimitInMB,
    arn: context.invokedFunctionArn, group: context.logGroupName, stream: context.logStreamName,
    remaining: context.getRemainingTimeInMillis(), waits: context.callbackWaitsForEmptyEventLoop,
    envName: process.env.AWS_LAMBDA_FUNCTION_NAME, greeting: process.env.GREETING,
    controlFd: process.env._RUNTIME_CONTROL_FD === undefined ? null : 'leaked',
    home: process.env.HOME, cwd: process.cwd(), uid: process.getuid(),
  };
};
"""}, environment={"GREETING": "hi"}, timeout_seconds=7, memory_mb=256)
    resp, body = client.invoke_json("node-async", {})
    assert resp.function_error == "", body
    assert body["requestId"] == resp.request_id
    assert body["functionName"] == body["envName"] == "node-async"
    assert body["functionVersion"] == "$LATEST"
    assert body["memory"] == "256"
    assert body["arn"].endswith(":function:node-async")
    assert body["group"] == "/aws/lambda/node-async"
    assert "[$LATEST]" in body["stream"]
    assert 0 < body["remaining"] <= 7000
    assert body["waits"] is True
    assert body["greeting"] == "hi"
    assert body["controlFd"] is None
    assert body["home"] == "/tmp" and body["cwd"] == "/var/task" and body["uid"] != 0


def test_callback_handler_styles(client):
    create(client, "node-callback", {"app.js": """
exports.handler = (event, context, callback) => {
  if (event.style === 'succeed') return setTimeout(() => context.succeed({ via: 'succeed' }), 1);
  if (event.style === 'done') return setTimeout(() => context.done(null, { via: 'done' }), 1);
  // returns the timer: a callback handler's return value is not its result
  return setTimeout(() => callback(null, { via: 'callback', n: event.n }), 5);
};
"""})
    assert client.invoke_json("node-callback", {"n": 7})[1] == {"via": "callback", "n": 7}
    assert client.invoke_json("node-callback", {"style": "succeed"})[1] == {"via": "succeed"}
    assert client.invoke_json("node-callback", {"style": "done"})[1] == {"via": "done"}


def test_undefined_result_is_null(client):
    create(client, "node-undefined", {"app.js": """
exports.handler = (event, context, callback) => {
  if (event.style === 'sync') return undefined;
  if (event.style === 'async') return Promise.resolve();
  if (event.style === 'forgotten') return new Promise(() => {});
  // a callback never called: null once nothing is left to run, as on Lambda
};
"""})
    for style in ("sync", "async", "forgotten", "callback"):
        resp = client.invoke("node-undefined", {"style": style})
        assert (resp.function_error, resp.payload) == ("", b"null"), style


def test_esm_cjs_and_nested_handlers(client):
    create(client, "node-esm", {"app.mjs": """
const table = await Promise.resolve({ ok: 'esm' });   // top-level await
export const handler = async (event) => ({ ...table, got: event.x });
"""})
    assert client.invoke_json("node-esm", {"x": 1})[1] == {"ok": "esm", "got": 1}

    create(client, "node-cjs", {"app.cjs": "module.exports.handler = async () => 'cjs';\n"})
    assert client.invoke_json("node-cjs")[1] == "cjs"

    create(client, "node-nested", {"src/lib/app.js": "exports.handler = async () => require('./util').tag;\n",
                                   "src/lib/util.js": "exports.tag = 'nested';\n"},
           handler="src/lib/app.handler")
    assert client.invoke_json("node-nested")[1] == "nested"

    # "type": "module" makes a .js file an ES module, top-level await included
    create(client, "node-esm-js", {"package.json": '{"type": "module"}',
                                   "index.js": "const v = await Promise.resolve('esm .js');\n"
                                               "export async function main() { return v; }\n"},
           handler="index.main")
    assert client.invoke_json("node-esm-js")[1] == "esm .js"

    # .js before .mjs before .cjs, as Lambda resolves them
    create(client, "node-order", {"app.js": "exports.handler = () => 'js';\n",
                                  "app.mjs": "export const handler = () => 'mjs';\n",
                                  "app.cjs": "exports.handler = () => 'cjs';\n"})
    assert client.invoke_json("node-order")[1] == "js"


def test_client_context_passed_through(client):
    create(client, "node-ctx", {"app.js": "exports.handler = async (e, c) => c.clientContext;\n"})
    resp = client.invoke("node-ctx", {}, client_context=b'{"custom": {"a": "line\\nbreak"}, "env": {"k": 1}}')
    assert json.loads(resp.payload) == {"custom": {"a": "line\nbreak"}, "env": {"k": 1}}
    assert json.loads(client.invoke("node-ctx", {}).payload) is None


def test_thrown_error_is_unhandled(client):
    create(client, "node-throw", {"app.js": """
class ValidationError extends Error {}
exports.handler = (event) => {
  if (event.kind === 'custom') throw new ValidationError('bad field');
  if (event.kind === 'string') throw 'just a string';
  if (event.kind === 'object') throw { message: 'plain object' };
  throw new TypeError('bad input: ' + JSON.stringify(event));
};
"""})
    resp, body = client.invoke_json("node-throw", {"x": 1})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == 'bad input: {"x":1}'
    assert any("/var/task/app.js" in line for line in body["stackTrace"]), body
    _, body = client.invoke_json("node-throw", {"kind": "custom"})
    assert (body["errorType"], body["errorMessage"]) == ("ValidationError", "bad field")
    _, body = client.invoke_json("node-throw", {"kind": "object"})
    assert (body["errorType"], body["errorMessage"]) == ("Error", "plain object")
    resp, body = client.invoke_json("node-throw", {"kind": "string"})
    assert (body["errorType"], body["errorMessage"]) == ("Error", "just a string")
    assert resp.start_kind == invoker_pb2.WARM, "the environment survives a thrown error"


def test_rejected_promise_and_callback_error(client):
    create(client, "node-reject", {"app.js": """
exports.handler = async (event) => {
  await null;
  const e = new RangeError('too far');
  throw e;
};
"""})
    resp, body = client.invoke_json("node-reject")
    assert resp.function_error == "Unhandled"
    assert (body["errorType"], body["errorMessage"]) == ("RangeError", "too far")
    assert isinstance(body["stackTrace"], list)

    create(client, "node-cb-error", {"app.js": """
exports.handler = (event, context, callback) => {
  if (event.fail) return context.fail(new Error('failed via context'));
  setImmediate(() => callback(new SyntaxError('callback says no')));
};
"""})
    resp, body = client.invoke_json("node-cb-error")
    assert resp.function_error == "Unhandled"
    assert (body["errorType"], body["errorMessage"]) == ("SyntaxError", "callback says no")
    _, body = client.invoke_json("node-cb-error", {"fail": True})
    assert body["errorMessage"] == "failed via context"


def test_uncaught_errors_belong_to_the_invocation(client):
    create(client, "node-stray", {"app.js": """
exports.handler = (event) => new Promise(() => {
  if (event.reject) Promise.reject(new EvalError('nobody caught me'));
  else setTimeout(() => { throw new URIError('thrown from a timer'); }, 1);
});
"""})
    resp, body = client.invoke_json("node-stray")
    assert resp.function_error == "Unhandled"
    assert (body["errorType"], body["errorMessage"]) == ("URIError", "thrown from a timer")
    _, body = client.invoke_json("node-stray", {"reject": True})
    assert (body["errorType"], body["errorMessage"]) == ("EvalError", "nobody caught me")


def test_init_errors(client):
    create(client, "node-no-module", {"other.js": "exports.handler = () => 1;\n"})
    resp, body = client.invoke_json("node-no-module")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"].startswith("Unable to import module 'app': ")

    create(client, "node-bad-require", {"app.js": "require('no-such-package');\nexports.handler = () => 1;\n"})
    _, body = client.invoke_json("node-bad-require")
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "no-such-package" in body["errorMessage"]

    create(client, "node-syntax", {"app.js": "exports.handler = () => {\n"})
    _, body = client.invoke_json("node-syntax")
    assert body["errorType"] == "Runtime.ImportModuleError" and "SyntaxError" in body["errorMessage"]

    create(client, "node-init-throws", {"app.mjs": "throw new Error('config missing');\n"})
    _, body = client.invoke_json("node-init-throws")
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == "Unable to import module 'app': Error: config missing"

    create(client, "node-no-export", {"app.js": "exports.other = () => 1;\n"})
    resp, body = client.invoke_json("node-no-export")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "app.handler is undefined or not exported"

    create(client, "node-not-function", {"app.mjs": "export const handler = 42;\n"})
    _, body = client.invoke_json("node-not-function")
    assert body["errorType"] == "Runtime.HandlerNotFound"


def test_unserialisable_result_is_marshal_error(client):
    create(client, "node-bigint", {"app.js": """
exports.handler = async (event) => {
  if (event.circular) { const o = {}; o.self = o; return o; }
  return { n: 10n };
};
"""})
    resp, body = client.invoke_json("node-bigint")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"
    assert "BigInt" in body["errorMessage"]
    _, body = client.invoke_json("node-bigint", {"circular": True})
    assert body["errorType"] == "Runtime.MarshalError"


def test_exit_is_exit_error_and_environment_replaced(client):
    create(client, "node-exit", {"app.js": """
exports.handler = async (event) => {
  if (event.die) process.exit(3);
  return 'ok';
};
"""})
    assert client.invoke_json("node-exit")[1] == "ok"
    assert_dies_and_is_replaced(client, "node-exit", {"die": True}, "exit status 3")


def test_timeout_kills_environment(client):
    create(client, "node-sleeper", {"app.js": """
let n = 0;
exports.handler = async (event) => {
  n += 1;
  if (event.spin) for (;;) {}
  if (event.sleep) await new Promise((resolve) => setTimeout(resolve, event.sleep * 1000));
  return n;
};
"""}, timeout_seconds=1)
    assert client.invoke_json("node-sleeper")[1] == 1
    for payload in ({"sleep": 30}, {"spin": True}):
        resp, body = client.invoke_json("node-sleeper", payload)
        assert resp.function_error == "Unhandled"
        assert body["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in body["errorMessage"]
        assert resp.timings.total_us < 5_000_000
    resp, body = client.invoke_json("node-sleeper")
    assert body == 1, "a fresh environment replaced the killed one"
    assert resp.start_kind == invoker_pb2.COLD


def test_console_lines_reach_the_log_with_the_request_id(client):
    create(client, "node-logger", {"app.js": """
exports.handler = async (event) => {
  console.log('hello %s', event.who, { n: 1 });
  console.error('oops on stderr');
  console.info('info line');
  process.stdout.write('raw stdout line\\n');
  return 'logged';
};
"""})
    a = client.invoke("node-logger", {"who": "a"}, log_type=1)
    b = client.invoke("node-logger", {"who": "b"})
    # two pipes: lines keep their order within a stream, not across the two
    assert "hello a { n: 1 }\n" in a.log_result and "oops on stderr\n" in a.log_result
    assert a.log_result.index("info line\n") < a.log_result.index("raw stdout line\n")

    def lines(request_id, stream):
        return [e.message for e in client.logs.GetLogs(
            logs_pb2.GetLogsRequest(function_name="node-logger", request_id=request_id), timeout=30)
            if e.stream == stream]

    assert lines(b.request_id, logs_pb2.STDOUT) == ["hello b { n: 1 }", "info line", "raw stdout line"]
    assert lines(b.request_id, logs_pb2.STDERR) == ["oops on stderr"]
    assert "hello a { n: 1 }" in lines(a.request_id, logs_pb2.STDOUT)


def test_many_log_lines_arrive_in_order_before_the_result(client):
    # far more than a pipe holds: process.stdout would buffer and fall behind console.log
    create(client, "node-chatty", {"app.js": """
exports.handler = async (event) => {
  for (let i = 0; i < event.n; i++) {
    console.log('log ' + i + ' ' + 'x'.repeat(200));
    process.stdout.write('raw ' + i + ' ' + 'y'.repeat(200) + '\\n');
  }
  return event.n;
};
"""}, memory_mb=1024, timeout_seconds=30)
    for _ in range(2):
        resp = client.invoke("node-chatty", {"n": 3000})
        assert json.loads(resp.payload) == 3000
        events = [e.message.split(" ", 2)[:2] for e in client.logs.GetLogs(
            logs_pb2.GetLogsRequest(function_name="node-chatty", request_id=resp.request_id), timeout=30)
            if e.stream == logs_pb2.STDOUT]
        assert events == [[kind, str(i)] for i in range(3000) for kind in ("log", "raw")]


def test_response_too_large(client):
    create(client, "node-big", {"app.js": "exports.handler = async (e) => 'x'.repeat(e.n);\n"})
    _, body = client.invoke_json("node-big", {"n": 6 * 1024 * 1024 - 100})
    assert len(body) == 6 * 1024 * 1024 - 100
    resp, body = client.invoke_json("node-big", {"n": 6 * 1024 * 1024 + 10})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    assert body["errorMessage"] == ("Response payload size (6291468 bytes) exceeded maximum allowed payload "
                                    "size (6291456 bytes).")
    resp, _ = client.invoke_json("node-big", {"n": 3})
    assert resp.start_kind == invoker_pb2.WARM, "refused by the bootstrap: the environment stays"


def test_large_payload_reaches_handler(client):
    create(client, "node-len", {"app.js": "exports.handler = async (e) => e.s.length;\n"})
    payload = json.dumps({"s": "x" * (6 * 1024 * 1024 - 100)}).encode()
    assert json.loads(client.invoke("node-len", raw=payload).payload) == 6 * 1024 * 1024 - 100


def test_sandbox_is_read_only_and_offline(client):
    create(client, "node-sandbox", {"app.js": """
const fs = require('fs');
const net = require('net');
exports.handler = async () => {
  const tried = (f) => { try { f(); return 'ok'; } catch (e) { return e.code; } };
  fs.writeFileSync('/tmp/x', 'y');
  const online = await new Promise((resolve) => {
    const s = net.connect(53, '1.1.1.1', () => { s.destroy(); resolve('connected'); });
    s.on('error', (e) => resolve(e.code));
  });
  return { task: tried(() => fs.writeFileSync('/var/task/x', 'y')),
           runtime: tried(() => fs.writeFileSync('/var/runtime/x', 'y')),
           tmp: fs.readFileSync('/tmp/x', 'utf8'), online };
};
"""})
    resp, body = client.invoke_json("node-sandbox")
    assert resp.function_error == "", body
    assert body["task"] in ("EROFS", "EACCES") and body["runtime"] in ("EROFS", "EACCES")
    assert body["tmp"] == "y"
    assert body["online"] != "connected"


@pytest.mark.parametrize("handler", ["app", "app.", "/var/task/app.handler", "../app.handler",
                                     "src/../app.handler", "app.handler-1", "app handler.x", "app.1st"])
def test_invalid_handler_refused_at_create(client, handler):
    with pytest.raises(grpc.RpcError) as err:
        create(client, "node-bad-handler", {"app.js": "exports.handler = () => 1;\n"}, handler=handler)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_type(err.value) == "InvalidParameterValueException"
    assert "handler" in err.value.details()


GREET_LAYER = {"nodejs/node_modules/greet/index.js": "exports.hi = (who) => `hi ${who}`;\n"}
GREET_APP = "const greet = require('greet');\nexports.handler = async () => greet.hi('layer');\n"


def test_layer_node_modules_are_found(client):
    """As on Lambda, NODE_PATH names /opt/nodejs/node_modules (and the per-major directory)."""
    client.publish_layer("greet", GREET_LAYER)
    create(client, "node-layered", {"app.js": GREET_APP},
           layers=["greet:1"])
    resp, body = client.invoke_json("node-layered", {})
    assert resp.function_error == "" and body == "hi layer", body
    create(client, "node-layered-path", {"app.js": "exports.handler = async () => process.env.NODE_PATH;\n"})
    major = RUNTIME[len("nodejs"):-len(".x")]
    assert client.invoke_json("node-layered-path", {})[1] == (
        f"/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:"
        "/var/runtime:/var/task")


def test_stem_cells_serve_node(fresh_agent):
    """A prewarmed Node sandbox (Node already started) takes the function's
    code and environment and runs it like a cold one."""
    import time

    from framework.agent import Client
    fresh_agent.extra_args = ("--stem-cells", "1")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    try:
        deadline = time.monotonic() + 20
        while f"stem-{RUNTIME}" not in fresh_agent.log():
            assert time.monotonic() < deadline, "no Node stem cell started"
            time.sleep(0.2)
        create(c, "node-stem", {"app.js": """
let count = 0;
exports.handler = async (event, context) => ({
  count: ++count, event, cwd: process.cwd(), fn: context.functionName, mem: context.memoryLimitInMB,
  color: process.env.COLOR, stem: process.env._RUNTIME_STEM_CELL === undefined ? null : 'leaked',
});
"""}, memory_mb=256, environment={"COLOR": "green"})
        resp, body = c.invoke_json("node-stem", {"a": 1})
        assert resp.function_error == "", body
        assert resp.start_kind == invoker_pb2.PREWARMED
        assert body == {"count": 1, "event": {"a": 1}, "cwd": "/var/task", "fn": "node-stem", "mem": "256",
                        "color": "green", "stem": None}
        resp, body = c.invoke_json("node-stem", {})
        assert resp.start_kind == invoker_pb2.WARM and body["count"] == 2
        # Layers reach a prewarmed Node too: /opt attached, NODE_PATH applied after Node started.
        c.publish_layer("greet-stem", GREET_LAYER)
        create(c, "node-layered-stem", {"app.js": GREET_APP}, layers=["greet-stem:1"])
        deadline = time.monotonic() + 20
        while True:
            log = fresh_agent.log()
            if log.count(f"created env=stem-{RUNTIME}-") > log.count(f"specialised env=stem-{RUNTIME}-"):
                break
            assert time.monotonic() < deadline, "the Node stem cell was not replaced"
            time.sleep(0.05)
        resp, body = c.invoke_json("node-layered-stem", {})
        assert resp.start_kind == invoker_pb2.PREWARMED and body == "hi layer", body
    finally:
        c.close()
        assert fresh_agent.stop() == 0
