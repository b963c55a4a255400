// Files cbd opens by name are what they claim to be: the configuration file,
// a password file, the state file and the socket's lock file are regular
// files (never a FIFO that blocks the loop until someone writes to it, nor
// /dev/zero that never ends, nor a directory), read within a bound checked
// while reading, and the files cbd writes beside its socket are its own.
//
// The rules are pure functions of a stat() result (tested in
// tests/unit/safe_file_test.cpp); read_regular_file() and
// existing_file_problem() apply them to a path. Every problem is a sentence
// that names the path.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>

namespace cbd {

// The kind of file a st_mode describes, in words: "a regular file", "a
// FIFO", "a character device", "a directory"...
const char* file_kind(mode_t mode);

// nullopt for a regular file; otherwise "`label` is a FIFO, not a regular
// file", where `label` names the file (its path, or "configuration file
// PATH").
std::optional<std::string> not_regular_problem(const std::string& label, mode_t mode);

// Whether a symbolic link at the path is followed. An administrator's
// symlink to a configuration or password file is normal (and how Kubernetes
// mounts secrets), so those follow one and check its target. A file cbd
// creates or writes itself (the lock file, the state file) is not expected
// to be a link, and following one is how another user makes cbd write where
// they choose.
enum class Symlinks { Follow, Refuse };

// Reads the file at `path` into `content`: opened with O_NONBLOCK (a FIFO
// cannot block the open), O_NOCTTY and O_CLOEXEC, and O_NOFOLLOW under
// Symlinks::Refuse; refused unless stat() before the open (so a device is
// never opened) and fstat() after it (what was opened) find a regular file;
// read at most `limit` + 1 bytes, so a file that grows or never ends costs
// no more. Returns the problem, naming the file as `label` followed by the
// path ("configuration file /etc/cbd/cbd.json"; the path alone when `label`
// is empty), or nullopt.
std::optional<std::string> read_regular_file(const std::string& path, std::size_t limit,
                                             Symlinks symlinks, std::string& content,
                                             const std::string& label = "");

// For a path another program (SQLite) opens: nullopt when nothing is there
// or a regular file is (a link under Symlinks::Follow when its target is
// one); otherwise why not, naming `label` and the path.
std::optional<std::string> existing_file_problem(const std::string& path, Symlinks symlinks,
                                                 const std::string& label = "");

// Who besides cbd's user (`euid`) and root may create, rename or remove
// entries in a directory with this mode, owner and group: nullopt when
// nobody, else in words ("every user", "group 100", "its owner, uid 1000").
// Members of cbd's own group (`egid`) count as cbd, as chronyd lets its
// socket directory be 0770 in its own group.
std::optional<std::string> other_directory_writers(mode_t mode, uid_t owner, gid_t group,
                                                   uid_t euid, gid_t egid);

// Why a directory cbd puts its socket in is unsafe, naming `dir`, or
// nullopt. The rule: a directory others may write to (above) lets them
// replace cbd's socket or lock file with their own, unless it has the
// sticky bit (as /tmp has), which keeps them from removing or renaming
// entries they do not own; cbd then makes sure the entries it uses are its
// own (own_file_problem()).
std::optional<std::string> socket_directory_problem(const std::string& dir, const struct stat& st,
                                                    uid_t euid, gid_t egid);

// Why a file cbd writes into (the socket's lock file, opened with
// O_NOFOLLOW) is not its own, naming `label`, or nullopt: it must be a
// regular file, owned by cbd's user (in a sticky directory only its owner
// may remove it; a file another user owns they could swap), with one link
// (a hard link would make cbd write to the file it points at).
std::optional<std::string> own_file_problem(const std::string& label, const struct stat& st,
                                            uid_t euid);

} // namespace cbd
