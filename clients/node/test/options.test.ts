// The constructors' argument: a string is the socket path; options are
// checked at construction with a clear error.
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";

import { CbdClient, CbdCircuitBreakerStore, type CbdClientOptions } from "../src/index.js";
import { startCbd } from "./helpers.js";

describe("the constructor's argument", () => {
  it("takes a string as the socket path, in both classes, over $CBD_SOCKET", async () => {
    const daemon = await startCbd();
    const saved = process.env.CBD_SOCKET;
    process.env.CBD_SOCKET = "/nonexistent/from-env.sock";
    const store = new CbdCircuitBreakerStore(daemon.socket);
    const client = new CbdClient(daemon.socket);
    try {
      assert.equal(store.client.socketPath, daemon.socket);
      assert.equal(client.socketPath, daemon.socket);
      assert.equal((await store.recordFailure("s")).failureCount, 1);
      assert.equal((await client.get("s")).snapshot.failureCount, 1);
    } finally {
      if (saved === undefined) delete process.env.CBD_SOCKET;
      else process.env.CBD_SOCKET = saved;
      store.destroy();
      client.destroy();
      await daemon.cleanup();
    }
  });

  it("follows the socket-path rule with no argument, or an options object without socket", () => {
    const saved = process.env.CBD_SOCKET;
    process.env.CBD_SOCKET = "/tmp/from-env.sock";
    try {
      assert.equal(new CbdClient().socketPath, "/tmp/from-env.sock");
      assert.equal(new CbdCircuitBreakerStore({ timeoutMs: 100 }).client.socketPath, "/tmp/from-env.sock");
      assert.equal(new CbdClient({ socket: "/tmp/given.sock" }).socketPath, "/tmp/given.sock");
    } finally {
      if (saved === undefined) delete process.env.CBD_SOCKET;
      else process.env.CBD_SOCKET = saved;
    }
  });

  it("refuses what cannot be right, saying why", () => {
    const bad: [unknown, RegExp][] = [
      ["", /empty string/],
      [42, /socket path \(string\) or an options object, got 42/],
      [null, /got null/],
      [["/x.sock"], /got an array/],
      [{ sockt: "/x.sock" }, /unknown option "sockt"/],
      [{ socket: 7 }, /socket must be a string/],
      [{ timeoutMs: 0 }, /timeoutMs must be an integer from 1/],
      [{ timeoutMs: 1.5 }, /timeoutMs must be an integer/],
      [{ timeoutMs: 2 ** 31 }, /timeoutMs must be an integer/],
      [{ minBackoffMs: 500, maxBackoffMs: 100 }, /maxBackoffMs \(100\) is less than minBackoffMs \(500\)/],
      [`/tmp/${"a".repeat(120)}.sock`, /at most 107/],
      ["/tmp/a\0b.sock", /NUL/],
      [{ mirror: "yes" }, /mirror must be true or false/],
      [{ batchSize: 10 }, /batchSize applies to mirror mode only; pass mirror: true/],
      [{ mirror: false, idleDropMs: 10 }, /idleDropMs applies to mirror mode only/],
      [{ mirror: true, batchSize: 0 }, /batchSize must be an integer from 1 to 1000/],
      [{ mirror: true, batchSize: 1001 }, /batchSize must be an integer from 1 to 1000/],
      [{ mirror: true, batchIntervalMs: 0 }, /batchIntervalMs must be an integer from 1/],
      [{ mirror: true, idleDropMs: 1.5 }, /idleDropMs must be an integer/],
      [{ mirror: true, batchSize: 100, maxQueuedOutcomes: 50 }, /maxQueuedOutcomes \(50\) is less than batchSize \(100\)/],
      [{ mirror: true, onReportError: "log" }, /onReportError must be a function/],
    ];
    for (const [argument, message] of bad) {
      assert.throws(() => new CbdClient(argument as CbdClientOptions), message, `for ${JSON.stringify(argument)}`);
      assert.throws(() => new CbdCircuitBreakerStore(argument as CbdClientOptions), message);
    }
  });

  it("takes the mirror options with mirror: true; the store refuses mirror mode", () => {
    const client = new CbdClient({ socket: "/tmp/x.sock", mirror: true, batchSize: 1000, batchIntervalMs: 5, idleDropMs: 1000, maxQueuedOutcomes: 1000, onReportError: () => undefined });
    assert.equal(client.mirrorStats()?.keys, 0);
    assert.equal(new CbdClient({ socket: "/tmp/x.sock", mirror: false }).mirrorStats(), null);
    assert.throws(() => new CbdCircuitBreakerStore({ socket: "/tmp/x.sock", mirror: true }), /does not use mirror mode/);
    client.destroy();
  });
});
