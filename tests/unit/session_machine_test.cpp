// The session's control flow as a state machine: bytes in, steps out, no
// socket. A small driver here plays the socket; a fake line handler stands
// in for the dispatcher, so each test decides how big and how late replies
// are.
#include "daemon/net/session_machine.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

using namespace cbd;
using Kind = SessionStep::Kind;

namespace {

SteadyTime test_now{};

// Answers `ping` with one short line at once, `big` with 600 KiB, `later`
// with a slot that the test fills, and `watch` by turning the connection
// into an event stream.
struct Handler {
    std::vector<std::string> lines;
    std::vector<ReplyQueue::Ticket> later;

    void operator()(std::string_view line, RequestContext& ctx) {
        lines.emplace_back(line);
        ctx.operations = 1;
        if (line == "big")
            ctx.replies->ready_tail() += std::string(600 * 1024, 'x') + "\n";
        else if (line == "later")
            later.push_back(ctx.replies->reserve());
        else if (line == "watch") {
            ctx.replies->ready_tail() += "watching\n";
            ctx.start_watch = WatchFilter{};
        } else
            ctx.replies->ready_tail() += "pong\n";
    }
};

SessionMachineOptions options(std::size_t max_line_bytes = 1024) {
    return {.max_line_bytes = max_line_bytes,
            .watch_queue = 2,
            .idle_timeout = std::chrono::milliseconds(1000),
            .request_timeout = std::chrono::milliseconds(500),
            .now = [] { return test_now; }};
}

// Plays the socket: carries out every step, and remembers what it saw.
struct Driver {
    explicit Driver(SessionMachineOptions o = options())
        : machine([this](std::string_view l, RequestContext& c) { handler(l, c); }, stats,
                  std::move(o), Peer{}, AccessLevel::Admin) {
        machine.start();
        run();
    }

    void run() {
        for (;;) {
            const SessionStep s = machine.next();
            steps.push_back(s.kind);
            switch (s.kind) {
            case Kind::Idle:
                return;
            case Kind::Write: {
                const std::size_t n = std::min(socket_takes, s.bytes.size());
                received.append(s.bytes.substr(0, n));
                machine.wrote(n);
                break;
            }
            case Kind::AwaitWrite:
                pending_write = std::string(s.bytes);
                break;
            case Kind::Read:
                read_space = s.space;
                break;
            case Kind::CancelRead:
                cancel_asked = true;
                break;
            case Kind::WaitTurn:
                turns_waited += 1;
                break;
            case Kind::Watch:
                (void)machine.take_watch_filter();
                break;
            case Kind::Unwatch:
            case Kind::ArmRequestTimer:
                break;
            case Kind::ShutdownSend:
                send_shut = true;
                break;
            case Kind::Close:
                closed = true;
                break;
            }
        }
    }

    // The client sends `bytes`; a pending read takes what fits.
    void send(std::string_view bytes) {
        REQUIRE(!read_space.empty());
        REQUIRE(bytes.size() <= read_space.size());
        std::memcpy(read_space.data(), bytes.data(), bytes.size());
        read_space = {};
        machine.read(bytes.size());
        run();
    }

    // The client reads everything: a pending write completes.
    void client_reads() {
        REQUIRE(pending_write);
        received += *pending_write;
        pending_write.reset();
        machine.write_done();
        run();
    }

    bool saw(Kind kind) const { return std::find(steps.begin(), steps.end(), kind) != steps.end(); }
    std::size_t count(std::string_view what) const {
        std::size_t n = 0;
        for (auto at = received.find(what); at != std::string::npos;
             at = received.find(what, at + 1))
            ++n;
        return n;
    }

    Handler handler;
    DaemonStats stats;
    SessionMachine machine;
    std::vector<Kind> steps;
    std::string received;
    std::size_t socket_takes = SIZE_MAX;
    std::optional<std::string> pending_write;
    std::span<char> read_space;
    bool cancel_asked = false;
    std::size_t turns_waited = 0;
    bool send_shut = false;
    bool closed = false;
};

std::string lines_of(std::string_view line, std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i)
        out.append(line).append("\n");
    return out;
}

} // namespace

TEST_CASE("a new session reads first", "[session_machine]") {
    Driver d;
    CHECK(d.steps.front() == Kind::Read);
    CHECK(!d.read_space.empty());
}

TEST_CASE("a turn's budget spent, the session waits for its next turn", "[session_machine]") {
    Driver d;
    d.send(lines_of("ping", 100));
    CHECK(d.handler.lines.size() == kMaxLinesPerTurn);
    CHECK(d.count("pong") == kMaxLinesPerTurn);
    CHECK(d.turns_waited == 1);
    CHECK(d.read_space.empty()); // no read while lines wait

    d.machine.turn_granted();
    d.run();
    CHECK(d.handler.lines.size() == 100);
    CHECK(d.count("pong") == 100);
    CHECK(d.turns_waited == 1);
    CHECK(!d.read_space.empty()); // all dispatched: it reads again
}

