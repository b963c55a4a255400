// Mirror mode (issue #20): a local copy of each guarded key's circuit, kept
// current by a watch on exactly those keys, so that a call on a closed
// circuit is decided here and its outcome goes to cbd later, in a batch.
//
// What may be decided locally, and when cbd must be asked, is the spec's
// (docs/CLIENTS.md, "Mirror mode"); the safety of it rests on two rules kept here:
//
// - An entry's state is known only while a confirmed watch covers its key,
//   and only from a source that cannot have missed an event: an acquire
//   sent while the key was already covered (so cbd handled it after it
//   registered the watch), or an event of that watch. An acquire sent
//   before the covering watch was confirmed never seeds an entry: an event
//   could have fallen between the two. Each key in the confirmed watch
//   carries the number of the watch since which it has been covered without
//   a gap; an acquire reply seeds the entry only if that number is still
//   the one it was sent under.
// - Newer wins by generation: an event or reply whose generation is not
//   above (for a reply, not below) the entry's changes nothing, which is
//   also how events seen on two watches during a handover are told apart.
//
// When the watch is lost (cbd restarted, or it overflowed), every entry
// forgets its state and calls go back to asking cbd until a new watch with
// every key is confirmed; it is retried with backoff.
//
// Memory is bounded: at most MAX_WATCH_KEYS entries (the watch's limit),
// whose keys fit one watch line; outcomes waiting to be sent at most
// maxQueuedOutcomes (then the oldest are dropped and counted); at most
// MAX_BATCHES_IN_FLIGHT batches unanswered at once.
import { createConnection, type Socket } from "node:net";
import { performance } from "node:perf_hooks";

import type { Connection } from "./connection.js";
import { CbdError } from "./errors.js";
import type { ResolvedMirrorOptions } from "./options.js";
import type {
  AcquireReply,
  BatchedReport,
  CircuitState,
  ErrorCode,
  ForcePin,
  Outcome,
  ReportBatchReply,
  WatchEvent,
} from "./types.js";

// cbd watches at most 1000 keys on one connection (kMaxWatchKeys).
export const MAX_WATCH_KEYS = 1000;
// cbd's default line limit is 64 KiB; request lines stay under 60 KiB so
// that the envelope and any miscount fit in the rest.
const MAX_REQUEST_LINE_BYTES = 60 * 1024;
// `{"op":"reportBatch","reports":[` … `],"id":9007199254740991}` and the newline.
const BATCH_ENVELOPE_BYTES = 64;
// `{"op":"watch","keys":[` … `]}` and the newline.
const WATCH_ENVELOPE_BYTES = 32;
// Event lines are a few hundred bytes; a longer one means the peer is not cbd.
const MAX_EVENT_LINE_CHARS = 1024 * 1024;
// Batches unanswered at once. One, of at most batchSize reports: while it
// is out, outcomes wait in the (bounded) queue, so the rate of reports
// follows what cbd can apply, and cbd never holds more than batchSize
// reports of this client waiting for its backend. With Redis each report is
// a Redis operation: eight processes with a batch of 1000 out each kept
// Redis busier than --backend-timeout (1 s) on a loaded 2-core machine.
export const MAX_BATCHES_IN_FLIGHT = 1;
// A replaced watch stays open this long after its successor is confirmed,
// so that events cbd queued on it before the successor registered are still
// read (they are told apart by generation).
const WATCH_HANDOVER_MS = 100;
// The idle sweep runs this many times per idleDropMs; an entry unused for
// idleDropMs (up to a quarter more) is dropped.
const IDLE_SWEEPS = 4;

/** Codes with which an acquire means "cbd cannot decide now" (the call fails open or closed). */
export const CANNOT_DECIDE: ReadonlySet<string> = new Set<string>([
  "unavailable",
  "timeout",
  "connection_lost",
  "too_many_connections",
  "backend_unavailable",
  "storage_unavailable",
]);

