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
// Each call is timed on its own (performance.now() around `await
// execute(noop)`), in rounds of sequential calls that yield to the event
// loop every 1000 calls (as a program doing I/O does, and so that the
// mirror's batches are answered); after each round the mirror is flushed,
// outside the per-call times. The median per call counts, less the median
// of the same timing around the no-op called directly: that is the
// overhead. The mean per call of each round, its flush included, is
// printed too (it carries the calls that sent a batch). Then the
// staleness: over 200 transitions to open made by another client, the time
// from sending the transition to the mirroring loop's first denial.
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

const ROUNDS = 20;
// Per round, for the mirror, the in-process breaker and the bare call: no
// more than the mirror's queue holds (10,000), since a loop of no-op calls
// makes outcomes faster than cbd applies them; the flush after each round
// catches up.
const LOCAL_CALLS = 10_000;
const TODAY_CALLS = 1_000; // per round: each is two round trips to cbd
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
    await timed(() => today.execute("today", noop), 1_000);
    for (let i = 0; mirror.mirrorStats().allowedLocally === 0; i++) {
      await mirror.execute("mirror", noop);
      await new Promise((r) => setTimeout(r, 1));
      if (i > 10_000) fail("the mirror never decided a call locally");
    }
    for (let i = 0; i < 5; i++) {
      await timed(() => mirror.execute("mirror", noop), LOCAL_CALLS);
      await mirror.flush();
    }
    await timed(() => local.execute(noop), 50_000);
    await timed(noop, 50_000);

    const modes = {
      bare: { call: noop, n: LOCAL_CALLS },
      local: { call: () => local.execute(noop), n: LOCAL_CALLS },
      mirror: { call: () => mirror.execute("mirror", noop), n: LOCAL_CALLS, after: () => mirror.flush() },
      today: { call: () => today.execute("today", noop), n: TODAY_CALLS },
    };
    const samples = {};
    const means = {};
    for (const name of Object.keys(modes)) {
      samples[name] = [];
      means[name] = [];
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, mode] of Object.entries(modes)) {
        const t0 = performance.now();
        const each = await timed(mode.call, mode.n);
        if (mode.after) await mode.after();
        means[name].push((performance.now() - t0) / mode.n);
        samples[name].push(each);
      }
    }
    // Every outcome reached cbd, every call.
    const stats = mirror.mirrorStats();
    const mirrorCalls = (await today.get("mirror")).snapshot.successCount;
    const expected = stats.allowedLocally + stats.askedCbd;
    if (mirrorCalls !== expected || stats.dropped + stats.undelivered + stats.refused !== 0) {
      fail(`cbd counted ${mirrorCalls} mirrored successes, not ${expected} (${JSON.stringify(stats)})`);
    }
    const todayCalls = (await today.get("today")).snapshot.successCount;
    if (todayCalls !== 1_000 + ROUNDS * TODAY_CALLS) fail(`cbd counted ${todayCalls} successes of today's mode`);

    const us = (ms) => ms * 1000;
    const medians = {};
    const meanOfRounds = {};
    for (const name of Object.keys(modes)) {
      medians[name] = us(medianOf(samples[name]));
      meanOfRounds[name] = us(median(means[name]));
    }
    const overhead = { local: medians.local - medians.bare, mirror: medians.mirror - medians.bare, today: medians.today - medians.bare };
    const mirrorVsLocal = overhead.mirror / overhead.local;
    const todayVsMirror = overhead.today / overhead.mirror;
    console.log(
      `node ${process.version}; a guarded call on a closed circuit, no-op function; ${ROUNDS} rounds of ` +
        `${LOCAL_CALLS} calls (${TODAY_CALLS} for today's mode), each call timed:`,
    );
    console.log(`  ${"".padEnd(32)} median/call  overhead  (mean/call of a round, flush included)`);
    for (const [name, label] of [["bare", "no-op called directly"], ["local", "in-process breaker"], ["mirror", "mirror mode"], ["today", "today's mode (acquire+report)"]]) {
      const o = name === "bare" ? "" : `${overhead[name].toFixed(3)} us`;
      console.log(`  ${label.padEnd(32)} ${medians[name].toFixed(3).padStart(8)} us  ${o.padStart(10)}  (${meanOfRounds[name].toFixed(3)} us)`);
    }
    console.log(
      `  ratios of the median overheads: mirror / in-process ${mirrorVsLocal.toFixed(2)} (target <= 3: ${mirrorVsLocal <= 3 ? "met" : "NOT met"}); ` +
        `today / mirror ${todayVsMirror.toFixed(1)} (target >= 10: ${todayVsMirror >= 10 ? "met" : "NOT met"})`,
    );
    console.log(`  mirror: ${stats.allowedLocally} calls allowed locally, ${stats.askedCbd} asked cbd, ${stats.applied} outcomes applied in batches`);

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

/** n sequential awaited calls, each timed, yielding to the event loop every YIELD_EVERY; the times in ms. */
async function timed(call, n) {
  const times = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call();
    times[i] = performance.now() - t0;
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise((r) => setImmediate(r));
  }
  return times;
}

/** The median of every sample of every round. */
function medianOf(rounds) {
  const all = new Float64Array(rounds.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of rounds) {
    all.set(r, at);
    at += r.length;
  }
  all.sort();
  return all[Math.floor(all.length / 2)];
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
