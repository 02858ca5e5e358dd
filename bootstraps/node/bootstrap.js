'use strict';
/*
 * Node.js bootstrap: pid 1 of a sandbox, runs one function's handler.
 *
 * Started by nsjail as `node /var/runtime/bootstrap.js`; Node built-ins only,
 * nothing from the agent. Config arrives in the environment, as for the
 * Python bootstrap: _HANDLER ("path/to/file.export"), _RUNTIME_CONTROL_FD
 * (the control socket, deleted from process.env once read),
 * AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_FUNCTION_VERSION,
 * AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_LOG_GROUP_NAME,
 * AWS_LAMBDA_LOG_STREAM_NAME.
 *
 * Wire protocol on the control socket (a SOCK_STREAM socketpair), the same
 * as bootstraps/python/bootstrap.py. Every frame:
 *
 *     0        1                5
 *     +--------+----------------+---------------------------+
 *     | kind   | length (u32 BE)| body (length bytes)       |
 *     +--------+----------------+---------------------------+
 *
 * bootstrap -> agent, once, after loading the handler:
 *     "R"  ready        body: u64 BE start_ns | u64 BE loaded_ns (wall clock
 *                       at the first line of this file and once the handler
 *                       module was loaded)
 *     "E"  init error   body: JSON {"errorMessage","errorType","stackTrace"};
 *                       the bootstrap exits after sending it
 * agent -> bootstrap, one at a time:
 *     "I"  invoke       body: request id \n deadline (epoch ms, decimal) \n
 *                       invoked ARN \n client context JSON or empty \n payload
 * bootstrap -> agent, one per invoke:
 *     "S"  success      body: u64 BE handler_ns | result as JSON
 *     "F"  error        body: u64 BE handler_ns | error JSON as for "E"
 *
 * A stem cell (_RUNTIME_STEM_CELL=1) first sends "R" with Node loaded and no
 * function, then waits for
 * agent -> bootstrap, once, after attaching the code at /var/task:
 *     "P"  specialise   body: JSON object of environment variables
 * and answers "R" (start_ns = when "P" arrived) or "E" as above.
 *
 * The socket is read and written synchronously: between invocations the
 * bootstrap blocks in read(2), so, as on Lambda, the function's timers and
 * I/O are frozen until the next invocation instead of spending its CPU
 * quota. console.* write synchronously to fds 1 and 2 (pipes the agent reads
 * as the function's log) and process.stdout/stderr are made blocking, so
 * every line of an invocation is in the pipe, in order, before the agent
 * sees its result. EOF on the control socket means the agent is gone: the
 * bootstrap exits, and with it (pid 1) the whole sandbox.
 */

const W0 = BigInt(Date.now()) * 1000000n;
const T0 = process.hrtime.bigint();
const wallNs = () => W0 + (process.hrtime.bigint() - T0);

const fs = require('fs');
const path = require('path');
const util = require('util');

const MAX_RESPONSE = 6 * 1024 * 1024;
const EXTENSIONS = ['.js', '.mjs', '.cjs'];

