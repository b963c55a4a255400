// Mirror mode's rules, one by one, against a scripted cbd (FakeCbd below)
// that can hold its replies and send any event: when an acquire may seed an
// entry, what events do, the deny time, probes, batching and its bounds,
// errors, the fallback when the watch is lost, idle keys, and an old cbd.
import * as assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";

import {
  CbdClient,
  CbdError,
  CircuitOpenError,
  type BatchedReport,
  type CbdClientOptions,
  type CircuitState,
  type MirrorStats,
} from "../src/index.js";
import { MAX_BATCHES_IN_FLIGHT } from "../src/mirror.js";
import { waitFor } from "./helpers.js";

type Message = Record<string, unknown>;

interface FakeCircuit {
  state: CircuitState;
  generation: number;
  forced?: { state: "open" | "closed"; until: number | null; reason: string; by: { uid: number; pid: number } };
  retryAfterMs?: number;
}

const snapshot = (state: CircuitState) => ({ state, failureCount: 0, successCount: 0, lastFailureTime: 0, lastStateChange: 1 });

/** A cbd that answers acquire, report, reportBatch and watch by script. */
class FakeCbd {
  readonly socket: string;
  private readonly dir: string;
  private readonly server: Server;
  readonly circuits = new Map<string, FakeCircuit>();
  /** Every request but watches, as they arrive. */
  readonly requests: Message[] = [];
  readonly batches: BatchedReport[][] = [];
  readonly batchLineBytes: number[] = [];
  readonly watchRequests: string[][] = [];
  private readonly watches: { keys: Set<string>; conn: Socket }[] = [];
  /** Answer watches as protocol 8 did: it read no `keys`. */
  oldProtocol = false;
  holdWatches = false;
  private heldWatches: (() => void)[] = [];
  /** Hold the replies to acquire and reportBatch until release(). */
  holdReplies = false;
  private held: (() => void)[] = [];
  batchAnswer: (reports: BatchedReport[]) => Message | null = (reports) => ({ applied: reports.length, stale: 0, errors: [] });
  private permits = 0;
  private readonly conns = new Set<Socket>();

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "cbd-node-mirror-"));
    this.socket = join(this.dir, "fake.sock");
    this.server = createServer((conn) => this.serve(conn));
  }

  static async start(): Promise<FakeCbd> {
    const fake = new FakeCbd();
    await new Promise<void>((res) => fake.server.listen(fake.socket, res));
    return fake;
  }

  circuit(key: string): FakeCircuit {
    let c = this.circuits.get(key);
    if (!c) {
      c = { state: "closed", generation: 1 };
      this.circuits.set(key, c);
    }
    return c;
  }

  /** Sends an event to every confirmed watch of its key (overflow: to all, which then close). */
  emit(event: Message): void {
    for (const w of this.watches) {
      if (event.event === "overflow") {
        w.conn.end(JSON.stringify(event) + "\n");
      } else if (w.keys.has(event.key as string)) {
        w.conn.write(JSON.stringify(event) + "\n");
      }
    }
    if (event.event === "overflow") this.watches.length = 0;
  }

  /** A transition event that also changes the fake's circuit. */
  transition(key: string, to: CircuitState, generation: number, forced?: FakeCircuit["forced"]): void {
    const c = this.circuit(key);
    const from = c.state;
    Object.assign(c, { state: to, generation, forced });
    this.emit({ event: "transition", key, from, to, at: Date.now(), cause: "manual", generation, snapshot: snapshot(to), ...(forced ? { forced } : {}) });
  }

  dropWatches(): void {
    for (const w of this.watches) w.conn.destroy();
    this.watches.length = 0;
  }

  get confirmedWatches(): number {
    return this.watches.length;
  }

  releaseWatches(): void {
    this.holdWatches = false;
    for (const r of this.heldWatches.splice(0)) r();
  }

  release(): void {
    this.holdReplies = false;
    for (const r of this.held.splice(0)) r();
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((res) => this.server.close(() => res()));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private serve(conn: Socket): void {
    this.conns.add(conn);
    conn.on("close", () => this.conns.delete(conn));
    conn.on("error", () => undefined);
    conn.setEncoding("utf8");
    let buffer = "";
    // Replies go out in request order, as cbd's do, even when one is held.
    let chain: Promise<unknown> = Promise.resolve();
    conn.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const reply = this.answer(line, conn);
        chain = chain.then(() => reply).then((out) => {
          if (out === null) conn.destroy();
          else if (out !== undefined && !conn.destroyed) conn.write(out + "\n");
        });
      }
    });
  }

  private later(make: () => string | null): Promise<string | null> {
    if (!this.holdReplies) return Promise.resolve(make());
    return new Promise((res) => this.held.push(() => res(make())));
  }

  private answer(line: string, conn: Socket): Promise<string | null | undefined> {
    const request = JSON.parse(line) as Message;
    const id = request.id;
    const ok = (body: Message) => JSON.stringify({ ok: true, id, ...body });
    if (request.op === "watch") {
      const keys = request.keys as string[];
      this.watchRequests.push(keys);
      const confirm = () => {
        if (this.oldProtocol) return JSON.stringify({ ok: true, watching: "all" });
        const watch = { keys: new Set(keys), conn };
        this.watches.push(watch);
        conn.on("close", () => {
          const at = this.watches.indexOf(watch);
          if (at >= 0) this.watches.splice(at, 1);
        });
        return JSON.stringify({ ok: true, watching: { keys: new Set(keys).size } });
      };
      if (!this.holdWatches) return Promise.resolve(confirm());
      return new Promise((res) => this.heldWatches.push(() => res(confirm())));
    }
    this.requests.push(request);
    const key = request.key as string;
    switch (request.op) {
      case "acquire":
        return this.later(() => {
          const c = this.circuit(key);
          const circuit = { snapshot: snapshot(c.state), generation: c.generation, ...(c.forced ? { forced: c.forced } : {}) };
          if (c.forced?.state === "open" || (c.forced === undefined && c.state === "open")) {
            return ok({ allowed: false, retryAfterMs: c.retryAfterMs ?? 10_000, ...circuit });
          }
          if (c.state === "half-open" && c.forced === undefined) return ok({ allowed: true, permit: `p-${++this.permits}`, ...circuit });
          return ok({ allowed: true, ...circuit });
        });
      case "report":
        return Promise.resolve(ok({ snapshot: snapshot(this.circuit(key).state), generation: this.circuit(key).generation }));
      case "reportBatch": {
        const reports = request.reports as BatchedReport[];
        this.batches.push(reports);
        this.batchLineBytes.push(Buffer.byteLength(line));
        return this.later(() => {
          const body = this.batchAnswer(reports);
          return body === null ? null : ok(body);
        });
      }
      default:
        return Promise.resolve(JSON.stringify({ ok: false, id, error: { code: "unknown_op", message: String(request.op) } }));
    }
  }
}

