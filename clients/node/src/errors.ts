// Errors the client rejects with: the daemon's own code when it answered,
// or one of the client's codes when it could not.
import type { ClientErrorCode, ErrorCode } from "./types.js";

export class CbdError extends Error {
  override readonly name = "CbdError";
  constructor(
    /** The daemon's error code, or the client's (timeout, connection_lost, ...). */
    readonly code: ErrorCode | ClientErrorCode,
    message: string,
    /** The whole error reply, when the daemon sent one (conflict carries the circuit). */
    readonly reply?: Record<string, unknown>,
  ) {
    super(`${code}: ${message}`);
  }
}

/** execute() denied the call: the circuit is open (or half-open with its probes out, or pinned open). */
export class CircuitOpenError extends Error {
  override readonly name = "CircuitOpenError";
  readonly code = "circuit_open";
  constructor(
    readonly key: string,
    /** How long until cbd may allow a call, when known. */
    readonly retryAfterMs: number | undefined,
    /** cbd's acquire reply; absent when the mirror denied the call locally. */
    readonly reply?: Record<string, unknown>,
  ) {
    super(`circuit ${JSON.stringify(key)} is open${retryAfterMs === undefined ? "" : `; retry in ${retryAfterMs} ms`}`);
  }
}
