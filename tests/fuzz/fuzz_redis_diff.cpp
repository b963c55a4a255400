// libFuzzer target: the memory backend and the Redis backend must give the
// same replies. An input is a bounded program (at most kMaxSteps steps over
// three keys) of circuit operations and clock steps; each operation is built
// as the request line a client would send, parsed by the daemon's own parser
// into a Request, and run on a MemoryBackend (over a MemoryCircuitStore) and
// on a RedisBackend (over a RedisStore on a redis-server of our own), both
// reading one ManualClock. Each outcome becomes the reply the daemon would
// send (append_outcome_reply) and the replies must be equal byte for byte,
// but for one documented difference: a permit's text (memory draws random
// ones, the scripts count them), so a reply's permit is compared by presence
// and each backend's reports carry the permits that backend gave. The
// events watchers would get must be equal too, line for line: memory's from
// its store, Redis's from the scripts' pub/sub messages, as in the daemon
// (a marker published after each step says all of the step's have come).
// Steps also tick the daemon's 100 ms timer (expire_due, the sweep), and
// the daemon's policy layers (defaults, a prefix rule) are one of a few.
//
// There are no exceptions: the five differences it found first (memory's
// export giving `next` after a full last page, configure's refusal in
// other words, Redis's list and export showing unsettled circuits, memory's
// read-level get showing them, Redis's reply carrying what time settled as
// the operation's transition) were fixed, and their inputs are in the
// corpus.
//
// On a difference the program is shrunk (cut after the first differing
// step, then steps dropped one at a time while a difference remains) and
// printed, one step per line with both replies, before abort().
//
// The redis-server (a unix socket in a temporary directory, no persistence)
// starts with the first input and is killed at exit (or, should the process
// die, by PR_SET_PDEATHSIG); each input starts on a FLUSHALLed Redis and a
// fresh memory store at the same time. A Redis answer that does not come
// within kAnswerDeadline is a failure as well. Built with libFuzzer when
// CBD_FUZZ is on, and with replay_main.cpp in every build, so the corpus
// replays as a test (which needs redis-server on PATH).
#include "common/request.hpp"
#include "daemon/backends/memory/memory_backend.hpp"
#include "daemon/backends/memory/memory_store.hpp"
#include "daemon/backends/redis/redis_backend.hpp"
#include "daemon/backends/redis/redis_store.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/log.hpp"
#include "daemon/dispatch/circuit_json.hpp"
#include "daemon/dispatch/reply_builder.hpp"

#include <boost/asio/io_context.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <variant>
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr std::int64_t kStartMs = 1'764'201'600'000;
constexpr std::size_t kMaxSteps = 64;
constexpr auto kAnswerDeadline = 5s;
constexpr std::array<std::string_view, 3> kKeys = {"a", "b", "p/c"};
constexpr std::size_t kKeyCount = kKeys.size();
// Most permits a side remembers per key (the newest last).
constexpr std::size_t kPermitsKept = 3;
// A permit neither backend gives: memory's are 16 random hex digits (one
// chance in 2^64), the scripts' the generation in hex then 8 digits.
constexpr std::string_view kWrongPermit = "0000000000000000";

// ---------------------------------------------------------------------------
// The program.

enum class Kind : std::uint8_t {
    Get,
    Success,
    Failure,
    Transition,
    Reset,
    Acquire,
    Report,
    Force,
    Unforce,
    Configure,
    Policy,
    List,
    Export,
    Advance,
    Tick,
};
constexpr std::size_t kKindCount = 15;

// One step: its kind, its key, and bytes whose meaning is the kind's
// (request_line() and run_step() read them). A step means the same wherever
// it stands, so the shrinker can drop its neighbours.
struct Step {
    Kind kind = Kind::Get;
    std::uint8_t key = 0;
    std::array<std::uint8_t, 7> p{};
};

// Bytes past the input's end read as 0.
class Reader {
  public:
    Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    bool done() const { return at_ >= size_; }
    std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }

  private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t at_ = 0;
};

