// Listener (see listener.hpp).
#include "daemon/net/listener.hpp"

#include "daemon/core/safe_file.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <string_view>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace cbd {

namespace {

std::string errno_text(int err) {
    return std::strerror(err);
}

std::string parent_dir(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos)
        return ".";
    if (slash == 0)
        return "/";
    return path.substr(0, slash);
}

// mkdir -p; the directories we create are 0755 so clients can reach the
// socket, whose own mode is the guard.
void make_dirs(const std::string& dir) {
    if (dir.empty() || dir == "/" || dir == ".")
        return;
    struct stat st {};
    if (stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            throw StartupError(dir + " exists and is not a directory");
        return;
    }
    make_dirs(parent_dir(dir));
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
        throw StartupError("cannot create directory " + dir + ": " + errno_text(errno));
}

std::string base_name(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Opens the socket's directory and applies the rule (core/safe_file.hpp,
// socket_directory_problem(), after chronyd's for its command socket): a
// directory others may write to is refused unless it is sticky. The lock
// and the stale socket are then looked at through this descriptor, so they
// are in the directory that was checked.
int open_socket_directory(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        throw StartupError("cannot open directory " + dir + ": " + errno_text(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        throw StartupError("cannot inspect directory " + dir + ": " + errno_text(err));
    }
    if (auto problem = socket_directory_problem(dir, st, geteuid(), getegid())) {
        ::close(fd);
        throw StartupError(*problem);
    }
    return fd;
}

// Whether `path` (relative to `dir_fd`) names the file `st` describes; a
// symbolic link there is not followed.
bool names_file(int dir_fd, const std::string& path, const struct stat& st) {
    struct stat named {};
    return fstatat(dir_fd, path.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
           named.st_dev == st.st_dev && named.st_ino == st.st_ino;
}

// One attempt at an exclusive flock on PATH.lock: its descriptor, or -1
// when the file locked is no longer the one PATH.lock names (take_lock()).
// The file records the holder's pid for the error message of the next one
// to try. In a sticky directory others may share, the name may be theirs: a
// symlink is not followed (O_NOFOLLOW), a FIFO does not block the open
// (O_NONBLOCK), and nothing is written unless the file is a regular one of
// cbd's own (own_file_problem()).
int try_lock(int dir_fd, const std::string& socket_path) {
    const std::string lock_path = socket_path + ".lock";
    const std::string label = "lock file " + lock_path;
    int fd = ::openat(dir_fd, base_name(lock_path).c_str(),
                      O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0644);
    if (fd < 0) {
        // ELOOP, or EACCES from kernels that refuse another user's link in
        // a sticky directory before O_NOFOLLOW is looked at: say what it is.
        const int err = errno;
        struct stat link {};
        if (err == ELOOP ||
            (fstatat(dir_fd, base_name(lock_path).c_str(), &link, AT_SYMLINK_NOFOLLOW) == 0 &&
             S_ISLNK(link.st_mode)))
            throw StartupError(label + " is a symbolic link; cbd does not follow one there. "
                                       "Remove it if no cbd is running");
        throw StartupError("cannot open " + label + ": " + errno_text(err));
    }
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        throw StartupError("cannot inspect " + label + ": " + errno_text(err));
    }
    if (auto problem = not_regular_problem(label, st.st_mode)) {
        ::close(fd);
        throw StartupError(*problem);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        char buf[32] = {};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        ::close(fd);
        if (err == EWOULDBLOCK) {
            std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
            while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' '))
                holder.pop_back();
            throw StartupError("another cbd" + (holder.empty() ? "" : " (pid " + holder + ")") +
                               " is already serving " + socket_path);
        }
        throw StartupError("cannot lock " + lock_path + ": " + errno_text(err));
    }
    // Whether it is still cbd's own, now that nobody else holds it.
    std::optional<std::string> problem;
    if (fstat(fd, &st) != 0) {
        problem = "cannot inspect " + label + ": " + errno_text(errno);
    } else if (!names_file(dir_fd, base_name(lock_path), st)) {
        ::close(fd);
        return -1;
    } else {
        problem = own_file_problem(label, st, geteuid());
    }
    if (problem) {
        ::close(fd);
        throw StartupError(*problem);
    }
    const std::string pid = std::to_string(getpid()) + "\n";
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
        // The pid is only for messages; the lock itself is what matters.
    }
    return fd;
}

// Holds the lock on PATH.lock for the daemon's lifetime. Its holder removes
// the file at the end, while still holding it (Listener::release_lock()),
// so a lock taken may be on a file already gone: it counts only if
// PATH.lock still names the file locked, else the name is opened afresh.
int take_lock(int dir_fd, const std::string& socket_path) {
    // Each failed attempt means a daemon removed its lock file between our
    // open and our flock: many in a row only if daemons start and stop on
    // this path without a pause.
    constexpr int kLockAttempts = 16;
    for (int attempt = 0; attempt < kLockAttempts; ++attempt)
        if (const int fd = try_lock(dir_fd, socket_path); fd >= 0)
            return fd;
    throw StartupError("cannot lock " + socket_path + ".lock: it was removed and created " +
                       std::to_string(kLockAttempts) + " times while cbd was taking it");
}

