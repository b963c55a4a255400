// One pipelined connection to cbd.
//
// Matching: cbd answers the requests of one connection in the order it read
// them (docs/PROTOCOL.md, Framing), so the calls written to the socket wait in
// a FIFO and each reply line settles the call at its head. The integer id each
// request carries is only a check: a reply whose id is not the head's means
// the peer is not speaking the protocol. A reply with no id (cbd could not read
// the request's id: a `parse_error`, a `line_too_long`) settles the head like
// any other, which is what the FIFO is for.
//
// Failing fast: a client that fails open must fail in milliseconds, not after
// its timeout. When a connect fails (ENOENT, ECONNREFUSED, EACCES, ...), the
// calls waiting for it reject at once with `unavailable`, and so does every
// call made while the connection is known to be down: for a backoff that
// starts at minBackoffMs and doubles on each failed connect up to
// maxBackoffMs (back to minBackoffMs once cbd answers). The first call after
// the backoff tries to connect again; no call is ever held waiting for cbd to
// come back. A new connection that cbd closes before answering anything
// (too_many_connections, or cbd dying) counts as a failed connect. One that
// was answering and closes (cbd restarted, or its --idle-timeout) is opened
// again by the next call with no backoff.
//
// The socket holds the process open only while calls wait on it.
import { createConnection, type Socket } from "node:net";
import { performance } from "node:perf_hooks";

import { CbdError } from "./errors.js";
import type { ClientErrorCode, ErrorCode, Request } from "./types.js";

export interface ConnectionOptions {
  /** Socket path (already resolved; see resolveSocketPath). */
  socket: string;
  /** Per-request timeout in ms. */
  timeoutMs: number;
  /** How long calls fail at once after the first failed connect, in ms. */
  minBackoffMs: number;
  /** The longest such window, reached by doubling, in ms. */
  maxBackoffMs: number;
}

/** One request from the call to its reply (or its rejection). */
interface Call {
  readonly id: number;
  readonly line: string;
  readonly resolve: (reply: Record<string, unknown>) => void;
  readonly reject: (err: CbdError) => void;
  timer: NodeJS.Timeout | undefined;
  /** Resolved or rejected already; a settled call written to the socket still holds its place in the FIFO. */
  settled: boolean;
}

// Replies are small, but a `list` page of 10,000 circuits runs to a few MB
// and `metrics` with per-circuit series more: 16 MiB (in UTF-16 code units)
// is far above any of cbd's replies, and a longer line means the peer is not
// cbd. The bound keeps such a peer from growing the buffer without limit.
export const MAX_REPLY_CHARS = 16 * 1024 * 1024;

// Ids are only a consistency check; start over long before they lose
// precision as doubles.
const MAX_ID = Number.MAX_SAFE_INTEGER;

type Phase = "idle" | "connecting" | "connected" | "down";

/**
 * A FIFO with O(1) push and shift: a pipelining client can have many
 * thousands of calls in flight, and Array#shift is linear.
 */
class CallQueue {
  private items: (Call | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }
  push(call: Call): void {
    this.items.push(call);
  }
  shift(): Call | undefined {
    if (this.head >= this.items.length) return undefined;
    const call = this.items[this.head];
    this.items[this.head++] = undefined;
    // Drop the consumed front once it is most of the array.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return call;
  }
  /** Empties the queue, handing back what it held in order. */
  drain(): Call[] {
    const rest = this.items.slice(this.head) as Call[];
    this.items = [];
    this.head = 0;
    return rest;
  }
}

export class Connection {
  readonly socketPath: string;
  private readonly timeoutMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  private socket: Socket | null = null;
  private phase: Phase = "idle";
  private destroyed = false;
  /** The next down window; doubles with each failed connect, back to min on success. */
  private backoffMs: number;
  /** While phase is "down": calls before this moment (performance.now()) fail at once. */
  private downUntil = 0;
  /** While phase is "down": why, for the error message. */
  private downReason = "";
  /** Why the socket being connected failed (its "error" event comes before "close"). */
  private connectError: Error | null = null;
  /** Calls made while connecting, written when the socket connects. */
  private waitingForConnect: Call[] = [];
  /** Calls written on the current socket, oldest first: the next reply is the head's. */
  private readonly inFlight = new CallQueue();
  /** Calls not yet settled, waiting or in flight: the socket is ref'd while any exist. */
  private unsettled = 0;
  private nextId = 1;
  /** Replies read on the current socket; none before it closes means cbd is refusing us. */
  private repliesOnSocket = 0;
  /** The tail of the input after the last newline. */
  private partialLine = "";

