// bench/clients/node_overhead.mjs [BUILD_DIR]: what the Node client costs per
// call. Times 10,000 sequential `failure` calls through CbdClient against the
// same calls made by a bare loop on a raw socket (write a line, read a line,
// JSON.parse it: the least any Node caller must do), both against one cbd,
// and prints the per-call times and their ratio. Rounds alternate and the
// median round counts, since the machine is shared.
//
// Needs cbd built (BUILD_DIR, default build/; or $CBD_BUILD_DIR) and the
// client built: cd clients/node && npm ci && npm run build.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

const CALLS = 10_000;
const WARMUP = 1_000;
const ROUNDS = 5;

async function main() {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
  const build = resolve(process.argv[2] ?? process.env.CBD_BUILD_DIR ?? join(repo, "build"));
  const cbdBin = join(build, "daemon", "cbd");
  const clientEntry = join(repo, "clients", "node", "dist", "src", "index.js");
  if (!existsSync(cbdBin)) fail(`no cbd at ${cbdBin}; pass the build directory`);
  if (!existsSync(clientEntry)) fail(`the Node client is not built: cd clients/node && npm ci && npm run build`);
  const { CbdClient } = await import(pathToFileURL(clientEntry).href);

  const dir = mkdtempSync(join(tmpdir(), "cbd-node-bench-"));
  const socket = join(dir, "cbd.sock");
  const daemon = spawn(cbdBin, ["--socket", socket, "--log-level", "warn"], { stdio: ["ignore", "ignore", "inherit"] });
  try {
    await waitForSocket(socket);
    const raw = await RawLoop.open(socket);
    const client = new CbdClient(socket);

    const rawCall = (i) => raw.call(`{"op":"failure","key":"raw","id":${i}}\n`);
    const clientCall = () => client.failure("client");
    await time(rawCall, WARMUP);
    await time(clientCall, WARMUP);
    const rawRounds = [];
    const clientRounds = [];
    for (let round = 0; round < ROUNDS; round++) {
      rawRounds.push(await time(rawCall, CALLS));
      clientRounds.push(await time(clientCall, CALLS));
    }
    const rawMs = median(rawRounds);
    const clientMs = median(clientRounds);
    // Both loops really reached cbd, every call.
    const expected = WARMUP + ROUNDS * CALLS;
    const counts = [(await client.get("raw")).snapshot.failureCount, (await client.get("client")).snapshot.failureCount];
    if (counts[0] !== expected || counts[1] !== expected) fail(`cbd counted ${counts.join(" and ")} failures, not ${expected}`);

    const perCall = (ms) => ((ms * 1000) / CALLS).toFixed(1);
    console.log(
      `node ${process.version}, ${CALLS} sequential failure calls, median of ${ROUNDS} rounds: ` +
        `raw socket ${rawMs.toFixed(0)} ms (${perCall(rawMs)} us/call), ` +
        `CbdClient ${clientMs.toFixed(0)} ms (${perCall(clientMs)} us/call); ratio ${(clientMs / rawMs).toFixed(2)}`,
    );
    client.destroy();
    raw.close();
  } finally {
    daemon.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One socket, one request at a time: write a line, resolve with the parsed reply line. */
class RawLoop {
  static open(path) {
    return new Promise((res, rej) => {
      const s = createConnection(path);
      s.once("connect", () => res(new RawLoop(s)));
      s.once("error", rej);
    });
  }
  constructor(socket) {
    this.socket = socket;
    this.buffer = "";
    this.waiting = null;
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => {
      this.buffer += chunk;
      const nl = this.buffer.indexOf("\n");
      if (nl < 0) return;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      const reply = JSON.parse(line);
      if (reply.ok !== true) fail(`cbd answered ${line}`);
      const w = this.waiting;
      this.waiting = null;
      w(reply);
    });
  }
  call(line) {
    return new Promise((res) => {
      this.waiting = res;
      this.socket.write(line);
    });
  }
  close() {
    this.socket.destroy();
  }
}

async function time(call, n) {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await call(i);
  return performance.now() - t0;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
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
  console.error(`node_overhead: ${err instanceof BenchError ? err.message : err.stack}`);
  process.exitCode = 1;
}
