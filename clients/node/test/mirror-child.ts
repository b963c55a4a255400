// A child process for the mirror tests: one mirroring client, driven by the
// mode argument, that prints what it saw as JSON lines on stdout.
//
//   fail  SOCKET KEY N     N guarded failures, then close(); prints its counters
//   stale SOCKET KEY       calls until the mirror decides locally ("ready"),
//                          then until the first denial; prints when it came
//   probe SOCKET KEY       calls (each call that runs is a probe: it fails
//                          after 200 ms) until "stop" on stdin; prints its probes
//
// Each loop yields to the event loop between calls, as any program doing
// I/O does: the mirror learns of changes when the loop reads the watch. The
// stale and probe loops wait a millisecond between calls (about a thousand
// calls a second each): unpaced, eight loops offer more reports than cbd on
// Redis can apply, and the bounded queue would drop outcomes.
import { performance } from "node:perf_hooks";

import { CbdClient, CircuitOpenError } from "../src/index.js";

const [mode, socket, key, count] = process.argv.slice(2) as [string, string, string, string | undefined];
const client = new CbdClient({ socket, mirror: true, timeoutMs: 30_000 });
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
const pause = () => new Promise<void>((resolve) => setTimeout(resolve, 1));
const epochMs = () => performance.timeOrigin + performance.now();
const print = (message: Record<string, unknown>) => process.stdout.write(JSON.stringify(message) + "\n");

class Expected extends Error {}

async function failures(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await client
      .execute(key, () => {
        throw new Expected("failure");
      })
      .catch((err: unknown) => {
        if (!(err instanceof Expected)) throw err;
      });
    if (i % 100 === 99) await yieldToLoop();
  }
  await client.close();
  print({ done: true, stats: client.mirrorStats() });
}

async function stale(): Promise<void> {
  let ready = false;
  for (;;) {
    const deniedBefore = client.mirrorStats()!.deniedLocally;
    const allowedBefore = client.mirrorStats()!.allowedLocally;
    const outcome = await client.execute(key, () => "ran").catch((err: unknown) => err);
    const at = epochMs();
    if (outcome instanceof CircuitOpenError) {
      const local = client.mirrorStats()!.deniedLocally > deniedBefore;
      // Then one more: with the deny time learned, it is decided locally.
      const next = await client.execute(key, () => "ran").catch((err: unknown) => err);
      const nextLocal = next instanceof CircuitOpenError && client.mirrorStats()!.deniedLocally > deniedBefore + (local ? 1 : 0);
      await client.close();
      print({ deniedAt: at, local, nextDeniedLocally: nextLocal, stats: client.mirrorStats() });
      return;
    }
    if (outcome !== "ran") throw outcome;
    if (!ready && client.mirrorStats()!.allowedLocally > allowedBefore) {
      ready = true;
      print({ ready: true });
    }
    await pause();
  }
}

async function probe(): Promise<void> {
  let stop = false;
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk: string) => {
    if (chunk.includes("stop")) stop = true;
  });
  let probes = 0;
  let ready = false;
  while (!stop) {
    await client
      .execute(key, async () => {
        probes++;
        await new Promise((resolve) => setTimeout(resolve, 200));
        throw new Expected("the probe fails");
      })
      .catch((err: unknown) => {
        if (!(err instanceof Expected) && !(err instanceof CircuitOpenError)) throw err;
      });
    if (!ready && client.mirrorStats()!.deniedLocally > 0) {
      ready = true;
      print({ ready: true });
    }
    await pause();
  }
  process.stdin.destroy();
  await client.close();
  print({ probes, stats: client.mirrorStats() });
}

try {
  if (mode === "fail") await failures(Number(count));
  else if (mode === "stale") await stale();
  else if (mode === "probe") await probe();
  else throw new Error(`unknown mode ${mode}`);
} catch (err) {
  console.error(err);
  process.exit(2);
}
