// The constructor's argument: a socket path, or options. Checked here, once,
// so that a wrong value fails loudly at construction rather than as a
// connect error (or a silently different socket) on the first call.
import type { CbdError } from "./errors.js";
import { resolveSocketPath } from "./socket-path.js";
import type { BatchedReport } from "./types.js";

export interface CbdClientOptions {
  /** cbd's socket; default: $CBD_SOCKET, $XDG_RUNTIME_DIR/cbd/cbd.sock, /run/cbd/cbd.sock. */
  socket?: string;
  /** Per-request timeout in ms (default 5000). */
  timeoutMs?: number;
  /**
   * After a failed connect, calls reject at once with `unavailable` for this
   * long (default 50 ms), doubled on each further failure up to maxBackoffMs
   * (default 2000 ms); then the next call tries to connect again.
   */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * Mirror mode for execute()/breaker(): each key's circuit is copied here
   * and kept current by a watch, so that calls on a closed circuit are
   * allowed without asking cbd and their outcomes go in batches (docs/CLIENTS.md,
   * "Mirror mode"). Default false.
   */
  mirror?: boolean;
  /** Mirror mode: send the queued outcomes once this many wait (1 … 1000, default 100). */
  batchSize?: number;
  /** Mirror mode: ... or this long after the first of them was queued (ms, default 1). */
  batchIntervalMs?: number;
  /** Mirror mode: a key not used for this long leaves the mirror (ms, default 60000). */
  idleDropMs?: number;
  /** Mirror mode: outcomes waiting to be sent, at most (default 10000); beyond it the oldest are dropped and counted. */
  maxQueuedOutcomes?: number;
  /**
   * Mirror mode: told of each batched outcome cbd refused (the entry's
   * error) or that could not be delivered (the batch's error). Never thrown:
   * the caller that made the call has already returned.
   */
  onReportError?: (error: CbdError, reports: readonly BatchedReport[]) => void;
}

export interface ResolvedMirrorOptions {
  batchSize: number;
  batchIntervalMs: number;
  idleDropMs: number;
  maxQueuedOutcomes: number;
  onReportError: ((error: CbdError, reports: readonly BatchedReport[]) => void) | null;
}

export interface ResolvedClientOptions {
  socket: string;
  timeoutMs: number;
  minBackoffMs: number;
  maxBackoffMs: number;
  /** null unless mirror mode is on. */
  mirror: ResolvedMirrorOptions | null;
}

// cbd takes at most 1000 entries in one reportBatch (kMaxReportBatch).
export const MAX_REPORT_BATCH = 1000;
// A bound on memory, not a protocol limit: a million queued outcomes is tens
// of MB.
const MAX_QUEUED_OUTCOMES = 1_000_000;

// Linux's sockaddr_un holds 108 bytes with the terminating NUL; a longer path
// would be cut short by the kernel interface and name another file.
const MAX_SOCKET_PATH_BYTES = 107;
// setTimeout's largest delay (a 32-bit signed ms count); beyond it Node fires
// at once.
const MAX_TIMER_MS = 2 ** 31 - 1;

const MIRROR_OPTION_NAMES = ["batchSize", "batchIntervalMs", "idleDropMs", "maxQueuedOutcomes", "onReportError"] as const;
const OPTION_NAMES = new Set(["socket", "timeoutMs", "minBackoffMs", "maxBackoffMs", "mirror", ...MIRROR_OPTION_NAMES]);

export function resolveClientOptions(argument: string | CbdClientOptions | undefined): ResolvedClientOptions {
  let options: CbdClientOptions;
  if (argument === undefined) {
    options = {};
  } else if (typeof argument === "string") {
    if (argument === "") {
      throw new TypeError("cbd-client: the socket path is an empty string; pass nothing to use the default path");
    }
    options = { socket: argument };
  } else if (typeof argument === "object" && argument !== null && !Array.isArray(argument)) {
    for (const name of Object.keys(argument)) {
      if (!OPTION_NAMES.has(name)) {
        throw new TypeError(`cbd-client: unknown option "${name}"; expected ${[...OPTION_NAMES].join(", ")}`);
      }
    }
    options = argument;
  } else {
    throw new TypeError(`cbd-client: expected a socket path (string) or an options object, got ${describe(argument)}`);
  }

  if (options.socket !== undefined && typeof options.socket !== "string") {
    throw new TypeError(`cbd-client: socket must be a string path, got ${describe(options.socket)}`);
  }
  const socket = resolveSocketPath(options.socket);
  const socketBytes = Buffer.byteLength(socket);
  if (socketBytes > MAX_SOCKET_PATH_BYTES) {
    throw new RangeError(
      `cbd-client: the socket path is ${socketBytes} bytes; a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}: ${socket}`,
    );
  }
  if (socket.includes("\0")) throw new TypeError("cbd-client: the socket path contains a NUL character");

  const timeoutMs = milliseconds("timeoutMs", options.timeoutMs, 5000);
  const minBackoffMs = milliseconds("minBackoffMs", options.minBackoffMs, 50);
  const maxBackoffMs = milliseconds("maxBackoffMs", options.maxBackoffMs, Math.max(2000, minBackoffMs));
  if (maxBackoffMs < minBackoffMs) {
    throw new RangeError(`cbd-client: maxBackoffMs (${maxBackoffMs}) is less than minBackoffMs (${minBackoffMs})`);
  }
  return { socket, timeoutMs, minBackoffMs, maxBackoffMs, mirror: resolveMirrorOptions(options) };
}

function resolveMirrorOptions(options: CbdClientOptions): ResolvedMirrorOptions | null {
  if (options.mirror !== undefined && typeof options.mirror !== "boolean") {
    throw new TypeError(`cbd-client: mirror must be true or false, got ${describe(options.mirror)}`);
  }
  if (!options.mirror) {
    // A batch size without mirror mode would silently do nothing.
    const stray = MIRROR_OPTION_NAMES.find((name) => options[name] !== undefined);
    if (stray) throw new TypeError(`cbd-client: ${stray} applies to mirror mode only; pass mirror: true`);
    return null;
  }
  const batchSize = integer("batchSize", options.batchSize, 100, 1, MAX_REPORT_BATCH, "");
  const batchIntervalMs = milliseconds("batchIntervalMs", options.batchIntervalMs, 1);
  const idleDropMs = milliseconds("idleDropMs", options.idleDropMs, 60_000);
  const maxQueuedOutcomes = integer("maxQueuedOutcomes", options.maxQueuedOutcomes, 10_000, 1, MAX_QUEUED_OUTCOMES, "");
  if (maxQueuedOutcomes < batchSize) {
    throw new RangeError(`cbd-client: maxQueuedOutcomes (${maxQueuedOutcomes}) is less than batchSize (${batchSize})`);
  }
  const onReportError = options.onReportError ?? null;
  if (onReportError !== null && typeof onReportError !== "function") {
    throw new TypeError(`cbd-client: onReportError must be a function, got ${describe(onReportError)}`);
  }
  return { batchSize, batchIntervalMs, idleDropMs, maxQueuedOutcomes, onReportError };
}

function milliseconds(name: string, value: unknown, fallback: number): number {
  return integer(name, value, fallback, 1, MAX_TIMER_MS, " (ms)");
}

function integer(name: string, value: unknown, fallback: number, min: number, max: number, unit: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`cbd-client: ${name} must be an integer from ${min} to ${max}${unit}, got ${describe(value)}`);
  }
  return value;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
  if (typeof value === "number") return String(value);
  return `a ${typeof value}`;
}
