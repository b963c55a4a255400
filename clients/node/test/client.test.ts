// CbdClient end to end: processes, restarts, dead sockets, the breaker, watch.
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";

import { CbdClient, CbdCircuitBreakerStore, CbdError, type WatchEvent } from "../src/index.js";
import { startCbd, waitFor } from "./helpers.js";

const here = dirname(fileURLToPath(import.meta.url));

describe("CbdClient", () => {
  it("8 processes x 1000 recordFailure on one key end at exactly 8000", async () => {
    const daemon = await startCbd();
    try {
      const runs = Array.from({ length: 8 }, () =>
        new Promise<number | null>((res) => {
          const child = spawn(process.execPath, [join(here, "hammer.js"), daemon.socket, "shared", "1000"], { stdio: "inherit" });
          child.on("exit", (code) => res(code));
        }),
      );
      assert.deepEqual(await Promise.all(runs), Array(8).fill(0));
      const store = new CbdCircuitBreakerStore({ socket: daemon.socket });
      assert.equal((await store.getState("shared")).failureCount, 8000);
      store.destroy();
    } finally {
      await daemon.cleanup();
    }
  });

  it("reconnects after cbd restarts, failing fast while it is down", async () => {
    const daemon = await startCbd();
    const client = new CbdClient({ socket: daemon.socket, minBackoffMs: 20, maxBackoffMs: 100 });
    try {
      assert.equal((await client.failure("r")).snapshot.failureCount, 1);
      assert.equal(await daemon.stop(), 0);
      // While cbd is down no call waits for it: each rejects at once with
      // unavailable (the first may instead see the dying connection, which
      // says connection_lost: it may or may not have been applied).
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        const err = await client.ping().then(() => null, (e: unknown) => e);
        const took = performance.now() - t0;
        assert.ok(err instanceof CbdError, `call ${i} while cbd is down resolved`);
        assert.ok(err.code === "unavailable" || (i === 0 && err.code === "connection_lost"), `call ${i}: ${err.code}`);
        assert.ok(took < 50, `call ${i} took ${took.toFixed(1)} ms`);
        await new Promise((r) => setTimeout(r, 30));
      }
      await daemon.start();
      // Back within the longest backoff (100 ms), with no call held.
      const t0 = performance.now();
      await waitFor(async () => (await client.ping().then(() => true, () => false)), 2000);
      assert.ok(performance.now() - t0 < 1000);
      assert.equal((await client.failure("r")).snapshot.failureCount, 1); // memory-only: fresh
    } finally {
      client.destroy();
      await daemon.cleanup();
    }
  });

  it("rejects with destroyed after destroy()", async () => {
    const client = new CbdClient({ socket: "/nonexistent/cbd.sock" });
    client.destroy();
    await assert.rejects(client.get("x"), (err: unknown) => err instanceof CbdError && err.code === "destroyed");
  });

  it("acquire, report with generation and permit, and conditional transitions", async () => {
    const daemon = await startCbd("--failure-threshold", "2", "--reset-timeout-ms", "150");
    const client = new CbdClient({ socket: daemon.socket });
    try {
      const a = await client.acquire("api");
      assert.equal(a.allowed, true);
      await client.report("api", "failure", { generation: a.generation });
      const opened = await client.report("api", "failure", { generation: a.generation });
      assert.deepEqual(opened.transition, { from: "closed", to: "open", cause: "threshold" });
      const denied = await client.acquire("api");
      assert.equal(denied.allowed, false);
      assert.ok(denied.retryAfterMs! > 0 && denied.retryAfterMs! <= 150);
      const stale = await client.report("api", "success", { generation: a.generation });
      assert.equal(stale.stale, true);
      await new Promise((r) => setTimeout(r, 200));
      const probe = await client.acquire("api");
      assert.ok(probe.permit);
      await assert.rejects(client.report("api", "success"), (e: unknown) => e instanceof CbdError && e.code === "no_permit");
      const closed = await client.report("api", "success", { generation: probe.generation, permit: probe.permit! });
      assert.equal(closed.snapshot.state, "closed");
      await assert.rejects(
        client.transition("api", "open", { expect: "half-open" }),
        (e: unknown) => e instanceof CbdError && e.code === "conflict" && (e.reply?.snapshot as { state: string }).state === "closed",
      );
      const pinned = await client.force("api", "open", { ttlMs: 60_000, reason: "node test" });
      assert.equal(pinned.forced?.reason, "node test");
      await assert.rejects(client.transition("api", "closed"), (e: unknown) => e instanceof CbdError && e.code === "forced");
      assert.equal((await client.unforce("api")).forced, undefined);
      const p = await client.configure("api", { failureThreshold: 7 });
      assert.equal(p.policy.failureThreshold, 7);
      assert.equal(p.source.failureThreshold, "key");
      assert.equal((await client.policy("api")).policy.failureThreshold, 7);
      const keys: string[] = [];
      for await (const c of client.listAll()) keys.push(c.key);
      assert.deepEqual(keys, ["api"]);
      assert.ok((await client.stats()).requests.acquire! >= 3);
      assert.match(await client.metrics(), /cbd_requests_total\{op="acquire"\}/);
    } finally {
      client.destroy();
      await daemon.cleanup();
    }
  });

  it("watch yields the transitions another process causes", async () => {
    const daemon = await startCbd();
    const client = new CbdClient({ socket: daemon.socket });
    try {
      const events = client.watch({ prefix: "w/" });
      const first = events.next(); // connects and subscribes
      await waitFor(async () => (await client.stats()).watchers === 1);
      const other = spawn(join(process.env.CBD_BUILD_DIR ?? join(here, "../../../../build"), "cli", "cbctl"),
        ["--socket", daemon.socket, "transition", "w/x", "open"], { stdio: "ignore" });
      await new Promise((res) => other.on("exit", res));
      spawn(join(process.env.CBD_BUILD_DIR ?? join(here, "../../../../build"), "cli", "cbctl"),
        ["--socket", daemon.socket, "reset", "w/x"], { stdio: "ignore" });
      const seen: WatchEvent[] = [(await first).value as WatchEvent];
      for await (const e of events) {
        seen.push(e);
        if (seen.length === 2) break;
      }
      assert.equal(seen[0]!.event, "transition");
      assert.equal(seen[0]!.event === "transition" && seen[0]!.cause, "manual");
      assert.equal(seen[0]!.event === "transition" && seen[0]!.key, "w/x");
      assert.equal(seen[1]!.event, "reset");
    } finally {
      client.destroy();
      await daemon.cleanup();
    }
  });
});
