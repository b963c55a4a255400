package cbd

import "os"

// SocketPath chooses cbd's socket by the rule cbd and cbctl share: the given
// path, else $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for a non-root
// user whose XDG_RUNTIME_DIR is set, else /run/cbd/cbd.sock.
func SocketPath(path string) string {
	if path != "" {
		return path
	}
	if env := os.Getenv("CBD_SOCKET"); env != "" {
		return env
	}
	if runtimeDir := os.Getenv("XDG_RUNTIME_DIR"); runtimeDir != "" && os.Getuid() != 0 {
		return runtimeDir + "/cbd/cbd.sock"
	}
	return "/run/cbd/cbd.sock"
}
