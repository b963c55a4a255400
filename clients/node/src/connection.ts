// One pipelined connection to cbd. Requests carry an integer id and are
// matched to replies by it; the connection opens lazily, and after it is lost
// it is opened again with exponential backoff while requests wait (each
// within its own timeout). The socket holds the process open only while
// requests are in flight.
import { createConnection, type Socket } from "node:net";

import { CbdError } from "./errors.js";
import type { Request } from "./types.js";

export interface ConnectionOptions {
  /** Socket path (see resolveSocketPath). */
  socket: string;
  /** Per-request timeout in ms (default 5000). */
  timeoutMs?: number;
  /** First reconnect delay in ms (default 50), doubled up to maxBackoffMs. */
  minBackoffMs?: number;
  /** Longest reconnect delay in ms (default 2000). */
  maxBackoffMs?: number;
}

interface Pending {
  line: string;
  resolve: (reply: Record<string, unknown>) => void;
  reject: (err: CbdError) => void;
  timer: NodeJS.Timeout;
  sent: boolean;
}

// Replies are small; a longer line means the peer is not cbd.
const MAX_REPLY_BYTES = 16 * 1024 * 1024;

export class Connection {
  readonly socketPath: string;
  private readonly timeoutMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  private socket: Socket | null = null;
  private connected = false;
  private connecting = false;
  private destroyed = false;
  private backoffMs: number;
  private retryTimer: NodeJS.Timeout | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buffer = "";

  constructor(options: ConnectionOptions) {
    this.socketPath = options.socket;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.minBackoffMs = options.minBackoffMs ?? 50;
    this.maxBackoffMs = options.maxBackoffMs ?? 2000;
    this.backoffMs = this.minBackoffMs;
  }

  /** Sends one request; resolves with the reply, rejects with CbdError. */
  request(body: Request, timeoutMs = this.timeoutMs): Promise<Record<string, unknown>> {
    if (this.destroyed) return Promise.reject(new CbdError("destroyed", "the client was destroyed"));
    const id = this.nextId++;
    const line = JSON.stringify({ ...body, id }) + "\n";
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.updateRef();
        reject(new CbdError("timeout", `no reply from cbd at ${this.socketPath} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { line, resolve, reject, timer, sent: false });
      this.updateRef();
      if (this.connected) this.flush();
      else this.ensureConnecting();
    });
  }

  /** Closes the connection; pending requests reject with "destroyed". */
  destroy(): void {
    this.destroyed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.failPending("destroyed", "the client was destroyed", () => true);
    this.socket?.destroy();
    this.socket = null;
  }

  private ensureConnecting(): void {
    if (this.connecting || this.connected || this.retryTimer || this.destroyed) return;
    this.connecting = true;
    const socket = createConnection(this.socketPath);
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("connect", () => {
      this.connecting = false;
      this.connected = true;
      this.backoffMs = this.minBackoffMs;
      this.updateRef();
      this.flush();
    });
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", () => {
      /* "close" follows and handles it */
    });
    socket.on("close", () => this.onClose(socket));
  }

  private onClose(socket: Socket): void {
    if (this.socket !== socket) return;
    const wasConnected = this.connected;
    this.socket = null;
    this.connected = false;
    this.connecting = false;
    this.buffer = "";
    // A request already sent may or may not have been applied: say so. One
    // not yet sent waits for the next connection.
    this.failPending("connection_lost", `lost the connection to cbd at ${this.socketPath}`, (p) => p.sent);
    if (this.destroyed || this.pending.size === 0) {
      if (!wasConnected) this.backoffMs = Math.min(this.backoffMs * 2, this.maxBackoffMs);
      return;
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.ensureConnecting();
    }, this.backoffMs);
    this.retryTimer.unref();
    this.backoffMs = Math.min(this.backoffMs * 2, this.maxBackoffMs);
  }

  private flush(): void {
    if (!this.socket || !this.connected) return;
    let batch = "";
    for (const p of this.pending.values()) {
      if (p.sent) continue;
      p.sent = true;
      batch += p.line;
    }
    if (batch) this.socket.write(batch);
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, newline);
      this.buffer = this.buffer.slice(newline + 1);
      this.onLine(line);
    }
    if (this.buffer.length > MAX_REPLY_BYTES) {
      this.socket?.destroy();
    }
  }

  private onLine(line: string): void {
    let reply: Record<string, unknown>;
    try {
      reply = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // not ours to answer; the request times out
    }
    if (reply.id === undefined && reply.ok === false) {
      // An error for no request in particular (too_many_connections): the
      // daemon closes next; requests wait for the next connection.
      const err = reply.error as { code?: string; message?: string } | undefined;
      if (err?.code === "too_many_connections") {
        for (const p of this.pending.values()) p.sent = false;
      }
      return;
    }
    const id = typeof reply.id === "number" ? reply.id : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    this.updateRef();
    delete reply.id;
    if (reply.ok === true) {
      delete reply.ok;
      p.resolve(reply);
    } else {
      const err = (reply.error ?? {}) as { code?: string; message?: string };
      p.reject(new CbdError((err.code ?? "bad_reply") as CbdError["code"], err.message ?? "cbd answered an error", reply));
    }
  }

  private failPending(code: "connection_lost" | "destroyed", message: string, which: (p: Pending) => boolean): void {
    for (const [id, p] of this.pending) {
      if (!which(p)) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new CbdError(code, message));
    }
    this.updateRef();
  }

  // The socket keeps the process alive only while someone waits on it.
  private updateRef(): void {
    if (!this.socket) return;
    if (this.pending.size > 0) this.socket.ref();
    else this.socket.unref();
  }
}
