// Mirror mode across processes, against a real cbd on the memory and the
// Redis backend: the staleness after cbd opens a circuit (printed, not
// asserted), exact counts through batched reports, and one probe among ten
// mirrors. The children are test/mirror-child.ts.
import * as assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

import { CbdClient, type MirrorStats } from "../src/index.js";
import { startCbd, startRedis, waitFor, type Daemon } from "./helpers.js";

const here = dirname(fileURLToPath(import.meta.url));
// Generous: only a hang should hit it, not a loaded machine.
const LIVENESS_MS = 60_000;

type Message = Record<string, unknown>;

/** A mirror-child.js process and the JSON lines it prints. */
class Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  private readonly lines: Message[] = [];
  private waiting: ((m: Message) => void) | null = null;

  constructor(args: string[]) {
    this.proc = spawn(process.execPath, [join(here, "mirror-child.js"), ...args], { stdio: ["pipe", "pipe", "inherit"] });
    this.exited = new Promise((res) => this.proc.once("exit", (code) => res(code)));
    createInterface({ input: this.proc.stdout! }).on("line", (line) => {
      const message = JSON.parse(line) as Message;
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(message);
      } else {
        this.lines.push(message);
      }
    });
  }

  /** The next line, or a rejection if the child exits or hangs first. */
  next(): Promise<Message> {
    const queued = this.lines.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`child ${this.proc.pid} printed nothing for ${LIVENESS_MS} ms`)), LIVENESS_MS);
      void this.exited.then((code) => {
        clearTimeout(timer);
        rej(new Error(`child ${this.proc.pid} exited (${code}) before printing`));
      });
      this.waiting = (m) => {
        clearTimeout(timer);
        res(m);
      };
    });
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const backends: { name: string; start(): Promise<{ args: string[]; cleanup(): Promise<void> }> }[] = [
  { name: "memory", start: async () => ({ args: [], cleanup: async () => undefined }) },
  {
    name: "redis",
    start: async () => {
      const redis = await startRedis();
      return { args: ["--backend", "redis", "--redis", `tcp://127.0.0.1:${redis.port}`], cleanup: () => redis.cleanup() };
    },
  },
];

