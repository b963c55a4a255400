// The socket path, by the same rule as cbd and cbctl: the option, else
// $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for a non-root user, else
// /run/cbd/cbd.sock.
import { env, getuid } from "node:process";

export function resolveSocketPath(option?: string): string {
  if (option) return option;
  if (env.CBD_SOCKET) return env.CBD_SOCKET;
  const root = typeof getuid === "function" && getuid() === 0;
  if (!root && env.XDG_RUNTIME_DIR) return `${env.XDG_RUNTIME_DIR}/cbd/cbd.sock`;
  return "/run/cbd/cbd.sock";
}
