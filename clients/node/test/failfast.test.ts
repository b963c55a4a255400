// Failing fast: with cbd absent, refusing, stopped, full or hung, no call
// waits longer than it must. The bound the issue sets is "well under 50 ms".
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";

import { CbdClient, CbdCircuitBreakerStore, CbdError } from "../src/index.js";
import { startCbd, startCbdAt, waitFor } from "./helpers.js";

const here = dirname(fileURLToPath(import.meta.url));
const FAST_MS = 50;

/** The call's rejection and how long it took; fails the test if it resolves. */
async function rejection(call: () => Promise<unknown>): Promise<{ err: CbdError; ms: number }> {
  const t0 = performance.now();
  const outcome = await call().then(
    (value) => ({ value }),
    (err: unknown) => ({ err }),
  );
  const ms = performance.now() - t0;
  if (!("err" in outcome)) assert.fail(`expected a rejection, got ${JSON.stringify(outcome.value)}`);
  assert.ok(outcome.err instanceof CbdError, `not a CbdError: ${String(outcome.err)}`);
  return { err: outcome.err, ms };
}

describe("failing fast", () => {
  it("rejects with unavailable at once when the socket does not exist (ENOENT)", async () => {
    const store = new CbdCircuitBreakerStore("/nonexistent/cbd.sock"); // default 5 s timeout
    try {
      const first = await rejection(() => store.recordFailure("k"));
      assert.equal(first.err.code, "unavailable");
      assert.match(first.err.message, /ENOENT/);
      assert.ok(first.ms < FAST_MS, `the first call took ${first.ms.toFixed(1)} ms`);
      // Known down now: the next calls do not even try to connect.
      for (let i = 0; i < 20; i++) {
        const next = await rejection(() => store.getState("k"));
        assert.equal(next.err.code, "unavailable");
        assert.ok(next.ms < FAST_MS, `call ${i} took ${next.ms.toFixed(1)} ms`);
      }
    } finally {
      store.destroy();
    }
  });

  it("rejects many concurrent calls at once, and a gateway request's two calls take milliseconds", async () => {
    const store = new CbdCircuitBreakerStore({ socket: "/nonexistent/cbd.sock" });
    try {
      const t0 = performance.now();
      const all = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => store.recordFailure(`k${i}`)));
      const ms = performance.now() - t0;
      assert.ok(all.every((r) => r.status === "rejected" && (r.reason as CbdError).code === "unavailable"));
      assert.ok(ms < FAST_MS, `200 calls took ${ms.toFixed(1)} ms`);
      // The stoma gateway makes two store calls per request (getState, then
      // recordSuccess/recordFailure); failing open, it goes on.
      const t1 = performance.now();
      for (let request = 0; request < 10; request++) {
        await store.getState("api").catch(() => undefined);
        await store.recordFailure("api").catch(() => undefined);
      }
      const tenRequests = performance.now() - t1;
      assert.ok(tenRequests < FAST_MS, `10 gateway requests took ${tenRequests.toFixed(1)} ms`);
    } finally {
      store.destroy();
    }
  });

  it("rejects with unavailable at once when nothing listens on the socket (ECONNREFUSED)", async () => {
    const daemon = await startCbd();
    try {
      await daemon.stop("SIGKILL"); // a killed cbd leaves its socket file behind
      assert.ok(existsSync(daemon.socket), "the socket file should outlive a killed cbd");
      const client = new CbdClient(daemon.socket);
      try {
        const { err, ms } = await rejection(() => client.failure("k"));
        assert.equal(err.code, "unavailable");
        assert.match(err.message, /ECONNREFUSED/);
        assert.ok(ms < FAST_MS, `took ${ms.toFixed(1)} ms`);
      } finally {
        client.destroy();
      }
    } finally {
      await daemon.cleanup();
    }
  });

  it("keeps failing fast through the down window, then connects at the first call after it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cbd-node-down-"));
    const socket = join(dir, "cbd.sock");
    // A window long enough for cbd to start inside it on a loaded machine.
    const windowMs = 2000;
    const client = new CbdClient({ socket, minBackoffMs: windowMs, maxBackoffMs: windowMs });
    try {
      const down = await rejection(() => client.ping());
      assert.equal(down.err.code, "unavailable");
      const downAt = performance.now();
      // cbd appears now, inside the window: calls still fail at once, since
      // the client does not try to connect before the window ends.
      const late = await startCbdAt(socket);
      try {
        const inWindow = await rejection(() => client.ping());
        assert.ok(performance.now() - downAt < windowMs, "cbd took the whole window to start; the check proves nothing");
        assert.equal(inWindow.err.code, "unavailable");
        assert.ok(inWindow.ms < FAST_MS);
        assert.match(inWindow.err.message, /failing calls at once for \d+ ms more/);
        await new Promise((r) => setTimeout(r, windowMs + 20 - (performance.now() - downAt)));
        assert.ok((await client.ping()).protocol >= 7);
      } finally {
        await late.cleanup();
      }
    } finally {
      client.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects the calls cbd refuses with too_many_connections, then fails fast", async () => {
    const daemon = await startCbd("--max-connections", "1");
    const holder = createConnection(daemon.socket);
    const client = new CbdClient({ socket: daemon.socket, minBackoffMs: 500, maxBackoffMs: 500 });
    try {
      await new Promise((r) => holder.once("connect", r));
      await waitFor(async () => {
        const reply = await new Promise<string>((res) => {
          holder.once("data", (d) => res(d.toString()));
          holder.write('{"op":"stats"}\n');
        });
        return (JSON.parse(reply) as { connections: { current: number } }).connections.current === 1;
      });
      // cbd writes too_many_connections and closes; when the request's write
      // races that close, the kernel may discard the line unread, and the
      // call can only say connection_lost.
      const refused = await rejection(() => client.get("k"));
      assert.ok(["too_many_connections", "connection_lost"].includes(refused.err.code), refused.err.code);
      assert.ok(refused.ms < FAST_MS, `took ${refused.ms.toFixed(1)} ms`);
      // Either way the client backs off instead of reconnecting per call.
      const next = await rejection(() => client.get("k"));
      assert.equal(next.err.code, "unavailable");
      assert.ok(next.ms < FAST_MS);
      assert.match(next.err.message, /too many connections|closed a new connection before answering/);
    } finally {
      holder.destroy();
      client.destroy();
      await daemon.cleanup();
    }
  });

  it("still times out when cbd accepts but does not answer (stopped with SIGSTOP)", async () => {
    const daemon = await startCbd();
    const client = new CbdClient({ socket: daemon.socket, timeoutMs: 200 });
    try {
      await client.ping();
      daemon.proc.kill("SIGSTOP");
      const { err, ms } = await rejection(() => client.failure("hung"));
      assert.equal(err.code, "timeout");
      assert.ok(ms >= 190 && ms < 2000, `took ${ms.toFixed(1)} ms`);
      daemon.proc.kill("SIGCONT");
      // The timed-out call keeps its place: its late reply is consumed, and
      // the next call gets its own reply, not that one.
      const after = await client.get("other");
      assert.equal(after.snapshot.failureCount, 0);
      assert.equal((await client.get("hung")).snapshot.failureCount, 1);
    } finally {
      daemon.proc.kill("SIGCONT");
      client.destroy();
      await daemon.cleanup();
    }
  });

  it("does not keep the process alive while cbd is down", async () => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [join(here, "down-child.js"), "/nonexistent/cbd.sock"], { stdio: "inherit" });
    const code = await new Promise<number | null>((res) => child.on("exit", res));
    assert.equal(code, 0);
    assert.ok(performance.now() - t0 < 3000, "the child lingered");
  });
});
