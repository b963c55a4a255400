// A child process for the concurrency test: N recordFailure calls on one key.
import { CbdCircuitBreakerStore } from "../src/index.js";

const [socket, key, count] = process.argv.slice(2);
const store = new CbdCircuitBreakerStore({ socket: socket!, timeoutMs: 30_000 });
for (let i = 0; i < Number(count); i++) await store.recordFailure(key!);
store.destroy();