/** Counters of one client's mirror (CbdClient.mirrorStats()). */
export interface MirrorStats {
  /** Keys in the mirror (at most 1000). */
  keys: number;
  /** Of those, the ones whose state is known (covered by the confirmed watch and seeded). */
  known: number;
  /** A watch covering the keys is confirmed. */
  watching: boolean;
  /** Calls allowed without asking cbd. */
  allowedLocally: number;
  /** Calls denied without asking cbd (a deny time learned from cbd had not passed). */
  deniedLocally: number;
  /** Calls that asked cbd (acquire). */
  askedCbd: number;
  /** Calls on keys the mirror could not hold (full, or a key cbd would refuse): always asked cbd. */
  notMirrored: number;
  /** Outcomes waiting to be sent. */
  queued: number;
  /** Outcomes cbd recorded. */
  applied: number;
  /** Outcomes cbd found stale (decided on a generation that had ended: they count nowhere). */
  stale: number;
  /** Outcomes cbd refused (each also given to onReportError). */
  refused: number;
  /** Outcomes whose batch got no answer (cbd unavailable, connection lost, timeout): may or may not be recorded. */
  undelivered: number;
  /** Outcomes dropped unsent: the queue was full, or the client was destroyed. */
  dropped: number;
  /** Event lines read from the watches. */
  events: number;
  /** Watches lost or overflowed after being confirmed. */
  watchLosses: number;
  /** Watches cbd refused or that failed before confirming (a cbd before protocol 9 refuses them). */
  watchFailures: number;
}

/** One mirrored key. */
export class MirrorEntry {
  /** The fields below hold the circuit's state as of `generation`. */
  known = false;
  /** Derived from the fields below (kept so that the hot path reads one field). */
  allowLocally = false;
  generation = 0;
  state: CircuitState = "closed";
  pin: "open" | "closed" | null = null;
  /** Epoch ms when the pin lifts, null for none or no TTL. */
  pinUntil: number | null = null;
  /** performance.now() before which calls are denied locally; 0 for none. */
  denyUntil = 0;
  /** The idle sweep's tick when last used. */
  lastUsed: number;

  /** This entry's report lines for `reportGeneration`, built once per generation (the hot path allocates nothing). */
  private reportGeneration = -1;
  private successReport = "";
  private failureReport = "";

  constructor(
    readonly key: string,
    /** The key as JSON. */
    readonly keyJson: string,
    /** Its bytes in a request line (quotes and escapes included). */
    readonly keyBytes: number,
    tick: number,
  ) {
    this.lastUsed = tick;
    this.nonAsciiBytes = keyBytes - keyJson.length;
  }

  /** What the key's UTF-8 adds to the length of a string holding it: a report's bytes are its length plus this. */
  readonly nonAsciiBytes: number;

  /** The JSON of one reportBatch entry for this key. */
  report(outcome: "success" | "failure", generation: number): string {
    if (generation !== this.reportGeneration) {
      if (generation !== this.generation) return reportJson(this.keyJson, outcome, generation);
      this.reportGeneration = generation;
      this.successReport = reportJson(this.keyJson, "success", generation);
      this.failureReport = reportJson(this.keyJson, "failure", generation);
    }
    return outcome === "success" ? this.successReport : this.failureReport;
  }

  /** Applies a circuit (from an acquire reply or an event) of a generation at least the entry's. */
  learn(generation: number, state: CircuitState, forced: ForcePin | undefined): void {
    if (!this.known || generation > this.generation) this.denyUntil = 0;
    this.known = true;
    this.generation = generation;
    this.state = state;
    this.pin = forced?.state ?? null;
    this.pinUntil = forced?.until ?? null;
    this.allowLocally = this.pin === "closed" || (this.pin === null && state === "closed");
  }

  forget(): void {
    this.known = false;
    this.allowLocally = false;
    this.denyUntil = 0;
  }
}

