// Opening files safely (see safe_file.hpp).
#include "daemon/core/safe_file.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace cbd {

namespace {

std::string named(const std::string& label, const std::string& path) {
    return label.empty() ? path : label + " " + path;
}

std::string octal_mode(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

// Closes a descriptor on every way out.
struct FdCloser {
    int fd;
    explicit FdCloser(int descriptor) : fd(descriptor) {}
    FdCloser(const FdCloser&) = delete;
    FdCloser& operator=(const FdCloser&) = delete;
    ~FdCloser() {
        if (fd >= 0)
            ::close(fd);
    }
};

} // namespace

const char* file_kind(mode_t mode) {
    switch (mode & S_IFMT) {
    case S_IFREG:
        return "a regular file";
    case S_IFDIR:
        return "a directory";
    case S_IFIFO:
        return "a FIFO";
    case S_IFCHR:
        return "a character device";
    case S_IFBLK:
        return "a block device";
    case S_IFSOCK:
        return "a socket";
    case S_IFLNK:
        return "a symbolic link";
    default:
        return "not a regular file";
    }
}

std::optional<std::string> not_regular_problem(const std::string& label, mode_t mode) {
    if (S_ISREG(mode))
        return std::nullopt;
    return label + " is " + file_kind(mode) + ", not a regular file";
}

std::optional<std::string> read_regular_file(const std::string& path, std::size_t limit,
                                             Symlinks symlinks, std::string& content,
                                             const std::string& label) {
    const std::string name = named(label, path);
    const bool follow = symlinks == Symlinks::Follow;
    // Looked at before the open, so that a device is never opened (opening
    // some has effects of its own); the fstat() below is what counts.
    struct stat before {};
    const int looked = follow ? ::stat(path.c_str(), &before) : ::lstat(path.c_str(), &before);
    if (looked != 0)
        return "cannot read " + name + ": " + std::strerror(errno);
    if (auto problem = not_regular_problem(name, before.st_mode))
        return problem;

    const int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW);
    FdCloser file{::open(path.c_str(), flags)};
    if (file.fd < 0) {
        if (errno == ELOOP && !follow)
            return name + " is a symbolic link, not a regular file";
        return "cannot read " + name + ": " + std::strerror(errno);
    }
    struct stat opened {};
    if (::fstat(file.fd, &opened) != 0)
        return "cannot read " + name + ": " + std::strerror(errno);
    if (auto problem = not_regular_problem(name, opened.st_mode))
        return problem;

    // One byte past the limit tells a file at the limit from a larger one,
    // and no more is ever read, whatever the file does meanwhile.
    std::string text;
    char chunk[4096];
    for (;;) {
        const std::size_t want = std::min(sizeof chunk, limit + 1 - text.size());
        const ssize_t n = ::read(file.fd, chunk, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return "cannot read " + name + ": " + std::strerror(errno);
        if (n == 0)
            break;
        text.append(chunk, static_cast<std::size_t>(n));
        if (text.size() > limit)
            return name + " is larger than " + std::to_string(limit) + " bytes";
    }
    content = std::move(text);
    return std::nullopt;
}

std::optional<std::string> existing_file_problem(const std::string& path, Symlinks symlinks,
                                                 const std::string& label) {
    const std::string name = named(label, path);
    struct stat st {};
    const int looked =
        symlinks == Symlinks::Follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st);
    if (looked != 0) {
        if (errno == ENOENT)
            return std::nullopt;
        return "cannot inspect " + name + ": " + std::strerror(errno);
    }
    return not_regular_problem(name, st.st_mode);
}

std::optional<std::string> other_directory_writers(mode_t mode, uid_t owner, gid_t group,
                                                   uid_t euid, gid_t egid) {
    if (mode & S_IWOTH)
        return std::string("every user");
    if ((mode & S_IWGRP) && group != egid && group != 0)
        return "group " + std::to_string(group);
    // An owner may always make the directory writable and change it.
    if (owner != euid && owner != 0)
        return "its owner, uid " + std::to_string(owner);
    return std::nullopt;
}

std::optional<std::string> socket_directory_problem(const std::string& dir, const struct stat& st,
                                                    uid_t euid, gid_t egid) {
    if (!S_ISDIR(st.st_mode))
        return dir + " is " + file_kind(st.st_mode) + ", not a directory";
    auto writers = other_directory_writers(st.st_mode, st.st_uid, st.st_gid, euid, egid);
    if (!writers || (st.st_mode & S_ISVTX))
        return std::nullopt;
    return "refusing to serve from " + dir + " (mode " + octal_mode(st.st_mode) + ", uid " +
           std::to_string(st.st_uid) + ", gid " + std::to_string(st.st_gid) + "): " + *writers +
           " may write there and it has no sticky bit, so they could replace cbd's socket or "
           "its lock file with their own. Use a directory only cbd's user can write (e.g. "
           "/run/cbd), or add the sticky bit";
}

std::optional<std::string> own_file_problem(const std::string& label, const struct stat& st,
                                            uid_t euid) {
    if (auto problem = not_regular_problem(label, st.st_mode))
        return problem;
    if (st.st_uid != euid)
        return label + " is owned by uid " + std::to_string(st.st_uid) +
               ", not by cbd's user (uid " + std::to_string(euid) +
               "): someone else made it; remove it if it is not in use";
    if (st.st_nlink != 1)
        return label + " has " + std::to_string(st.st_nlink) +
               " hard links: writing it would write another file too; remove it";
    return std::nullopt;
}

} // namespace cbd
