// cbd-client: a Node client for cbd (see README.md).
export { CbdBreaker, CbdClient, CbdCircuitBreakerStore } from "./client.js";
export type { CbdClientOptions } from "./options.js";
export type { ExecuteOptions, ForceOptions, ReportOptions, TransitionOptions, WatchOptions } from "./client.js";
export type { MirrorStats } from "./mirror.js";
export { CbdError, CircuitOpenError } from "./errors.js";
export { resolveSocketPath } from "./socket-path.js";
export type * from "./types.js";