function reportJson(keyJson: string, outcome: Outcome, generation: number): string {
  return `{"key":${keyJson},"outcome":"${outcome}","generation":${generation}}`;
}

/**
 * Outcomes waiting to be sent (each as its reportBatch entry's JSON, with
 * its size in bytes), oldest first, at most `capacity`: a ring that grows by
 * doubling up to the capacity, so that steady batching allocates nothing.
 */
class OutcomeQueue {
  private reports: string[];
  private sizes: number[];
  private head = 0;
  length = 0;
  /** Outcomes that have left the queue, sent or dropped: flush() waits for this to pass a mark. */
  consumed = 0;

  constructor(private readonly capacity: number) {
    const initial = Math.min(16, capacity);
    this.reports = new Array<string>(initial).fill("");
    this.sizes = new Array<number>(initial).fill(0);
  }

  /** Queues one; when full, drops the oldest first and returns false. */
  push(report: string, bytes: number): boolean {
    let kept = true;
    if (this.length === this.reports.length) {
      if (this.length < this.capacity) {
        this.grow();
      } else {
        this.head = (this.head + 1) % this.reports.length;
        this.length--;
        this.consumed++;
        kept = false;
      }
    }
    let at = this.head + this.length;
    if (at >= this.reports.length) at -= this.reports.length;
    this.reports[at] = report;
    this.sizes[at] = bytes;
    this.length++;
    return kept;
  }

  /** Takes the oldest, at most maxCount of them and at most maxBytes of request text (at least one). */
  take(maxCount: number, maxBytes: number): string[] {
    const taken: string[] = [];
    let bytes = 0;
    while (this.length > 0 && taken.length < maxCount) {
      const size = this.sizes[this.head]!;
      if (taken.length > 0 && bytes + size > maxBytes) break;
      bytes += size;
      taken.push(this.reports[this.head]!);
      this.reports[this.head] = "";
      this.head = this.head + 1 === this.reports.length ? 0 : this.head + 1;
      this.length--;
    }
    this.consumed += taken.length;
    return taken;
  }

  /** Empties the queue; returns how many it held. */
  clear(): number {
    const n = this.length;
    this.consumed += n;
    this.reports.fill("");
    this.head = 0;
    this.length = 0;
    return n;
  }

  private grow(): void {
    const size = Math.min(this.capacity, this.reports.length * 2);
    const reports = new Array<string>(size).fill("");
    const sizes = new Array<number>(size).fill(0);
    for (let i = 0; i < this.length; i++) {
      const from = (this.head + i) % this.reports.length;
      reports[i] = this.reports[from]!;
      sizes[i] = this.sizes[from]!;
    }
    this.reports = reports;
    this.sizes = sizes;
    this.head = 0;
  }
}

interface WatchHandler {
  confirmed(link: WatchLink): void;
  event(link: WatchLink, event: WatchEvent): void;
  ended(link: WatchLink, error: CbdError): void;
}

/** One watch connection on a fixed key set. Its socket never keeps the process alive. */
class WatchLink {
  private readonly socket: Socket;
  private readonly confirmTimer: NodeJS.Timeout;
  private partialLine = "";
  private confirmedYet = false;
  private ended = false;

