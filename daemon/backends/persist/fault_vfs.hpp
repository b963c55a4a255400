// A SQLite VFS for tests: the system's own, except that while a trigger file
// exists every write, sync and truncate fails. Failing below SQLite (rather
// than faking an error above it) exercises the real paths: SQLite rolls the
// transaction back, and the daemon's handling of a failed commit is what a
// full disk or a dying device would produce.
#pragma once

#include <string>

namespace cbd {

// Registers the VFS (once per process; later calls change the trigger) and
// returns its name for sqlite3_open_v2(). While `trigger_file` exists, writes
// fail with SQLITE_FULL if its first line is "full", SQLITE_IOERR otherwise.
const char* register_fault_vfs(const std::string& trigger_file);

} // namespace cbd