  constructor(options: ConnectionOptions) {
    this.socketPath = options.socket;
    this.timeoutMs = options.timeoutMs;
    this.minBackoffMs = options.minBackoffMs;
    this.maxBackoffMs = options.maxBackoffMs;
    this.backoffMs = this.minBackoffMs;
  }

  /** Sends one request; resolves with the reply (without id and ok), rejects with CbdError. */
  request(body: Request): Promise<Record<string, unknown>> {
    return this.send((id) => JSON.stringify({ ...body, id }) + "\n");
  }

  /**
   * The same for a request already serialized: `json` is a JSON object
   * without an id (its closing brace is replaced by the id). For the
   * mirror's batches, whose entries are serialized once per key.
   */
  requestJson(json: string): Promise<Record<string, unknown>> {
    return this.send((id) => `${json.slice(0, -1)},"id":${id}}\n`);
  }

  private send(lineWithId: (id: number) => string): Promise<Record<string, unknown>> {
    if (this.destroyed) return Promise.reject(new CbdError("destroyed", "the client was destroyed"));
    if (this.phase === "down") {
      const left = this.downUntil - performance.now();
      if (left > 0) {
        return Promise.reject(
          new CbdError("unavailable", `${this.downReason}; failing calls at once for ${Math.ceil(left)} ms more`),
        );
      }
      this.phase = "idle";
    }
    const id = this.nextId;
    this.nextId = this.nextId >= MAX_ID ? 1 : this.nextId + 1;
    const line = lineWithId(id);
    return new Promise((resolve, reject) => {
      const call: Call = { id, line, resolve, reject, timer: undefined, settled: false };
      call.timer = setTimeout(() => {
        this.settleWithError(call, new CbdError("timeout", `no reply from cbd at ${this.socketPath} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.unsettled++;
      if (this.phase === "connected" && this.socket) {
        this.inFlight.push(call);
        this.socket.write(line);
      } else {
        this.waitingForConnect.push(call);
        this.connect();
      }
      this.updateRef();
    });
  }

  /** Closes the connection; calls not yet answered reject with "destroyed". */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.failAll("destroyed", "the client was destroyed");
    this.socket?.destroy();
    this.socket = null;
  }

  private connect(): void {
    if (this.phase !== "idle" || this.destroyed) return;
    this.phase = "connecting";
    this.connectError = null;
    const socket = createConnection(this.socketPath);
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("connect", () => this.onConnect(socket));
    socket.on("data", (chunk: string) => this.onData(socket, chunk));
    socket.on("error", (err) => {
      // "close" follows and acts on it.
      if (this.socket === socket && this.phase === "connecting") this.connectError = err;
    });
    socket.on("close", () => this.onClose(socket));
  }

  private onConnect(socket: Socket): void {
    if (this.socket !== socket) return;
    this.phase = "connected";
    this.repliesOnSocket = 0;
    let batch = "";
    for (const call of this.waitingForConnect) {
      if (call.settled) continue; // timed out while connecting: never sent
      this.inFlight.push(call);
      batch += call.line;
    }
    this.waitingForConnect = [];
    if (batch) socket.write(batch);
    this.updateRef();
  }

  private onClose(socket: Socket): void {
    if (this.socket !== socket) return;
    const phase = this.phase;
    this.socket = null;
    this.partialLine = "";
    if (this.destroyed) return;
    if (phase === "connecting") {
      const cause = this.connectError as NodeJS.ErrnoException | null;
      this.markDown(`cannot connect to cbd at ${this.socketPath} (${cause?.code ?? cause?.message ?? "closed"})`);
      return;
    }
    if (phase === "down") return; // markDown already failed every call
    if (this.repliesOnSocket === 0) {
      // Closed before answering anything: cbd refused the connection
      // (too_many_connections, whose line a write racing the close can
      // destroy unread) or died at once. Back off rather than reconnect on
      // every call. A call written may or may not have been applied.
      this.markDown(`cbd at ${this.socketPath} closed a new connection before answering`, "connection_lost");
      return;
    }
    // It was up: a call already written may or may not have been applied, so
    // say so. The next call connects again at once (cbd restarted, or closed
    // an idle connection).
    this.phase = "idle";
    for (const call of this.inFlight.drain()) {
      this.settleWithError(call, new CbdError("connection_lost", `lost the connection to cbd at ${this.socketPath}`));
    }
  }

  /** Enters the down window: every waiting call, and every call until it ends, rejects with `unavailable`. */
  private markDown(reason: string, codeForInFlight: ErrorCode | ClientErrorCode = "unavailable", reply?: Record<string, unknown>): void {
    this.phase = "down";
    this.downReason = reason;
    this.downUntil = performance.now() + this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.maxBackoffMs);
    const waiting = this.waitingForConnect;
    this.waitingForConnect = [];
    for (const call of [...this.inFlight.drain(), ...waiting]) {
      this.settleWithError(call, new CbdError(codeForInFlight, reason, reply));
    }
  }

  private onData(socket: Socket, chunk: string): void {
    // Only the new chunk is searched for newlines, so a long reply arriving
    // in many chunks costs linear time.
    let start = 0;
    for (;;) {
      if (this.socket !== socket) return; // a line ended the connection
      const newline = chunk.indexOf("\n", start);
      if (newline < 0) break;
      const line = this.partialLine + chunk.slice(start, newline);
      this.partialLine = "";
      start = newline + 1;
      this.onLine(line);
    }
    if (this.socket !== socket) return;
    this.partialLine += chunk.slice(start);
    if (this.partialLine.length > MAX_REPLY_CHARS) {
      this.breakConnection(`cbd at ${this.socketPath} sent a line longer than ${MAX_REPLY_CHARS} characters`);
    }
  }

  private onLine(line: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      this.breakConnection(`cbd at ${this.socketPath} sent a line that is not JSON`);
      return;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      this.breakConnection(`cbd at ${this.socketPath} sent a line that is not a JSON object`);
      return;
    }
    const reply = parsed as Record<string, unknown>;
    const error = reply.ok === false ? errorOf(reply) : undefined;
    if (reply.id === undefined && error?.code === "too_many_connections") {
      // Sent in place of any reply, before cbd read a request, and then cbd
      // closes: nothing written here was applied. cbd is full, so back off.
      this.markDown(`cbd at ${this.socketPath} holds too many connections`, "too_many_connections", reply);
      this.socket?.destroy();
      this.socket = null;
      return;
    }
    // cbd answers on this connection: it is up, so the next outage starts
    // again from the shortest window.
    if (this.repliesOnSocket++ === 0) this.backoffMs = this.minBackoffMs;
    const call = this.inFlight.shift();
    if (!call) {
      this.breakConnection(`cbd at ${this.socketPath} sent a reply to no request`);
      return;
    }
    if (reply.id !== undefined && reply.id !== call.id) {
      this.breakConnection(`cbd at ${this.socketPath} answered id ${JSON.stringify(reply.id)} where id ${call.id} was next`, call);
      return;
    }
    if (call.settled) return; // it timed out; its reply still had to be consumed
    delete reply.id;
    if (reply.ok === true) {
      delete reply.ok;
      this.settle(call);
      call.resolve(reply);
    } else {
      const code = (error?.code ?? "bad_reply") as ErrorCode;
      this.settleWithError(call, new CbdError(code, error?.message ?? "cbd answered an error without a message", reply));
    }
  }

  /** The peer broke the protocol: every call in flight rejects with bad_reply and the socket closes. */
  private breakConnection(message: string, alsoFail?: Call): void {
    const calls = this.inFlight.drain();
    if (alsoFail) calls.unshift(alsoFail);
    for (const call of calls) this.settleWithError(call, new CbdError("bad_reply", message));
    this.socket?.destroy();
    this.socket = null;
    this.partialLine = "";
    this.phase = "idle";
  }

  private failAll(code: ClientErrorCode, message: string): void {
    const waiting = this.waitingForConnect;
    this.waitingForConnect = [];
    for (const call of [...this.inFlight.drain(), ...waiting]) this.settleWithError(call, new CbdError(code, message));
  }

  private settle(call: Call): void {
    call.settled = true;
    clearTimeout(call.timer);
    this.unsettled--;
    this.updateRef();
  }

  private settleWithError(call: Call, err: CbdError): void {
    if (call.settled) return;
    this.settle(call);
    call.reject(err);
  }

  // The socket keeps the process alive only while someone waits on it.
  private updateRef(): void {
    if (!this.socket) return;
    if (this.unsettled > 0) this.socket.ref();
    else this.socket.unref();
  }
}

function errorOf(reply: Record<string, unknown>): { code?: string; message?: string } | undefined {
  const error = reply.error;
  if (typeof error !== "object" || error === null) return undefined;
  const { code, message } = error as Record<string, unknown>;
  return {
    ...(typeof code === "string" ? { code } : {}),
    ...(typeof message === "string" ? { message } : {}),
  };
}