  constructor(
    socketPath: string,
    readonly keys: readonly string[],
    timeoutMs: number,
    private readonly handler: WatchHandler,
  ) {
    const socket = createConnection(socketPath);
    this.socket = socket;
    socket.unref();
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(JSON.stringify({ op: "watch", keys }) + "\n"));
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", (err) => this.end(new CbdError(this.confirmedYet ? "connection_lost" : "unavailable", `${socketPath}: ${err.message}`)));
    socket.on("close", () => this.end(new CbdError("connection_lost", `cbd at ${socketPath} closed the watch`)));
    this.confirmTimer = setTimeout(() => {
      this.end(new CbdError("timeout", `cbd at ${socketPath} did not confirm the watch within ${timeoutMs} ms`));
    }, timeoutMs);
    this.confirmTimer.unref();
  }

  /** Closes it without telling the handler. */
  close(): void {
    this.ended = true;
    clearTimeout(this.confirmTimer);
    this.socket.destroy();
  }

  private end(error: CbdError): void {
    if (this.ended) return;
    this.close();
    this.handler.ended(this, error);
  }

  private onData(chunk: string): void {
    let start = 0;
    for (;;) {
      if (this.ended) return;
      const newline = chunk.indexOf("\n", start);
      if (newline < 0) break;
      const line = this.partialLine + chunk.slice(start, newline);
      this.partialLine = "";
      start = newline + 1;
      this.onLine(line);
    }
    if (this.ended) return;
    this.partialLine += chunk.slice(start);
    if (this.partialLine.length > MAX_EVENT_LINE_CHARS) {
      this.end(new CbdError("bad_reply", `the watch sent a line longer than ${MAX_EVENT_LINE_CHARS} characters`));
    }
  }

  private onLine(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.end(new CbdError("bad_reply", "the watch sent a line that is not JSON"));
      return;
    }
    if (typeof message !== "object" || message === null) {
      this.end(new CbdError("bad_reply", "the watch sent a line that is not a JSON object"));
      return;
    }
    if (!this.confirmedYet) {
      if (message.ok !== true) {
        const error = (message.error ?? {}) as { code?: string; message?: string };
        this.end(new CbdError((error.code ?? "bad_reply") as ErrorCode, error.message ?? "the watch was refused", message));
        return;
      }
      const watching = message.watching as Record<string, unknown> | undefined;
      if (typeof watching !== "object" || watching === null || typeof watching.keys !== "number") {
        // A cbd before protocol 9 reads no `keys` and watches everything:
        // correct, but it has no reportBatch either, so mirror mode is off.
        this.end(new CbdError("bad_reply", `the watch was confirmed as ${JSON.stringify(message.watching)}, not {"keys":N}: cbd is older than protocol 9`, message));
        return;
      }
      this.confirmedYet = true;
      clearTimeout(this.confirmTimer);
      this.handler.confirmed(this);
      return;
    }
    this.handler.event(this, message as unknown as WatchEvent);
  }
}

export class Mirror implements WatchHandler {
  private readonly entries = new Map<string, MirrorEntry>();
  /** The keys' bytes in a watch line, summed over the entries. */
  private entryKeyBytes = 0;
  /** The confirmed watch's keys, each with the number of the watch since which it has been covered without a gap. */
  private covered = new Map<string, number>();
  private current: WatchLink | null = null;
  /** The watch being opened (at most one at a time); once confirmed it replaces `current`. */
  private pending: WatchLink | null = null;
  /** Replaced watches, open for WATCH_HANDOVER_MS more. */
  private readonly retiring = new Set<WatchLink>();
  private watchNumber = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryBackoffMs: number;

  private tick = 0;
  private sweepTimer: NodeJS.Timeout | null = null;

  private readonly queue: OutcomeQueue;
  private batchTimer: NodeJS.Timeout | null = null;
  /** The batch interval passed while MAX_BATCHES_IN_FLIGHT were out: send the rest when one is answered. */
  private batchDue = false;
  private readonly inFlight = new Set<Promise<void>>();
  private destroyed = false;

  readonly counts = {
    allowedLocally: 0,
    deniedLocally: 0,
    askedCbd: 0,
    notMirrored: 0,
    applied: 0,
    stale: 0,
    refused: 0,
    undelivered: 0,
    dropped: 0,
    events: 0,
    watchLosses: 0,
    watchFailures: 0,
  };

  constructor(
    private readonly connection: Connection,
    private readonly socketPath: string,
    private readonly timeoutMs: number,
    private readonly minBackoffMs: number,
    private readonly maxBackoffMs: number,
    private readonly options: ResolvedMirrorOptions,
  ) {
    this.retryBackoffMs = minBackoffMs;
    this.queue = new OutcomeQueue(options.maxQueuedOutcomes);
  }

