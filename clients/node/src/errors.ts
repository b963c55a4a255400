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
