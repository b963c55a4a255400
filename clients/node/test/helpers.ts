// Starts a real cbd on a temporary socket for the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// dist/test -> clients/node -> clients -> the repository
export const repoRoot = resolve(here, "../../../..");
export const cbdBin = process.env.CBD_BIN ?? join(process.env.CBD_BUILD_DIR ?? join(repoRoot, "build"), "daemon", "cbd");

export interface Daemon {
  socket: string;
  dir: string;
  proc: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  start(): Promise<void>;
  cleanup(): Promise<void>;
}

export function canConnect(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection(path);
    s.on("connect", () => {
      s.destroy();
      res(true);
    });
    s.on("error", () => res(false));
  });
}

export async function waitFor(pred: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A cbd on a socket in a fresh temporary directory (removed by cleanup()). */
export function startCbd(...args: string[]): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), "cbd-node-"));
  return startCbdAt(join(dir, "cbd.sock"), ...args);
}

/** A cbd on the given socket path; cleanup() removes the socket's directory. */
export async function startCbdAt(socket: string, ...args: string[]): Promise<Daemon> {
  const dir = dirname(socket);
  const d: Daemon = {
    socket,
    dir,
    proc: undefined as unknown as ChildProcess,
    async start() {
      d.proc = spawn(cbdBin, ["--socket", socket, "--log-level", "warn", ...args], { stdio: ["ignore", "ignore", "inherit"] });
      await waitFor(() => canConnect(socket));
    },
    stop(signal: NodeJS.Signals = "SIGTERM") {
      return new Promise((res) => {
        // A process killed by a signal has a signalCode and no exitCode.
        if (d.proc.exitCode !== null || d.proc.signalCode !== null) return res(d.proc.exitCode);
        d.proc.once("exit", (code) => res(code));
        d.proc.kill(signal);
      });
    },
    async cleanup() {
      await d.stop("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await d.start();
  return d;
}

export interface Redis {
  port: number;
  proc: ChildProcess;
  cleanup(): Promise<void>;
}

/** A free TCP port on 127.0.0.1, as the kernel picks it (free when asked; taken by the caller soon after). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const server = createServer();
    server.once("error", rej);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port;
      server.close(() => res(port));
    });
  });
}

function canConnectTcp(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection(port, "127.0.0.1");
    s.on("connect", () => {
      s.destroy();
      res(true);
    });
    s.on("error", () => res(false));
  });
}

/** A redis-server of the test's own on a free port, nothing saved; cleanup() kills it. */
export async function startRedis(): Promise<Redis> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const proc = spawn("redis-server", ["--save", "", "--appendonly", "no", "--port", String(port), "--bind", "127.0.0.1"], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    const exited = new Promise<void>((res) => proc.once("exit", () => res()));
    let up = false;
    const deadline = Date.now() + 10_000;
    while (!up && proc.exitCode === null && Date.now() < deadline) {
      up = await canConnectTcp(port);
      if (!up) await new Promise((r) => setTimeout(r, 20));
    }
    if (up) {
      return {
        port,
        proc,
        async cleanup() {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
          await exited;
        },
      };
    }
    if (proc.exitCode === null) proc.kill("SIGKILL");
    await exited;
    // Another process took the port between freePort() and the bind: try another.
    if (attempt >= 3) throw new Error("redis-server did not start");
  }
}
