// cellgate JavaScript driver: the long-lived Node.js process behind one JavaScript kernel.
//
// launch.sh starts it with the runner's command pipe on fd 3, the event pipe on fd 4, the
// runner's stderr on fd 5, and the user's fds 1 and 2 pointing at FIFOs whose reading ends are
// fds 6 and 7 (see docs/driver-protocol.md for the frames spoken on fds 3 and 4).
//
// The process has three threads. The main thread runs the user's cells. A worker thread, the
// forwarder, owns the pipes: it reads commands and hands them to the main thread, reads the
// FIFOs and forwards the user's output while cells run, and writes every frame the main thread
// hands it. It lives on its own thread because a cell can keep the main thread busy for as long
// as it likes, and output must keep flowing meanwhile: otherwise a cell printing more than a
// pipe holds would block forever on a pipe that nobody drains. A second worker thread, the
// keeper, takes care of SIGINT (see runKeeper).
//
// Cells are evaluated through V8's inspector in "REPL mode", the mode developer consoles use: it
// gives top-level `await`, lets `let`, `const` and `class` declarations be redeclared by later
// cells, and reports the value of the cell's last expression.

'use strict';

const fs = require('fs');
const { isMainThread } = require('worker_threads');

const DRIVER_VERSION = '0.1.0';

// The real process.exit: cells get a version that refuses to end the kernel.
const exitProcess = process.exit.bind(process);

// Descriptors set up by launch.sh.
const FD = { control: 3, events: 4, diagnostics: 5, stdoutReader: 6, stderrReader: 7 };

// Slots of the memory shared by the threads (an Int32Array).
const SHARED = {
  // The running cell and its phase, packed into one number (`cell * 4 + phase`) so that the
  // keeper reads both at once.
  state: 0,
  // 1 while a cell's guarded run is in progress, up to its fence: the cell's SIGINT watchdog
  // is armed and must stay the most recent one.
  mainGuarded: 1,
  // 1 while the keeper is arming a watchdog of its own (see enterGuard in runKeeper).
  keeperEntering: 2,
  // 1 once the keeper runs.
  keeperUp: 3,
  // The last interrupt request (by sequence number) the main thread has handled.
  acknowledged: 4,
  // Bumped by a cell's fence to have the keeper arm its watchdog again (see fence()).
  keeperWake: 5,
  // Bumped by the keeper each time it has armed a watchdog.
  keeperArmed: 6,
  // The last command (by sequence number) the main thread has taken on.
  commandsAccepted: 7,
  // Where a cell's input() stands (INPUT), and the length in bytes of the answer the forwarder
  // put into the shared input buffer.
  inputState: 8,
  inputLength: 9,
  length: 10,
};

// The states of SHARED.inputState. input() blocks the main thread, so the answer cannot come as
// a message: the forwarder, which reads the commands, writes it into shared memory.
const INPUT = { idle: 0, waiting: 1, answered: 2, aborted: 3 };
// The longest answer input() takes; the rest of a longer line is cut off.
const MAX_INPUT_BYTES = 1 << 20;

// What the main thread is doing with the current cell.
const PHASE = {
  idle: 0,
  // Running the cell's synchronous part, where Node's SIGINT watchdog can stop it.
  sync: 1,
  // Waiting for the cell's promise: awaits, timers and callbacks run from the event loop.
  async: 2,
};

const MAX_HEADER_LEN = 64;

// Where diagnose() writes; the main thread replaces it with its close-on-exec copy.
let diagnosticsFd = FD.diagnostics;

// ---------------------------------------------------------------------------------------------
// Helpers shared by all threads.

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function sleep(ms) {
  Atomics.wait(sleepCell, 0, 0, ms);
}

// Writes all of `bytes` to `fd` synchronously. A descriptor may be in non-blocking mode (the
// reopened channels are, and a child Node process makes its inherited stdout non-blocking for a
// while), so EAGAIN means "wait a little and retry", never "drop the data".
function writeFully(fd, bytes) {
  let offset = 0;
  let pause = 1;
  while (offset < bytes.length) {
    try {
      offset += fs.writeSync(fd, bytes, offset, bytes.length - offset);
      pause = 1;
    } catch (error) {
      if (error.code !== 'EAGAIN') throw error;
      sleep(pause);
      pause = Math.min(pause * 2, 20);
    }
  }
}

function toBuffer(body) {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (Buffer.isBuffer(body)) return body;
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

function encodeFrame(kind, body) {
  const payload = toBuffer(body);
  return Buffer.concat([Buffer.from(`${kind} ${payload.length}\n`, 'latin1'), payload]);
}

function diagnose(message) {
  try {
    fs.writeSync(diagnosticsFd, `cellgate-javascript: ${message}\n`);
  } catch {
    // Diagnostics are best effort: a full or closed stderr must not take the driver down.
  }
}

// Splits a byte stream into frames (`KIND LEN\n` followed by LEN bytes).
class FrameDecoder {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  // The next complete frame as {kind, body}, or null when more bytes are needed. Throws when
  // the stream is malformed, after which it cannot be trusted any more.
  next() {
    if (this.length === 0) return null;
    const head = this.gather(Math.min(this.length, MAX_HEADER_LEN));
    const newline = head.indexOf(10);
    if (newline < 0) {
      if (head.length >= MAX_HEADER_LEN) throw new Error('frame header is too long');
      return null;
    }
    const header = head.toString('latin1', 0, newline);
    const match = /^([a-z0-9_]+) (\d+)$/.exec(header);
    if (!match) throw new Error(`malformed frame header ${JSON.stringify(header)}`);
    const size = newline + 1 + Number(match[2]);
    if (this.length < size) return null;
    const all = this.gather(size);
    const body = Buffer.from(all.subarray(newline + 1, size));
    const rest = all.subarray(size);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.length -= size;
    return { kind: match[1], body };
  }

  // Joins the buffered chunks so that the first one holds at least `size` bytes.
  gather(size) {
    if (this.chunks[0].length < size) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0];
  }
}

// ---------------------------------------------------------------------------------------------
// The forwarder (worker thread).