const until = (pred: () => boolean) => waitFor(pred, 20_000);
const run = () => "ran";

describe("mirror mode's rules (against a scripted cbd)", () => {
  let fake: FakeCbd;
  let client: CbdClient;
  const open = async (options: Omit<CbdClientOptions, "socket" | "mirror"> = {}) => {
    fake = await FakeCbd.start();
    client = new CbdClient({ socket: fake.socket, mirror: true, ...options });
    return client;
  };
  const stats = () => client.mirrorStats()!;
  /** Calls the key until one call on it is decided locally (it is covered, seeded and closed). */
  const seed = async (key: string) => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const before = stats().allowedLocally;
      await client.execute(key, run);
      if (stats().allowedLocally > before) return;
      if (Date.now() > deadline) throw new Error(`${key} was never decided locally`);
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  afterEach(async () => {
    client?.destroy();
    await fake?.close();
  });

  it("seeds an entry only from an acquire sent after the watch was confirmed", async () => {
    await open();
    fake.holdWatches = true;
    assert.equal(await client.execute("a", run), "ran");
    assert.equal(await client.execute("a", run), "ran");
    assert.equal(fake.watchRequests.length, 1, "one watch for the key, opened by the first call");
    // Sent before the watch is confirmed, answered after: must not seed.
    fake.holdReplies = true;
    const early = client.execute("a", run);
    await until(() => fake.requests.filter((r) => r.op === "acquire").length === 3);
    fake.releaseWatches();
    await until(() => stats().watching);
    fake.release();
    assert.equal(await early, "ran");
    assert.equal(stats().known, 0, "an acquire sent before the watch was confirmed seeded the entry");
    assert.equal(stats().allowedLocally, 0);
    // The next one is sent under the confirmed watch: it seeds.
    assert.equal(await client.execute("a", run), "ran");
    assert.equal(stats().known, 1);
    assert.equal(await client.execute("a", run), "ran");
    assert.deepEqual([stats().askedCbd, stats().allowedLocally], [4, 1]);
    // The remote calls were reported one by one, the local one is batched.
    await client.flush();
    assert.equal(fake.requests.filter((r) => r.op === "report").length, 4);
    assert.deepEqual(fake.batches, [[{ key: "a", outcome: "success", generation: 1 }]]);
  });

  it("applies events by generation, learns the deny time from cbd, and forgets on reset", async () => {
    await open();
    await seed("a");
    const eventsBefore = stats().events;
    fake.transition("a", "open", 0); // older than the entry's 1: ignored
    await until(() => stats().events === eventsBefore + 1);
    let ran = 0;
    const counted = () => {
      ran++;
      return "ran";
    };
    const local0 = stats().allowedLocally;
    assert.equal(await client.execute("a", counted), "ran");
    assert.equal(stats().allowedLocally, local0 + 1, "an older event changed the entry");

    fake.transition("a", "open", 6);
    fake.circuit("a").retryAfterMs = 10_000;
    await until(() => stats().events === eventsBefore + 2);
    const asked0 = stats().askedCbd;
    const remote = await client.execute("a", counted).catch((e: unknown) => e);
    assert.ok(remote instanceof CircuitOpenError && remote.reply !== undefined, "the first call after the event asks cbd");
    assert.equal(stats().askedCbd, asked0 + 1);
    const local = await client.execute("a", counted).catch((e: unknown) => e);
    assert.ok(local instanceof CircuitOpenError);
    assert.equal(local.reply, undefined, "denied locally");
    assert.ok(local.retryAfterMs! > 9_000 && local.retryAfterMs! <= 10_000, String(local.retryAfterMs));
    assert.equal(stats().deniedLocally, 1);
    assert.equal(stats().askedCbd, asked0 + 1);
    assert.equal(ran, 1, "a denied call ran");

    fake.transition("a", "closed", 7); // clears the deny time
    await until(() => stats().events === eventsBefore + 3);
    assert.equal(await client.execute("a", counted), "ran");
    assert.equal(stats().allowedLocally, local0 + 2);

    fake.emit({ event: "reset", key: "a", at: Date.now() });
    await until(() => stats().events === eventsBefore + 4);
    assert.equal(stats().known, 0);
    assert.equal(await client.execute("a", counted), "ran");
    assert.equal(stats().askedCbd, asked0 + 2, "after a reset the next call asks cbd");
    await client.flush();
    const generations = fake.batches.flat().map((r) => r.generation);
    assert.deepEqual(generations.slice(-2), [1, 7], "each outcome carries the generation it was allowed in");
  });

  it("asks cbd on a circuit pinned open until cbd gives the deny time; allows locally when pinned closed", async () => {
    await open();
    await seed("a");
    const pin = (state: "open" | "closed") => ({ state, until: null, reason: "test", by: { uid: 0, pid: 1 } });
    const events0 = stats().events;
    fake.transition("a", "open", 8, pin("open"));
    fake.circuit("a").retryAfterMs = 5_000;
    await until(() => stats().events === events0 + 1);
    const first = await client.execute("a", run).catch((e: unknown) => e);
    assert.ok(first instanceof CircuitOpenError && first.reply !== undefined);
    const second = await client.execute("a", run).catch((e: unknown) => e);
    assert.ok(second instanceof CircuitOpenError && second.reply === undefined);
    fake.transition("a", "closed", 9, pin("closed"));
    await until(() => stats().events === events0 + 2);
    const local0 = stats().allowedLocally;
    assert.equal(await client.execute("a", run), "ran");
    assert.equal(stats().allowedLocally, local0 + 1);
  });

  it("reports a probe at once, with its permit, not in a batch", async () => {
    await open({ batchIntervalMs: 60_000 });
    await seed("a");
    const events0 = stats().events;
    fake.transition("a", "half-open", 10);
    await until(() => stats().events === events0 + 1);
    const batches0 = fake.batches.length;
    assert.equal(await client.execute("a", run), "ran");
    // Settled before execute() resolved.
    const report = fake.requests.filter((r) => r.op === "report").at(-1)!;
    assert.deepEqual([report.key, report.outcome, report.generation, report.permit], ["a", "success", 10, "p-1"]);
    assert.equal(fake.batches.length, batches0);
    // Half-open is never decided locally.
    assert.equal(await client.execute("a", run), "ran");
    assert.equal(fake.requests.filter((r) => r.op === "report").at(-1)!.permit, "p-2");
  });

  it("sends batchSize outcomes in one reportBatch and the rest after the interval or at flush()", async () => {
    await open({ batchSize: 10, batchIntervalMs: 60_000 });
    await seed("a");
    await client.flush();
    const before = fake.batches.length;
    await Promise.all(Array.from({ length: 10 }, () => client.execute("a", run)));
    await until(() => fake.batches.length === before + 1);
    assert.deepEqual(fake.batches.slice(before).map((b) => b.length), [10]);
    await until(() => stats().applied === 11);
    // Fewer than batchSize wait for the interval (a minute here) or flush().
    await Promise.all(Array.from({ length: 5 }, () => client.execute("a", run)));
    assert.equal(stats().queued, 5);
    await client.flush();
    assert.deepEqual(fake.batches.slice(before).map((b) => b.length), [10, 5]);
    assert.equal(stats().queued, 0);
  });

  it("sends after batchIntervalMs without flush()", async () => {
    await open({ batchSize: 1000, batchIntervalMs: 5 });
    await seed("a");
    await client.flush();
    const before = fake.batches.flat().length;
    await client.execute("a", run);
    await until(() => fake.batches.flat().length === before + 1);
  });

  it("keeps each reportBatch line under 60 KiB and 1000 entries, in order", async () => {
    const long = "k".repeat(1000);
    await open({ batchSize: 1000, maxQueuedOutcomes: 5000 });
    await seed(long);
    await seed("s");
    await client.flush();
    const before = fake.batches.length;
    // Hold the answers: the first batch (1000 short keys) stays out and the rest queue up.
    fake.holdReplies = true;
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 1500; i++) calls.push(client.execute("s", run));
    for (let i = 0; i < 1500; i++) calls.push(client.execute(long, run));
    await Promise.all(calls);
    await until(() => fake.batches.length === before + MAX_BATCHES_IN_FLIGHT);
    assert.equal(stats().queued, 3000 - 1000 * MAX_BATCHES_IN_FLIGHT, "the queue holds what the batches out could not");
    fake.release();
    await client.flush();
    const sent = fake.batches.slice(before);
    assert.equal(sent.flat().length, 3000);
    assert.deepEqual(sent.flat().map((r) => r.key), [...Array(1500).fill("s"), ...Array(1500).fill(long)]);
    for (const [i, bytes] of fake.batchLineBytes.slice(before).entries()) {
      assert.ok(bytes < 60 * 1024, `line ${i}: ${bytes} bytes`);
      assert.ok(sent[i]!.length <= 1000, `line ${i}: ${sent[i]!.length} entries`);
    }
    assert.equal(sent[0]!.length, 1000, "the short keys went 1000 to a line");
    assert.ok(sent.some((b) => b.length > 40 && b.length < 100 && b[0]!.key === long), "the long keys filled lines by bytes");
    assert.deepEqual([stats().applied, stats().dropped], [3000 + 2, 0]);
  });

  it("bounds the queue: beyond maxQueuedOutcomes the oldest are dropped and counted", async () => {
    await open({ batchSize: 1, maxQueuedOutcomes: 10 });
    await seed("a");
    await client.flush();
    const before = fake.batches.length;
    fake.holdReplies = true;
    // Outcome i: failure when i % 3 == 0.
    const outcomeOf = (i: number) => (i % 3 === 0 ? "failure" : "success");
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        client
          // async, so that both outcomes take the same turns and queue in call order
          .execute("a", async () => {
            if (i % 3 === 0) throw new Error("f");
          })
          .catch(() => undefined),
      ),
    );
    // MAX_BATCHES_IN_FLIGHT batches of one are out, 10 wait, the rest were dropped oldest first.
    const out = MAX_BATCHES_IN_FLIGHT;
    assert.equal(stats().dropped, 100 - out - 10);
    fake.release();
    await client.flush();
    const expected = [...Array.from({ length: out }, (_, i) => i), ...Array.from({ length: 10 }, (_, i) => 90 + i)].map(outcomeOf);
    assert.deepEqual(fake.batches.slice(before).flat().map((r) => r.outcome), expected);
  });

  it("counts the entries cbd refuses and tells onReportError; a batch without an answer is undelivered", async () => {
    const told: [string, BatchedReport[]][] = [];
    await open({ batchSize: 3, onReportError: (err, reports) => told.push([err.code, [...reports]]) });
    await seed("a");
    await client.flush();
    fake.batchAnswer = (reports) => ({ applied: reports.length - 1, stale: 0, errors: [{ index: 1, code: "too_many_circuits", message: "full" }] });
    await client.execute("a", run);
    await client.execute("a", () => Promise.reject(new Error("x"))).catch(() => undefined);
    await client.execute("a", run);
    await client.flush();
    assert.deepEqual(told, [["too_many_circuits", [{ key: "a", outcome: "failure", generation: 1 }]]]);
    assert.equal(stats().refused, 1);
    fake.batchAnswer = () => null; // the connection closes unanswered
    for (let i = 0; i < 3; i++) await client.execute("a", run).catch(() => undefined);
    await client.flush();
    assert.equal(told.length, 2);
    assert.equal(told[1]![0], "connection_lost");
    assert.equal(told[1]![1].length, 3);
    assert.ok(stats().undelivered >= 3);
  });

  it("drops every entry when the watch overflows or is lost, until a new watch on every key is confirmed", async () => {
    await open({ minBackoffMs: 5, maxBackoffMs: 20 });
    await seed("a");
    await seed("b");
    // The first watch (of "a" alone) has been replaced and closed.
    await until(() => fake.confirmedWatches === 1);
    for (const loss of ["overflow", "lost"] as const) {
      const watches0 = fake.watchRequests.length;
      fake.holdWatches = true;
      if (loss === "overflow") fake.emit({ event: "overflow", dropped: 10001 });
      else fake.dropWatches();
      await until(() => !stats().watching);
      assert.equal(stats().known, 0, `after ${loss}`);
      const asked0 = stats().askedCbd;
      await client.execute("a", run);
      await client.execute("b", run);
      assert.equal(stats().askedCbd, asked0 + 2, `after ${loss}: calls ask cbd`);
      assert.equal(stats().known, 0, `after ${loss}: seeded before the new watch`);
      await until(() => fake.watchRequests.length > watches0);
      assert.deepEqual([...fake.watchRequests.at(-1)!].sort(), ["a", "b"]);
      fake.releaseWatches();
      await until(() => stats().watching);
      await seed("a");
    }
    assert.equal(stats().watchLosses, 2);
  });

  it("drops keys left idle for idleDropMs; they leave the watch at its next rebuild", async () => {
    await open({ idleDropMs: 40 });
    await seed("a");
    await seed("b");
    const t0 = Date.now();
    await until(() => {
      void client.execute("b", run);
      return stats().keys === 1;
    });
    assert.ok(Date.now() - t0 >= 40, "dropped before idleDropMs");
    await client.execute("c", run);
    await until(() => stats().watching && fake.watchRequests.length >= 2 && fake.watchRequests.at(-1)!.includes("c"));
    assert.deepEqual([...fake.watchRequests.at(-1)!].sort(), ["b", "c"]);
    // With every key idle the watch closes and no timer is left.
    await until(() => stats().keys === 0 && !stats().watching);
  });

  it("does not mirror a key cbd would refuse (one bad key would break the watch for all)", async () => {
    await open();
    for (const key of ["", "a\u0001b", "x\ud800", "k".repeat(1025)]) {
      await client.execute(key, run).catch(() => undefined);
    }
    assert.equal(stats().notMirrored, 4);
    assert.equal(stats().keys, 0);
    assert.equal(fake.watchRequests.length, 0);
  });

  it("stays off with a cbd older than protocol 9 (a watch of everything), asking cbd for every call", async () => {
    await open({ minBackoffMs: 5, maxBackoffMs: 10 });
    fake.oldProtocol = true;
    for (let i = 0; i < 20; i++) {
      assert.equal(await client.execute("a", run), "ran");
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.ok(stats().watchFailures >= 1);
    assert.equal(stats().askedCbd, 20);
    assert.equal(fake.requests.filter((r) => r.op === "report").length, 20);
    assert.equal(fake.batches.length, 0);
  });

  it("close() sends what is queued first; destroy() drops it and counts it", async () => {
    await open({ batchIntervalMs: 60_000 });
    await seed("a");
    await client.flush();
    const before = fake.batches.flat().length;
    for (let i = 0; i < 5; i++) await client.execute("a", run);
    await client.close();
    assert.equal(fake.batches.flat().length, before + 5);
    await assert.rejects(client.get("a"), (e: unknown) => e instanceof CbdError && e.code === "destroyed");

    client = new CbdClient({ socket: fake.socket, mirror: true, batchIntervalMs: 60_000 });
    await seed("a");
    await client.flush();
    for (let i = 0; i < 5; i++) await client.execute("a", run);
    client.destroy();
    assert.equal(stats().dropped, 5);
  });
});

