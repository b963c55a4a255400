// The cbd wire protocol (docs/PROTOCOL.md, version 9) as TypeScript types.

/** The reference gateway's snapshot, field for field. */
export type CircuitState = "closed" | "open" | "half-open";

export interface CircuitBreakerSnapshot {
  state: CircuitState;
  failureCount: number;
  successCount: number;
  /** Epoch ms of the last failure; 0 if none. */
  lastFailureTime: number;
  /** Epoch ms of the last transition, or of creation. */
  lastStateChange: number;
}

/** The stoma gateway's store interface, which CbdCircuitBreakerStore implements. */
export interface CircuitBreakerStore {
  getState(key: string): Promise<CircuitBreakerSnapshot>;
  recordSuccess(key: string): Promise<CircuitBreakerSnapshot>;
  recordFailure(key: string): Promise<CircuitBreakerSnapshot>;
  transition(key: string, to: CircuitState): Promise<CircuitBreakerSnapshot>;
  reset(key: string): Promise<void>;
  destroy?(): void;
}

export type ErrorCode =
  | "parse_error"
  | "invalid_request"
  | "unknown_op"
  | "invalid_key"
  | "invalid_state"
  | "line_too_long"
  | "too_many_circuits"
  | "conflict"
  | "forced"
  | "no_permit"
  | "permission_denied"
  | "too_many_connections"
  /** Durable mode: the change could not be committed, so it was not applied. */
  | "storage_unavailable"
  /** --backend redis: Redis did not answer within --backend-timeout. */
  | "backend_unavailable"
  /** --backend redis: Redis answered with data cbd cannot use (not an outage). */
  | "backend_error"
  | "internal_error";

/** Codes the client itself gives, when the daemon could not answer. */
export type ClientErrorCode =
  /** cbd accepted the connection but did not answer within timeoutMs. */
  | "timeout"
  /** The connection closed after the request was sent: it may or may not have been applied. */
  | "connection_lost"
  /** cbd cannot be reached (the connect failed, or it did moments ago): not sent, rejected at once. */
  | "unavailable"
  /** destroy() was called. */
  | "destroyed"
  /** The peer broke the protocol (not JSON, a wrong id, an endless line). */
  | "bad_reply";

export interface ForcePin {
  state: "open" | "closed";
  /** Epoch ms when the pin lifts; null for no TTL. */
  until: number | null;
  reason: string;
  by: { uid: number; pid: number };
}

export type TransitionCause =
  | "manual"
  | "threshold"
  | "timeout"
  | "probe-success"
  | "probe-failure"
  | "lease-expired"
  | "force"
  | "unforce"
  | "force-expired";

export interface TransitionInfo {
  from: CircuitState;
  to: CircuitState;
  cause: TransitionCause;
}

/** Fields every reply about a circuit carries. */
export interface CircuitReply {
  snapshot: CircuitBreakerSnapshot;
  generation: number;
  forced?: ForcePin;
  transition?: TransitionInfo;
}

export interface AcquireReply extends CircuitReply {
  allowed: boolean;
  /** Present when the call is a half-open probe: pass it to report(). */
  permit?: string;
  /** Present when denied. */
  retryAfterMs?: number;
}

export interface ReportReply extends CircuitReply {
  /** The report's generation was not the circuit's: nothing changed. */
  stale?: boolean;
}

/** `ignored` releases a probe's permit and counts nowhere. */
export type Outcome = "success" | "failure" | "ignored";

/** One entry of a `reportBatch`: the fields of a `report`. */
export interface BatchedReport {
  key: string;
  outcome: Outcome;
  generation?: number;
  durationMs?: number;
  permit?: string;
}

/** The reply to `reportBatch` (protocol 9): applied + stale + errors.length = entries sent. */
export interface ReportBatchReply {
  applied: number;
  stale: number;
  /** One per failed entry, by ascending 0-based index. */
  errors: { index: number; code: ErrorCode; message: string }[];
}

export interface Policy {
  failureThreshold: number;
  resetTimeoutMs: number;
  halfOpenMax: number;
  successThreshold: number;
  probeLeaseMs: number;
}

export type PolicySource = "key" | "prefix" | "default";

export interface PolicyReply {
  key: string;
  policy: Policy;
  source: Record<keyof Policy, PolicySource>;
  prefix: string | null;
}

export interface ListEntry {
  key: string;
  snapshot: CircuitBreakerSnapshot;
  generation: number;
  forced?: ForcePin;
}

export interface ListReply {
  circuits: ListEntry[];
  next: string | null;
}

export interface ListOptions {
  prefix?: string;
  state?: CircuitState;
  limit?: number;
  after?: string;
}

export interface StatsReply {
  version: string;
  protocol: number;
  uptimeMs: number;
  connections: { current: number; total: number; refused: number };
  requests: Record<string, number>;
  errors: Record<string, number>;
  /** null with the Redis backend (the circuits are in Redis). */
  circuits: { total: number; closed: number; open: number; halfOpen: number; forced: number } | null;
  watchers: number;
  events: { emitted: number; dropped: number };
  residentMemoryBytes: number;
  /** null when cbd runs without --state-file. */
  storage: StorageStats | null;
  /** null with the memory backend. */
  backend: BackendStats | null;
}

export interface BackendStats {
  kind: "redis";
  address: string;
  up: boolean;
  disconnects: number;
  unavailable: number;
  lastError: string | null;
}

export interface StorageStats {
  mode: "always" | "batch" | "off";
  path: string;
  /** false since the last commit failed, until one succeeds. */
  healthy: boolean;
  commits: number;
  failures: number;
  written: number;
  undone: number;
  pending: number;
  lastCommitMs: number;
  lastError: string | null;
}

export interface TransitionEvent {
  event: "transition";
  key: string;
  from: CircuitState;
  to: CircuitState;
  at: number;
  cause: TransitionCause;
  generation: number;
  snapshot: CircuitBreakerSnapshot;
  forced?: ForcePin;
}

export interface ResetEvent {
  event: "reset";
  key: string;
  at: number;
}

export interface OverflowEvent {
  event: "overflow";
  dropped: number;
}

export type WatchEvent = TransitionEvent | ResetEvent | OverflowEvent;

/** A request as sent (id is added by the client). */
export type Request = { op: string; [field: string]: unknown };
