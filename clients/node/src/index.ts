// cbd-client: a Node client for cbd (see README.md).
export { CbdClient, CbdCircuitBreakerStore } from "./client.js";
export type { CbdClientOptions } from "./options.js";
export type { ForceOptions, ReportOptions, TransitionOptions, WatchOptions } from "./client.js";
export { CbdError } from "./errors.js";
export { resolveSocketPath } from "./socket-path.js";
export type * from "./types.js";
