// The load generator (see load.hpp).
#include "bench/load.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <stdexcept>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace cbbench {

namespace {

using Clock = std::chrono::steady_clock;

struct InFlight {
    OpKind op;
    std::uint64_t key;
    Clock::time_point started;
};

struct Conn {
    int fd = -1;
    std::string out;
    std::size_t out_sent = 0;
    std::string in;
    std::deque<InFlight> in_flight;
    bool want_write = false;
};

class Rng {
  public:
    explicit Rng(std::uint64_t seed) : s_(seed | 1) {}
    std::uint64_t next() {
        s_ ^= s_ << 13;
        s_ ^= s_ >> 7;
        s_ ^= s_ << 17;
        return s_;
    }

  private:
    std::uint64_t s_;
};

int connect_unix(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        const int err = errno;
        close(fd);
        throw std::runtime_error("cannot connect to " + path + ": " + std::strerror(err));
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

} // namespace

LoadResult run_load(const LoadOptions& o, Protocol& protocol) {
    LoadResult result;
    std::vector<Conn> conns(static_cast<std::size_t>(o.connections));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < conns.size(); ++i) {
        conns[i].fd = connect_unix(o.socket);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }

    Rng rng(0x9e3779b97f4a7c15ULL);
    std::uint64_t issued = 0, next_key = 0;
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(o.seconds));
    bool issuing = true;

    auto pick_op = [&] {
        if (o.mix.size() == 1)
            return o.mix[0].op;
        int roll = static_cast<int>(rng.next() % 100);
        for (const auto& m : o.mix) {
            if (roll < m.weight)
                return m.op;
            roll -= m.weight;
        }
        return o.mix.back().op;
    };

    auto refill = [&](Conn& c) {
        while (issuing && c.in_flight.size() < static_cast<std::size_t>(o.pipeline)) {
            if (o.requests != 0 && issued >= o.requests) {
                issuing = false;
                break;
            }
            const OpKind op = pick_op();
            const std::uint64_t key = o.sequential_keys ? next_key++ % o.keys : rng.next() % o.keys;
            protocol.first_request(op, key, c.out);
            c.in_flight.push_back({op, key, Clock::now()});
            ++issued;
        }
    };

    auto flush = [&](std::size_t index) {
        Conn& c = conns[index];
        while (c.out_sent < c.out.size()) {
            ssize_t n =
                send(c.fd, c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN)
                    break;
                throw std::runtime_error(std::string("send failed: ") + std::strerror(errno));
            }
            c.out_sent += static_cast<std::size_t>(n);
        }
        if (c.out_sent == c.out.size()) {
            c.out.clear();
            c.out_sent = 0;
        }
        const bool want = !c.out.empty();
        if (want != c.want_write) {
            epoll_event ev{};
            ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
            ev.data.u64 = index;
            epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
            c.want_write = want;
        }
    };

    for (std::size_t i = 0; i < conns.size(); ++i) {
        refill(conns[i]);
        flush(i);
    }

    std::vector<epoll_event> events(conns.size());
    char buf[64 * 1024];
    std::size_t outstanding = conns.size(); // connections with work in flight
    while (outstanding > 0) {
        const auto now = Clock::now();
        if (o.requests == 0 && now >= deadline)
            break;
        int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
        for (int e = 0; e < n; ++e) {
            const std::size_t index = events[e].data.u64;
            Conn& c = conns[index];
            if (events[e].events & EPOLLIN) {
                ssize_t got = recv(c.fd, buf, sizeof buf, 0);
                if (got == 0)
                    throw std::runtime_error("the server closed a connection");
                if (got < 0 && errno != EAGAIN)
                    throw std::runtime_error(std::string("recv failed: ") + std::strerror(errno));
                if (got > 0)
                    c.in.append(buf, static_cast<std::size_t>(got));
                std::size_t pos = 0;
                const auto done_at = Clock::now();
                for (;;) {
                    const std::size_t len =
                        protocol.reply_length(std::string_view(c.in).substr(pos));
                    if (len == 0)
                        break;
                    const std::string_view reply(c.in.data() + pos, len);
                    pos += len;
                    if (c.in_flight.empty())
                        throw std::runtime_error("a reply nobody asked for");
                    InFlight f = c.in_flight.front();
                    c.in_flight.pop_front();
                    if (protocol.is_error(reply)) {
                        ++result.errors;
                    } else if (protocol.follow_up(f.op, f.key, reply, c.out)) {
                        c.in_flight.push_back(f); // its second step, same start time
                    } else {
                        ++result.ops;
                        result.latency.record(
                            std::chrono::duration<double, std::micro>(done_at - f.started).count());
                    }
                }
                c.in.erase(0, pos);
                const bool had_work = !c.in_flight.empty();
                refill(c);
                if (!had_work && c.in_flight.empty())
                    --outstanding;
            }
            flush(index);
        }
    }
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (auto& c : conns)
        close(c.fd);
    close(ep);
    return result;
}

} // namespace cbbench
