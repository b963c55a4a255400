// CbdClient: the whole cbd protocol from Node. CbdCircuitBreakerStore: the
// stoma gateway's CircuitBreakerStore on top of it, so that
//   store: new CbdCircuitBreakerStore("/run/cbd/cbd.sock")
// shares a gateway's circuits with every process on the host.
import { createConnection } from "node:net";

import { Connection } from "./connection.js";
import { CbdError } from "./errors.js";
import { resolveClientOptions, type CbdClientOptions } from "./options.js";
import type {
  AcquireReply,
  CircuitBreakerSnapshot,
  CircuitBreakerStore,
  CircuitReply,
  CircuitState,
  ListOptions,
  ListReply,
  Outcome,
  Policy,
  PolicyReply,
  ReportReply,
  StatsReply,
  WatchEvent,
} from "./types.js";

export interface ReportOptions {
  generation?: number;
  permit?: string;
}

export interface ForceOptions {
  ttlMs?: number;
  reason?: string;
}

export interface TransitionOptions {
  expect?: CircuitState;
  expectGeneration?: number;
}

export interface WatchOptions {
  key?: string;
  prefix?: string;
}

export class CbdClient {
  readonly socketPath: string;
  private readonly connection: Connection;
  private readonly timeoutMs: number;

  /** `socket` is the socket path, or options; none follows cbd's socket-path rule. */
  constructor(socket?: string | CbdClientOptions) {
    const resolved = resolveClientOptions(socket);
    this.socketPath = resolved.socket;
    this.timeoutMs = resolved.timeoutMs;
    this.connection = new Connection(resolved);
  }

  // --- the reference store --------------------------------------------------
  get(key: string): Promise<CircuitReply> {
    return this.call({ op: "get", key });
  }
  success(key: string): Promise<CircuitReply> {
    return this.call({ op: "success", key });
  }
  failure(key: string): Promise<CircuitReply> {
    return this.call({ op: "failure", key });
  }
  transition(key: string, to: CircuitState, options: TransitionOptions = {}): Promise<CircuitReply> {
    return this.call({ op: "transition", key, to, ...options });
  }
  async reset(key: string): Promise<boolean> {
    const reply = await this.call<{ removed: boolean }>({ op: "reset", key });
    return reply.removed;
  }
  ping(): Promise<{ version: string; protocol: number }> {
    return this.call({ op: "ping" });
  }

  // --- the breaker ------------------------------------------------------------
  acquire(key: string): Promise<AcquireReply> {
    return this.call({ op: "acquire", key });
  }
  report(key: string, outcome: Outcome, options: ReportOptions = {}): Promise<ReportReply> {
    return this.call({ op: "report", key, outcome, ...options });
  }
  force(key: string, state: "open" | "closed", options: ForceOptions = {}): Promise<CircuitReply> {
    return this.call({ op: "force", key, state, ...options });
  }
  unforce(key: string): Promise<CircuitReply> {
    return this.call({ op: "unforce", key });
  }
  /** Sets the key's own policy values; a null drops one, `null` for all drops the override. */
  configure(key: string, policy: Partial<Record<keyof Policy, number | null>> | null): Promise<PolicyReply> {
    return this.call({ op: "configure", key, policy });
  }
  policy(key: string): Promise<PolicyReply> {
    return this.call({ op: "policy", key });
  }

  // --- observing --------------------------------------------------------------
  list(options: ListOptions = {}): Promise<ListReply> {
    return this.call({ op: "list", ...options });
  }
  /** Every circuit, walking all pages. */
  async *listAll(options: Omit<ListOptions, "after"> = {}): AsyncGenerator<ListReply["circuits"][number]> {
    let after: string | undefined;
    for (;;) {
      const page = await this.list({ ...options, ...(after === undefined ? {} : { after }) });
      yield* page.circuits;
      if (page.next === null) return;
      after = page.next;
    }
  }
  stats(): Promise<StatsReply> {
    return this.call({ op: "stats" });
  }
  async metrics(perCircuit = false): Promise<string> {
    const reply = await this.call<{ text: string }>({ op: "metrics", perCircuit });
    return reply.text;
  }

