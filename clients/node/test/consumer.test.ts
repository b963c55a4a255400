// Proof from a consumer: the package as npm would publish it (npm pack),
// installed offline into a fresh project, type-checked by tsc against the
// stoma gateway's CircuitBreakerStore interface (written here from its
// documentation, ../shared/reference/000_d6e2822a8442c93b.txt, not imported
// from cbd-client), and loaded at run time both with import and require().
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

import { startCbd, type Daemon } from "./helpers.js";

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = resolve(here, "../.."); // dist/test -> clients/node
// The consumer's TypeScript is this package's own dev dependency, by path:
// the consumer installs nothing from a registry.
const tsc = join(packageRoot, "node_modules", "typescript", "bin", "tsc");

// The interface as the gateway declares it (circuit-breaker.ts:47), with the
// snapshot and state types it names.
const GATEWAY_STORE = `// The stoma gateway's store contract (packages/gateway/src/policies/resilience/circuit-breaker.ts).
export type CircuitState = "closed" | "open" | "half-open";

export interface CircuitBreakerSnapshot {
  state: CircuitState;
  failureCount: number;
  successCount: number;
  lastFailureTime: number;
  lastStateChange: number;
}

/** Pluggable storage backend for circuit breaker state. */
export interface CircuitBreakerStore {
  /** Read the current snapshot for a circuit key. */
  getState(key: string): Promise<CircuitBreakerSnapshot>;
  /** Record a successful request and return the updated snapshot. */
  recordSuccess(key: string): Promise<CircuitBreakerSnapshot>;
  /** Record a failed request and return the updated snapshot. */
  recordFailure(key: string): Promise<CircuitBreakerSnapshot>;
  /** Transition the circuit to a new state and return the updated snapshot. */
  transition(key: string, to: CircuitState): Promise<CircuitBreakerSnapshot>;
  /** Fully reset a circuit, removing all state. */
  reset(key: string): Promise<void>;
  /** Optional cleanup - release timers, close connections, etc. */
  destroy?(): void;
}

export interface CircuitBreakerConfig {
  store?: CircuitBreakerStore;
  failureThreshold?: number;
}

export function circuitBreaker(config: CircuitBreakerConfig): CircuitBreakerConfig {
  return config;
}
`;

// ES module use: the "import" condition, dist/src/index.d.ts.
const ESM_USE = `import { CbdCircuitBreakerStore, CbdClient, CbdError } from "cbd-client";
import { circuitBreaker, type CircuitBreakerSnapshot, type CircuitBreakerStore } from "./gateway.cjs";

const store: CircuitBreakerStore = new CbdCircuitBreakerStore("/run/cbd/cbd.sock");
circuitBreaker({ store: new CbdCircuitBreakerStore({ socket: "/run/cbd/cbd.sock", timeoutMs: 1000 }) });
circuitBreaker({ store: new CbdCircuitBreakerStore() });

export async function snapshot(): Promise<CircuitBreakerSnapshot> {
  try {
    return await store.getState("api");
  } catch (err) {
    if (err instanceof CbdError && err.code === "unavailable") return store.recordFailure("api");
    throw err;
  }
}
export const acquired: Promise<boolean> = new CbdClient("/run/cbd/cbd.sock").acquire("api").then((a) => a.allowed);
`;

// CommonJS use: the "require" condition, dist/cjs/index.d.ts.
const CJS_USE = `import cbd = require("cbd-client");
import type { CircuitBreakerStore } from "./gateway.cjs";

const store: CircuitBreakerStore = new cbd.CbdCircuitBreakerStore("/run/cbd/cbd.sock");
export async function failures(): Promise<number> {
  return (await store.recordFailure("api")).failureCount;
}
export const isCbdError = (e: unknown): boolean => e instanceof cbd.CbdError && e.code === "timeout";
`;

// Uses that must not compile: proof that the checks above read real types
// from the package (an untyped package would let these through).
const WRONG_ESM = `import { CbdCircuitBreakerStore } from "cbd-client";
import type { CircuitBreakerStore } from "./gateway.cjs";
const s: CircuitBreakerStore = new CbdCircuitBreakerStore(42);
export const n: Promise<number> = s.getState("k");
`;
const WRONG_CJS = `import cbd = require("cbd-client");
export const c = new cbd.CbdClient({ sockt: "/x.sock" });
`;

const TSCONFIG = (files: string[]) =>
  JSON.stringify({
    compilerOptions: {
      module: "NodeNext",
      moduleResolution: "NodeNext",
      target: "ES2022",
      strict: true,
      noEmit: true,
      // The package's own .d.ts files are checked too, with no Node types:
      // its public types must not need @types/node.
      skipLibCheck: false,
      types: [],
    },
    files,
  });