function runForwarder() {
  const { parentPort, workerData } = require('worker_threads');
  const net = require('net');

  diagnosticsFd = workerData.diagnosticsFd;
  const shared = new Int32Array(workerData.shared);
  const markerPrefix = Buffer.from(workerData.markerPrefix, 'latin1');
  let eventsOpen = true;

  function writeFrame(kind, body) {
    if (!eventsOpen) return;
    try {
      writeFully(workerData.eventsFd, encodeFrame(kind, body));
    } catch (error) {
      // The runner has gone away; nothing can be reported any more.
      eventsOpen = false;
      parentPort.postMessage({ eventsClosed: error.code || String(error) });
    }
  }

  // Ordering. The main thread hands over frames in messages; a message can be "fenced": before
  // posting it, the main thread wrote a marker with the fence's number to fds 1 and 2. Such a
  // message is written only once both streams have delivered their marker, and output that
  // arrives after a marker waits until its message is written. So a `result` or `done` comes
  // after everything the cell printed before it, and before anything printed after it.
  const pending = []; // Messages from the main thread, oldest first: {fence, frames}.
  let writtenFence = 0; // The highest fence whose message has been written.
  let fenceTimer = null;

  // One of the user's output streams, read from its FIFO.
  class CapturedStream {
    constructor(kind, fd) {
      this.kind = kind;
      this.seen = 0; // The highest fence marker this stream has delivered.
      this.pieces = []; // Output not yet forwarded: {fence, data}, the marker each came after.
      this.carry = null; // The start of a marker cut off by the end of the last read.
      this.lastData = Date.now();
      const socket = new net.Socket({ fd, readable: true, writable: false });
      socket.on('data', (chunk) => {
        this.lastData = Date.now();
        this.receive(chunk);
        pump();
      });
      socket.on('error', (error) => diagnose(`reading ${kind} failed: ${error.message}`));
    }

    // Splits what arrived into output and fence markers.
    receive(chunk) {
      const bytes = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
      this.carry = null;
      let start = 0; // Start of the output not yet taken.
      let from = 0; // Where to look for the next marker.
      for (;;) {
        const at = bytes.indexOf(markerPrefix, from);
        if (at < 0) break;
        const end = bytes.indexOf(0, at + markerPrefix.length);
        if (end < 0 && bytes.length - at <= markerPrefix.length + 16) {
          // A marker cut in two by the end of this read.
          this.take(bytes, start, at);
          this.carry = Buffer.from(bytes.subarray(at));
          return;
        }
        const digits = end < 0 ? '' : bytes.toString('latin1', at + markerPrefix.length, end);
        if (!/^\d{1,15}$/.test(digits)) {
          from = at + 1;
          continue;
        }
        this.take(bytes, start, at);
        this.seen = Math.max(this.seen, Number(digits));
        start = end + 1;
        from = start;
      }
      // Hold back a tail that could be the beginning of a marker.
      for (let i = Math.max(from, bytes.length - markerPrefix.length + 1); i < bytes.length; i++) {
        if (bytes[i] === 0 && markerPrefix.subarray(0, bytes.length - i).equals(bytes.subarray(i))) {
          this.take(bytes, start, i);
          this.carry = Buffer.from(bytes.subarray(i));
          return;
        }
      }
      this.take(bytes, start, bytes.length);
    }

    take(bytes, start, end) {
      if (end > start) this.pieces.push({ fence: this.seen, data: bytes.subarray(start, end) });
    }

    // Forwards the output whose fence has been written. Pieces that are ready together go
    // out as one frame, up to a reasonable size.
    flush() {
      while (this.pieces.length > 0 && this.pieces[0].fence <= writtenFence) {
        const batch = [];
        let size = 0;
        while (this.pieces.length > 0 && this.pieces[0].fence <= writtenFence && size < 1 << 20) {
          const piece = this.pieces.shift();
          batch.push(piece.data);
          size += piece.data.length;
        }
        writeFrame(this.kind, batch.length === 1 ? batch[0] : Buffer.concat(batch));
      }
    }
  }

  const streams = [
    new CapturedStream('stdout', workerData.stdoutFd),
    new CapturedStream('stderr', workerData.stderrFd),
  ];

  function pump() {
    for (;;) {
      for (const stream of streams) stream.flush();
      const head = pending[0];
      if (!head) return;
      if (head.fence > 0 && !streams.every((stream) => stream.seen >= head.fence)) {
        armFenceTimer();
        return;
      }
      pending.shift();
      for (const [kind, body] of head.frames) writeFrame(kind, body);
      writtenFence = Math.max(writtenFence, head.fence);
    }
  }

  // A marker can only go missing when user code has closed or replaced fd 1 or 2. Rather than
  // hold every later event back forever, a stream that stays silent for a while with its
  // marker outstanding is taken to have delivered it.
  function armFenceTimer() {
    if (fenceTimer) return;
    fenceTimer = setTimeout(() => {
      fenceTimer = null;
      const head = pending[0];
      if (!head) return;
      for (const stream of streams) {
        if (stream.seen < head.fence && Date.now() - stream.lastData >= 4000) {
          diagnose(`no fence marker on ${stream.kind}; was the descriptor closed?`);
          stream.seen = head.fence;
        }
      }
      pump();
    }, 5000);
  }

  parentPort.on('message', (message) => {
    if (message.skip) for (const index of message.skip) streams[index].seen = message.fence;
    pending.push(message);
    pump();
  });

  // Commands. The forwarder reads the command pipe and hands each command to the main thread
  // with a sequence number, again and again until the main thread has taken it on. To stop a
  // runaway cell the keeper terminates the main thread's JavaScript, and should that land just
  // as the main thread turns to a new command, the command is handed over once more rather
  // than lost. (This thread's own JavaScript is never terminated.)
  const unaccepted = [];
  let commandCount = 0;
  let resendTimer = null;

  function resend() {
    const accepted = Atomics.load(shared, SHARED.commandsAccepted);
    while (unaccepted.length > 0 && unaccepted[0].seq <= accepted) unaccepted.shift();
    if (unaccepted.length === 0) {
      clearInterval(resendTimer);
      resendTimer = null;
      return;
    }
    for (const command of unaccepted) parentPort.postMessage({ command });
  }

  // After `shutdown`, or once the runner has closed the pipe, the main thread exits as soon as
  // it is free; one stuck in a cell is ended by signal instead.
  function expectExit() {
    setTimeout(() => process.kill(process.pid, 'SIGTERM'), 3000).unref();
  }

  const controlStat = fs.fstatSync(workerData.controlFd);
  const control =
    controlStat.isFIFO() || controlStat.isSocket()
      ? new net.Socket({ fd: workerData.controlFd, readable: true, writable: false })
      : fs.createReadStream(null, { fd: workerData.controlFd, autoClose: false });
  const decoder = new FrameDecoder();
  const inputBytes = new Uint8Array(workerData.inputBuffer);
  // Hands the answer to a waiting input() over through shared memory (see INPUT). An answer
  // nobody waits for (its input() was interrupted) is dropped.
  function answerInput(frame) {
    if (Atomics.load(shared, SHARED.inputState) !== INPUT.waiting) return;
    if (frame.kind === 'input_reply') {
      const length = Math.min(frame.body.length, MAX_INPUT_BYTES);
      inputBytes.set(frame.body.subarray(0, length));
      Atomics.store(shared, SHARED.inputLength, length);
    }
    Atomics.store(shared, SHARED.inputState, frame.kind === 'input_reply' ? INPUT.answered : INPUT.aborted);
    Atomics.notify(shared, SHARED.inputState);
  }
  control.on('data', (chunk) => {
    decoder.push(chunk);
    let frame;
    try {
      while ((frame = decoder.next())) {
        if (frame.kind === 'input_reply' || frame.kind === 'input_abort') {
          answerInput(frame);
          continue;
        }
        const command = { seq: ++commandCount, kind: frame.kind, body: frame.body };
        unaccepted.push(command);
        parentPort.postMessage({ command });
        if (frame.kind === 'shutdown') expectExit();
      }
    } catch (error) {
      parentPort.postMessage({ broken: error.message });
      control.destroy();
      expectExit();
    }
    if (unaccepted.length > 0 && !resendTimer) resendTimer = setInterval(resend, 250);
  });
  control.on('end', () => {
    parentPort.postMessage({ end: true });
    expectExit();
  });
  control.on('error', (error) => {
    parentPort.postMessage({ broken: `reading commands failed: ${error.message}` });
    expectExit();
  });
}

// ---------------------------------------------------------------------------------------------
// The keeper (worker thread).
//
// The runner interrupts a cell by sending SIGINT to the process group. A cell's synchronous part
// runs under Node's SIGINT watchdog (vm's `breakOnSigint`, as in the Node REPL), which stops it
// and throws a catchable error. Used alone, that watchdog is fragile: each guarded run starts a
// helper thread and installs its signal handler, and each end of a run joins the thread and puts
// back a handler that kills the process, with short windows in between where a SIGINT is fatal
// or is kept for the next run. So the keeper stays inside a guarded run of its own for the life
// of the process: the watchdog's helper then never stops, cells only register with it, and every
// SIGINT is caught by some watchdog.
//
// Node hands a SIGINT to the most recently armed watchdog only. While a cell's synchronous part
// runs, that is the cell's, so the cell stops. Otherwise it is the keeper's, which then decides:
// when idle the signal is ignored; when a cell is awaiting, the keeper asks the main thread to
// abandon it, and if the main thread does not answer within a moment it is stuck in user code
// (a busy loop after an `await`), so the keeper terminates that JavaScript execution through the
// main thread's inspector, the way a developer console's "stop" button does.
//
// The keeper's guarded runs are nested three deep, so that a signal always ends an inner run
// while an outer one keeps the watchdog armed: a base run for the thread's whole life, inside
// it a run that handles signals, and inside that the runs that wait.
//
// A cell's watchdog must also be out of the way before its synchronous part hands back to the
// inspector: V8 aborts the whole process if execution is terminated while the inspector sets up
// the promise of a REPL-mode evaluation. So a guarded cell ends in a fence (see fence() in
// runDriver) that has the keeper arm a watchdog on top of the cell's. A cell with top-level
// `await`, whose synchronous part ends at an `await` where no fence fits, runs without a
// watchdog of its own, and the keeper interrupts it as it does awaiting cells.

