// bench/clients/node_mirror.mjs [BUILD_DIR]: what a guarded call costs in
// mirror mode (issue #20). Times a guarded call on a closed circuit with a
// no-op function three ways, against one cbd:
//
//   today     CbdClient.execute(): acquire, call, report (two round trips)
//   mirror    CbdClient({ mirror: true }).execute(): decided locally, the
//             outcome batched
//   local     a minimal in-process breaker written here (a local counter
//             with cbd's count rule), the floor any breaker pays
//
// Each is timed as rounds of sequential `await execute(noop)` calls; every
// 1000 calls each loop yields to the event loop once (as a program doing I/O
// does, and so that the mirror's batches are answered). The per-call median
// over the rounds counts, since the machine is shared; overhead is that less
// the same loop calling the no-op directly. Then the staleness: over 200
// transitions to open made by another client, the time from sending the
// transition to the mirroring loop's first denial (p50, p99, max).
//
// Needs cbd built with protocol 9 (BUILD_DIR, default build/; or
// $CBD_BUILD_DIR) and the client built: cd clients/node && npm ci && npm run build.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROUNDS = 7;
const LOCAL_CALLS = 200_000; // per round, for the mirror, the in-process breaker and the bare loop
const TODAY_CALLS = 5_000; // per round: each is two round trips to cbd
const YIELD_EVERY = 1_000;
const TRANSITIONS = 200;