  // --- deciding ---------------------------------------------------------------

  /** The key's entry, made if there is room (and the watch asked to cover it); undefined if it cannot be mirrored. */
  use(key: string): MirrorEntry | undefined {
    const entry = this.entries.get(key) ?? this.add(key);
    if (entry !== undefined) entry.lastUsed = this.tick;
    return entry;
  }

  /** Rule 2: runs the call, and queues its outcome under the generation it was allowed in. */
  async runLocally<T>(entry: MirrorEntry, fn: () => T | PromiseLike<T>, isFailure: ((error: unknown) => boolean) | undefined): Promise<Awaited<T>> {
    const generation = entry.generation;
    this.counts.allowedLocally++;
    let result: Awaited<T>;
    try {
      result = await fn();
    } catch (err) {
      this.enqueue(entry, isFailure === undefined || isFailure(err) ? "failure" : "success", generation);
      throw err;
    }
    this.enqueue(entry, "success", generation);
    return result;
  }

  /** What to hand learn() with an acquire's reply: the number of the watch covering the key now, or -1. */
  coverToken(key: string): number {
    return this.covered.get(key) ?? -1;
  }

  /**
   * Rules 1 and 4: an acquire's reply updates the entry if the key has been
   * covered since before the acquire was sent and the reply is not older
   * than the entry; a denial with retryAfterMs sets the local deny time.
   */
  learn(key: string, reply: AcquireReply, token: number): void {
    const entry = this.entries.get(key);
    if (entry === undefined || token < 0 || this.covered.get(key) !== token) return;
    if (entry.known && reply.generation < entry.generation) return;
    entry.learn(reply.generation, reply.snapshot.state, reply.forced);
    if (!reply.allowed && typeof reply.retryAfterMs === "number") {
      entry.denyUntil = performance.now() + reply.retryAfterMs;
    }
  }

  stats(): MirrorStats {
    let known = 0;
    for (const entry of this.entries.values()) if (entry.known) known++;
    return {
      keys: this.entries.size,
      known,
      watching: this.current !== null,
      ...this.counts,
      queued: this.queue.length,
    };
  }

  // --- batching ---------------------------------------------------------------

  private enqueue(entry: MirrorEntry, outcome: "success" | "failure", generation: number): void {
    if (this.destroyed) {
      this.counts.dropped++;
      return;
    }
    const report = entry.report(outcome, generation);
    if (!this.queue.push(report, report.length + entry.nonAsciiBytes)) this.counts.dropped++;
    if (this.queue.length >= this.options.batchSize) this.pump();
    else if (this.batchTimer === null) this.startBatchTimer();
  }

  private startBatchTimer(): void {
    // Ref'd: outcomes queued are sent before the process exits.
    this.batchTimer = setTimeout(() => {
      this.batchTimer = null;
      this.batchDue = true;
      this.pump();
    }, this.options.batchIntervalMs);
  }

  /** Sends what is due, as far as MAX_BATCHES_IN_FLIGHT allows. */
  private pump(): void {
    while (this.inFlight.size < MAX_BATCHES_IN_FLIGHT && this.queue.length > 0) {
      if (this.queue.length < this.options.batchSize && !this.batchDue) break;
      this.sendBatch();
    }
    if (this.queue.length === 0) {
      this.batchDue = false;
      if (this.batchTimer !== null) {
        clearTimeout(this.batchTimer);
        this.batchTimer = null;
      }
    } else if (!this.batchDue && this.batchTimer === null) {
      this.startBatchTimer();
    }
  }

