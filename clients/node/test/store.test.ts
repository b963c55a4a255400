// CbdCircuitBreakerStore against the reference store's own behaviours.
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { CbdCircuitBreakerStore, CbdError, type CircuitBreakerStore } from "../src/index.js";
import { startCbd, type Daemon } from "./helpers.js";

describe("CbdCircuitBreakerStore (the reference store's cases)", () => {
  let daemon: Daemon;
  let store: CbdCircuitBreakerStore;
  before(async () => {
    daemon = await startCbd();
    store = new CbdCircuitBreakerStore({ socket: daemon.socket });
  });
  after(async () => {
    store.destroy();
    await daemon.cleanup();
  });

  it("implements the interface", () => {
    const asInterface: CircuitBreakerStore = store;
    assert.equal(typeof asInterface.destroy, "function");
  });

  it("reads an unknown key as closed with zero counts", async () => {
    const before = Date.now();
    const s = await store.getState("unknown");
    assert.deepEqual(Object.keys(s), ["state", "failureCount", "successCount", "lastFailureTime", "lastStateChange"]);
    assert.equal(s.state, "closed");
    assert.equal(s.failureCount, 0);
    assert.equal(s.successCount, 0);
    assert.equal(s.lastFailureTime, 0);
    assert.ok(s.lastStateChange >= before - 1000 && s.lastStateChange <= Date.now() + 1000);
  });

  it("counts two failures as 2 and stamps the last failure", async () => {
    await store.recordFailure("two");
    const s = await store.recordFailure("two");
    assert.equal(s.failureCount, 2);
    assert.ok(s.lastFailureTime > 0);
    assert.equal(s.state, "closed");
  });

  it("counts one success as 1", async () => {
    const s = await store.recordSuccess("one");
    assert.equal(s.successCount, 1);
    assert.equal(s.failureCount, 0);
  });

  it("zeroes both counts on a transition to closed", async () => {
    await store.recordFailure("z");
    await store.recordSuccess("z");
    await store.transition("z", "open");
    const s = await store.transition("z", "closed");
    assert.equal(s.state, "closed");
    assert.equal(s.failureCount, 0);
    assert.equal(s.successCount, 0);
  });

  it("zeroes successCount only on a transition to half-open", async () => {
    await store.recordFailure("h");
    await store.recordSuccess("h");
    const s = await store.transition("h", "half-open");
    assert.equal(s.state, "half-open");
    assert.equal(s.failureCount, 1);
    assert.equal(s.successCount, 0);
  });

  it("keeps counts on a transition to open, and stamps lastStateChange", async () => {
    await store.recordFailure("o");
    const before = await store.getState("o");
    await new Promise((r) => setTimeout(r, 5));
    const s = await store.transition("o", "open");
    assert.equal(s.failureCount, 1);
    assert.ok(s.lastStateChange > before.lastStateChange);
  });

  it("starts fresh after reset", async () => {
    await store.recordFailure("r");
    await store.recordSuccess("r");
    assert.equal(await store.reset("r"), undefined);
    const s = await store.getState("r");
    assert.equal(s.failureCount, 0);
    assert.equal(s.successCount, 0);
  });

  it("keeps circuits independent", async () => {
    await store.transition("iso-a", "open");
    assert.equal((await store.getState("iso-b")).state, "closed");
  });

  it("rejects with the daemon's code", async () => {
    await assert.rejects(store.getState(""), (err: unknown) => err instanceof CbdError && err.code === "invalid_key");
    await assert.rejects(
      store.transition("k", "sideways" as never),
      (err: unknown) => err instanceof CbdError && err.code === "invalid_state",
    );
  });

  it("pipelines many requests on one connection", async () => {
    const replies = await Promise.all(Array.from({ length: 500 }, () => store.recordFailure("pipelined")));
    const counts = replies.map((s) => s.failureCount).sort((a, b) => a - b);
    assert.deepEqual(counts, Array.from({ length: 500 }, (_, i) => i + 1));
    const stats = await store.client.stats();
    assert.ok(stats.connections.total <= 3, `one connection, not ${stats.connections.total}`);
  });
});
