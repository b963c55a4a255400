// A child process for the fail-fast test: calls a store whose cbd is absent,
// and never destroys it. It must exit on its own, at once: nothing the
// client holds (socket, timer) may keep the event loop alive.
import { CbdCircuitBreakerStore } from "../src/index.js";

const [socket] = process.argv.slice(2);
const store = new CbdCircuitBreakerStore(socket!);
for (let i = 0; i < 2; i++) {
  const code = await store.recordFailure("k").then(
    () => "resolved",
    (err: { code?: string }) => err.code,
  );
  if (code !== "unavailable") {
    console.error(`call ${i}: expected unavailable, got ${code}`);
    process.exit(3);
  }
}