// -- logs ---------------------------------------------------------------------
let pause = null;
function writeAll(fd, data) {
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  for (let off = 0; off < buf.length;) {
    try {
      off += fs.writeSync(fd, buf, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') return; // a non-blocking pipe that is full: wait a little
      pause = pause || new Int32Array(new SharedArrayBuffer(4));
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

const out = (...args) => writeAll(1, util.format(...args) + '\n');
const err = (...args) => writeAll(2, util.format(...args) + '\n');
console.log = console.info = console.debug = out;
console.error = console.warn = err;
console.trace = (...args) => err(Object.assign(new Error(util.format(...args)), { name: 'Trace' }).stack);

// process.stdout/stderr are created on first use; on a pipe they would write
// asynchronously, out of order with console's lines.
const streams = [];
for (const name of ['stdout', 'stderr']) {
  const desc = Object.getOwnPropertyDescriptor(process, name);
  if (!desc || !desc.get || !desc.configurable) continue;
  Object.defineProperty(process, name, {
    configurable: true,
    enumerable: desc.enumerable,
    get() {
      const stream = desc.get.call(process);
      if (!streams.includes(stream)) {
        streams.push(stream);
        if (stream._handle && stream._handle.setBlocking) stream._handle.setBlocking(true);
      }
      return stream;
    },
  });
}

// -- errors -------------------------------------------------------------------
function describe(value) {
  try { return String(value); } catch (e) { return Object.prototype.toString.call(value); }
}

function errorDoc(error, errorType, message) {
  const doc = { errorMessage: message || describe(error), errorType: errorType || 'Error', stackTrace: [] };
  if (error instanceof Error || (error !== null && typeof error === 'object' && 'message' in error)) {
    const ctor = error.constructor && error.constructor.name; // class MyError extends Error {}
    doc.errorType = errorType || (error.name && error.name !== 'Error' ? describe(error.name)
      : ctor && ctor !== 'Object' ? ctor : 'Error');
    doc.errorMessage = message || describe(error.message);
    if (typeof error.stack === 'string') {
      doc.stackTrace = error.stack.split('\n').filter((l) => /^\s+at /.test(l)).map((l) => l.trim());
    }
  }
  return doc;
}

const initError = (errorType, message, cause) => Object.assign(new Error(message), { errorType, cause });

// -- the wire -----------------------------------------------------------------
let control = -1;

// One frame: kind, length, then the u64 BE numbers, then the text.
function send(kind, numbers, text) {
  const head = 5 + 8 * numbers.length;
  const buf = Buffer.allocUnsafe(head + Buffer.byteLength(text));
  buf[0] = kind.charCodeAt(0);
  buf.writeUInt32BE(buf.length - 5, 1);
  numbers.forEach((n, i) => buf.writeBigUInt64BE(n, 5 + 8 * i));
  buf.write(text, head);
  writeAll(control, buf);
}

function readExactly(n) {
  const buf = Buffer.allocUnsafe(n);
  for (let off = 0; off < n;) {
    const got = fs.readSync(control, buf, off, n - off, null);
    if (got === 0) process.exit(0); // EOF: the agent is gone
    off += got;
  }
  return buf;
}

let initDone = false;
function initFailed(doc) {
  if (initDone) return;
  initDone = true;
  err(`[ERROR] ${doc.errorType}: ${doc.errorMessage}`);
  send('E', [], JSON.stringify(doc));
  process.exit(1);
}

// -- the handler --------------------------------------------------------------
async function loadHandler(spec, taskRoot) {
  const dot = spec.lastIndexOf('.');
  const file = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  const base = path.resolve(taskRoot, file);
  const found = dot > 0 && EXTENSIONS.map((ext) => base + ext).find((p) => fs.existsSync(p));
  if (!found) {
    throw initError('Runtime.ImportModuleError', `Unable to import module '${file}': Cannot find module ` +
      `'${file}' (tried ${EXTENSIONS.map((ext) => file + ext).join(', ')} in ${taskRoot})`);
  }
  let mod;
  try {
    if (found.endsWith('.mjs')) {
      mod = await importFile(found);
    } else {
      try {
        mod = require(found);
      } catch (e) {
        // An ES module ("type": "module" in package.json, or top-level await).
        if (!e || (e.code !== 'ERR_REQUIRE_ESM' && e.code !== 'ERR_REQUIRE_ASYNC_MODULE')) throw e;
        mod = await importFile(found);
      }
    }
  } catch (e) {
    throw initError('Runtime.ImportModuleError', `Unable to import module '${file}': ${describe(e)}`, e);
  }
  const handler = mod === null || mod === undefined ? undefined : mod[name];
  if (typeof handler !== 'function') {
    throw initError('Runtime.HandlerNotFound', handler === undefined
      ? `${spec} is undefined or not exported` : `${spec} is not a function`);
  }
  return handler;
}

function importFile(file) {
  return import(require('url').pathToFileURL(file).href);
}

// -- invocations --------------------------------------------------------------
let handler = null;
let info = null;
let current = null; // the invocation in progress: { succeed, fail }

function reply(kind, ns, text) {
  send(kind, [ns], text);
  setImmediate(next); // let what the invocation queued run, then wait for the next
}

function succeeded(ns, result) {
  let json;
  try {
    json = JSON.stringify(result === undefined ? null : result);
  } catch (e) {
    const doc = { errorMessage: `Unable to marshal response: ${describe(e && e.message)}`,
      errorType: 'Runtime.MarshalError', stackTrace: [] };
    err(`[ERROR] ${doc.errorType}: ${doc.errorMessage}`);
    return reply('F', ns, JSON.stringify(doc));
  }
  if (json === undefined) json = 'null'; // a function or a symbol
  const size = Buffer.byteLength(json);
  if (size > MAX_RESPONSE) { // refused here, so the environment stays warm
    return reply('F', ns, JSON.stringify({ errorMessage: `Response payload size (${size} bytes) exceeded ` +
      `maximum allowed payload size (${MAX_RESPONSE} bytes).`, errorType: 'Function.ResponseSizeTooLarge' }));
  }
  return reply('S', ns, json);
}

function failed(ns, error) {
  const doc = errorDoc(error);
  err(`[ERROR] ${doc.errorType}: ${doc.errorMessage}`);
  reply('F', ns, JSON.stringify(doc));
}

function invoke(body) {
  const fields = [];
  let pos = 0;
  for (let i = 0; i < 4; i++) {
    const nl = body.indexOf(10, pos);
    fields.push(body.toString('utf8', pos, nl));
    pos = nl + 1;
  }
  const [requestId, deadline, arn, clientContext] = fields;
  const deadlineMs = Number(deadline);
  const t0 = process.hrtime.bigint();
  let done = false;
  const end = () => (done = true, current = null, process.hrtime.bigint() - t0);
  const inv = current = {
    succeed: (result) => done || succeeded(end(), result),
    fail: (error) => done || failed(end(), error),
  };
  const callback = (error, result) => (error !== undefined && error !== null ? inv.fail(error) : inv.succeed(result));
  const context = {
    awsRequestId: requestId,
    invokedFunctionArn: arn,
    ...info,
    clientContext: undefined,
    identity: undefined,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(deadlineMs - Date.now(), 0),
    done: callback,
    succeed: inv.succeed,
    fail: (error) => inv.fail(error === undefined || error === null ? 'handled' : error),
  };
  try {
    if (clientContext) context.clientContext = JSON.parse(clientContext);
    const payload = body.subarray(pos);
    const event = payload.length ? JSON.parse(payload.toString('utf8')) : {};
    const returned = handler(event, context, callback);
    if (returned !== null && (typeof returned === 'object' || typeof returned === 'function') &&
        typeof returned.then === 'function') {
      returned.then(inv.succeed, inv.fail);
    } else if (handler.length < 3) {
      inv.succeed(returned);
    } // else a callback handler: its callback or context.done/succeed/fail ends it
  } catch (e) {
    inv.fail(e);
  }
}

function next() {
  const head = readExactly(5);
  if (head[0] !== 0x49) process.exit(2); // only "I" frames, one at a time
  invoke(readExactly(head.readUInt32BE(1)));
}

// An error nothing caught belongs to the invocation in progress; with none in
// progress it fails the init, or the sandbox exits (Runtime.ExitError).
function stray(error) {
  if (current) {
    current.fail(error);
  } else if (!initDone && control >= 0) {
    initFailed(errorDoc(error));
  } else {
    err(`[ERROR] Uncaught ${describe(error && error.stack ? error.stack : error)}`);
    process.exit(1);
  }
}
process.on('uncaughtException', stray);
process.on('unhandledRejection', stray);
// Nothing left to run and no result (a callback never called, a promise never
// settled): null, as on Lambda. Between invocations the loop is never empty.
process.on('beforeExit', () => current && current.succeed(undefined));

// -- main ---------------------------------------------------------------------
async function main() {
  const env = process.env;
  control = Number(env._RUNTIME_CONTROL_FD);
  delete env._RUNTIME_CONTROL_FD;
  let startNs = W0;
  if (env._RUNTIME_STEM_CELL) {
    delete env._RUNTIME_STEM_CELL;
    send('R', [W0, wallNs()], '');
    const head = readExactly(5);
    startNs = wallNs();
    if (head[0] !== 0x50) process.exit(2); // "P"
    Object.assign(env, JSON.parse(readExactly(head.readUInt32BE(1)).toString('utf8')));
    // Node read NODE_PATH when it started, before the function's arrived.
    if (env.NODE_PATH) require('module').Module._initPaths();
  }
  info = {
    functionName: env.AWS_LAMBDA_FUNCTION_NAME || '',
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION || '$LATEST',
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || '128',
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME || '',
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME || '',
  };
  const taskRoot = env.LAMBDA_TASK_ROOT || '/var/task';
  try {
    process.chdir(taskRoot);
    handler = await loadHandler(env._HANDLER || '', taskRoot);
  } catch (e) {
    initFailed(e && e.errorType ? errorDoc(e.cause || e, e.errorType, e.message) : errorDoc(e, 'Runtime.Unknown'));
  }
  if (initDone) return; // an uncaught error while loading was reported already
  initDone = true;
  send('R', [startNs, wallNs()], '');
  setImmediate(next);
}

main();