describe("execute() when cbd is absent", () => {
  for (const mirror of [false, true]) {
    it(`fails open by default and closed on request, at once${mirror ? " (mirror mode)" : ""}`, async () => {
      const client = new CbdClient({ socket: "/nonexistent/cbd.sock", ...(mirror ? { mirror } : {}) });
      try {
        const t0 = performance.now();
        assert.equal(await client.execute("k", run), "ran");
        await assert.rejects(client.execute("k", run, { failOpen: false }), (e: unknown) => e instanceof CbdError && e.code === "unavailable");
        assert.ok(performance.now() - t0 < 1000);
        if (mirror) assert.equal((client.mirrorStats() as MirrorStats).allowedLocally, 0);
      } finally {
        await client.close();
      }
    });
  }

  it("passes the call's own error through, counting what isFailure says", async () => {
    const fake = await FakeCbd.start();
    const client = new CbdClient(fake.socket);
    try {
      await assert.rejects(client.execute("k", () => Promise.reject(new Error("boom"))), /boom/);
      await assert.rejects(
        client.execute("k", () => {
          throw new RangeError("caller's");
        }, { isFailure: (e) => !(e instanceof RangeError) }),
        RangeError,
      );
      assert.deepEqual(fake.requests.filter((r) => r.op === "report").map((r) => r.outcome), ["failure", "success"]);
      assert.equal(client.mirrorStats(), null);
    } finally {
      client.destroy();
      await fake.close();
    }
  });
});
