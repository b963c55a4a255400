// The listening socket: either the one systemd passed us (socket activation),
// or one we bind ourselves, guarded by a lock file so two daemons never serve
// one path. No business rules here.
#pragma once

#include "daemon/core/startup_error.hpp"

#include <string>
#include <sys/types.h>

namespace cbd {

struct ListenerOptions {
    std::string path;   // socket path (ignored under socket activation)
    mode_t mode = 0660; // applied to the socket file before listen()
};

class Listener {
  public:
    // Takes the socket from systemd when LISTEN_FDS passes one; otherwise
    // creates the parent directory if missing, takes the lock beside the
    // socket, replaces a stale socket file, binds with a tight umask, sets the
    // mode and listens. Throws StartupError with a message that says why.
    static Listener open(const ListenerOptions& options);

    Listener(Listener&& other) noexcept;
    Listener& operator=(Listener&&) = delete;
    ~Listener();

    // Hands the listening fd to the caller (the server's acceptor).
    int release_fd();
    bool activated() const { return activated_; }
    const std::string& path() const { return path_; }

    // Removes the socket file if we created it (never systemd's).
    void remove_socket_file();
    // Removes the lock file beside the socket and lets go of the lock, if we
    // hold one (never under socket activation: systemd owns the socket and
    // no lock is taken). Done by the destructor, so a start refused after
    // the lock was taken leaves no lock file behind.
    void release_lock();

  private:
    Listener() = default;

    int fd_ = -1;
    int lock_fd_ = -1;
    bool activated_ = false;
    bool created_file_ = false;
    std::string path_;
    std::string lock_path_; // set with lock_fd_
};

// Parses an octal mode such as "0660"; throws StartupError when invalid.
mode_t parse_socket_mode(const std::string& text);

} // namespace cbd