// How many parameter bytes each kind reads from the input.
std::size_t param_bytes(Kind kind) {
    switch (kind) {
    case Kind::Get:
    case Kind::Transition:
        return 2;
    case Kind::Report:
        return 4;
    case Kind::Force:
    case Kind::List:
    case Kind::Export:
    case Kind::Advance:
        return 2;
    case Kind::Configure:
        return 7;
    default:
        return 0;
    }
}

struct Program {
    std::uint8_t config = 0; // which daemon policy layers (daemon_layers())
    std::vector<Step> steps;
};

Program decode(const std::uint8_t* data, std::size_t size) {
    Reader in(data, size);
    Program prog;
    prog.config = in.byte();
    while (!in.done() && prog.steps.size() < kMaxSteps) {
        const std::uint8_t op = in.byte();
        Step s;
        s.kind = static_cast<Kind>(op % kKindCount);
        s.key = static_cast<std::uint8_t>((op / kKindCount) % kKeyCount);
        for (std::size_t i = 0; i < param_bytes(s.kind); ++i)
            s.p[i] = in.byte();
        prog.steps.push_back(s);
    }
    return prog;
}

// The daemon's own layers (config file defaults and prefix rules), one of a
// few, so that keys resolve through each layer and the scripts get policy
// numbers from C++ as in a daemon with a config file.
cbd::PolicyConfig daemon_layers(std::uint8_t which) {
    using F = cbd::PolicyField;
    cbd::PolicyConfig c;
    switch (which % 4) {
    case 0:
        break;
    case 1:
        c.defaults[F::FailureThreshold] = 2;
        c.defaults[F::ResetTimeoutMs] = 1000;
        break;
    case 2:
        c.defaults[F::TripRule] = 2; // rate
        c.defaults[F::WindowSize] = 10;
        c.defaults[F::MinimumCalls] = 4;
        c.rules.push_back({"p/", {}});
        c.rules.back().patch[F::ResetTimeoutMs] = 500;
        c.rules.back().patch[F::ProbeLeaseMs] = 200;
        c.rules.back().patch[F::HalfOpenMax] = 2;
        break;
    case 3:
        c.defaults[F::ResetTimeoutMs] = 300;
        c.rules.push_back({"p/", {}});
        c.rules.back().patch[F::TripRule] = 1; // consecutive
        c.rules.back().patch[F::FailureThreshold] = 2;
        c.rules.back().patch[F::ResetTimeoutMs] = 1000;
        c.rules.back().patch[F::ResetTimeoutMaxMs] = 8000;
        c.rules.back().patch[F::Mode] = 1; // observe
        break;
    }
    return c;
}