for (const backend of backends) {
  describe(`mirror mode, ${backend.name} backend`, () => {
    let daemon: Daemon;
    let cleanupBackend: () => Promise<void>;
    let client: CbdClient;
    const children: Child[] = [];
    const start = (...args: string[]) => {
      const child = new Child(args);
      children.push(child);
      return child;
    };

    before(async () => {
      const started = await backend.start();
      cleanupBackend = started.cleanup;
      daemon = await startCbd(...started.args);
      client = new CbdClient({ socket: daemon.socket });
    });
    after(async () => {
      for (const child of children) child.kill();
      await Promise.all(children.map((c) => c.exited));
      client.destroy();
      await daemon.cleanup();
      await cleanupBackend();
    });

    it("8 processes see a denial after another process opens the circuit (time to first denial printed)", async () => {
      const key = "stale";
      await client.configure(key, { resetTimeoutMs: 60_000 });
      const racers = Array.from({ length: 8 }, () => start("stale", daemon.socket, key));
      for (const r of racers) assert.deepEqual(await r.next(), { ready: true });
      const t0 = performance.timeOrigin + performance.now();
      const opened = await client.transition(key, "open");
      const reports = await Promise.all(racers.map((r) => r.next()));
      assert.deepEqual(await Promise.all(racers.map((r) => r.exited)), Array(8).fill(0));
      assert.equal(opened.snapshot.state, "open");
      assert.equal((await client.get(key)).snapshot.state, "open");
      const latencies = reports.map((r) => (r.deniedAt as number) - t0).sort((a, b) => a - b);
      for (const r of reports) {
        assert.equal(typeof r.deniedAt, "number");
        assert.equal(r.nextDeniedLocally, true, "once cbd gave the deny time, the next call is denied locally");
        const stats = r.stats as MirrorStats;
        assert.ok(stats.allowedLocally > 0);
        assert.equal(stats.refused + stats.undelivered + stats.dropped, 0, JSON.stringify(stats));
      }
      console.log(
        `${backend.name}: transition sent -> first denial, 8 processes: ` +
          `${latencies.map((ms) => ms.toFixed(2)).join(", ")} ms (median ${percentile(latencies, 50).toFixed(2)}, max ${latencies.at(-1)!.toFixed(2)}); ` +
          `first denials decided locally: ${reports.filter((r) => r.local).length} of 8 (the others asked cbd after the event)`,
      );
    });

    it("8 processes x 10,000 guarded failures in mirror mode end at exactly 80,000", async () => {
      const key = "exact";
      await client.configure(key, { failureThreshold: 1_000_000_000 });
      const t0 = performance.now();
      const hammers = Array.from({ length: 8 }, () => start("fail", daemon.socket, key, "10000"));
      const reports = await Promise.all(hammers.map((h) => h.next()));
      assert.deepEqual(await Promise.all(hammers.map((h) => h.exited)), Array(8).fill(0));
      const ms = performance.now() - t0;
      let local = 0;
      for (const r of reports) {
        const stats = r.stats as MirrorStats;
        // Every call was decided once: locally (and batched) or by cbd (and reported at once).
        assert.equal(stats.allowedLocally + stats.askedCbd, 10_000, JSON.stringify(stats));
        assert.equal(stats.applied, stats.allowedLocally, JSON.stringify(stats));
        assert.equal(stats.stale + stats.refused + stats.undelivered + stats.dropped + stats.queued, 0, JSON.stringify(stats));
        // The mirror did the work: only the calls before the watch was confirmed asked cbd.
        assert.ok(stats.allowedLocally >= 5_000, JSON.stringify(stats));
        local += stats.allowedLocally;
      }
      const circuit = await client.get(key);
      assert.equal(circuit.snapshot.failureCount, 80_000);
      assert.equal(circuit.snapshot.state, "closed");
      console.log(`${backend.name}: 80,000 failures in ${ms.toFixed(0)} ms (8 processes, ${local} decided locally)`);
    });

    it("10 mirroring processes racing for a half-open circuit get exactly one probe between them", async () => {
      const key = "probe";
      await client.configure(key, { halfOpenMax: 1, resetTimeoutMs: 60_000 });
      await client.transition(key, "open");
      const racers = Array.from({ length: 10 }, () => start("probe", daemon.socket, key));
      // Each has learned the circuit is open and denies locally.
      for (const r of racers) assert.deepEqual(await r.next(), { ready: true });
      const half = await client.transition(key, "half-open");
      // The probe fails after 200 ms and re-opens the circuit (for 60 s).
      await waitFor(async () => {
        const c = await client.get(key);
        return c.snapshot.state === "open" && c.generation > half.generation;
      }, LIVENESS_MS);
      // Time for a wrong second probe to show (none may run: open for 60 s).
      await new Promise((r) => setTimeout(r, 300));
      for (const r of racers) r.proc.stdin!.end("stop\n");
      const reports = await Promise.all(racers.map((r) => r.next()));
      assert.deepEqual(await Promise.all(racers.map((r) => r.exited)), Array(10).fill(0));
      const probes = reports.map((r) => r.probes as number);
      assert.equal(probes.reduce((a, b) => a + b, 0), 1, `probes per process: ${probes.join(", ")}`);
      for (const r of reports) {
        const stats = r.stats as MirrorStats;
        assert.ok(stats.deniedLocally > 0, JSON.stringify(stats));
        assert.equal(stats.allowedLocally, 0, "no call on an open or half-open circuit is allowed locally");
      }
      const circuit = await client.get(key);
      assert.equal(circuit.snapshot.state, "open");
      assert.equal(circuit.snapshot.failureCount, 1);
    });
  });
}

describe("mirror mode when cbd restarts", () => {
  it("fails open at once while cbd is down, then mirrors again once a new watch is confirmed", async () => {
    const daemon = await startCbd();
    const client = new CbdClient({ socket: daemon.socket, mirror: true, minBackoffMs: 10, maxBackoffMs: 50 });
    const run = () => "ran";
    const localAgain = async () => {
      await waitFor(async () => {
        const before = client.mirrorStats()!.allowedLocally;
        await client.execute("r", run);
        return client.mirrorStats()!.allowedLocally > before;
      }, LIVENESS_MS);
    };
    try {
      await localAgain();
      await client.flush();
      assert.equal(await daemon.stop(), 0);
      await waitFor(() => !client.mirrorStats()!.watching, LIVENESS_MS);
      assert.equal(client.mirrorStats()!.known, 0, "the entries outlived the watch");
      // Today's fail-open behaviour: the call runs, at once, and is not counted anywhere.
      const t0 = performance.now();
      for (let i = 0; i < 5; i++) assert.equal(await client.execute("r", run), "ran");
      const ms = performance.now() - t0;
      await assert.rejects(client.execute("r", run, { failOpen: false }), (e: unknown) => (e as { code?: string }).code === "unavailable");
      console.log(`5 calls with cbd down took ${ms.toFixed(2)} ms`);
      assert.ok(ms < 1000, `5 calls with cbd down took ${ms.toFixed(0)} ms`);
      await daemon.start();
      await localAgain();
      assert.ok(client.mirrorStats()!.watchLosses >= 1);
      await client.flush();
      // A fresh cbd (memory backend): only the calls since the restart count.
      const counted = (await client.get("r")).snapshot.successCount;
      assert.ok(counted >= 1, `cbd counted ${counted}`);
    } finally {
      client.destroy();
      await daemon.cleanup();
    }
  });
});
