// CbdClient end to end: processes, restarts, dead sockets, the breaker, watch.
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
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

  it("reconnects after cbd restarts", async () => {
    const daemon = await startCbd();
    const client = new CbdClient({ socket: daemon.socket, timeoutMs: 5000 });
    try {
      assert.equal((await client.failure("r")).snapshot.failureCount, 1);
      assert.equal(await daemon.stop(), 0);
      // While cbd is down, a request waits (within its timeout) for it to come
      // back. One that raced onto the dying connection rejects with
      // connection_lost instead (it may or may not have been applied; a
      // gateway fails open on it); then the next one goes through.
      const during = client.ping().catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 300));
      await daemon.start();
      let answer = await during;
      if (answer instanceof CbdError) {
        assert.equal(answer.code, "connection_lost");
        answer = await client.ping();
      }
      assert.ok((answer as { protocol: number }).protocol >= 4);
      assert.equal((await client.failure("r")).snapshot.failureCount, 1); // memory-only: fresh
    } finally {
      client.destroy();
      await daemon.cleanup();
    }
  });

  it("rejects within its timeout when cbd is not there", async () => {
    const client = new CbdClient({ socket: "/nonexistent/cbd.sock", timeoutMs: 300 });
    const t0 = Date.now();
    await assert.rejects(client.get("x"), (err: unknown) => err instanceof CbdError && err.code === "timeout");
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 3000, `took ${took} ms`);
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