TEST_CASE("over the output bound, the session dispatches and reads nothing more",
          "[session_machine]") {
    Driver d;
    d.socket_takes = 0; // the client reads nothing
    d.send("big\nbig\nbig\n");
    // A reply of 600 KiB spends a turn; its write waits for the client.
    CHECK(d.handler.lines.size() == 1);
    CHECK(d.pending_write);
    // Turns come (here from answers elsewhere): the second reply takes the
    // unsent bytes past 1 MiB, and then nothing more is dispatched or read.
    d.machine.wake();
    d.run();
    CHECK(d.handler.lines.size() == 2);
    d.machine.wake();
    d.run();
    CHECK(d.handler.lines.size() == 2);
    CHECK(d.read_space.empty());
    CHECK(d.turns_waited == 0);

    d.socket_takes = SIZE_MAX;
    d.client_reads();
    CHECK(d.handler.lines.size() == 3);
    CHECK(d.count("\n") == 3);
    CHECK(!d.read_space.empty());
}

TEST_CASE("a half-closed peer gets every reply, then the session closes", "[session_machine]") {
    Driver d;
    d.send("later\nping\nunfinished");
    CHECK(d.received.empty()); // the first reply holds back the second
    d.machine.read_ended();
    d.run();
    CHECK(!d.closed);
    d.machine.replies().fill(d.handler.later.at(0), "late\n");
    d.machine.wake();
    d.run();
    CHECK(d.received == "late\npong\n");
    CHECK(d.closed);
    CHECK(!d.saw(Kind::ShutdownSend));
}

TEST_CASE("stop writes what is produced, then closes", "[session_machine]") {
    Driver d;
    d.send("later\n");
    REQUIRE(!d.read_space.empty()); // it reads while the answer is out
    const auto reads = std::count(d.steps.begin(), d.steps.end(), Kind::Read);
    d.machine.stop();
    d.run();
    CHECK(d.cancel_asked);
    d.machine.read_failed(true); // the cancelled read
    d.run();
    CHECK(!d.closed);
    CHECK(std::count(d.steps.begin(), d.steps.end(), Kind::Read) == reads); // no new read
    d.machine.replies().fill(d.handler.later.at(0), "late\n");
    d.machine.wake();
    d.run();
    CHECK(d.received == "late\n");
    CHECK(d.closed);
}

TEST_CASE("a line too long is answered, then the session drains and closes", "[session_machine]") {
    Driver d(options(16));
    d.send("ping\n" + std::string(12, 'x'));
    d.send(std::string(5, 'x')); // 17 bytes, and no end in sight
    CHECK(d.count("pong") == 1);
    CHECK(d.count("line_too_long") == 1);
    CHECK(d.stats.errors[static_cast<std::size_t>(ErrorCode::LineTooLong)] == 1);
    CHECK(d.send_shut);
    CHECK(!d.closed);
    d.send("more\n"); // drained: never a request
    CHECK(!d.closed);
    CHECK(d.handler.lines.size() == 1);
    d.machine.read_ended();
    d.run();
    CHECK(d.closed);
}

TEST_CASE("a watcher's events follow the replies; an overflow ends it", "[session_machine]") {
    Driver d;
    d.send("later\nwatch\nping\n");
    CHECK(d.saw(Kind::Watch));
    CHECK(d.handler.lines.size() == 2); // nothing after the watch is a request
    d.machine.push_event(std::make_shared<const std::string>("e1\n"));
    d.run();
    CHECK(d.received.empty()); // behind the reply still to come
    d.machine.replies().fill(d.handler.later.at(0), "late\n");
    d.machine.wake();
    d.run();
    CHECK(d.received == "late\nwatching\ne1\n");

    d.socket_takes = 0;
    for (int i = 0; i < 4; ++i) {
        d.machine.push_event(std::make_shared<const std::string>("e\n"));
        d.run();
    }
    CHECK(d.saw(Kind::Unwatch));
    CHECK(d.machine.dropped_events() == 3);
    d.socket_takes = SIZE_MAX;
    d.client_reads();
    CHECK(d.count("overflow") == 1);
    CHECK(d.send_shut);
}

TEST_CASE("the idle and request timers close only when their time has come", "[session_machine]") {
    test_now = SteadyTime{};
    Driver d;
    REQUIRE(d.machine.idle_deadline() == SteadyTime{} + std::chrono::milliseconds(1000));
    test_now += std::chrono::milliseconds(600);
    d.send("ping\nunfin");
    CHECK(d.saw(Kind::ArmRequestTimer));
    const TimerVerdict early = d.machine.idle_timer_fired();
    CHECK(!early.close);
    CHECK(early.rearm_at == test_now + std::chrono::milliseconds(1000));
    test_now += std::chrono::milliseconds(500);
    CHECK(d.machine.request_timer_fired().close);
    d.run();
    CHECK(d.closed);
}