  private sendBatch(): void {
    const reports = this.queue.take(this.options.batchSize, MAX_REQUEST_LINE_BYTES - BATCH_ENVELOPE_BYTES);
    const done: Promise<void> = this.connection
      .requestJson(`{"op":"reportBatch","reports":[${reports.join(",")}]}`)
      .then(
        (reply) => this.answered(reports, reply as unknown as ReportBatchReply),
        (err: CbdError) => {
          this.counts.undelivered += reports.length;
          this.tell(err, reports);
        },
      )
      .then(() => {
        this.inFlight.delete(done);
        if (!this.destroyed) this.pump();
      });
    this.inFlight.add(done);
  }

  private answered(reports: string[], reply: ReportBatchReply): void {
    const errors = Array.isArray(reply.errors) ? reply.errors : [];
    this.counts.applied += typeof reply.applied === "number" ? reply.applied : 0;
    this.counts.stale += typeof reply.stale === "number" ? reply.stale : 0;
    this.counts.refused += errors.length;
    for (const error of errors) {
      const report = reports[error.index];
      this.tell(new CbdError(error.code, error.message ?? "refused", error as unknown as Record<string, unknown>), report ? [report] : []);
    }
  }

  private tell(error: CbdError, reports: string[]): void {
    const callback = this.options.onReportError;
    if (callback === null) return;
    try {
      callback(error, reports.map((json) => JSON.parse(json) as BatchedReport));
    } catch (thrown) {
      // The callback's own bug: surfaced as an uncaught exception would be
      // from any event handler, not swallowed and not thrown at a caller.
      queueMicrotask(() => {
        throw thrown;
      });
    }
  }

  /** Sends everything queued now; resolves once cbd has answered it all (errors are counted, not thrown). */
  async flush(): Promise<void> {
    const mark = this.queue.consumed + this.queue.length;
    // What is queued goes now, not batchSize at a time after the interval.
    this.batchDue = true;
    this.pump();
    while (this.queue.consumed < mark && this.inFlight.size > 0) {
      await Promise.race(this.inFlight); // its answer sends the next batch
    }
    await Promise.all([...this.inFlight]);
  }

  // --- the entries and the watch ---------------------------------------------------

  private add(key: string): MirrorEntry | undefined {
    if (this.destroyed || !mirrorable(key)) {
      this.counts.notMirrored++;
      return undefined;
    }
    const keyJson = JSON.stringify(key);
    const keyBytes = Buffer.byteLength(keyJson);
    if (
      this.entries.size >= MAX_WATCH_KEYS ||
      this.entryKeyBytes + keyBytes + 1 > MAX_REQUEST_LINE_BYTES - WATCH_ENVELOPE_BYTES
    ) {
      this.counts.notMirrored++;
      return undefined;
    }
    const entry = new MirrorEntry(key, keyJson, keyBytes, this.tick);
    this.entries.set(key, entry);
    this.entryKeyBytes += keyBytes + 1;
    if (this.sweepTimer === null) {
      this.sweepTimer = setInterval(() => this.sweep(), Math.max(1, Math.floor(this.options.idleDropMs / IDLE_SWEEPS)));
      this.sweepTimer.unref();
    }
    if (!this.covered.has(key)) this.rebuild();
    return entry;
  }

  /** Opens a watch on every key, unless one is being opened (its confirmation checks again) or a retry waits. */
  private rebuild(): void {
    if (this.destroyed || this.pending !== null || this.retryTimer !== null) return;
    if (this.entries.size === 0) return;
    this.pending = new WatchLink(this.socketPath, [...this.entries.keys()], this.timeoutMs, this);
  }

  confirmed(link: WatchLink): void {
    if (link !== this.pending) return;
    this.pending = null;
    this.retryBackoffMs = this.minBackoffMs;
    const number = ++this.watchNumber;
    const covered = new Map<string, number>();
    for (const key of link.keys) covered.set(key, this.covered.get(key) ?? number);
    for (const entry of this.entries.values()) if (!covered.has(entry.key)) entry.forget();
    this.covered = covered;
    const replaced = this.current;
    this.current = link;
    if (replaced !== null) {
      this.retiring.add(replaced);
      setTimeout(() => {
        this.retiring.delete(replaced);
        replaced.close();
      }, WATCH_HANDOVER_MS).unref();
    }
    for (const key of this.entries.keys()) {
      if (!covered.has(key)) {
        this.rebuild();
        break;
      }
    }
  }