// Values `configure` sets per field, in range (a few make combinations
// configure refuses: a count window over 10,000 calls, resetTimeoutMaxMs
// below resetTimeoutMs). Index 7 removes the field (null).
constexpr std::array<std::array<std::int64_t, 7>, cbd::kPolicyFieldCount> kValues = {{
    {1, 2, 3, 5, 1, 2, 9'007'199'254'740'991},     // failureThreshold
    {1, 100, 1000, 30'000, 250, 5000, 86'400'000}, // resetTimeoutMs
    {1, 2, 3, 1, 2, 5, 100},                       // halfOpenMax
    {1, 2, 3, 1, 2, 4, 100},                       // successThreshold
    {1, 50, 1000, 60'000, 200, 10, 5000},          // probeLeaseMs
    {0, 1, 2, 0, 1, 2, 2},                         // tripRule
    {0, 1, 0, 1, 0, 1, 1},                         // windowType
    {1, 3, 10, 1000, 10'000, 10'001, 3'600'000},   // windowSize
    {1, 2, 5, 100, 3, 1, 2},                       // minimumCalls
    {1, 50, 100, 34, 25, 67, 99},                  // failureRateThreshold
    {0, 1, 100, 5000, 50, 0, 10},                  // slowCallDurationMs
    {1, 50, 100, 34, 25, 67, 99},                  // slowCallRateThreshold
    {1, 500, 4000, 120'000, 1000, 2000, 30'000},   // resetTimeoutMaxMs
    {0, 1, 2, 0, 1, 2, 1},                         // mode
}};

// ---------------------------------------------------------------------------
// What each backend's client knows: the generation it last saw per key and
// the permits its acquires gave.

struct ClientView {
    std::array<std::uint64_t, kKeyCount> generation{};
    std::array<std::vector<std::string>, kKeyCount> permits;

    void clear() {
        generation.fill(0);
        for (auto& p : permits)
            p.clear();
    }
};

void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    for (char c : s) {
        if (c == '"' || c == '\\')
            out += '\\';
        out += c;
    }
    out += '"';
}

// The generation a step names relative to what the client saw: that one,
// the one before, the one after, or 0.
std::uint64_t relative_generation(std::uint64_t seen, int how) {
    switch (how % 4) {
    case 0:
        return seen;
    case 1:
        return seen > 0 ? seen - 1 : 0;
    case 2:
        return seen + 1;
    default:
        return 0;
    }
}

constexpr std::array<std::string_view, 3> kStateNames = {"closed", "open", "half-open"};

// The request line a client of `view` sends for step `s`; empty for steps
// that are not requests (clock steps, ticks).
std::string request_line(const Step& s, const ClientView& view) {
    const auto key = kKeys[s.key];
    std::string line = "{\"op\":\"";
    auto simple = [&](std::string_view op) {
        line += op;
        line += "\",\"key\":";
        append_json_string(line, key);
    };
    switch (s.kind) {
    case Kind::Get:
        simple("get");
        break;
    case Kind::Success:
        simple("success");
        break;
    case Kind::Failure:
        simple("failure");
        break;
    case Kind::Reset:
        simple("reset");
        break;
    case Kind::Acquire:
        simple("acquire");
        break;
    case Kind::Unforce:
        simple("unforce");
        break;
    case Kind::Policy:
        simple("policy");
        break;
    case Kind::Transition: {
        simple("transition");
        line += ",\"to\":\"";
        line += kStateNames[s.p[0] % 3];
        line += '"';
        const int expect = (s.p[0] / 3) % 4; // none, state, generation, both
        if (expect & 1) {
            line += ",\"expect\":\"";
            line += kStateNames[s.p[1] % 3];
            line += '"';
        }
        if (expect & 2)
            line += ",\"expectGeneration\":" +
                    std::to_string(relative_generation(view.generation[s.key], s.p[1] / 3));
        break;
    }
    case Kind::Report: {
        simple("report");
        static constexpr std::array<std::string_view, 3> outcomes = {"success", "failure",
                                                                     "ignored"};
        line += ",\"outcome\":\"";
        line += outcomes[s.p[0] % 3];
        line += '"';
        if (const int g = (s.p[0] / 3) % 5; g != 0)
            line += ",\"generation\":" +
                    std::to_string(relative_generation(view.generation[s.key], g - 1));
        const auto& permits = view.permits[s.key];
        switch (s.p[1] % 4) {
        case 0:
            break;
        case 1: // the newest permit this client holds
            if (!permits.empty()) {
                line += ",\"permit\":";
                append_json_string(line, permits.back());
            }
            break;
        case 2: // an older one
            if (permits.size() >= 2) {
                line += ",\"permit\":";
                append_json_string(line, permits[permits.size() - 2]);
            }
            break;
        default:
            line += ",\"permit\":";
            append_json_string(line, kWrongPermit);
            break;
        }
        switch (s.p[2] % 4) {
        case 0:
            break;
        case 1:
            line += ",\"durationMs\":0";
            break;
        case 2:
            line += ",\"durationMs\":" + std::to_string(s.p[3]);
            break;
        default:
            line += ",\"durationMs\":" + std::to_string(s.p[3] * 100);
            break;
        }
        break;
    }
    case Kind::Force: {
        simple("force");
        line += s.p[0] & 1 ? ",\"state\":\"open\"" : ",\"state\":\"closed\"";
        switch ((s.p[0] >> 1) % 3) {
        case 0:
            break;
        case 1:
            line += ",\"ttlMs\":" + std::to_string(1 + s.p[1] * 10);
            break;
        default:
            line += ",\"ttlMs\":" + std::to_string(1 + s.p[1] * 1000);
            break;
        }
        if (s.p[0] & 8)
            line += ",\"reason\":\"fuzz\"";
        break;
    }
    case Kind::Configure: {
        simple("configure");
        if (s.p[0] % 8 == 0) {
            line += ",\"policy\":null";
            break;
        }
        line += ",\"policy\":{";
        std::array<bool, cbd::kPolicyFieldCount> used{};
        const int fields = 1 + s.p[0] % 3;
        bool first = true;
        for (int i = 0; i < fields; ++i) {
            const std::size_t f = s.p[1 + 2 * i] % cbd::kPolicyFieldCount;
            if (used[f])
                continue;
            used[f] = true;
            if (!first)
                line += ',';
            first = false;
            const auto& spec = cbd::kPolicyFieldSpecs[f];
            append_json_string(line, spec.name);
            line += ':';
            const std::size_t v = s.p[2 + 2 * i] % 8;
            if (v == 7) {
                line += "null";
            } else if (!spec.names.empty()) {
                append_json_string(line, spec.names[static_cast<std::size_t>(kValues[f][v])]);
            } else {
                line += std::to_string(kValues[f][v]);
            }
        }
        line += '}';
        break;
    }
    case Kind::List:
    case Kind::Export: {
        line += s.kind == Kind::List ? "list\"" : "export\"";
        if (s.p[0] & 1)
            line += ",\"prefix\":\"p/\"";
        else if (s.p[0] & 2)
            line += ",\"prefix\":\"b\"";
        if (s.p[0] & 4)
            line += ",\"limit\":" + std::to_string(1 + s.p[1] % 3);
        if (s.p[0] & 8) {
            line += ",\"after\":";
            append_json_string(line, kKeys[(s.p[1] / 3) % kKeyCount]);
        }
        if (s.kind == Kind::List && (s.p[0] & 16)) {
            line += ",\"state\":\"";
            line += kStateNames[(s.p[1] / 9) % 3];
            line += '"';
        }
        break;
    }
    case Kind::Advance:
    case Kind::Tick:
        return {};
    }
    line += '}';
    return line;
}

// How far an Advance step moves the clock: a few ms, around a lease or a
// reset timeout, around the built-in 30 s, or hours.
std::int64_t advance_ms(const Step& s) {
    const std::int64_t n = s.p[1];
    switch (s.p[0] % 4) {
    case 0:
        return 1 + n;
    case 1:
        return n * 50;
    case 2:
        return n * 1000;
    default:
        return n * 3'600'000;
    }
}

// ---------------------------------------------------------------------------
// The redis-server, and a connection of our own for FLUSHALL.

[[noreturn]] void fail(const std::string& what);

struct RedisServer {
    std::string dir;
    std::string socket_path;
    pid_t pid = -1;
    int admin = -1; // our connection: FLUSHALL
};

RedisServer* g_server = nullptr;

void stop_redis_server() {
    if (!g_server)
        return;
    if (g_server->admin >= 0)
        close(g_server->admin);
    if (g_server->pid > 0) {
        kill(g_server->pid, SIGKILL);
        waitpid(g_server->pid, nullptr, 0);
        g_server->pid = -1;
    }
    unlink(g_server->socket_path.c_str());
    rmdir(g_server->dir.c_str());
    g_server = nullptr;
}

int connect_unix(const std::string& path) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void start_redis_server(RedisServer& server) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/cbd-redis-diff-XXXXXX";
    if (!mkdtemp(templ.data()))
        fail("mkdtemp: " + std::string(std::strerror(errno)));
    server.dir = templ;
    server.socket_path = server.dir + "/redis.sock";
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0)
        fail("fork: " + std::string(std::strerror(errno)));
    if (pid == 0) {
        // Dies with us, however we die (a crash skips atexit).
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        const int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket",
               server.socket_path.c_str(), "--save", "", "--appendonly", "no", "--dir",
               server.dir.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    server.pid = pid;
    g_server = &server;
    std::atexit(stop_redis_server);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while ((server.admin = connect_unix(server.socket_path)) < 0) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            server.pid = -1;
            fail("redis-server did not start (is it on PATH?)");
        }
        if (std::chrono::steady_clock::now() > deadline)
            fail("redis-server did not open its socket within 10 s");
        usleep(10'000);
    }
    timeval tv{5, 0};
    setsockopt(server.admin, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// Sends one command on our own connection and answers the first line of
// the reply (enough for the status and integer replies we ask for).
std::string admin_command(RedisServer& server, std::initializer_list<std::string_view> argv) {
    std::string command = "*" + std::to_string(argv.size()) + "\r\n";
    for (auto arg : argv) {
        command += "$" + std::to_string(arg.size()) + "\r\n";
        command += arg;
        command += "\r\n";
    }
    // libFuzzer's timers interrupt system calls: retry on EINTR.
    for (std::size_t sent = 0; sent < command.size();) {
        const ssize_t n = write(server.admin, command.data() + sent, command.size() - sent);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("cannot write to redis-server: " + std::string(std::strerror(errno)));
        sent += static_cast<std::size_t>(n);
    }
    std::string answer;
    while (answer.size() < 256 && !answer.ends_with("\r\n")) {
        char c = 0;
        const ssize_t n = read(server.admin, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("no answer from redis-server to " + std::string(*argv.begin()) + ": " +
                 (n == 0 ? std::string("connection closed") : std::strerror(errno)));
        answer += c;
    }
    return answer;
}

void flushall(RedisServer& server) {
    if (auto answer = admin_command(server, {"FLUSHALL"}); answer != "+OK\r\n")
        fail("FLUSHALL answered '" + answer + "'");
}

// ---------------------------------------------------------------------------
// Both backends, built once.

class NoDeferral final : public cbd::Deferral {
  public:
    cbd::Completion later() override { fail("the memory backend answered later"); }
};

// The Redis backend's answer lands here.
class Slot final : public cbd::Deferral {
  public:
    cbd::Completion later() override {
        return [this](const cbd::OpOutcome& outcome) { answer = outcome; };
    }
    std::optional<cbd::OpOutcome> answer;
};

// What watchers would be sent: each event line as the EventHub writes it.
// Memory's come from the store as it changes; Redis's from the scripts'
// pub/sub messages, as in the daemon. A reset event for kMarkerKey (which
// no step uses) is our marker: published after a step, it arrives after
// every event the step's scripts published.
constexpr std::string_view kMarkerKey = "~marker";

class EventLog final : public cbd::CircuitObserver {
  public:
    void on_transition(std::string_view key, const cbd::TransitionRecord& t,
                       const cbd::CircuitView& circuit) override {
        add(cbd::transition_event_line(key, t, circuit));
    }
    void on_reset(std::string_view key, std::int64_t at) override {
        if (key == kMarkerKey)
            marker = at;
        else
            add(cbd::reset_event_line(key, at));
    }
    std::string take() { return std::exchange(lines_, {}); }

    std::int64_t marker = -1;

  private:
    void add(std::string line) {
        if (line.ends_with('\n'))
            line.pop_back();
        if (!lines_.empty())
            lines_ += "\n            ";
        lines_ += line;
    }
    std::string lines_;
};

struct World {
    RedisServer server;
    cbd::ManualClock clock{kStartMs};
    EventLog memory_events, redis_events;
    cbd::MemoryCircuitStore store{clock, cbd::kDefaultMaxCircuits, &memory_events};
    cbd::MemoryBackend memory{store};
    boost::asio::io_context io;
    std::optional<cbd::RedisStore> redis_store;
    std::optional<cbd::RedisBackend> redis;
    cbd::Peer peer{0, 0, 4242};
    std::int64_t markers_ = 0;

    World() {
        cbd::log_init(cbd::LogLevel::Error);
        start_redis_server(server);
        cbd::RedisStoreOptions options;
        options.connection.endpoint.unix_path = server.socket_path;
        options.connection.timeout = 3s; // under kAnswerDeadline: an outage answers
        options.test_clock = &clock;
        options.instance = "fuzz_redis_diff";
        redis_store.emplace(io, options, &redis_events);
        redis.emplace(*redis_store);
        redis_store->start();
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!redis_store->stats().up) {
            if (std::chrono::steady_clock::now() > deadline)
                fail("the RedisStore did not connect within 10 s");
            io.run_one_for(10ms);
        }
        // The events connection subscribes on its own.
        while (!sync_events()) {
            if (std::chrono::steady_clock::now() > deadline)
                fail("the RedisStore's event connection did not subscribe within 10 s");
            io.run_one_for(10ms);
        }
        (void)memory_events.take();
        (void)redis_events.take();
    }

    // Waits until every event published so far has reached redis_events:
    // false when nobody listens on the channel yet, fails on a timeout.
    bool sync_events() {
        const std::int64_t n = ++markers_;
        const std::string payload =
            "[\"reset\",\"" + std::string(kMarkerKey) + "\",\"" + std::to_string(n) + "\"]";
        const std::string channel = "cbd:events";
        const auto answer = admin_command(server, {"PUBLISH", channel, payload});
        if (answer == ":0\r\n")
            return false;
        if (!answer.starts_with(':'))
            fail("PUBLISH answered '" + answer + "'");
        const auto deadline = std::chrono::steady_clock::now() + kAnswerDeadline;
        while (redis_events.marker != n) {
            if (std::chrono::steady_clock::now() > deadline)
                fail("Redis's events did not arrive within 5 s");
            if (io.stopped())
                io.restart();
            io.run_one_for(50ms);
        }
        return true;
    }

    // The daemon's 100 ms timer on both, and the sweep's answer waited for
    // (a script sent after it is answered after it).
    void tick() {
        memory.tick();
        redis->tick();
        cbd::Request req;
        req.op = cbd::Op::Policy;
        req.key = kKeys[0];
        if (!run_redis(req))
            fail("Redis did not answer after a sweep within 5 s");
    }

    // Redis's answer to `req`, or nullopt when none came in time.
    std::optional<cbd::OpOutcome> run_redis(const cbd::Request& req) {
        Slot slot;
        cbd::OpOutcome now;
        if (redis->run(req, peer, now, slot))
            return now;
        const auto deadline = std::chrono::steady_clock::now() + kAnswerDeadline;
        while (!slot.answer) {
            if (std::chrono::steady_clock::now() > deadline)
                return std::nullopt;
            if (io.stopped())
                io.restart();
            io.run_one_for(50ms);
        }
        return std::move(slot.answer);
    }
};

World* g_world = nullptr;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_redis_diff: %s\n", what.c_str());
    std::fflush(stderr);
    stop_redis_server();
    std::abort();
}

// ---------------------------------------------------------------------------
// Running a program on both.

// What the two sides showed for one step.
struct StepRecord {
    std::string memory_line, redis_line;     // the requests (empty: not a request)
    std::string memory_reply, redis_reply;   // the replies, permits masked
    std::string memory_events, redis_events; // the event lines watchers get
    bool hang = false;                       // Redis never answered
};

// A permit's text is the one thing the backends make differently by
// design: replies are compared with it masked.
std::string mask_permit(std::string reply) {
    static constexpr std::string_view field = "\"permit\":\"";
    if (auto at = reply.find(field); at != std::string::npos) {
        at += field.size();
        const auto end = reply.find('"', at);
        if (end != std::string::npos)
            reply.replace(at, end - at, "<permit>");
    }
    return reply;
}

template <typename Result> const cbd::CircuitView* circuit_of(const Result& r) {
    if constexpr (requires { r.circuit.generation; })
        return &r.circuit;
    else
        return nullptr;
}

// The reply the daemon sends for `outcome`. (The transition record the
// outcome carries is not compared: the dispatcher shows its from, to and
// cause in the reply; watchers get Redis's events from pub/sub, compared
// as events.)
std::string shown(const cbd::Request& req, const cbd::OpOutcome& outcome) {
    std::string out;
    cbd::append_outcome_reply(out, req, outcome);
    if (out.ends_with('\n'))
        out.pop_back();
    return mask_permit(std::move(out));
}

// What the client learns from an outcome: the key's generation, its permit.
void learn(ClientView& view, std::size_t key, const cbd::OpOutcome& outcome) {
    std::visit(
        [&](const auto& r) {
            using Result = std::decay_t<decltype(r)>;
            if (const auto* c = circuit_of(r))
                view.generation[key] = c->generation;
            if constexpr (std::is_same_v<Result, cbd::AcquireResult>) {
                if (r.allowed && !r.permit.empty()) {
                    auto& permits = view.permits[key];
                    permits.push_back(r.permit);
                    if (permits.size() > kPermitsKept)
                        permits.erase(permits.begin());
                }
            }
            if constexpr (std::is_same_v<Result, cbd::ResetResult>) {
                view.generation[key] = 0;
                view.permits[key].clear();
            }
        },
        outcome.result);
}

// Parses `line` as the daemon would; a line it refuses (a configure whose
// own fields do not hold together) is answered by the parser's error, and
// no backend sees it.
std::optional<cbd::Request> parse(const std::string& line, std::string& refusal) {
    cbd::Request req;
    if (auto error = cbd::parse_request(line, req)) {
        refusal = "(refused by the parser: " + error->message + ")";
        return std::nullopt;
    }
    return req;
}

// Runs step `s`'s requests (already in `rec`) on both backends.
void run_request(World& w, const Step& s, StepRecord& rec, ClientView& memory_view,
                 ClientView& redis_view) {
    std::string memory_refusal, redis_refusal;
    auto mreq = parse(rec.memory_line, memory_refusal);
    auto rreq = parse(rec.redis_line, redis_refusal);
    if (!mreq || !rreq) {
        // The two lines differ at most in a permit or a generation, which
        // the parser judges alike.
        if (mreq || rreq)
            fail("the parser took one side's request and refused the other's: " + rec.memory_line +
                 " / " + rec.redis_line);
        rec.memory_reply = memory_refusal;
        rec.redis_reply = redis_refusal;
        return;
    }
    if (s.kind == Kind::Get && (s.p[0] & 1)) {
        // A read-level peer's get (the dispatcher clears it).
        mreq->create_unknown = rreq->create_unknown = false;
        rec.memory_line += " (read level)";
        rec.redis_line += " (read level)";
    }
    cbd::OpOutcome mout;
    NoDeferral none;
    if (!w.memory.run(*mreq, w.peer, mout, none))
        fail("the memory backend answered later");
    const std::optional<cbd::OpOutcome> rout = w.run_redis(*rreq);
    rec.hang = !rout;
    rec.memory_reply = shown(*mreq, mout);
    rec.redis_reply = rout ? shown(*rreq, *rout) : "(no answer within 5 s)";
    learn(memory_view, s.key, mout);
    if (rout)
        learn(redis_view, s.key, *rout);
}

// Runs `prog` from a fresh start on both backends, recording each step in
// `records` (when given). Returns the index of the first step where the
// two differ, or -1.
int run_program(World& w, const Program& prog, std::vector<StepRecord>* records) {
    flushall(w.server);
    w.clock.set(kStartMs);
    w.store.start_over();
    w.memory.set_policy_config(daemon_layers(prog.config));
    w.redis->set_policy_config(daemon_layers(prog.config));
    ClientView memory_view, redis_view;
    if (records)
        records->clear();
    for (std::size_t i = 0; i < prog.steps.size(); ++i) {
        const Step& s = prog.steps[i];
        StepRecord rec;
        if (s.kind == Kind::Advance) {
            w.clock.advance(advance_ms(s));
            rec.memory_line = rec.redis_line = "advance " + std::to_string(advance_ms(s)) + " ms";
        } else if (s.kind == Kind::Tick) {
            // What the daemon's 100 ms timer does. The sweep's answer comes
            // before the next script's (one connection, in order).
            w.tick();
            rec.memory_line = rec.redis_line = "tick (expire_due / sweep)";
        } else {
            rec.memory_line = request_line(s, memory_view);
            rec.redis_line = request_line(s, redis_view);
            run_request(w, s, rec, memory_view, redis_view);
        }
        if (!rec.hang) {
            w.sync_events();
            rec.memory_events = w.memory_events.take();
            rec.redis_events = w.redis_events.take();
        }
        const bool events_differ = rec.memory_events != rec.redis_events;
        const bool differ = rec.hang || events_differ || rec.memory_reply != rec.redis_reply;
        if (records)
            records->push_back(std::move(rec));
        if (differ)
            return static_cast<int>(i);
    }
    return -1;
}

// The shortest program we find that still shows a difference: cut after
// the first differing step, then drop steps one at a time (each kept out
// if a difference remains, wherever it then shows).
Program shrink(World& w, Program prog, int first) {
    prog.steps.resize(static_cast<std::size_t>(first) + 1);
    for (std::size_t i = 0; i < prog.steps.size();) {
        if (prog.steps.size() == 1)
            break;
        Program shorter = prog;
        shorter.steps.erase(shorter.steps.begin() + static_cast<std::ptrdiff_t>(i));
        std::vector<StepRecord> records;
        const int at = run_program(w, shorter, &records);
        if (at >= 0 && !records[static_cast<std::size_t>(at)].hang) {
            shorter.steps.resize(static_cast<std::size_t>(at) + 1);
            prog = std::move(shorter);
        } else {
            ++i;
        }
    }
    return prog;
}

void print_program(const Program& prog, const std::vector<StepRecord>& records) {
    const auto layers = prog.config % 4;
    std::fprintf(stderr, "daemon policy layers: variant %u (see daemon_layers())\n", layers);
    for (std::size_t i = 0; i < records.size(); ++i) {
        const auto& r = records[i];
        std::fprintf(stderr, "%2zu  %s\n", i, r.memory_line.c_str());
        if (r.redis_line != r.memory_line)
            std::fprintf(stderr, "    (redis side: %s)\n", r.redis_line.c_str());
        auto show = [](const char* what, const std::string& memory, const std::string& redis) {
            if (memory == redis) {
                if (!memory.empty())
                    std::fprintf(stderr, "    %s both:   %s\n", what, memory.c_str());
            } else {
                std::fprintf(stderr, "    %s memory: %s\n    %s redis:  %s\n", what,
                             memory.empty() ? "(none)" : memory.c_str(), what,
                             redis.empty() ? "(none)" : redis.c_str());
            }
        };
        show("reply", r.memory_reply, r.hang ? "(no answer within 5 s)" : r.redis_reply);
        show("event", r.memory_events, r.redis_events);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (!g_world)
        g_world = new World(); // kept for the process: one redis-server for every input
    World& w = *g_world;
    const Program prog = decode(data, size);
    std::vector<StepRecord> records;
    const int first = run_program(w, prog, &records);
    if (first < 0)
        return 0;
    std::fprintf(stderr, "\nfuzz_redis_diff: the memory and Redis backends differ\n");
    if (records[static_cast<std::size_t>(first)].hang) {
        std::fprintf(stderr, "Redis did not answer step %d:\n", first);
        print_program(prog, records);
        fail("Redis hung");
    }
    const Program shortest = shrink(w, prog, first);
    run_program(w, shortest, &records);
    std::fprintf(stderr, "shortest program found (%zu of %zu steps):\n", shortest.steps.size(),
                 prog.steps.size());
    print_program(shortest, records);
    fail("the backends differ");
}
