// CbdClient: the whole cbd protocol from Node. CbdCircuitBreakerStore: the
// stoma gateway's CircuitBreakerStore on top of it, so that
//   store: new CbdCircuitBreakerStore("/run/cbd/cbd.sock")
// shares a gateway's circuits with every process on the host.
import { createConnection } from "node:net";
import { performance } from "node:perf_hooks";

import { Connection } from "./connection.js";
import { CbdError, CircuitOpenError } from "./errors.js";
import { CANNOT_DECIDE, Mirror, type MirrorStats } from "./mirror.js";
import { resolveClientOptions, type CbdClientOptions } from "./options.js";
import type {
  AcquireReply,
  BatchedReport,
  CircuitBreakerSnapshot,
  CircuitBreakerStore,
  CircuitReply,
  CircuitState,
  ListOptions,
  ListReply,
  Outcome,
  Policy,
  PolicyReply,
  ReportBatchReply,
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
  /** Exactly these keys (1 … 1000; protocol 9). */
  keys?: string[];
}

export interface ExecuteOptions {
  /**
   * When cbd cannot decide (unavailable, a timeout, a lost connection, a
   * backend outage), run the call anyway (true, the default: fail open, as
   * the reference gateway does) or reject with that error (false).
   */
  failOpen?: boolean;
  /**
   * Which errors of the call count as failures of the circuit (default:
   * every one); the others count as successes. The error is rethrown either way.
   */
  isFailure?: (error: unknown) => boolean;
}

/** execute() bound to one key and its options. */
export class CbdBreaker {
  constructor(
    readonly client: CbdClient,
    readonly key: string,
    readonly options: ExecuteOptions = {},
  ) {}

  execute<T>(fn: () => T | PromiseLike<T>): Promise<Awaited<T>> {
    return this.client.execute(this.key, fn, this.options);
  }
}

const NO_OPTIONS: ExecuteOptions = {};

export class CbdClient {
  readonly socketPath: string;
  private readonly connection: Connection;
  private readonly timeoutMs: number;
  /** Mirror mode's state; null when it is off. */
  private readonly mirror: Mirror | null;

  /** `socket` is the socket path, or options; none follows cbd's socket-path rule. */
  constructor(socket?: string | CbdClientOptions) {
    const resolved = resolveClientOptions(socket);
    this.socketPath = resolved.socket;
    this.timeoutMs = resolved.timeoutMs;
    this.connection = new Connection(resolved);
    this.mirror =
      resolved.mirror === null
        ? null
        : new Mirror(this.connection, resolved.socket, resolved.timeoutMs, resolved.minBackoffMs, resolved.maxBackoffMs, resolved.mirror);
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
  /** Up to 1000 reports in one request (protocol 9); each entry is applied as its own report. */
  reportBatch(reports: BatchedReport[]): Promise<ReportBatchReply> {
    return this.call({ op: "reportBatch", reports });
  }

  /**
   * The breaker: acquire, run `fn`, report its outcome with the generation
   * and permit cbd gave. Rejects with CircuitOpenError, without running fn,
   * when the circuit denies the call; otherwise resolves or rejects as fn
   * does (a report that fails does not change that). In mirror mode most
   * calls on a closed circuit are decided here and reported in batches
   * (docs/CLIENTS.md, "Mirror mode").
   */
  execute<T>(key: string, fn: () => T | PromiseLike<T>, options: ExecuteOptions = NO_OPTIONS): Promise<Awaited<T>> {
    const mirror = this.mirror;
    if (mirror !== null) {
      const entry = mirror.use(key);
      if (entry !== undefined) {
        if (entry.allowLocally) return mirror.runLocally(entry, fn, options.isFailure);
        if (entry.denyUntil !== 0) {
          const left = entry.denyUntil - performance.now();
          if (left > 0) {
            mirror.counts.deniedLocally++;
            return Promise.reject(new CircuitOpenError(key, Math.ceil(left)));
          }
        }
      }
    }
    return this.executeAskingCbd(key, fn, options);
  }

  /** execute() bound to a key. */
  breaker(key: string, options: ExecuteOptions = {}): CbdBreaker {
    return new CbdBreaker(this, key, options);
  }

  /** Mirror mode: sends every queued outcome and resolves once cbd has answered them (a no-op otherwise). */
  flush(): Promise<void> {
    return this.mirror === null ? Promise.resolve() : this.mirror.flush();
  }

  /** Mirror mode's counters; null when it is off. */
  mirrorStats(): MirrorStats | null {
    return this.mirror === null ? null : this.mirror.stats();
  }

  /** Today's breaker path (and the mirror's when it must ask): acquire, call, report. */
  private async executeAskingCbd<T>(key: string, fn: () => T | PromiseLike<T>, options: ExecuteOptions): Promise<Awaited<T>> {
    const mirror = this.mirror;
    const token = mirror === null ? -1 : mirror.coverToken(key);
    if (mirror !== null) mirror.counts.askedCbd++;
    let acquired: AcquireReply;
    try {
      acquired = await this.acquire(key);
    } catch (err) {
      if (options.failOpen !== false && err instanceof CbdError && CANNOT_DECIDE.has(err.code)) return await fn();
      throw err;
    }
    if (mirror !== null) mirror.learn(key, acquired, token);
    if (!acquired.allowed) throw new CircuitOpenError(key, acquired.retryAfterMs, acquired as unknown as Record<string, unknown>);
    const ticket: ReportOptions = acquired.permit === undefined ? { generation: acquired.generation } : { generation: acquired.generation, permit: acquired.permit };
    let result: Awaited<T>;
    try {
      result = await fn();
    } catch (err) {
      await this.reportQuietly(key, options.isFailure === undefined || options.isFailure(err) ? "failure" : "success", ticket);
      throw err;
    }
    await this.reportQuietly(key, "success", ticket);
    return result;
  }

  // The call has run and its result is the caller's: a report that fails
  // changes nothing for it (a probe's permit then ends with its lease).
  private async reportQuietly(key: string, outcome: Outcome, ticket: ReportOptions): Promise<void> {
    try {
      await this.report(key, outcome, ticket);
    } catch {
      // nothing to do: see above
    }
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

  /** Closes the connections at once; in mirror mode, outcomes not yet sent are dropped (see close()). */
  destroy(): void {
    this.mirror?.destroy();
    this.connection.destroy();
  }

  /** flush(), then destroy(). */
  async close(): Promise<void> {
    await this.flush();
    this.destroy();
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
    if (this.client.mirrorStats() !== null) {
      // The store keeps the reference semantics: every call goes to cbd.
      this.client.destroy();
      throw new TypeError("cbd-client: CbdCircuitBreakerStore does not use mirror mode; it serves CbdClient.execute()");
    }
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
    if (options.keys !== undefined) request.keys = options.keys;
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