// We hold the lock, so a socket file at the path is a dead daemon's, if it
// is cbd's user's: one of another user's is not ours to remove.
void remove_stale_socket(int dir_fd, const std::string& path) {
    const std::string name = base_name(path);
    struct stat st {};
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return;
    if (!S_ISSOCK(st.st_mode))
        throw StartupError(path + " exists and is not a socket; refusing to replace it");
    if (st.st_uid != geteuid())
        throw StartupError(path + " is a socket of uid " + std::to_string(st.st_uid) +
                           ", not of cbd's user (uid " + std::to_string(geteuid()) +
                           "); refusing to replace it");
    if (unlinkat(dir_fd, name.c_str(), 0) != 0)
        throw StartupError("cannot remove stale socket " + path + ": " + errno_text(errno));
}

int bind_and_listen(const std::string& path, mode_t mode) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw StartupError("socket path " + path + " is longer than " +
                           std::to_string(sizeof addr.sun_path - 1) + " bytes");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        throw StartupError("cannot create socket: " + errno_text(errno));
    // The file is born owner-only, and opened up to `mode` before anyone can
    // connect (listen comes after chmod).
    const mode_t old_umask = umask(0177);
    const int bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    const int bind_err = errno;
    umask(old_umask);
    if (bound != 0) {
        ::close(fd);
        throw StartupError("cannot bind " + path + ": " + errno_text(bind_err));
    }
    if (chmod(path.c_str(), mode) != 0 || listen(fd, SOMAXCONN) != 0) {
        const int err = errno;
        ::close(fd);
        unlink(path.c_str());
        throw StartupError("cannot listen on " + path + ": " + errno_text(err));
    }
    return fd;
}

} // namespace

mode_t parse_socket_mode(const std::string& text) {
    if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos)
        throw StartupError("invalid --socket-mode '" + text + "': expected octal such as 0660");
    return static_cast<mode_t>(std::stoul(text, nullptr, 8));
}

Listener Listener::open(const ListenerOptions& options) {
    Listener l;
    const int passed = sd_listen_fds(1);
    if (passed < 0)
        throw StartupError("cannot read the sockets systemd passed: " + errno_text(-passed));
    if (passed > 1)
        throw StartupError("systemd passed " + std::to_string(passed) +
                           " sockets; cbd serves exactly one");
    if (passed == 1) {
        const int fd = SD_LISTEN_FDS_START;
        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0) <= 0)
            throw StartupError("the socket systemd passed is not a listening Unix stream socket");
        l.fd_ = fd;
        l.activated_ = true;
        sockaddr_un addr{};
        socklen_t len = sizeof addr;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 && addr.sun_path[0])
            l.path_ = addr.sun_path;
        else
            l.path_ = "(socket from systemd)";
        return l;
    }

    l.path_ = options.path;
    make_dirs(parent_dir(options.path));
    const int dir_fd = open_socket_directory(parent_dir(options.path));
    try {
        l.lock_fd_ = take_lock(dir_fd, options.path);
        l.lock_path_ = options.path + ".lock";
        remove_stale_socket(dir_fd, options.path);
    } catch (...) {
        ::close(dir_fd);
        throw;
    }
    ::close(dir_fd);
    l.fd_ = bind_and_listen(options.path, options.mode);
    l.created_file_ = true;
    return l;
}

Listener::Listener(Listener&& other) noexcept
    : fd_(other.fd_), lock_fd_(other.lock_fd_), activated_(other.activated_),
      created_file_(other.created_file_), path_(std::move(other.path_)),
      lock_path_(std::move(other.lock_path_)) {
    other.fd_ = -1;
    other.lock_fd_ = -1;
    other.created_file_ = false;
}

Listener::~Listener() {
    if (fd_ >= 0)
        ::close(fd_);
    remove_socket_file();
    release_lock();
}

int Listener::release_fd() {
    int fd = fd_;
    fd_ = -1;
    return fd;
}

void Listener::release_lock() {
    if (lock_fd_ < 0)
        return;
    // Removed while still held, and only while the name is still this file:
    // a daemon that opened it meanwhile gets the lock once we close, sees
    // that the name no longer leads to what it locked, and tries again
    // (take_lock()), so two daemons never hold two different lock files.
    // A start refused because another daemon holds the lock never gets here
    // with it (lock_fd_ is only set once the lock is ours).
    struct stat held {};
    if (fstat(lock_fd_, &held) == 0 && names_file(AT_FDCWD, lock_path_, held))
        unlink(lock_path_.c_str());
    ::close(lock_fd_);
    lock_fd_ = -1;
}

void Listener::remove_socket_file() {
    if (created_file_) {
        unlink(path_.c_str());
        created_file_ = false;
    }
}

} // namespace cbd
