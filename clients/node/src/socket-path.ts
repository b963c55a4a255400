// The socket path, by the same rule as cbd and cbctl (common/socket_path.cpp):
// the option, else $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for a
// non-root user, else /run/cbd/cbd.sock. An empty value counts as unset, as
// it does there.
import { env, geteuid } from "node:process";

export function resolveSocketPath(option?: string): string {
  if (option) return option;
  if (env.CBD_SOCKET) return env.CBD_SOCKET;
  const root = typeof geteuid === "function" && geteuid() === 0;
  if (!root && env.XDG_RUNTIME_DIR) return `${env.XDG_RUNTIME_DIR}/cbd/cbd.sock`;
  return "/run/cbd/cbd.sock";
}
