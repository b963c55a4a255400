// The constructor's argument: a socket path, or options. Checked here, once,
// so that a wrong value fails loudly at construction rather than as a
// connect error (or a silently different socket) on the first call.
import { resolveSocketPath } from "./socket-path.js";

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
}

export interface ResolvedClientOptions {
  socket: string;
  timeoutMs: number;
  minBackoffMs: number;
  maxBackoffMs: number;
}

// Linux's sockaddr_un holds 108 bytes with the terminating NUL; a longer path
// would be cut short by the kernel interface and name another file.
const MAX_SOCKET_PATH_BYTES = 107;
// setTimeout's largest delay (a 32-bit signed ms count); beyond it Node fires
// at once.
const MAX_TIMER_MS = 2 ** 31 - 1;

const OPTION_NAMES = new Set(["socket", "timeoutMs", "minBackoffMs", "maxBackoffMs"]);

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
  return { socket, timeoutMs, minBackoffMs, maxBackoffMs };
}

function milliseconds(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_TIMER_MS) {
    throw new RangeError(`cbd-client: ${name} must be an integer from 1 to ${MAX_TIMER_MS} (ms), got ${describe(value)}`);
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
