// cbd-floor: the fastest line server a Unix socket allows, as a yardstick.
// One epoll thread answers every request line with a canned line of R bytes
// (130 by default, the size of a snapshot reply); it parses nothing and keeps
// no state, so no real line-protocol server here can beat it.
//   cbd-floor SOCKET [REPLY_BYTES]
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: cbd-floor SOCKET [REPLY_BYTES]\n");
        return 2;
    }
    const std::size_t reply_bytes = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 130;
    std::string reply(reply_bytes > 1 ? reply_bytes - 1 : 0, 'x');
    reply += '\n';
    std::signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    unlink(argv[1]);
    if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(lfd, 4096) != 0) {
        std::perror("cbd-floor: bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    std::vector<epoll_event> events(1024);
    std::vector<char> buf(64 * 1024);
    std::string out;
    for (;;) {
        int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK)) >= 0) {
                    epoll_event cev{};
                    cev.events = EPOLLIN;
                    cev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t got = read(fd, buf.data(), buf.size());
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN)
                    continue;
                close(fd);
                continue;
            }
            out.clear();
            for (ssize_t j = 0; j < got; ++j)
                if (buf[static_cast<std::size_t>(j)] == '\n')
                    out += reply;
            // A benchmark client reads its replies; a blocking write keeps this simple.
            std::size_t sent = 0;
            while (sent < out.size()) {
                ssize_t w = write(fd, out.data() + sent, out.size() - sent);
                if (w < 0) {
                    if (errno == EAGAIN)
                        continue;
                    break;
                }
                sent += static_cast<std::size_t>(w);
            }
        }
    }
}