function runKeeper() {
  const { parentPort, workerData } = require('worker_threads');
  const vm = require('vm');
  const inspector = require('inspector');

  diagnosticsFd = workerData.diagnosticsFd;
  const shared = new Int32Array(workerData.shared);

  let innerWait = null; // What the current inner run waits for: [slot, value, timeout].
  let pendingSignals = 0;
  let requestCount = 0;
  let reraised = { state: -1, count: 0 };
  let mainSession = null;

  const hooks = {
    base() {
      entered();
      if (Atomics.exchange(shared, SHARED.keeperUp, 1) === 0) {
        Atomics.notify(shared, SHARED.keeperUp);
        parentPort.postMessage({ up: true });
      }
      for (;;) if (guarded(serving)) pendingSignals++;
    },
    serve() {
      entered();
      serve();
    },
    wait() {
      entered();
      Atomics.add(shared, SHARED.keeperArmed, 1);
      Atomics.notify(shared, SHARED.keeperArmed);
      Atomics.wait(shared, ...innerWait);
    },
  };
  Object.defineProperty(globalThis, Symbol.for('cellgate.keeper'), { value: hooks });
  const script = (hook) =>
    new vm.Script(`globalThis[Symbol.for("cellgate.keeper")].${hook}()`, { filename: 'cellgate-keeper' });
  const base = script('base');
  const serving = script('serve');
  const waiting = script('wait');

  // Called first thing inside each guarded run: its watchdog is armed now.
  function entered() {
    Atomics.store(shared, SHARED.keeperEntering, 0);
    Atomics.notify(shared, SHARED.keeperEntering);
  }

  // The keeper must never arm a watchdog while a cell's guarded run is in progress, before its
  // fence: its own would then be the most recent one and take the cell's SIGINTs. It waits for
  // that to pass, and announces that it is arming one, so that a cell starting meanwhile waits
  // for it in turn (the main thread's side is in execute()).
  function cellIsGuarded() {
    return (
      Atomics.load(shared, SHARED.state) % 4 === PHASE.sync &&
      Atomics.load(shared, SHARED.mainGuarded) === 1
    );
  }

  function enterGuard() {
    for (;;) {
      if (cellIsGuarded()) {
        Atomics.wait(shared, SHARED.mainGuarded, 1, 100);
        continue;
      }
      Atomics.store(shared, SHARED.keeperEntering, 1);
      if (!cellIsGuarded()) return;
      Atomics.store(shared, SHARED.keeperEntering, 0);
      Atomics.notify(shared, SHARED.keeperEntering);
    }
  }

  // Runs a script under the watchdog; true if a SIGINT stopped it.
  function guarded(script) {
    enterGuard();
    try {
      script.runInThisContext({ breakOnSigint: true });
      return false;
    } catch (error) {
      if (error && error.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') return true;
      throw error;
    } finally {
      Atomics.store(shared, SHARED.keeperEntering, 0);
      Atomics.notify(shared, SHARED.keeperEntering);
    }
  }

  // Waits like Atomics.wait, inside an inner guarded run; true if a SIGINT ended the wait.
  function waitGuarded(slot, value, timeout) {
    innerWait = [slot, value, timeout];
    return guarded(waiting);
  }

  // The handling run's body: wait for signals, and arm again whenever a fence asks.
  function serve() {
    for (;;) {
      while (pendingSignals > 0) {
        pendingSignals--;
        onSigint();
      }
      const wake = Atomics.load(shared, SHARED.keeperWake);
      if (waitGuarded(SHARED.keeperWake, wake, Infinity)) pendingSignals++;
    }
  }

  function onSigint() {
    const state = Atomics.load(shared, SHARED.state);
    if (state % 4 === PHASE.idle) return; // Nothing to interrupt.
    if (cellIsGuarded()) {
      handOn(state);
    } else {
      escalate(state);
    }
  }

  // A signal that reached the keeper although a cell's guarded run is in progress: the keeper
  // armed its watchdog just before that run began. Its waiting run has ended, and its other
  // runs are older than the cell's, so sending the signal again reaches the cell's watchdog.
  function handOn(state) {
    if (reraised.state === state && reraised.count >= 10) return;
    reraised = { state, count: reraised.state === state ? reraised.count + 1 : 1 };
    process.kill(process.pid, 'SIGINT');
  }

  // Asks the main thread to abandon a running cell until the cell has ended, and stops the
  // main thread's JavaScript if it does not even handle the request (it is stuck in user code,
  // such as a busy loop after an `await`).
  function escalate(state) {
    const cell = Math.floor(state / 4);
    const running = () => {
      const now = Atomics.load(shared, SHARED.state);
      return Math.floor(now / 4) === cell && now % 4 !== PHASE.idle;
    };
    let request = 0;
    let pendingSince = 0; // Since when the main thread has left a request unhandled.
    let lastTermination = 0;
    const ask = () => {
      if (Atomics.load(shared, SHARED.acknowledged) >= request) pendingSince = Date.now();
      request = ++requestCount;
      parentPort.postMessage({ interrupt: cell, request });
    };
    ask();
    for (let round = 1; ; round++) {
      // The wait also ends early whenever the state changes, so time is measured apart.
      waitGuarded(SHARED.state, Atomics.load(shared, SHARED.state), round < 50 ? 100 : 1000);
      if (!running()) return;
      const stuck = Atomics.load(shared, SHARED.acknowledged) < request && Date.now() - pendingSince >= 100;
      if (stuck && !cellIsGuarded() && Date.now() - lastTermination >= 1000) {
        terminateMainThreadScript();
        lastTermination = Date.now();
      }
      ask();
    }
  }

  function terminateMainThreadScript() {
    try {
      if (!mainSession) {
        mainSession = new inspector.Session();
        mainSession.connectToMainThread();
      }
      mainSession.post('Runtime.terminateExecution', () => {});
    } catch (error) {
      diagnose(`cannot stop the main thread: ${error.message}`);
    }
  }

  for (;;) {
    try {
      if (guarded(base)) pendingSignals++;
    } catch (error) {
      diagnose(`the keeper's guarded run failed: ${error.stack || error}`);
      sleep(100);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The driver (main thread).

function runDriver() {
  const path = require('path');
  const util = require('util');
  const vm = require('vm');
  const crypto = require('crypto');
  const inspector = require('inspector');
  const Module = require('module');
  const { Worker } = require('worker_threads');
  const { Writable } = require('stream');

  // -- Channels ---------------------------------------------------------------------------------

  for (const fd of Object.values(FD)) {
    try {
      fs.fstatSync(fd);
    } catch {
      process.stderr.write(`driver.js: fd ${fd} is not open; start the driver with launch.sh\n`);
      exitProcess(2);
    }
  }

  // launch.sh cannot mark descriptors close-on-exec, so the channels would leak into every
  // child process of the user (which could then hold the runner's pipes open, or read its
  // commands). Reopening a pipe through /proc gives a new descriptor of the same pipe, which
  // Node opens close-on-exec; the inherited one is then closed. Where that is impossible the
  // inherited descriptor is kept. Non-blocking mode keeps the open from waiting for a peer.
  function reopen(fd, mode) {
    try {
      if (!fs.fstatSync(fd).isFIFO()) return fd;
      const copy = fs.openSync(`/proc/self/fd/${fd}`, mode | fs.constants.O_NONBLOCK);
      fs.closeSync(fd);
      return copy;
    } catch {
      return fd;
    }
  }

  const { O_RDONLY, O_WRONLY } = fs.constants;
  const controlFd = reopen(FD.control, O_RDONLY);
  const eventsFd = reopen(FD.events, O_WRONLY);
  const stdoutReaderFd = reopen(FD.stdoutReader, O_RDONLY);
  const stderrReaderFd = reopen(FD.stderrReader, O_RDONLY);
  diagnosticsFd = reopen(FD.diagnostics, O_WRONLY);

  // Until the keeper runs, this listener has libuv catch SIGINT, which would otherwise end the
  // process; no cell runs before the keeper does (see execute()). It must come first: the
  // watchdog's signal handler, once the keeper arms it, has to be the one installed last.
  function ignoreSigint() {}
  process.on('SIGINT', ignoreSigint);

  // The keeper starts early, so that it boots while the main thread sets up.
  const shared = new Int32Array(new SharedArrayBuffer(SHARED.length * 4));
  const inputBuffer = new SharedArrayBuffer(MAX_INPUT_BYTES);
  const keeper = new Worker(__filename, {
    workerData: { role: 'keeper', shared: shared.buffer, diagnosticsFd },
    stdout: false,
    stderr: false,
  });
  keeper.on('error', (error) => diagnose(`the keeper thread failed: ${error.stack || error}`));
  keeper.on('exit', (code) => diagnose(`the keeper thread exited (status ${code}); a SIGINT may end the kernel`));
  keeper.on('message', (message) => {
    if (message.up) {
      process.removeListener('SIGINT', ignoreSigint);
      return;
    }
    Atomics.store(shared, SHARED.acknowledged, message.request);
    interrupt(message.interrupt);
  });
  keeper.unref();

  // Nothing in this process may start libuv's SIGINT handling: libuv would install its own
  // signal handler over the watchdog's, and vm removes SIGINT listeners around every guarded
  // run, which would restore the default action (death) whenever the last one goes. So SIGINT
  // listeners that cells add are kept, but never called: in a kernel, SIGINT means "interrupt
  // the cell". Node starts and stops its signal handling from these two process listeners.
  for (const [event, name] of [['newListener', 'startListeningIfSignal'], ['removeListener', 'stopListeningIfSignal']]) {
    const original = process.listeners(event).find((listener) => listener.name === name);
    if (!original) {
      diagnose(`cannot find Node's ${name}; SIGINT listeners of cells may disturb interrupts`);
      continue;
    }
    process.removeListener(event, original);
    process.on(event, function signalListenerFilter(type, ...rest) {
      if (type !== 'SIGINT') return original.call(this, type, ...rest);
    });
  }

  const markerPrefix = `\0cellgate-fence-${crypto.randomBytes(12).toString('hex')}-`;

  // Sends frames, given as [kind, body] pairs, through the forwarder. A fenced send first
  // writes a marker to fds 1 and 2, so that the frames come after all output made so far.
  let fenceCount = 0;
  function send(frames, fenced) {
    const message = { fence: 0, frames };
    if (fenced) {
      message.fence = ++fenceCount;
      const marker = Buffer.from(`${markerPrefix}${message.fence}\0`, 'latin1');
      [1, 2].forEach((fd, index) => {
        try {
          writeFully(fd, marker);
        } catch {
          (message.skip || (message.skip = [])).push(index);
        }
      });
    }
    forwarder.postMessage(message);
  }

  function sendJson(kind, value, fenced) {
    send([[kind, JSON.stringify(value)]], fenced);
  }

  // -- The user's stdout and stderr ---------------------------------------------------------

  // process.stdout and process.stderr write straight to fds 1 and 2. Node's own streams for
  // a FIFO would switch the descriptor to non-blocking mode, which child processes inherit and
  // many do not expect; they would also queue output inside Node, out of order with the fence
  // markers. Writing synchronously keeps output, markers and child output in one order.
  function userStream(fd) {
    const stream = new Writable({
      write(chunk, encoding, callback) {
        writeFully(fd, toBuffer(chunk));
        callback();
      },
    });
    // A direct write keeps the stream usable even if an interrupt stops it halfway, which
    // Writable's internal bookkeeping would not survive.
    stream.write = function write(chunk, encoding, callback) {
      if (typeof encoding === 'function') {
        callback = encoding;
        encoding = undefined;
      }
      if (typeof chunk === 'string') {
        writeFully(fd, Buffer.from(chunk, encoding || 'utf8'));
      } else if (ArrayBuffer.isView(chunk)) {
        writeFully(fd, toBuffer(chunk));
      } else {
        return Writable.prototype.write.call(this, chunk, encoding, callback);
      }
      if (typeof callback === 'function') process.nextTick(callback);
      return true;
    };
    stream.fd = fd;
    stream.isTTY = false;
    stream._type = 'fs';
    stream._isStdio = true;
    stream.destroySoon = stream.destroy;
    stream._destroy = (error, callback) => callback(error);
    return stream;
  }

  const stdout = userStream(1);
  const stderr = userStream(2);
  Object.defineProperty(process, 'stdout', { configurable: true, enumerable: true, get: () => stdout });
  Object.defineProperty(process, 'stderr', { configurable: true, enumerable: true, get: () => stderr });

  function writeUserError(text) {
    try {
      writeFully(2, Buffer.from(text.endsWith('\n') ? text : `${text}\n`, 'utf8'));
    } catch {
      diagnose(text);
    }
  }

  // -- The user's global scope --------------------------------------------------------------

  const notebookFile = path.join(process.cwd(), '[notebook]');
  const notebookModule = new Module(notebookFile, null);
  notebookModule.filename = notebookFile;
  notebookModule.paths = Module._nodeModulePaths(process.cwd());
  notebookModule.loaded = true;
  const notebookRequire = Module.createRequire(notebookFile);
  notebookModule.require = notebookRequire;

  function defineGlobal(name, value) {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  }

  defineGlobal('require', notebookRequire);
  defineGlobal('module', notebookModule);
  defineGlobal('exports', notebookModule.exports);

  // Like the Node REPL: built-in modules are globals, loaded on first use, and assigning to
  // one of those names simply replaces it.
  const unloadedBuiltins = new Set();
  for (const name of Module.builtinModules) {
    if (name.startsWith('_') || name.includes('/') || Object.prototype.hasOwnProperty.call(globalThis, name)) {
      continue;
    }
    const replace = (value) => {
      unloadedBuiltins.delete(name);
      delete globalThis[name];
      globalThis[name] = value;
    };
    unloadedBuiltins.add(name);
    Object.defineProperty(globalThis, name, {
      get() {
        unloadedBuiltins.delete(name);
        const lib = notebookRequire(name);
        Object.defineProperty(globalThis, name, { get: () => lib, set: replace, configurable: true, enumerable: false });
        return lib;
      },
      set: replace,
      configurable: true,
      enumerable: false,
    });
  }

  // process.exit() would end the kernel without a word; in a notebook that is nearly always a
  // mistake, so it fails like any other error instead. The driver keeps the real one.
  process.exit = function exit(code) {
    const error = new Error(
      `process.exit(${code === undefined ? '' : code}) was called; the kernel keeps running ` +
        '(restart the kernel to start over)',
    );
    error.name = 'ProcessExitError';
    throw error;
  };

  // Timers started while a cell runs belong to that cell: interrupting it cancels them, so
  // that an interrupted `for (;;) { await sleep(100); ... }` really stops instead of running
  // on in the background. Timers of cells that finished are left alone.
  const realTimers = { setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate };
  let cellTimers = null;

  function trackTimers(create, clear) {
    const original = globalThis[create];
    const clearer = realTimers[clear];
    const tracked = {
      [create](...args) {
        const handle = Reflect.apply(original, this, args);
        if (cellTimers) {
          if (cellTimers.size >= 4096) {
            for (const entry of cellTimers) if (entry.handle._destroyed) cellTimers.delete(entry);
          }
          cellTimers.add({ handle, clear: clearer });
        }
        return handle;
      },
    }[create];
    // Keep util.promisify.custom and friends, so that promisify(setTimeout) still works.
    for (const key of Reflect.ownKeys(original)) {
      if (key === 'prototype' || key === 'arguments' || key === 'caller') continue;
      Object.defineProperty(tracked, key, Object.getOwnPropertyDescriptor(original, key));
    }
    const descriptor = Object.getOwnPropertyDescriptor(globalThis, create);
    Object.defineProperty(globalThis, create, { ...descriptor, value: tracked });
  }

  trackTimers('setTimeout', 'clearTimeout');
  trackTimers('setInterval', 'clearInterval');
  trackTimers('setImmediate', 'clearImmediate');

  function cancelCellTimers() {
    if (!cellTimers) return;
    for (const { handle, clear } of cellTimers) clear(handle);
    cellTimers = null;
  }

  // Errors that escape every handler end up here instead of ending the kernel; the user sees
  // them on stderr, as in the Node REPL.
  process.on('uncaughtException', (error) => {
    writeUserError(`Uncaught ${util.inspect(error)}`);
  });

  // A rejection is reported only if it is still unhandled a moment later: the value of a cell
  // can be a rejected promise that the driver has not had the chance to await yet.
  const unhandled = new Map();
  process.on('unhandledRejection', (reason, promise) => {
    unhandled.set(promise, reason);
    realTimers.setTimeout(() => {
      if (!unhandled.has(promise)) return;
      unhandled.delete(promise);
      writeUserError(`Unhandled promise rejection: ${util.inspect(reason)}`);
    }, 50);
  });
  process.on('rejectionHandled', (promise) => unhandled.delete(promise));

  // -- Rich output ------------------------------------------------------------------------------

  const RICH_METHODS = [
    ['_toHtml', 'text/html'],
    ['_toMarkdown', 'text/markdown'],
    ['_toSvg', 'image/svg+xml'],
    ['_toPng', 'image/png'],
    ['_toJpeg', 'image/jpeg'],
    ['_toLatex', 'text/latex'],
  ];
  const BINARY_MIME = new Set(['image/png', 'image/jpeg', 'image/gif', 'application/pdf']);

  function inspectValue(value) {
    return util.inspect(value, { colors: false, depth: 2 });
  }

  // A MIME bundle for a value: always text/plain, plus whatever the object says about itself
  // through `_toMime()` (a whole bundle) or `_toHtml()` and the other methods above.
  function mimeBundle(value) {
    const data = { 'text/plain': inspectValue(value) };
    if (value !== null && (typeof value === 'object' || typeof value === 'function')) {
      if (typeof value._toMime === 'function') Object.assign(data, normalizeBundle(value._toMime()));
      for (const [method, mime] of RICH_METHODS) {
        if (typeof value[method] === 'function') data[mime] = normalizeData(mime, value[method]());
      }
    }
    return data;
  }

  function normalizeData(mime, content) {
    if (BINARY_MIME.has(mime) && ArrayBuffer.isView(content)) return toBuffer(content).toString('base64');
    if (typeof content === 'string' || /json/.test(mime)) return content;
    return String(content);
  }

  function normalizeBundle(bundle) {
    if (bundle === null || typeof bundle !== 'object' || Array.isArray(bundle)) {
      throw new TypeError('a raw MIME bundle must be an object such as {"text/html": "<b>hi</b>"}');
    }
    const data = {};
    for (const [mime, content] of Object.entries(bundle)) data[mime] = normalizeData(mime, content);
    return data;
  }

  // display(value) shows a value as rich output while the cell runs; display(bundle, {raw:
  // true}) shows a ready-made MIME bundle; `metadata` goes along with it. With a `display_id`
  // (`true` makes a new one) the output can be replaced later: display() then returns a
  // handle whose update() does that, as IPython's does, and display.update(value,
  // {display_id}) does the same without the handle.
  function display(value, options = {}) {
    let displayId = options.display_id;
    if (displayId === true) displayId = crypto.randomBytes(16).toString('hex');
    const update = Boolean(options.update);
    if (update && (displayId === undefined || displayId === null)) {
      throw new TypeError('display.update() needs a display_id');
    }
    const data = options.raw ? normalizeBundle(value) : mimeBundle(value);
    const content = { data, metadata: options.metadata || {} };
    if (displayId !== undefined && displayId !== null) content.transient = { display_id: String(displayId) };
    // Stringify before fencing, so that a bundle that cannot be sent fails in the user's code.
    const body = JSON.stringify(content);
    send([[update ? 'update_display' : 'display', body]], true);
    if (!content.transient || update) return undefined;
    const id = content.transient.display_id;
    return {
      display_id: id,
      display: (next, more = {}) => display(next, { ...more, display_id: id, update: false }),
      update: (next, more = {}) => display(next, { ...more, display_id: id, update: true }),
    };
  }

  const rawDisplay = (mime) => (content, options = {}) =>
    display({ [mime]: content }, { ...options, raw: true });
  display.html = rawDisplay('text/html');
  display.markdown = rawDisplay('text/markdown');
  display.svg = rawDisplay('image/svg+xml');
  display.png = rawDisplay('image/png');
  display.jpeg = rawDisplay('image/jpeg');
  display.latex = rawDisplay('text/latex');
  display.json = rawDisplay('application/json');
  // display.clear() empties the cell's output; with {wait: true} only when new output comes.
  display.clear = (options = {}) => sendJson('clear_output', { wait: Boolean(options.wait) }, true);
  display.update = (value, options = {}) => display(value, { ...options, update: true });
  defineGlobal('display', display);

  // -- input() ---------------------------------------------------------------------------------

  // input(prompt) asks the frontend for a line and returns it, blocking the cell as Python's
  // input() does; input.password(prompt) hides what is typed. When the frontend does not
  // allow input, or the answer is withdrawn, it throws an EOFError. The wait is cut into short
  // slices so that an interrupt (which terminates JavaScript between them) stops it.
  function requestInput(prompt, password) {
    if (!current || current.completed) {
      const error = new Error('input() can only ask for a line while a cell runs');
      error.name = 'EOFError';
      throw error;
    }
    Atomics.store(shared, SHARED.inputState, INPUT.waiting);
    sendJson('input_request', { prompt: String(prompt), password }, true);
    for (;;) {
      Atomics.wait(shared, SHARED.inputState, INPUT.waiting, 50);
      const state = Atomics.load(shared, SHARED.inputState);
      if (state === INPUT.answered) {
        const length = Atomics.load(shared, SHARED.inputLength);
        Atomics.store(shared, SHARED.inputState, INPUT.idle);
        return Buffer.from(new Uint8Array(inputBuffer, 0, length)).toString('utf8');
      }
      if (state !== INPUT.waiting) {
        Atomics.store(shared, SHARED.inputState, INPUT.idle);
        const error = new Error('EOF when reading a line');
        error.name = 'EOFError';
        throw error;
      }
      checkpoint();
    }
  }
  const input = (prompt = '') => requestInput(prompt, false);
  input.password = (prompt = '') => requestInput(prompt, true);
  defineGlobal('input', input);

  // -- Evaluation through the inspector -----------------------------------------------------------

  const session = new inspector.Session();
  session.connect();
  const OBJECT_GROUP = 'cellgate';
  const PEEK_GROUP = 'cellgate-peek';

  // Most inspector methods answer synchronously on the thread's own session.
  function inspectorCall(method, params) {
    let reply = null;
    session.post(method, params, (error, result) => {
      reply = { error, result };
    });
    if (!reply) throw new Error(`the inspector did not answer ${method} at once`);
    if (reply.error) throw reply.error;
    return reply.result;
  }

  // The inspector describes values as remote objects; this fetches the JavaScript value a
  // remote object stands for, by having the inspector call a function with it.
  const CAPTURE = Symbol.for('cellgate.capture');
  let captured;
  Object.defineProperty(globalThis, CAPTURE, { value: (value) => { captured = value; } });

  function remoteValue(remote) {
    if (!remote) return undefined;
    if (remote.objectId) {
      captured = undefined;
      inspectorCall('Runtime.callFunctionOn', {
        objectId: remote.objectId,
        functionDeclaration: 'function () { "use strict"; globalThis[Symbol.for("cellgate.capture")](this); }',
        silent: true,
      });
      const value = captured;
      captured = undefined;
      return value;
    }
    if ('unserializableValue' in remote) {
      const text = remote.unserializableValue;
      if (text.endsWith('n')) return BigInt(text.slice(0, -1));
      return text === '-0' ? -0 : Number(text);
    }
    return remote.value;
  }

  function releaseRemoteObjects(objectGroup = OBJECT_GROUP) {
    try {
      inspectorCall('Runtime.releaseObjectGroup', { objectGroup });
    } catch (error) {
      diagnose(`releasing inspector objects failed: ${error.message}`);
    }
  }

  // Evaluates an expression for completion or inspection: only if it has no side effects,
  // and never for long.
  function peek(expression) {
    // Loading a built-in module counts as a side effect, so load it first: `fs.` completes
    // even before the cell that uses `fs` has run.
    const root = /^[\w$]+/.exec(expression);
    if (root && unloadedBuiltins.has(root[0])) {
      try {
        void globalThis[root[0]];
      } catch {
        // An unloadable module simply gets no completions.
      }
    }
    try {
      const reply = inspectorCall('Runtime.evaluate', {
        expression,
        throwOnSideEffect: true,
        timeout: 200,
        silent: true,
        objectGroup: PEEK_GROUP,
      });
      if (reply.exceptionDetails) return { found: false };
      return { found: true, value: remoteValue(reply.result) };
    } catch {
      return { found: false };
    } finally {
      releaseRemoteObjects(PEEK_GROUP);
    }
  }

  // A guarded cell runs inside this script, so that Node's SIGINT watchdog (`breakOnSigint`)
  // can stop it, the way the Node REPL stops a runaway line.
  const GUARD_FILE = 'cellgate-guard';
  const RUN_GUARDED = Symbol.for('cellgate.run');
  Object.defineProperty(globalThis, RUN_GUARDED, { value: null, writable: true });
  const guard = new vm.Script('globalThis[Symbol.for("cellgate.run")]()', { filename: GUARD_FILE });

  // -- Cells ------------------------------------------------------------------------------------

  let cellCount = 0;
  let current = null; // The running cell: {id, outcome, finish, completed}.

  // The keeper waits on this slot, so every change wakes it.
  function setState(cellId, phase) {
    Atomics.store(shared, SHARED.state, cellId * 4 + phase);
    Atomics.notify(shared, SHARED.state);
  }

  // A guarded cell ends in this fence (see runKeeper): it hands SIGINTs over to the keeper,
  // which arms its watchdog on top of the cell's, so that no termination can reach the
  // inspector while it finishes the evaluation. A SIGINT that the cell's watchdog has already
  // taken stops the cell right here, while its script still runs.
  const now = Date.now;
  function fence() {
    Atomics.store(shared, SHARED.mainGuarded, 0);
    Atomics.notify(shared, SHARED.mainGuarded);
    if (Atomics.load(shared, SHARED.keeperUp) === 1) {
      const armed = Atomics.load(shared, SHARED.keeperArmed);
      Atomics.add(shared, SHARED.keeperWake, 1);
      Atomics.notify(shared, SHARED.keeperWake);
      const deadline = now() + 50;
      while (Atomics.load(shared, SHARED.keeperArmed) === armed && now() < deadline) {
        Atomics.wait(shared, SHARED.keeperArmed, armed, 5);
      }
    }
    return checkpoint();
  }
  // A function call, where V8 acts on a pending termination.
  function checkpoint() {
    return {};
  }
  Object.defineProperty(globalThis, Symbol.for('cellgate.fence'), { value: fence });

  // The source the inspector evaluates for a cell, and whether it runs under the cell's own
  // watchdog. Code without top-level `await` does: it runs entirely in its synchronous part,
  // and gets the fence appended as a declaration, which leaves the value of the cell alone.
  // Code with top-level `await` does not: its synchronous part ends at an `await` that cannot
  // be fenced, so the keeper stays the most recent watchdog and interrupts such a cell itself.
  // Code with a syntax error never runs, and is evaluated as written, so that it is reported
  // as written.
  const FENCE_SUFFIX = '\n;const {} = globalThis[Symbol.for("cellgate.fence")]();';

  function prepareSource(code) {
    let source = rewriteImports(code);
    // A lone `{ ... }` is read as an object literal, not a block, as in the Node REPL.
    if (/^\s*\{/.test(code) && !/;\s*$/.test(code) && syntaxOf(`(${code}\n)`) !== 'invalid') {
      source = `(${code}\n)`;
    }
    if (syntaxOf(source) === 'plain') return { source: source + FENCE_SUFFIX, guarded: true };
    return { source, guarded: false };
  }

  // 'plain' for a script, 'await' for code that is valid only with top-level `await` (it
  // compiles as the body of an async function), else 'invalid'.
  function syntaxOf(source) {
    for (const [kind, text] of [['plain', source], ['await', `(async () => {\n${source}\n})`]]) {
      try {
        new vm.Script(text);
        return kind;
      } catch {
        // Try the next reading.
      }
    }
    return 'invalid';
  }

  function execute(code) {
    const cell = { id: ++cellCount, outcome: null, completed: false, code };
    // An input() that an interrupt stopped leaves its state behind.
    Atomics.store(shared, SHARED.inputState, INPUT.idle);
    current = cell;
    cellTimers = new Set();
    const outcome = new Promise((resolve) => {
      cell.finish = (result) => {
        if (cell.outcome) return;
        cell.outcome = result;
        resolve(result);
      };
    });

    outcome.then((result) => completeCell(cell, result));

    // A guarded run without the keeper would leave SIGINT's default action (death) behind.
    if (Atomics.load(shared, SHARED.keeperUp) === 0) awaitKeeper();
    let prepared;
    try {
      prepared = prepareSource(code);
    } catch (error) {
      cell.finish({ error });
      return;
    }
    const evaluate = () =>
      session.post(
        'Runtime.evaluate',
        { expression: prepared.source, replMode: true, silent: true, objectGroup: OBJECT_GROUP },
        (error, reply) => onEvaluated(cell, error, reply),
      );

    setState(cell.id, PHASE.sync);
    if (!prepared.guarded) {
      evaluate();
    } else {
      // If the keeper is arming a watchdog right now, let it finish, so that the cell's
      // watchdog is armed after it and is the one that gets the SIGINTs (see runKeeper).
      for (let i = 0; i < 100 && Atomics.load(shared, SHARED.keeperEntering) === 1; i++) {
        Atomics.wait(shared, SHARED.keeperEntering, 1, 1);
      }
      globalThis[RUN_GUARDED] = () => {
        Atomics.store(shared, SHARED.mainGuarded, 1);
        evaluate();
      };
      try {
        guard.runInThisContext({ breakOnSigint: true });
      } catch (error) {
        cell.finish(error && error.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED' ? { interrupted: true } : { error });
      } finally {
        globalThis[RUN_GUARDED] = null;
        Atomics.store(shared, SHARED.mainGuarded, 0);
        Atomics.notify(shared, SHARED.mainGuarded);
      }
    }
    if (!cell.outcome) setState(cell.id, PHASE.async);
  }

  function awaitKeeper() {
    if (Atomics.wait(shared, SHARED.keeperUp, 0, 5000) === 'timed-out') {
      diagnose('the keeper thread did not start; a SIGINT may end the kernel');
    }
  }

  function onEvaluated(cell, error, reply) {
    try {
      if (cell.outcome) return;
      if (error) {
        // The inspector reports an evaluation stopped by an interrupt as an error of its own.
        cell.finish(/terminated/i.test(error.message) ? { interrupted: true } : { error });
      } else if (reply.exceptionDetails && !reply.exceptionDetails.exception) {
        const text = reply.exceptionDetails.text || 'evaluation failed';
        cell.finish(/terminated/i.test(text) ? { interrupted: true } : { error: new Error(text) });
      } else if (reply.exceptionDetails) {
        const details = reply.exceptionDetails;
        cell.finish({ error: remoteValue(details.exception), details });
      } else {
        const value = remoteValue(reply.result);
        if (util.types.isPromise(value)) {
          value.then((resolved) => cell.finish({ value: resolved }), (rejected) => cell.finish({ error: rejected }));
        } else {
          cell.finish({ value });
        }
      }
    } catch (failure) {
      cell.finish({ error: failure });
    } finally {
      releaseRemoteObjects();
    }
  }

  // Turns a cell's outcome into events, then ends it with `done`. Formatting the value can run
  // user code (custom inspect functions, `_toHtml`), which may throw: that fails the cell.
  function completeCell(cell, result) {
    if (cell.completed) return;
    let frames;
    let status = 'ok';
    try {
      if (result.interrupted) {
        cancelCellTimers();
        frames = [['error', JSON.stringify(interruptedError())]];
        status = 'error';
      } else if ('error' in result) {
        frames = [['error', JSON.stringify(errorContent(result.error, result.details, cell.code))]];
        status = 'error';
      } else if (result.value !== undefined) {
        frames = [['result', JSON.stringify({ data: mimeBundle(result.value), metadata: {} })]];
      } else {
        frames = [];
      }
    } catch (error) {
      frames = [['error', JSON.stringify(errorContent(error, null, cell.code))]];
      status = 'error';
    }
    frames.push(['done', JSON.stringify({ status })]);
    endCell(cell, frames);
  }

  function endCell(cell, frames) {
    cell.completed = true;
    if (current === cell) current = null;
    cellTimers = null;
    setState(0, PHASE.idle);
    send(frames, true);
    busy = false;
    realTimers.setImmediate(pumpCommands);
  }

  function interruptedError() {
    return {
      ename: 'Interrupted',
      evalue: 'Execution was interrupted by SIGINT',
      traceback: ['Interrupted: execution was interrupted by SIGINT'],
    };
  }

  function interrupt(cellId) {
    const cell = current;
    if (!cell || cell.id !== cellId || cell.completed) return;
    if (!cell.outcome) {
      cell.finish({ interrupted: true });
    } else {
      // The cell had finished, but the interrupt stopped the driver while it was turning the
      // outcome into events; end the cell as interrupted.
      cancelCellTimers();
      endCell(cell, [
        ['error', JSON.stringify(interruptedError())],
        ['done', JSON.stringify({ status: 'error' })],
      ]);
    }
  }

  // -- Errors -----------------------------------------------------------------------------------

  function isError(value) {
    return util.types.isNativeError(value) || value instanceof Error;
  }

  // Stack lines without the driver's own frames: everything below the inspector call is the
  // driver's, and driver frames between user frames (display() calling `_toHtml`) go too.
  function userStack(stack) {
    const lines = [];
    for (const line of stack.split('\n')) {
      if (/^\s+at /.test(line)) {
        if (line.includes('node:inspector') || line.includes(GUARD_FILE)) break;
        if (line.includes(__filename)) continue;
      }
      lines.push(line);
    }
    return lines;
  }

  function errorContent(thrown, details, code) {
    if (!isError(thrown)) {
      const text = safeInspect(thrown);
      return { ename: 'Uncaught', evalue: text, traceback: [`Uncaught ${text}`] };
    }
    let ename;
    let evalue;
    try {
      ename = String(thrown.name || 'Error');
      evalue = String(thrown.message ?? '');
    } catch {
      ename = 'Error';
      evalue = '';
    }
    const stack = typeof thrown.stack === 'string' ? thrown.stack : `${ename}: ${evalue}`;
    const traceback = userStack(stack);
    const hasFrames = traceback.some((line) => /^\s+at /.test(line));
    // A syntax error in the cell itself has no frames; show where it is instead.
    if (!hasFrames && ename === 'SyntaxError' && details && code !== undefined) {
      const lineNumber = details.lineNumber || 0;
      const sourceLine = code.split('\n')[lineNumber];
      const column = details.columnNumber || 0;
      if (sourceLine !== undefined) {
        traceback.unshift(
          `line ${lineNumber + 1}:`,
          sourceLine,
          `${' '.repeat(Math.min(column, sourceLine.length))}^`,
          '',
        );
      }
    }
    return { ename, evalue, traceback };
  }

  function safeInspect(value) {
    try {
      return inspectValue(value);
    } catch {
      return String(value);
    }
  }

  // -- Imports ----------------------------------------------------------------------------------

  // `import(...)` in a cell would have no module to resolve from, since cells are not files.
  // The driver rewrites it to a function that imports relative to the kernel's working
  // directory, and static `import ... from` statements at the start of a line become the
  // matching `const ... = await import(...)`, so that ES modules can be used from cells.
  const importFromNotebook = (() => {
    try {
      const loader = new Module(notebookFile, null);
      loader.filename = notebookFile;
      loader.paths = notebookModule.paths;
      loader._compile('module.exports = (specifier) => import(specifier);', notebookFile);
      return loader.exports;
    } catch (error) {
      diagnose(`import() from cells will resolve from the driver's directory: ${error.message}`);
      return (specifier) => import(specifier);
    }
  })();
  const IMPORT_FUNCTION = Symbol.for('cellgate.import');
  Object.defineProperty(globalThis, IMPORT_FUNCTION, { value: importFromNotebook });
  const IMPORT_CALL = 'globalThis[Symbol.for("cellgate.import")]';

  function rewriteImports(code) {
    if (!code.includes('import')) return code;
    let out = '';
    let copied = 0;
    for (const token of scanImports(code)) {
      if (token.dynamic) {
        out += code.slice(copied, token.start) + IMPORT_CALL;
        copied = token.start + 'import'.length;
        continue;
      }
      const statement = staticImport(code, token.start);
      if (!statement) continue;
      out += code.slice(copied, token.start) + statement.replacement;
      copied = statement.end;
    }
    return out + code.slice(copied);
  }

  // Finds the `import` keywords of the code that are not inside strings, comments, template
  // text or regular expressions: {start, dynamic} for `import(`, {start} for an import
  // statement at the start of a line outside any braces.
  function scanImports(code) {
    const found = [];
    const braces = []; // For each open `{` or `${`: true if it belongs to a template literal.
    let previous = ''; // The last significant character, to tell a regex from a division.
    let i = 0;
    const n = code.length;

    const skipTemplate = () => {
      // i is just past a backtick or a `}` that closed a substitution.
      while (i < n) {
        const c = code[i];
        if (c === '\\') {
          i += 2;
        } else if (c === '`') {
          i++;
          return;
        } else if (c === '$' && code[i + 1] === '{') {
          i += 2;
          braces.push(true);
          return;
        } else {
          i++;
        }
      }
    };

    while (i < n) {
      const c = code[i];
      if (c === '\n' || c === ' ' || c === '\t' || c === '\r') {
        i++;
      } else if (c === '/' && code[i + 1] === '/') {
        while (i < n && code[i] !== '\n') i++;
      } else if (c === '/' && code[i + 1] === '*') {
        const end = code.indexOf('*/', i + 2);
        i = end < 0 ? n : end + 2;
      } else if (c === '"' || c === "'") {
        i++;
        while (i < n && code[i] !== c && code[i] !== '\n') i += code[i] === '\\' ? 2 : 1;
        i++;
        previous = 'a';
      } else if (c === '`') {
        i++;
        skipTemplate();
        previous = 'a';
      } else if (c === '/' && !/[\w$)\]}]/.test(previous)) {
        // A regular expression literal.
        i++;
        let inClass = false;
        while (i < n && code[i] !== '\n') {
          const d = code[i];
          if (d === '\\') i++;
          else if (d === '[') inClass = true;
          else if (d === ']') inClass = false;
          else if (d === '/' && !inClass) break;
          i++;
        }
        i++;
        while (i < n && /[a-z]/.test(code[i])) i++;
        previous = 'a';
      } else if (c === '{') {
        braces.push(false);
        previous = c;
        i++;
      } else if (c === '}') {
        i++;
        if (braces.pop()) {
          skipTemplate();
          previous = 'a';
        } else {
          previous = c;
        }
      } else if (/[\p{ID_Start}$_]/u.test(c)) {
        const start = i;
        while (i < n && /[\p{ID_Continue}$\u200c\u200d]/u.test(code[i])) i++;
        const word = code.slice(start, i);
        if (word === 'import' && previous !== '.') {
          const after = code.slice(i).match(/^\s*(\S)/);
          const next = after ? after[1] : '';
          if (next === '(') {
            found.push({ start, dynamic: true });
          } else if (braces.length === 0 && /^[\w${*'"]/.test(next) && atLineStart(code, start)) {
            found.push({ start, dynamic: false });
          }
        }
        previous = KEYWORDS_BEFORE_EXPRESSION.has(word) ? '(' : 'a';
      } else {
        previous = c;
        i++;
      }
    }
    return found;
  }

  // After these words a `/` starts a regular expression, not a division.
  const KEYWORDS_BEFORE_EXPRESSION = new Set([
    'return', 'typeof', 'case', 'do', 'else', 'in', 'of', 'instanceof', 'new', 'delete', 'void',
    'throw', 'yield', 'await',
  ]);

  function atLineStart(code, index) {
    const before = code.slice(code.lastIndexOf('\n', index - 1) + 1, index);
    return /^\s*$/.test(before) || /;\s*$/.test(before);
  }

  const STATIC_IMPORT = /import\s*(?:([\p{ID_Start}$_][\p{ID_Continue}$]*)\s*(?:,\s*)?)?(?:\*\s*as\s+([\p{ID_Start}$_][\p{ID_Continue}$]*)|\{([^}]*)\})?\s*from\s*(['"])([^'"\n]+)\4[ \t]*;?|import\s*(['"])([^'"\n]+)\6[ \t]*;?/uy;

  function staticImport(code, start) {
    STATIC_IMPORT.lastIndex = start;
    const match = STATIC_IMPORT.exec(code);
    if (!match) return null;
    const [text, defaultName, namespace, named, , source, , bareSource] = match;
    const newlines = '\n'.repeat((text.match(/\n/g) || []).length);
    if (bareSource !== undefined) {
      return { end: start + text.length, replacement: `await ${IMPORT_CALL}(${JSON.stringify(bareSource)});${newlines}` };
    }
    const load = `await ${IMPORT_CALL}(${JSON.stringify(source)})`;
    let replacement;
    if (namespace) {
      replacement = `const ${namespace} = ${load}`;
      if (defaultName) replacement += `, ${defaultName} = ${namespace}.default`;
    } else {
      const bindings = [];
      if (defaultName) bindings.push(`default: ${defaultName}`);
      if (named !== undefined) {
        for (const part of named.split(',')) {
          const binding = part.trim();
          if (binding) bindings.push(binding.replace(/^(\S+)\s+as\s+(\S+)$/, '$1: $2'));
        }
      }
      if (bindings.length === 0) return null;
      replacement = `const { ${bindings.join(', ')} } = ${load}`;
    }
    return { end: start + text.length, replacement: `${replacement};${newlines}` };
  }

  // -- Completion, inspection, completeness -------------------------------------------------------

  const KEYWORDS = [
    'await', 'break', 'case', 'catch', 'class', 'const', 'continue', 'debugger', 'default',
    'delete', 'do', 'else', 'export', 'extends', 'false', 'finally', 'for', 'function', 'if',
    'import', 'in', 'instanceof', 'let', 'new', 'null', 'return', 'static', 'super', 'switch',
    'this', 'throw', 'true', 'try', 'typeof', 'undefined', 'var', 'void', 'while', 'with', 'yield',
  ];
  const IDENTIFIER = /^[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*$/u;
  const IDENTIFIER_TAIL = /[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*$|$/u;
  const IDENTIFIER_CHAR = /[\p{ID_Continue}$\u200c\u200d]/u;

  // Cursor positions in the protocol count code points; JavaScript strings count UTF-16 units.
  function unitIndex(text, codePoints) {
    let index = 0;
    for (let count = 0; count < codePoints && index < text.length; count++) {
      index += text.codePointAt(index) > 0xffff ? 2 : 1;
    }
    return index;
  }

  function codePointCount(text) {
    let count = 0;
    for (const _ of text) count++;
    return count;
  }

  // Where the expression that ends at `end` begins: identifiers joined by `.` or `?.`, with
  // calls, index brackets and literals; -1 if there is none.
  function expressionStart(text, end) {
    let i = end;
    for (;;) {
      const atomStart = atomBefore(text, i);
      if (atomStart < 0) return i === end ? -1 : i;
      const atomEnd = i;
      i = atomStart;
      const last = text[atomEnd - 1];
      if (text.slice(i - 2, i) === '?.') {
        i -= 2;
      } else if (text[i - 1] === '.' && text[i - 2] !== '.') {
        i -= 1;
      } else if ((last === ')' || last === ']') && /[\w$)\]]/.test(text[i - 1] || '')) {
        // A call or an index applied to what comes before.
      } else {
        return i;
      }
    }
  }

  // The start of the single identifier, literal or bracketed group that ends at `end`.
  function atomBefore(text, end) {
    const last = text[end - 1];
    if (last === undefined) return -1;
    const closers = { ')': '(', ']': '[', '}': '{' };
    if (closers[last]) {
      const stack = [];
      for (let i = end - 1; i >= 0; i--) {
        const c = text[i];
        if (c === '"' || c === "'" || c === '`') {
          const open = text.lastIndexOf(c, i - 1);
          if (open < 0) return -1;
          i = open;
        } else if (closers[c]) {
          stack.push(closers[c]);
        } else if (c === '(' || c === '[' || c === '{') {
          if (stack.pop() !== c) return -1;
          if (stack.length === 0) return i;
        }
      }
      return -1;
    }
    if (last === '"' || last === "'" || last === '`') {
      const open = text.lastIndexOf(last, end - 2);
      return open;
    }
    let i = end;
    while (i > 0 && IDENTIFIER_CHAR.test(text[i - 1])) i--;
    return i < end ? i : -1;
  }

  // Every name a property access on `value` can complete to.
  function propertyNames(value) {
    const names = new Set();
    let object = value === null || value === undefined ? null : Object(value);
    for (let depth = 0; object && depth < 64; depth++) {
      let own;
      try {
        const large = (Array.isArray(object) || ArrayBuffer.isView(object)) && object.length > 1000;
        own = large ? ['length'] : Object.getOwnPropertyNames(object);
        object = Object.getPrototypeOf(object);
      } catch {
        break;
      }
      for (const name of own) if (IDENTIFIER.test(name)) names.add(name);
    }
    return names;
  }

  function globalNames() {
    const names = new Set();
    try {
      for (const name of inspectorCall('Runtime.globalLexicalScopeNames', {}).names) names.add(name);
    } catch (error) {
      diagnose(`cannot list the cells' declarations: ${error.message}`);
    }
    for (const name of propertyNames(globalThis)) names.add(name);
    for (const keyword of KEYWORDS) names.add(keyword);
    return names;
  }

  function complete({ code = '', cursor_pos: cursorPos = 0 }) {
    const cursor = unitIndex(code, cursorPos);
    const before = code.slice(0, cursor);
    const reply = (matches, start) => ({
      matches,
      cursor_start: codePointCount(code.slice(0, start)),
      cursor_end: cursorPos,
      metadata: {},
    });

    // Module names inside require('...') and import('...').
    const moduleName = /\b(?:require|import)\s*\(\s*['"]([\w@:./-]*)$/.exec(before);
    if (moduleName) {
      const prefix = moduleName[1];
      const names = Module.builtinModules.filter((name) => !name.startsWith('_'));
      const matches = [...names, ...names.map((name) => `node:${name}`)].filter((name) => name.startsWith(prefix));
      return reply([...new Set(matches)].sort(), cursor - prefix.length);
    }

    const word = IDENTIFIER_TAIL.exec(before)[0];
    const wordStart = cursor - word.length;
    let candidates;
    let dot = 0;
    if (before.slice(wordStart - 2, wordStart) === '?.') dot = 2;
    else if (before[wordStart - 1] === '.' && before[wordStart - 2] !== '.') dot = 1;
    if (dot > 0) {
      const start = expressionStart(before, wordStart - dot);
      if (start < 0) return reply([], wordStart);
      const target = peek(before.slice(start, wordStart - dot));
      if (!target.found) return reply([], wordStart);
      candidates = propertyNames(target.value);
    } else {
      if (word === '' || /[\d]/.test(word[0])) return reply([], wordStart);
      candidates = globalNames();
      for (const name of declaredNames(before.slice(0, wordStart))) candidates.add(name);
    }
    const matches = [...candidates].filter((name) => name.startsWith(word)).sort();
    return reply(matches, wordStart);
  }

  // The names the code before the cursor declares (`const`, `let`, `var`, `function`,
  // `class`, simple destructuring), so that completion offers names of the cell being written
  // before it has run.
  function declaredNames(code) {
    const names = new Set();
    const declaration = /\b(?:const|let|var|function\*?|class)\s+([^=;()]+?)(?=\s*(?:=|;|\(|\{|\bof\b|\bin\b|\bextends\b|$))/gmu;
    for (const match of code.matchAll(declaration)) {
      for (const part of match[1].split(/[\s,{}[\]]+/)) {
        const name = part.includes(':') ? part.split(':').pop() : part;
        if (IDENTIFIER.test(name) && !KEYWORDS.includes(name)) names.add(name);
      }
    }
    return names;
  }

  function inspectReply({ code = '', cursor_pos: cursorPos = 0, detail_level: detail = 0 }) {
    const cursor = unitIndex(code, cursorPos);
    // The name under the cursor runs on to the end of its identifier; right after an opening
    // parenthesis, the function being called is meant.
    let end = cursor;
    while (end < code.length && IDENTIFIER_CHAR.test(code[end])) end++;
    if (end === cursor && !IDENTIFIER_CHAR.test(code[cursor - 1] || '')) {
      const call = /\(\s*$/.exec(code.slice(0, cursor));
      if (call) end = call.index;
    }
    const start = expressionStart(code, end);
    const notFound = { found: false, data: {}, metadata: {} };
    if (start < 0) return notFound;
    const expression = code.slice(start, end);
    if (KEYWORDS.includes(expression) && expression !== 'undefined') return notFound;
    const target = peek(expression);
    if (!target.found) return notFound;
    return { found: true, data: { 'text/plain': describe(expression, target.value, detail) }, metadata: {} };
  }

  function describe(expression, value, detail) {
    let type = value === null ? 'null' : typeof value;
    let source = null;
    if (typeof value === 'function') {
      source = Function.prototype.toString.call(value);
      if (/^class\b/.test(source)) type = 'class';
    } else if (type === 'object') {
      try {
        const constructor = Object.getPrototypeOf(value)?.constructor;
        type = typeof constructor === 'function' && constructor.name ? constructor.name : 'Object';
      } catch {
        type = 'Object';
      }
    }
    const lines = [`${expression}: ${type}`];
    try {
      lines.push(util.inspect(value, { colors: false, depth: detail > 0 ? 4 : 1, maxArrayLength: detail > 0 ? 100 : 20 }));
    } catch (error) {
      lines.push(`(cannot be shown: ${error.message})`);
    }
    if (source !== null) {
      const sourceLines = source.split('\n');
      const shown = detail > 0 ? sourceLines : sourceLines.slice(0, 12);
      lines.push('', ...shown);
      if (shown.length < sourceLines.length) lines.push('...');
    }
    return lines.join('\n');
  }

  // complete / incomplete / invalid, judged by compiling the code without running it. An error
  // at the very end of the code means more input could still make it valid.
  function isComplete({ code = '' }) {
    if (code.trim() === '') return { status: 'complete' };
    // Judge the code the way execute will run it.
    code = rewriteImports(code);
    let problem = syntaxProblem(code, 0);
    if (problem && /await is only valid|top level bodies of modules/.test(problem.message)) {
      problem = syntaxProblem(`(async () => {\n${code}\n})`, 1);
    }
    if (!problem) return { status: 'complete' };
    const lines = code.split('\n');
    const beyondCode =
      problem.line > lines.length - 1 ||
      /^(Unexpected end of input|Unterminated template literal)/.test(problem.message) ||
      (problem.line === lines.length - 1 && problem.column >= lines[lines.length - 1].trimEnd().length);
    if (!beyondCode) return { status: 'invalid' };
    const lastLine = lines[lines.length - 1];
    let indent = /^\s*/.exec(lastLine)[0];
    if (/[{([]\s*$/.test(lastLine)) indent += '  ';
    return { status: 'incomplete', indent };
  }

  // The first syntax error of `source` as {message, line, column} (line counted in the user's
  // code, which starts `offset` lines into the source), or null if it compiles.
  function syntaxProblem(source, offset) {
    try {
      new vm.Script(source, { filename: 'cell' });
      return null;
    } catch (error) {
      const stackLines = String(error.stack).split('\n');
      const where = /^cell:(\d+)$/.exec(stackLines[0]);
      const caret = stackLines[2] ? stackLines[2].indexOf('^') : -1;
      return {
        message: String(error.message),
        line: where ? Number(where[1]) - 1 - offset : 0,
        column: caret >= 0 ? caret : 0,
      };
    }
  }

  // -- Commands ---------------------------------------------------------------------------------

  const queue = [];
  let busy = false;

  function pumpCommands() {
    while (!busy && queue.length > 0) handleCommand(queue.shift());
  }

  function handleCommand({ kind, body }) {
    try {
      switch (kind) {
        case 'execute':
          busy = true;
          execute(body.toString('utf8'));
          break;
        case 'complete':
          sendJson('complete_reply', complete(JSON.parse(body)));
          break;
        case 'is_complete':
          sendJson('is_complete_reply', isComplete(JSON.parse(body)));
          break;
        case 'inspect':
          sendJson('inspect_reply', inspectReply(JSON.parse(body)));
          break;
        default:
          diagnose(`ignoring unknown command ${kind}`);
      }
    } catch (error) {
      diagnose(`${kind} failed: ${error.stack || error}`);
      answerFailure(kind, error);
    }
  }

  // Every command is answered, even when the driver itself failed, so the runner never waits.
  function answerFailure(kind, error) {
    if (kind === 'execute') {
      if (current && !current.completed) {
        endCell(current, [
          ['error', JSON.stringify(errorContent(error, null))],
          ['done', JSON.stringify({ status: 'error' })],
        ]);
      }
    } else if (kind === 'complete') {
      sendJson('complete_reply', { matches: [], cursor_start: 0, cursor_end: 0, metadata: {} });
    } else if (kind === 'is_complete') {
      sendJson('is_complete_reply', { status: 'unknown' });
    } else if (kind === 'inspect') {
      sendJson('inspect_reply', { found: false, data: {}, metadata: {} });
    }
  }

  function onFrame(frame) {
    switch (frame.kind) {
      case 'shutdown':
        exitProcess(0);
        break;
      case 'input_reply':
      case 'input_abort':
        // The forwarder hands answers to input() over itself (see answerInput); none come here.
        break;
      default:
        queue.push(frame);
        pumpCommands();
    }
  }

  // -- Start ---------------------------------------------------------------------------------------

  // The main thread writes `ready` itself, before the forwarder exists and so before anything
  // else can write events. The runner can send commands while the forwarder thread boots;
  // frames handed to it meanwhile wait in its queue.
  const ready = {
    implementation: 'cellgate-javascript',
    implementation_version: DRIVER_VERSION,
    language_info: {
      name: 'javascript',
      version: process.versions.node,
      mimetype: 'application/javascript',
      file_extension: '.js',
      pygments_lexer: 'javascript',
      codemirror_mode: 'javascript',
    },
    banner:
      `JavaScript on Node.js ${process.version} (cellgate)\n` +
      'Top-level await, require(), import and display() work in cells; interrupt stops a cell.',
  };
  writeFully(eventsFd, encodeFrame('ready', JSON.stringify(ready)));

  const forwarder = new Worker(__filename, {
    workerData: {
      shared: shared.buffer,
      inputBuffer,
      controlFd,
      markerPrefix,
      eventsFd,
      stdoutFd: stdoutReaderFd,
      stderrFd: stderrReaderFd,
      diagnosticsFd,
    },
    stdout: false,
    stderr: false,
  });
  forwarder.on('error', (error) => {
    diagnose(`the forwarder thread failed: ${error.stack || error}`);
    exitProcess(1);
  });
  forwarder.on('exit', (code) => {
    diagnose(`the forwarder thread exited with status ${code}`);
    exitProcess(1);
  });
  // Commands come in order, numbered, possibly more than once (see runForwarder).
  let acceptedCommands = 0;
  forwarder.on('message', (message) => {
    if (message.command) {
      const { seq, kind, body } = message.command;
      if (seq !== acceptedCommands + 1) return;
      acceptedCommands = seq;
      Atomics.store(shared, SHARED.commandsAccepted, seq);
      onFrame({ kind, body: Buffer.from(body.buffer, body.byteOffset, body.byteLength) });
    } else if (message.end || message.eventsClosed) {
      // The runner closed the command pipe, or has stopped reading events: it is gone.
      exitProcess(0);
    } else if (message.broken) {
      diagnose(`the command stream is broken: ${message.broken}`);
      exitProcess(1);
    }
  });
}

// ---------------------------------------------------------------------------------------------

if (isMainThread) {
  try {
    runDriver();
  } catch (error) {
    // A driver that cannot start must say so and exit, never linger half set up.
    diagnose(`cannot start: ${error.stack || error}`);
    exitProcess(1);
  }
} else if (require('worker_threads').workerData.role === 'keeper') {
  runKeeper();
} else {
  runForwarder();
}