  event(link: WatchLink, event: WatchEvent): void {
    this.counts.events++;
    if (event.event === "overflow") {
      // cbd disconnects an overflowed watcher; it lost events, so it is lost.
      link.close();
      this.lost(link, true);
      return;
    }
    const entry = this.entries.get(event.key);
    if (entry === undefined || !entry.known) return;
    if (event.event === "reset") {
      entry.forget(); // the next call asks cbd and seeds it again
    } else if (event.event === "transition" && event.generation > entry.generation) {
      entry.learn(event.generation, event.to, event.forced);
    }
  }

  ended(link: WatchLink): void {
    this.lost(link, false);
  }

  private lost(link: WatchLink, overflowed: boolean): void {
    if (this.destroyed) return;
    if (link === this.pending) {
      this.pending = null;
      this.counts.watchFailures++;
      this.scheduleRetry();
      return;
    }
    if (link === this.current) {
      this.current = null;
      this.counts.watchLosses++;
      this.forgetAll();
      if (this.pending === null) this.scheduleRetry();
      return;
    }
    if (this.retiring.delete(link) && overflowed) {
      // The replaced watch lost events from before its successor registered:
      // what was learned since may rest on them. The successor covers every
      // change from now on, so only the states go, under a new watch number.
      this.counts.watchLosses++;
      const number = ++this.watchNumber;
      for (const key of this.covered.keys()) this.covered.set(key, number);
      for (const entry of this.entries.values()) entry.forget();
    }
  }

  /** The fallback: every entry forgets its state; calls ask cbd until a new watch is confirmed. */
  private forgetAll(): void {
    this.covered = new Map();
    for (const entry of this.entries.values()) entry.forget();
    for (const link of this.retiring) link.close();
    this.retiring.clear();
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== null || this.entries.size === 0) return;
    const delay = this.retryBackoffMs;
    this.retryBackoffMs = Math.min(this.retryBackoffMs * 2, this.maxBackoffMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.rebuild();
    }, delay);
    this.retryTimer.unref();
  }

  /** Drops the entries unused for idleDropMs; their keys leave the watch at its next rebuild. */
  private sweep(): void {
    this.tick++;
    for (const entry of this.entries.values()) {
      if (this.tick - entry.lastUsed > IDLE_SWEEPS) {
        this.entries.delete(entry.key);
        this.entryKeyBytes -= entry.keyBytes + 1;
      }
    }
    if (this.entries.size === 0) this.stopWatching();
  }

  /** No key left: no watch, no timers. */
  private stopWatching(): void {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.pending?.close();
    this.pending = null;
    this.current?.close();
    this.current = null;
    this.forgetAll();
  }

  /** Closes the watch; outcomes still queued are dropped (close() flushes first). */
  destroy(): void {
    if (this.destroyed) return;
    this.stopWatching();
    this.destroyed = true;
    if (this.batchTimer !== null) clearTimeout(this.batchTimer);
    this.batchTimer = null;
    this.counts.dropped += this.queue.clear();
    this.entries.clear();
  }
}

/**
 * A key cbd accepts (1 … 1024 bytes, no control character) that survives
 * JSON: one bad key would make cbd refuse the whole watch line, so such a
 * key is never mirrored (its calls ask cbd, which refuses them).
 */
const CONTROL_OR_LONE_SURROGATE = /[\u0000-\u001f\u007f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function mirrorable(key: string): boolean {
  if (typeof key !== "string" || key.length === 0 || key.length > 1024) return false;
  if (CONTROL_OR_LONE_SURROGATE.test(key)) return false;
  return Buffer.byteLength(key) <= 1024;
}