async function main() {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
  const build = resolve(process.argv[2] ?? process.env.CBD_BUILD_DIR ?? join(repo, "build"));
  const cbdBin = join(build, "daemon", "cbd");
  const clientEntry = join(repo, "clients", "node", "dist", "src", "index.js");
  if (!existsSync(cbdBin)) fail(`no cbd at ${cbdBin}; pass the build directory`);
  if (!existsSync(clientEntry)) fail(`the Node client is not built: cd clients/node && npm ci && npm run build`);
  const { CbdClient, CircuitOpenError } = await import(pathToFileURL(clientEntry).href);

  const dir = mkdtempSync(join(tmpdir(), "cbd-node-mirror-bench-"));
  const socket = join(dir, "cbd.sock");
  const daemon = spawn(cbdBin, ["--socket", socket, "--log-level", "warn"], { stdio: ["ignore", "ignore", "inherit"] });
  try {
    await waitForSocket(socket);
    const today = new CbdClient(socket);
    const mirror = new CbdClient({ socket, mirror: true });
    const local = new InProcessBreaker(5, 30_000);
    const noop = () => undefined;
    const { protocol } = await today.ping();
    if (protocol < 9) fail(`cbd at ${cbdBin} speaks protocol ${protocol}; mirror mode needs 9`);

    // Warm up each, and wait until the mirror decides "mirror" locally.
    await loop(() => today.execute("today", noop), 1_000);
    for (let i = 0; mirror.mirrorStats().allowedLocally === 0; i++) {
      await mirror.execute("mirror", noop);
      await new Promise((r) => setTimeout(r, 1));
      if (i > 10_000) fail("the mirror never decided a call locally");
    }
    await loop(() => mirror.execute("mirror", noop), 20_000);
    await loop(() => local.execute(noop), 20_000);
    await loop(noop, 20_000);

    const perCall = { bare: [], local: [], mirror: [], today: [] };
    for (let round = 0; round < ROUNDS; round++) {
      perCall.bare.push((await loop(noop, LOCAL_CALLS)) / LOCAL_CALLS);
      perCall.local.push((await loop(() => local.execute(noop), LOCAL_CALLS)) / LOCAL_CALLS);
      perCall.mirror.push((await loop(() => mirror.execute("mirror", noop), LOCAL_CALLS)) / LOCAL_CALLS);
      perCall.today.push((await loop(() => today.execute("today", noop), TODAY_CALLS)) / TODAY_CALLS);
    }
    // Every outcome reached cbd, every call.
    await mirror.flush();
    const stats = mirror.mirrorStats();
    const mirrorCalls = (await today.get("mirror")).snapshot.successCount;
    const expected = stats.allowedLocally + stats.askedCbd;
    if (mirrorCalls !== expected || stats.dropped + stats.undelivered + stats.refused !== 0) {
      fail(`cbd counted ${mirrorCalls} mirrored successes, not ${expected} (${JSON.stringify(stats)})`);
    }
    const todayCalls = (await today.get("today")).snapshot.successCount;
    if (todayCalls !== 1_000 + ROUNDS * TODAY_CALLS) fail(`cbd counted ${todayCalls} successes of today's mode`);

    const us = (ms) => ms * 1000;
    const bare = us(median(perCall.bare));
    const medians = { local: us(median(perCall.local)), mirror: us(median(perCall.mirror)), today: us(median(perCall.today)) };
    const overhead = { local: medians.local - bare, mirror: medians.mirror - bare, today: medians.today - bare };
    const mirrorVsLocal = overhead.mirror / overhead.local;
    const todayVsMirror = overhead.today / overhead.mirror;
    console.log(
      `node ${process.version}; a guarded call on a closed circuit, no-op function; per-call median of ${ROUNDS} rounds ` +
        `(${LOCAL_CALLS} calls a round, ${TODAY_CALLS} for today's mode):`,
    );
    console.log(`  bare call (the loop alone)     ${bare.toFixed(3)} us`);
    for (const [name, label] of [["local", "in-process breaker"], ["mirror", "mirror mode"], ["today", "today's mode (acquire+report)"]]) {
      console.log(`  ${label.padEnd(30)} ${medians[name].toFixed(3)} us/call, overhead ${overhead[name].toFixed(3)} us`);
    }
    console.log(
      `  ratios of overhead: mirror / in-process ${mirrorVsLocal.toFixed(2)} (target <= 3: ${mirrorVsLocal <= 3 ? "met" : "NOT met"}); ` +
        `today / mirror ${todayVsMirror.toFixed(1)} (target >= 10: ${todayVsMirror >= 10 ? "met" : "NOT met"})`,
    );
    console.log(`  mirror counters: ${stats.allowedLocally} allowed locally, ${stats.askedCbd} asked cbd, ${stats.applied} applied in batches`);

    await staleness(socket, CbdClient, CircuitOpenError, today);
    today.destroy();
    await mirror.close();
  } finally {
    daemon.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A mirroring loop calls the key (yielding to the event loop after each
 * call) while another client opens the circuit: the time from sending the
 * transition to the loop's first denial, over TRANSITIONS transitions.
 */
async function staleness(socket, CbdClient, CircuitOpenError, controller) {
  const key = "stale";
  await controller.configure(key, { resetTimeoutMs: 600_000 });
  const mirror = new CbdClient({ socket, mirror: true });
  let allowedLocally = 0;
  let deniedAt = null;
  let running = true;
  const noop = () => undefined;
  const caller = (async () => {
    while (running) {
      const before = mirror.mirrorStats().allowedLocally;
      const outcome = await mirror.execute(key, noop).then(() => null, (e) => e);
      if (outcome instanceof CircuitOpenError) {
        if (deniedAt === null) deniedAt = performance.now();
      } else if (outcome !== null) {
        throw outcome;
      } else if (mirror.mirrorStats().allowedLocally > before) {
        allowedLocally++;
      }
      await new Promise((r) => setImmediate(r));
    }
  })();
  const until = async (pred, what) => {
    const deadline = performance.now() + 30_000;
    while (!pred()) {
      if (performance.now() > deadline) fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  const latencies = [];
  const staleCalls = [];
  for (let i = 0; i < TRANSITIONS; i++) {
    // Closed, and decided locally again.
    const seen = allowedLocally;
    await until(() => allowedLocally > seen + 1, "a local decision on the closed circuit");
    deniedAt = null;
    const allowedBefore = allowedLocally;
    const t0 = performance.now();
    const opened = controller.transition(key, "open");
    await until(() => deniedAt !== null, "the first denial");
    latencies.push(deniedAt - t0);
    staleCalls.push(allowedLocally - allowedBefore);
    await opened;
    await controller.transition(key, "closed");
  }
  running = false;
  await caller;
  await mirror.close();
  latencies.sort((a, b) => a - b);
  staleCalls.sort((a, b) => a - b);
  console.log(
    `staleness over ${TRANSITIONS} transitions (transition sent -> first denial in the mirroring loop): ` +
      `p50 ${percentile(latencies, 50).toFixed(3)} ms, p99 ${percentile(latencies, 99).toFixed(3)} ms, max ${latencies.at(-1).toFixed(3)} ms; ` +
      `calls allowed locally meanwhile: p50 ${percentile(staleCalls, 50)}, p99 ${percentile(staleCalls, 99)}, max ${staleCalls.at(-1)}`,
  );
}

/**
 * The floor: a breaker in this process, with cbd's count rule (failures
 * since the circuit closed open it at the threshold; after resetTimeoutMs
 * one probe decides), the same async shape as execute().
 */
class InProcessBreaker {
  constructor(failureThreshold, resetTimeoutMs) {
    this.failureThreshold = failureThreshold;
    this.resetTimeoutMs = resetTimeoutMs;
    this.state = "closed";
    this.failureCount = 0;
    this.successCount = 0;
    this.openedAt = 0;
    this.probing = false;
  }
  async execute(fn) {
    if (this.state === "open") {
      if (performance.now() - this.openedAt < this.resetTimeoutMs) throw new Error("open");
      this.state = "half-open";
    }
    if (this.state === "half-open") {
      if (this.probing) throw new Error("open");
      this.probing = true;
    }
    let result;
    try {
      result = await fn();
    } catch (err) {
      this.record(false);
      throw err;
    }
    this.record(true);
    return result;
  }
  record(ok) {
    if (this.state === "half-open") {
      this.probing = false;
      if (ok) {
        this.state = "closed";
        this.failureCount = 0;
        this.successCount = 0;
      } else {
        this.open();
      }
      return;
    }
    if (ok) {
      this.successCount++;
    } else if (++this.failureCount >= this.failureThreshold && this.state === "closed") {
      this.open();
    }
  }
  open() {
    this.state = "open";
    this.openedAt = performance.now();
  }
}

/** n sequential awaited calls, yielding to the event loop every YIELD_EVERY; the time in ms. */
async function loop(call, n) {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await call();
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise((r) => setImmediate(r));
  }
  return performance.now() - t0;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function waitForSocket(path) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise((res) => {
      const s = createConnection(path);
      s.once("connect", () => (s.destroy(), res(true)));
      s.once("error", () => res(false));
    });
    if (up) return;
    if (Date.now() > deadline) fail(`cbd did not come up on ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A failure with a message that says it all (no stack). */
class BenchError extends Error {}

function fail(message) {
  throw new BenchError(message);
}

// Last, so that the classes above are initialised before main() runs.
try {
  await main();
} catch (err) {
  console.error(`node_mirror: ${err instanceof BenchError ? err.message : err.stack}`);
  process.exitCode = 1;
}