  /**
   * Events as they happen, on a connection of their own. Stop with `break`
   * (or the iterator's return()); an overflow event ends the stream.
   */
  watch(options: WatchOptions = {}): AsyncIterableIterator<WatchEvent> {
    return watchEvents(this.socketPath, options, this.timeoutMs);
  }

  destroy(): void {
    this.connection.destroy();
  }

  private call<T>(request: { op: string; [field: string]: unknown }): Promise<T> {
    return this.connection.request(request) as Promise<T>;
  }
}

/** The stoma gateway's CircuitBreakerStore, backed by cbd. */
export class CbdCircuitBreakerStore implements CircuitBreakerStore {
  readonly client: CbdClient;

  /** `socket` is the socket path, or options; none follows cbd's socket-path rule. */
  constructor(socket?: string | CbdClientOptions) {
    this.client = new CbdClient(socket);
  }

  async getState(key: string): Promise<CircuitBreakerSnapshot> {
    return (await this.client.get(key)).snapshot;
  }
  async recordSuccess(key: string): Promise<CircuitBreakerSnapshot> {
    return (await this.client.success(key)).snapshot;
  }
  async recordFailure(key: string): Promise<CircuitBreakerSnapshot> {
    return (await this.client.failure(key)).snapshot;
  }
  async transition(key: string, to: CircuitState): Promise<CircuitBreakerSnapshot> {
    return (await this.client.transition(key, to)).snapshot;
  }
  async reset(key: string): Promise<void> {
    await this.client.reset(key);
  }
  destroy(): void {
    this.client.destroy();
  }
}

function watchEvents(socketPath: string, options: WatchOptions, timeoutMs: number): AsyncIterableIterator<WatchEvent> {
  const socket = createConnection(socketPath);
  socket.setEncoding("utf8");
  const queue: WatchEvent[] = [];
  let waiting: { resolve: (r: IteratorResult<WatchEvent>) => void; reject: (e: Error) => void } | null = null;
  let failure: Error | null = null;
  let ended = false;
  let confirmed = false;
  let buffer = "";

  const confirmTimer = setTimeout(() => {
    finish(new CbdError("timeout", `cbd at ${socketPath} did not confirm the watch within ${timeoutMs} ms`));
  }, timeoutMs);

  function finish(err: Error | null): void {
    if (ended) return;
    ended = true;
    clearTimeout(confirmTimer);
    failure = err;
    socket.destroy();
    if (waiting) {
      const w = waiting;
      waiting = null;
      if (err) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
  }

  function push(event: WatchEvent): void {
    if (waiting) {
      const w = waiting;
      waiting = null;
      w.resolve({ value: event, done: false });
    } else {
      queue.push(event);
    }
  }

  socket.on("connect", () => {
    const request: Record<string, unknown> = { op: "watch" };
    if (options.key !== undefined) request.key = options.key;
    if (options.prefix !== undefined) request.prefix = options.prefix;
    socket.write(JSON.stringify(request) + "\n");
  });
  socket.on("data", (chunk: string) => {
    buffer += chunk;
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        finish(new CbdError("bad_reply", "cbd sent a line that is not JSON"));
        return;
      }
      if (!confirmed) {
        confirmed = true;
        clearTimeout(confirmTimer);
        if (message.ok !== true) {
          const err = (message.error ?? {}) as { code?: string; message?: string };
          finish(new CbdError((err.code ?? "bad_reply") as CbdError["code"], err.message ?? "watch refused", message));
          return;
        }
        continue;
      }
      push(message as unknown as WatchEvent);
      if (message.event === "overflow") {
        finish(null);
        return;
      }
    }
  });
  socket.on("error", (err) => finish(new CbdError(confirmed ? "connection_lost" : "unavailable", `${socketPath}: ${err.message}`)));
  socket.on("close", () => finish(confirmed ? null : new CbdError("unavailable", `cbd at ${socketPath} closed the watch`)));

  const iterator: AsyncIterableIterator<WatchEvent> = {
    next(): Promise<IteratorResult<WatchEvent>> {
      const event = queue.shift();
      if (event) return Promise.resolve({ value: event, done: false });
      if (ended) return failure ? Promise.reject(failure) : Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve, reject) => {
        waiting = { resolve, reject };
      });
    },
    return(): Promise<IteratorResult<WatchEvent>> {
      finish(null);
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