// Run time, CommonJS: require() must load the CommonJS build.
const CJS_RUNTIME = `const assert = require("node:assert/strict");
const { CbdCircuitBreakerStore, CbdClient, CbdError } = require("cbd-client");
assert.equal(require("cbd-client"), require("./node_modules/cbd-client/dist/cjs/index.js"));
(async () => {
  const store = new CbdCircuitBreakerStore(process.argv[2]);
  await store.recordFailure("cjs");
  const s = await store.recordFailure("cjs");
  assert.equal(s.failureCount, 2);
  store.destroy();
  const absent = new CbdClient("/nonexistent/cbd.sock");
  await assert.rejects(absent.ping(), (e) => e instanceof CbdError && e.code === "unavailable");
  console.log("cjs ok");
})().catch((e) => { console.error(e); process.exit(1); });
`;
const ESM_RUNTIME = `import * as assert from "node:assert/strict";
import { CbdCircuitBreakerStore } from "cbd-client";
import { CbdCircuitBreakerStore as FromEsmBuild } from "./node_modules/cbd-client/dist/src/index.js";
assert.equal(CbdCircuitBreakerStore, FromEsmBuild);
const store = new CbdCircuitBreakerStore(process.argv[2]);
assert.equal((await store.recordFailure("esm")).failureCount, 1);
store.destroy();
console.log("esm ok");
`;

function run(command: string, args: string[], cwd: string): { status: number | null; output: string } {
  const r = spawnSync(command, args, { cwd, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe("a consumer of the packed package", () => {
  let work: string;
  let project: string;
  let daemon: Daemon;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "cbd-node-consumer-"));
    // A cache of its own, so that --offline proves nothing is fetched.
    const cache = join(work, "npm-cache");
    const packed = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", work, "--cache", cache], {
        cwd: packageRoot,
        encoding: "utf8",
      }),
    ) as { filename: string; files: { path: string }[] }[];
    const tarball = join(work, packed[0]!.filename);
    const paths = packed[0]!.files.map((f) => f.path);
    assert.ok(paths.includes("dist/cjs/index.js") && paths.includes("dist/src/index.js") && paths.includes("dist/cjs/package.json"));
    assert.ok(!paths.some((p) => p.startsWith("dist/test/")), "the tests are not shipped");

    project = join(work, "consumer");
    mkdirSync(project);
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "cbd-consumer", private: true, type: "module" }));
    const install = run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--cache", cache, tarball], project);
    assert.equal(install.status, 0, install.output);

    writeFileSync(join(project, "gateway.cts"), GATEWAY_STORE);
    writeFileSync(join(project, "use-esm.ts"), ESM_USE);
    writeFileSync(join(project, "use-cjs.cts"), CJS_USE);
    writeFileSync(join(project, "wrong-esm.ts"), WRONG_ESM);
    writeFileSync(join(project, "wrong-cjs.cts"), WRONG_CJS);
    writeFileSync(join(project, "tsconfig.json"), TSCONFIG(["gateway.cts", "use-esm.ts", "use-cjs.cts"]));
    writeFileSync(join(project, "tsconfig.wrong.json"), TSCONFIG(["gateway.cts", "wrong-esm.ts", "wrong-cjs.cts"]));
    writeFileSync(join(project, "runtime.cjs"), CJS_RUNTIME);
    writeFileSync(join(project, "runtime.mjs"), ESM_RUNTIME);
    daemon = await startCbd();
  });
  after(async () => {
    await daemon?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it("type-checks CbdCircuitBreakerStore as the gateway's CircuitBreakerStore, from ESM and from CommonJS", () => {
    const check = run(process.execPath, [tsc, "-p", "tsconfig.json", "--listFiles"], project);
    assert.equal(check.status, 0, check.output);
    // Each use read the declarations of its own build.
    assert.match(check.output, /node_modules\/cbd-client\/dist\/src\/index\.d\.ts/);
    assert.match(check.output, /node_modules\/cbd-client\/dist\/cjs\/index\.d\.ts/);
  });

  it("rejects wrong uses with type errors, from ESM and from CommonJS", () => {
    const check = run(process.execPath, [tsc, "-p", "tsconfig.wrong.json"], project);
    assert.notEqual(check.status, 0);
    assert.match(check.output, /wrong-esm\.ts\(3,[0-9]+\): error TS2345/); // 42 is not a socket path
    assert.match(check.output, /wrong-esm\.ts\(4,[0-9]+\): error TS2322/); // a snapshot is not a number
    assert.match(check.output, /wrong-cjs\.cts\(2,[0-9]+\): error TS2561/); // no option "sockt" (did you mean socket?)
  });

  it("works at run time through require()", () => {
    const r = run(process.execPath, ["runtime.cjs", daemon.socket], project);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /cjs ok/);
  });

  it("works at run time through import", () => {
    const r = run(process.execPath, ["runtime.mjs", daemon.socket], project);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /esm ok/);
  });
});
