// libFuzzer target: connections' request paths, replies that come late,
// turns, stops and half-closed peers. The input is a small program: clients
// send request lines (built from a few bytes each: op, key, how the backend
// answers it), reportBatch lines, blank, malformed, unfinished and overlong
// lines, shut down their sending side, and read what their sessions write,
// while the backend completes operations late and out of order, the group
// commit lands or fails (undoing keys), watch events arrive, time passes and
// the daemon stops. Each connection is the daemon's own SessionMachine,
// driven through a byte pipe: its Read, Write and AwaitWrite steps move
// bytes, its WaitTurn steps queue it for turns the loop grants one at a
// time. The real Dispatcher, ReplyQueue, DurableBackend, GroupCommit,
// EventHub and MemoryCircuitStore do the rest; a fake backend in front of
// DurableBackend decides when answers come, and a fake CommitGate around the
// GroupCommit decides how commits end. Checked as it happens:
//   - the machine hands every complete line over intact and in order, and
//     nothing past the output bound or the turn's budget;
//   - every non-blank request line gets exactly one reply line, in request
//     order (by the id each line carries; by position when it carries none);
//   - nothing after `watch` or an overlong line is dispatched, and no event
//     line comes before a reply to an earlier request;
//   - an answer held for a commit goes out only after the commit, and is a
//     storage_unavailable error exactly when the failed commit undid its key
//     (for a reportBatch: one such entry error per undone entry);
//   - nothing is written after the session shut down sending, and a session
//     closes only for a cause (EOF, stop, an overlong line, an overflow, a
//     timeout);
//   - once everything is completed and committed and the clients read, no
//     reply, line or event is left behind, and a stopped or half-closed
//     connection is closed.
// A violation aborts, so libFuzzer reports it. Built with clang's
// -fsanitize=fuzzer when CBD_FUZZ is on, and linked with replay_main.cpp
// otherwise, so the committed seeds replay as a test.
#include "common/reply.hpp"
#include "daemon/backends/memory/durable_backend.hpp"
#include "daemon/backends/memory/memory_store.hpp"
#include "daemon/backends/persist/group_commit.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/log.hpp"
#include "daemon/dispatch/commit_gate.hpp"
#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/dispatch/reply_queue.hpp"
#include "daemon/net/session_machine.hpp"

#include <algorithm>
#include <array>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

// Bounds per input, so that one run stays well under 60 µs on average (CI
// fuzzes for a minute and wants a million runs).
constexpr std::size_t kMaxSteps = 40;
// A burst sends enough requests answered later to pass the session's
// waiting bound (kMaxWaitingReplies), so that dispatch stops and resumes as
// answers come. That is over a thousand requests, some 20 ms under the
// sanitizers: a fuzzer that met bursts in its corpus would fall far below
// its speed budget. So only the replay build (CBD_FUZZ_SESSION_BURSTS)
// honours them, where the committed seeds test the bound in every build;
// under libFuzzer the step does nothing. One per input.
#ifdef CBD_FUZZ_SESSION_BURSTS
constexpr std::size_t kMaxBursts = 1;
#else
constexpr std::size_t kMaxBursts = 0;
#endif
// The store outlives inputs (building one costs a random_device read), and
// holds at most 3 of the 4 keys, so too_many_circuits is reached too.
constexpr std::size_t kMaxCircuits = 3;
constexpr std::int64_t kStartMs = 1'764'201'600'000;
// A small watch queue, so the overflow path is reached.
constexpr std::size_t kWatchQueue = 4;
// Short lines, so that reads split lines and an overlong line is cheap, but
// a read still carries more than one turn's budget of batched reports.
constexpr std::size_t kMaxLineBytes = 4096;
constexpr auto kIdleTimeout = std::chrono::milliseconds(60'000);
constexpr auto kRequestTimeout = std::chrono::milliseconds(8'000);
constexpr std::size_t kClients = 3;
constexpr std::size_t kKeyCount = 4;
constexpr std::string_view kKeys[kKeyCount] = {"k0", "k1", "k2", "db.k3"};

[[noreturn]] void fail(const char* format, ...) {
    std::va_list args;
    va_start(args, format);
    std::fputs("fuzz_session: ", stderr);
    std::vfprintf(stderr, format, args);
    std::fputc('\n', stderr);
    va_end(args);
    std::abort();
}

// How the fake backend answers one request.
enum class Answer : std::uint8_t {
    Now,   // at once (or, when the commit gate holds it, when the commit lands)
    Later, // a completion called later by a "complete #k" step, after the gate if it held it
    Throw, // throws before touching the store
};

// What the reply to a line must carry as its id.
enum class IdRule : std::uint8_t { Exact, None };

struct Line {
    std::string text;    // without "\n"
    std::string id_json; // the id the reply must carry (IdRule::Exact)
    IdRule id_rule = IdRule::None;
    Answer answer = Answer::Now;
    bool blank = false;
    bool watch = false;      // a valid watch request: the connection turns into a stream
    bool circuit_op = false; // valid, and a circuit operation (goes to the backend)
    bool batch = false;      // a valid reportBatch
    bool too_long = false;   // past kMaxLineBytes: answered line_too_long, then the end
    // Answers the commit gate holds for this line now, and how the held
    // ones ended (a reportBatch holds one per entry).
    std::size_t held = 0;
    std::size_t durable = 0;
    std::size_t undone = 0;
};

class Run;

// The commit gate of --sync always: the daemon's own GroupCommit, with the
// input deciding when a commit starts and how it ends, and each held answer
// noted against the line it answers.
class FakeGate final : public cbd::CommitGate, public cbd::ChangeTracker {
  public:
    FakeGate(Run& run, cbd::CircuitStore& store) : run_(run), groups_(store) {}

    bool pending() const override { return groups_.pending(); }
    void when_durable(std::function<void(const cbd::KeySet*)> done) override;
    void before_change(std::string_view key) override { groups_.before_change(key); }

    // The running commit ends; a commit that is not running starts instead.
    void land(bool ok);
    bool idle() const { return !groups_.pending() && !groups_.forming_has_work(); }

  private:
    Run& run_;
    cbd::GroupCommit groups_;
};

// An operation the fake backend will complete when the program says so.
struct PendingOp {
    cbd::OpOutcome outcome;
    cbd::Completion done;
};

// In front of the real DurableBackend: answers at once, or later, or throws,
// as the line being dispatched says.
class FakeBackend final : public cbd::CircuitBackend {
  public:
    FakeBackend(Run& run, cbd::DurableBackend& inner, FakeGate& gate)
        : run_(run), inner_(inner), gate_(gate) {}

    bool run(const cbd::Request& req, const cbd::Peer& peer, cbd::OpOutcome& now,
             cbd::Deferral& deferral) override;
    std::optional<cbd::CircuitCounts> counts() const override { return inner_.counts(); }
    bool list_now(const cbd::ListQuery& query, cbd::ListPage& page) override {
        return inner_.list_now(query, page);
    }
    void set_policy_config(cbd::PolicyConfig config) override {
        inner_.set_policy_config(std::move(config));
    }
    void tick() override { inner_.tick(); }

    // Completes pending operation #k (of those still pending, in the order
    // they were deferred); false when there is none.
    bool complete(std::size_t k);
    bool idle() const { return pending_.empty(); }

  private:
    Run& run_;
    cbd::DurableBackend& inner_;
    FakeGate& gate_;
    std::deque<PendingOp> pending_;
};

// What outlives inputs: the clock and the store, emptied before each input.
struct World {
    cbd::ManualClock clock{kStartMs};
    cbd::MemoryCircuitStore store{clock, kMaxCircuits};

    void reset() {
        clock.set(kStartMs);
        store.set_change_tracker(nullptr);
        for (auto key : kKeys)
            store.restore(cbd::StoredCircuit{std::string(key), std::nullopt, {}});
        if (store.size() != 0)
            fail("the store still holds %zu circuits after the reset", store.size());
    }
};

World& world() {
    static World w;
    return w;
}

// Why a session may close; a Close step without one fails.
struct CloseCauses {
    bool eof = false;
    bool stop = false;
    bool too_long = false;
    bool overflow = false;
    bool timeout = false;
    bool any() const { return eof || stop || too_long || overflow || timeout; }
};

// One connection: the session's machine, and the client at the other end of
// its byte pipe.
struct Client final : cbd::Watcher {
    Client(Run& run, std::size_t index);

    void push_event(const std::shared_ptr<const std::string>& line) override;

    Run& run;
    std::size_t index;
    cbd::SessionMachine machine;

    // Client to session.
    std::string unread;            // sent, not yet read by the session
    bool eof_sent = false;         // the client shut down its sending side
    std::vector<std::size_t> sent; // complete lines sent, in order (indices into the run's lines)
    std::size_t next_dispatch = 0; // into `sent`: the next line the machine must hand over
    std::optional<std::span<char>> read_space; // a Read step is pending
    bool cancel_read = false;

    // Session to client.
    std::size_t in_socket = 0;   // written, not yet read by the client
    std::string_view write_rest; // an AwaitWrite step's bytes not yet taken
    bool write_pending = false;
    std::string partial;                 // the client's unfinished reply line
    std::vector<std::size_t> dispatched; // non-blank lines dispatched, in order
    std::size_t replies_seen = 0;
    std::size_t events_seen = 0;
    bool overflow_seen = false;
    std::size_t watch_line = SIZE_MAX;
    std::size_t too_long_line = SIZE_MAX;

    // The loop's view of the session.
    bool wake_posted = false;
    bool subscribed = false;
    bool send_shut = false;
    bool closed = false;
    bool stopped = false;
    CloseCauses causes;
    std::optional<cbd::SteadyTime> idle_at;
    std::optional<cbd::SteadyTime> request_at;
    std::optional<cbd::SteadyTime> overflow_at;
    // This input's work, against the turn's budget.
    std::size_t turn_ops = 0;
    std::size_t turn_bytes = 0;
};

// One input's world: the store, the backends, the dispatcher, the clients
// and their sessions, the loop and the checks.
class Run {
  public:
    explicit Run(World& w);
    ~Run();
    Run(const Run&) = delete;
    Run& operator=(const Run&) = delete;

    void execute(const std::uint8_t* data, std::size_t size);

    // For the fakes and the clients.
    std::size_t current_line() const { return current_; }
    const std::string& current_key() const { return current_key_; }
    Line& line(std::size_t i) { return lines_[i]; }
    cbd::SteadyTime now() const { return steady_; }
    cbd::DaemonStats& stats() { return stats_; }
    void note_held() { held_now_ = true; }
    void on_line(Client& c, std::string_view text, cbd::RequestContext& ctx);
    // Carries out the session's steps until it waits: the daemon's Session
    // does the same on a socket.
    void drive(Client& c);

  private:
    friend class FakeBackend;

    // Reads the program.
    std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
    Client& client() { return *clients_[client_]; }
    void send_request(std::uint8_t how, std::uint8_t what);
    void send_batch(std::uint8_t how, std::uint8_t what);
    void send_malformed(std::uint8_t how);
    void send_blank(std::uint8_t how);
    void send_burst(std::uint8_t how);
    void send_too_long();
    void send_split(std::uint8_t how, std::uint8_t wait);
    void send(Line line);
    void extended(std::uint8_t op);

    void client_reads(Client& c, std::size_t n);
    void time_passes(std::chrono::milliseconds by);
    void stop_all();
    // Runs what the loop would: posted wakes, reads that can complete, and
    // one turn per round, until nothing moves.
    void run_loop();
    void finish();
    void finish_client(Client& c);

    // What reaches a client, checked line by line.
    void deliver(Client& c, std::string_view bytes);
    void check_line(Client& c, std::string_view line);

    const std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t pos_ = 0;

    cbd::ManualClock& clock_;
    cbd::MemoryCircuitStore& store_;
    cbd::DaemonStats stats_;
    FakeGate gate_;
    cbd::DurableBackend durable_;
    FakeBackend backend_;
    cbd::Dispatcher dispatcher_;
    cbd::EventHub hub_;
    cbd::SteadyTime steady_{};

    std::vector<Line> lines_; // every line any client sent, in order
    std::vector<std::unique_ptr<Client>> clients_;
    std::size_t client_ = 0;    // the client the program speaks for
    std::deque<Client*> turns_; // sessions waiting for a turn
    std::size_t current_ = 0;   // the line being dispatched
    std::string current_key_;   // the key the backend runs
    bool held_now_ = false;     // the gate held the operation being run
    std::size_t bursts_ = 0;
    std::uint64_t next_id_ = 1;
    std::uint64_t event_seq_ = 0;
    std::size_t socket_capacity_ = 0;
};

// --- the fakes --------------------------------------------------------------

void FakeGate::when_durable(std::function<void(const cbd::KeySet*)> done) {
    const std::size_t i = run_.current_line();
    run_.note_held();
    run_.line(i).held += 1;
    groups_.when_durable([&run = run_, i, key = run_.current_key(),
                          done = std::move(done)](const cbd::KeySet* undone) {
        Line& l = run.line(i);
        if (l.held == 0)
            fail("line %zu: the gate answered more than it held", i);
        l.held -= 1;
        if (undone && undone->find(key) != undone->end())
            l.undone += 1;
        else
            l.durable += 1;
        done(undone);
    });
}

void FakeGate::land(bool ok) {
    if (!groups_.committing()) {
        groups_.start();
        return;
    }
    if (ok)
        groups_.committed();
    else
        groups_.failed();
}

bool FakeBackend::run(const cbd::Request& req, const cbd::Peer& peer, cbd::OpOutcome& now,
                      cbd::Deferral& deferral) {
    const Answer answer = run_.line(run_.current_line()).answer;
    if (answer == Answer::Throw)
        throw std::runtime_error("the fake backend failed");
    // Whatever DurableBackend holds for the commit comes back through here:
    // straight to the session, or (Later) into the pending list as well.
    struct Relay final : cbd::Deferral {
        cbd::Deferral& outer;
        std::deque<PendingOp>& pending;
        bool hold;
        Relay(cbd::Deferral& o, std::deque<PendingOp>& p, bool h) : outer(o), pending(p), hold(h) {}
        cbd::Completion later() override {
            cbd::Completion done = outer.later();
            if (!hold)
                return done;
            return [&list = pending, done = std::move(done)](const cbd::OpOutcome& r) {
                list.push_back(PendingOp{r, done});
            };
        }
    } relay(deferral, pending_, answer == Answer::Later);
    run_.current_key_ = req.key;
    run_.held_now_ = false;
    const bool answered = inner_.run(req, peer, now, relay);
    // DurableBackend must hold every answer given while a change (this
    // operation's own, or an earlier one) is uncommitted, and only those.
    if (gate_.pending() != run_.held_now_)
        fail("line %zu: %s", run_.current_line(),
             run_.held_now_ ? "waited for a commit when none was pending"
                            : "answered while a commit was pending, without waiting for it");
    if (!answered)
        return false;
    if (answer == Answer::Now)
        return true;
    pending_.push_back(PendingOp{now, deferral.later()});
    return false;
}

bool FakeBackend::complete(std::size_t k) {
    if (pending_.empty())
        return false;
    const std::size_t i = k % pending_.size();
    PendingOp op = std::move(pending_[i]);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    op.done(op.outcome);
    return true;
}

// --- the sessions -----------------------------------------------------------

cbd::SessionMachineOptions machine_options(Run& run) {
    return {.max_line_bytes = kMaxLineBytes,
            .watch_queue = kWatchQueue,
            .idle_timeout = kIdleTimeout,
            .request_timeout = kRequestTimeout,
            .now = [&run] { return run.now(); }};
}

Client::Client(Run& r, std::size_t i)
    : run(r), index(i),
      machine([this](std::string_view text,
                     cbd::RequestContext& ctx) { run.on_line(*this, text, ctx); },
              r.stats(), machine_options(r),
              cbd::Peer{1000, 1000, static_cast<std::int32_t>(42 + i)}, cbd::AccessLevel::Admin) {}

void Client::push_event(const std::shared_ptr<const std::string>& line) {
    machine.push_event(line);
    run.drive(*this);
}

Run::Run(World& w)
    : clock_(w.clock), store_(w.store), gate_(*this, store_), durable_(store_, gate_),
      backend_(*this, durable_, gate_), dispatcher_(backend_, stats_), hub_(stats_) {
    store_.set_change_tracker(&gate_);
    lines_.reserve(16);
}

Run::~Run() {
    for (auto& c : clients_)
        c->machine.replies().on_front_ready = nullptr;
    store_.set_change_tracker(nullptr);
}

void Run::drive(Client& c) {
    using Kind = cbd::SessionStep::Kind;
    c.turn_ops = 0;
    c.turn_bytes = 0;
    for (;;) {
        const cbd::SessionStep step = c.machine.next();
        if (c.closed && step.kind != Kind::Idle)
            fail("client %zu: a step after the session closed", c.index);
        switch (step.kind) {
        case Kind::Idle:
            return;
        case Kind::Write: {
            if (c.send_shut)
                fail("client %zu: a write after the session shut down sending", c.index);
            if (c.write_pending)
                fail("client %zu: a write while one is pending", c.index);
            const std::size_t n = std::min(socket_capacity_ - c.in_socket, step.bytes.size());
            c.in_socket += n;
            // Before wrote(): the machine then drops the bytes.
            deliver(c, step.bytes.substr(0, n));
            c.machine.wrote(n);
            break;
        }
        case Kind::AwaitWrite:
            c.write_rest = step.bytes;
            c.write_pending = true;
            break;
        case Kind::Read:
            if (c.read_space)
                fail("client %zu: a read while one is pending", c.index);
            c.read_space = step.space;
            break;
        case Kind::CancelRead:
            c.cancel_read = true;
            break;
        case Kind::WaitTurn:
            turns_.push_back(&c);
            break;
        case Kind::Watch:
            hub_.add(&c, c.machine.take_watch_filter());
            c.subscribed = true;
            break;
        case Kind::Unwatch:
            hub_.remove(&c);
            c.subscribed = false;
            c.causes.overflow = true;
            c.overflow_at = steady_ + std::chrono::seconds(5);
            break;
        case Kind::ArmRequestTimer:
            c.request_at = step.deadline;
            break;
        case Kind::ShutdownSend:
            c.send_shut = true;
            break;
        case Kind::Close:
            if (!c.causes.any())
                fail("client %zu: the session closed without a cause", c.index);
            c.closed = true;
            if (c.subscribed)
                hub_.remove(&c);
            c.subscribed = false;
            c.machine.replies().on_front_ready = nullptr;
            break;
        }
    }
}

void Run::on_line(Client& c, std::string_view text, cbd::RequestContext& ctx) {
    if (c.next_dispatch >= c.sent.size())
        fail("client %zu: a line it never sent was dispatched: %.*s", c.index,
             static_cast<int>(text.size()), text.data());
    const std::size_t i = c.sent[c.next_dispatch++];
    Line& l = lines_[i];
    if (text != l.text)
        fail("line %zu was handed over as %.*s", i, static_cast<int>(text.size()), text.data());
    if (c.watch_line != SIZE_MAX || l.too_long)
        fail("line %zu was dispatched after the watch on line %zu or an overlong line", i,
             c.watch_line);
    cbd::ReplyQueue& replies = *ctx.replies;
    const std::size_t unsent = c.write_pending ? c.write_rest.size() : 0;
    if (replies.ready_bytes() + unsent >= cbd::kMaxUnsentReplyBytes ||
        replies.waiting() >= cbd::kMaxWaitingReplies)
        fail("line %zu was dispatched over the output bound", i);
    if (c.turn_ops >= cbd::kMaxLinesPerTurn || c.turn_bytes >= cbd::kMaxReplyBytesPerTurn)
        fail("line %zu was dispatched past its turn's budget", i);
    const std::size_t ready_before = replies.ready_bytes();
    const std::size_t waiting_before = replies.waiting();
    current_ = i;
    dispatcher_.handle_line(text, ctx);
    const std::size_t ready_after = replies.ready_bytes();
    const std::size_t waiting_after = replies.waiting();
    c.turn_ops += std::max<std::size_t>(ctx.operations, 1);
    c.turn_bytes += ready_after - ready_before;
    if (l.blank) {
        if (ready_after != ready_before || waiting_after != waiting_before)
            fail("blank line %zu was answered", i);
        return;
    }
    c.dispatched.push_back(i);
    const bool now = waiting_after == waiting_before && ready_after > ready_before;
    const bool later = waiting_after > waiting_before && ready_after == ready_before;
    if (now == later)
        fail("line %zu took no reply or more than one (ready %zu -> %zu, waiting %zu -> %zu)", i,
             ready_before, ready_after, waiting_before, waiting_after);
    if (l.watch != ctx.start_watch.has_value())
        fail("line %zu: watch %s", i, l.watch ? "did not start" : "started by a non-watch line");
    if (l.watch)
        c.watch_line = i;
}

// --- the program ------------------------------------------------------------

void Run::send(Line line) {
    Client& c = client();
    if (c.eof_sent)
        return; // its sending side is shut
    lines_.push_back(std::move(line));
    c.sent.push_back(lines_.size() - 1);
    c.unread += lines_.back().text;
    c.unread += '\n';
}

void Run::send_request(std::uint8_t how, std::uint8_t what) {
    // how: bits 0-3 op, bits 4-5 key, bit 6 a string id, bit 7 an extra field
    // what: bits 0-2 how the backend answers (0-3 now, 4-6 later, 7 throws)
    Line l;
    const std::size_t key = (how >> 4) & 3;
    const bool string_id = (how & 0x40) != 0;
    const bool extra = (how & 0x80) != 0;
    const std::uint8_t mode = what & 7;
    l.answer = mode < 4 ? Answer::Now : mode < 7 ? Answer::Later : Answer::Throw;
    if (string_id) {
        l.id_json = "\"s";
        cbd::append_uint(l.id_json, next_id_);
        l.id_json += '"';
    } else {
        cbd::append_uint(l.id_json, next_id_);
    }
    ++next_id_;
    l.id_rule = IdRule::Exact;
    std::string_view body;
    std::string_view extra_field;
    bool keyed = true;
    l.circuit_op = true;
    switch (how & 15) {
    case 0:
        body = "\"op\":\"get\"";
        break;
    case 1:
        body = "\"op\":\"success\"";
        break;
    case 2:
        body = "\"op\":\"failure\"";
        break;
    case 3:
        body = "\"op\":\"acquire\"";
        break;
    case 4:
        body = "\"op\":\"report\"";
        extra_field = extra ? ",\"outcome\":\"success\"" : ",\"outcome\":\"failure\"";
        break;
    case 5:
        body = "\"op\":\"transition\"";
        extra_field = extra ? ",\"to\":\"half-open\"" : ",\"to\":\"open\"";
        break;
    case 6:
        body = "\"op\":\"reset\"";
        break;
    case 7:
        body = "\"op\":\"force\",\"state\":\"open\"";
        extra_field = extra ? ",\"ttlMs\":1000" : "";
        break;
    case 8:
        body = "\"op\":\"unforce\"";
        break;
    case 9:
        body = "\"op\":\"configure\",\"policy\":{\"failureThreshold\":2}";
        break;
    case 10:
        body = "\"op\":\"policy\"";
        break;
    case 11:
        body = "\"op\":\"list\"";
        extra_field = extra ? ",\"prefix\":\"db.\"" : ",\"limit\":2";
        keyed = false;
        break;
    case 12:
        body = "\"op\":\"export\"";
        keyed = false;
        break;
    case 13:
        body = "\"op\":\"ping\"";
        keyed = false;
        l.circuit_op = false;
        break;
    default:
        body = "\"op\":\"watch\"";
        extra_field = extra ? ",\"prefix\":\"db.\"" : "";
        keyed = false;
        l.circuit_op = false;
        l.watch = true;
        break;
    }
    // One buffer, no temporaries: allocations are most of a run's cost
    // under ASan.
    l.text.reserve(96);
    l.text += '{';
    l.text += body;
    l.text += extra_field;
    if (keyed) {
        l.text += ",\"key\":\"";
        l.text += kKeys[key];
        l.text += '"';
    }
    l.text += ",\"id\":";
    l.text += l.id_json;
    l.text += '}';
    if (what & 8)
        l.text += '\r'; // accepted and ignored
    send(std::move(l));
}

void Run::send_malformed(std::uint8_t how) {
    Line l;
    const std::string id = std::to_string(next_id_++);
    switch (how & 3) {
    case 0: // not JSON: no id can be read, the reply carries none
        l.text = "{\"op\":\"get\",\"key\":\"k0\",\"id\":" + id;
        break;
    case 1: // an object that is no request: the id is read first
        l.text = "{\"op\":\"nope\",\"id\":" + id + "}";
        l.id_json = id;
        l.id_rule = IdRule::Exact;
        break;
    case 2:
        l.text = "{\"op\":\"get\",\"id\":" + id + "}";
        l.id_json = id;
        l.id_rule = IdRule::Exact;
        break;
    default:
        l.text = "[" + id + "]";
        break;
    }
    send(std::move(l));
}

void Run::send_blank(std::uint8_t how) {
    Line l;
    static constexpr std::string_view kBlanks[4] = {"", " ", "\t\r", "  \r"};
    l.text = kBlanks[how & 3];
    l.blank = true;
    send(std::move(l));
}

void Run::send_burst(std::uint8_t how) {
    // Enough requests answered later to reach the waiting bound, so that the
    // session stops dispatching and resumes as answers come.
    if (bursts_++ >= kMaxBursts)
        return;
    const std::size_t count = cbd::kMaxWaitingReplies + (how & 7);
    for (std::size_t n = 0; n < count; ++n)
        send_request(static_cast<std::uint8_t>((how & 0x30) | 0x02), 4);
}

void Run::send_batch(std::uint8_t how, std::uint8_t what) {
    // how: bits 0-2 entries - 1, bits 3-7 the entries' keys and outcomes
    // what: bits 0-2 how the backend answers (as for send_request), bit 3
    // every client sends them (so several sessions wait for turns at once),
    // bits 4-7 copies - 1 (so one read carries more than a turn's budget)
    if ((what & 8) != 0) {
        const std::size_t speaker = client_;
        for (client_ = 0; client_ < clients_.size(); ++client_)
            send_batch(how, static_cast<std::uint8_t>(what & ~8));
        client_ = speaker;
        return;
    }
    const std::uint8_t mode = what & 7;
    const std::size_t entries = (how & 7) + 1;
    const std::size_t pattern = how >> 3;
    const std::size_t copies = (what >> 4) + 1;
    for (std::size_t copy = 0; copy < copies; ++copy) {
        Line l;
        l.answer = mode < 4 ? Answer::Now : mode < 7 ? Answer::Later : Answer::Throw;
        cbd::append_uint(l.id_json, next_id_++);
        l.id_rule = IdRule::Exact;
        l.circuit_op = true;
        l.batch = true;
        l.text.reserve(40 + 36 * entries);
        l.text += "{\"op\":\"reportBatch\",\"reports\":[";
        for (std::size_t e = 0; e < entries; ++e) {
            if (e > 0)
                l.text += ',';
            l.text += "{\"key\":\"";
            l.text += kKeys[(pattern + e) & 3];
            l.text += ((pattern >> 2) + e) % 2 == 0 ? "\",\"outcome\":\"success\"}"
                                                    : "\",\"outcome\":\"failure\"}";
        }
        l.text += "],\"id\":";
        l.text += l.id_json;
        l.text += '}';
        send(std::move(l));
    }
}

void Run::send_too_long() {
    Line l;
    l.text.assign(kMaxLineBytes + 1, 'x');
    l.too_long = true;
    // Answered line_too_long, with no id; nothing after it is a request.
    l.id_rule = IdRule::None;
    send(std::move(l));
}

void Run::send_split(std::uint8_t how, std::uint8_t wait) {
    // A request sent in two writes with the loop running in between (and
    // `wait` tenths of a second passing): the session holds an unfinished
    // line, and its request timer runs.
    Client& c = client();
    if (c.eof_sent)
        return;
    const std::size_t before = c.unread.size();
    send_request(how, 0);
    const std::size_t cut = before + (c.unread.size() - before) / 2;
    std::string rest = c.unread.substr(cut);
    c.unread.resize(cut);
    run_loop();
    if (wait != 0)
        time_passes(std::chrono::milliseconds(100) * wait);
    c.unread += rest;
}

void Run::extended(std::uint8_t op) {
    switch (op & 7) {
    case 0:
        client_ = (op >> 3) % clients_.size();
        break;
    case 1: {
        const std::uint8_t how = next();
        send_batch(how, next());
        break;
    }
    case 2:
        send_too_long();
        break;
    case 3: {
        const std::uint8_t how = next();
        send_split(how, next());
        break;
    }
    case 4:
        client().eof_sent = true;
        break;
    case 5:
        stop_all();
        break;
    case 6:
        time_passes(std::chrono::milliseconds(std::int64_t{500} << (op >> 4)));
        break;
    default: {
        const std::uint8_t how = next();
        send_request(how, next());
        break;
    }
    }
}

void Run::client_reads(Client& c, std::size_t n) {
    c.in_socket -= std::min(n, c.in_socket);
    if (!c.write_pending)
        return;
    // The pending write goes on; it completes once all is written.
    const std::size_t more = std::min(socket_capacity_ - c.in_socket, c.write_rest.size());
    c.in_socket += more;
    const std::string_view taken = c.write_rest.substr(0, more);
    c.write_rest.remove_prefix(more);
    deliver(c, taken);
    if (!c.write_rest.empty())
        return;
    c.write_pending = false;
    c.machine.write_done();
    drive(c);
}

void Run::time_passes(std::chrono::milliseconds by) {
    steady_ += by;
    for (auto& p : clients_) {
        Client& c = *p;
        if (c.closed)
            continue;
        if (c.idle_at && *c.idle_at <= steady_) {
            const cbd::TimerVerdict v = c.machine.idle_timer_fired();
            c.idle_at = v.rearm_at;
            c.causes.timeout |= v.close;
        }
        if (c.request_at && *c.request_at <= steady_) {
            const cbd::TimerVerdict v = c.machine.request_timer_fired();
            c.request_at = v.rearm_at;
            c.causes.timeout |= v.close;
        }
        if (c.overflow_at && *c.overflow_at <= steady_) {
            c.overflow_at.reset();
            c.machine.overflow_grace_ended();
        }
        drive(c);
    }
}

void Run::stop_all() {
    for (auto& c : clients_) {
        if (c->stopped || c->closed)
            continue;
        c->stopped = true;
        c->causes.stop = true;
        c->machine.stop();
        drive(*c);
    }
}

void Run::run_loop() {
    for (bool moved = true; moved;) {
        moved = false;
        for (auto& p : clients_) {
            Client& c = *p;
            if (c.wake_posted) {
                c.wake_posted = false;
                c.machine.wake();
                drive(c);
                moved = true;
            }
            if (!c.read_space)
                continue;
            const std::span<char> space = *c.read_space;
            if (c.cancel_read) {
                c.cancel_read = false;
                c.read_space.reset();
                c.machine.read_failed(true);
            } else if (!c.unread.empty()) {
                const std::size_t n = std::min(space.size(), c.unread.size());
                std::memcpy(space.data(), c.unread.data(), n);
                c.unread.erase(0, n);
                c.read_space.reset();
                c.machine.read(n);
            } else if (c.eof_sent) {
                c.causes.eof = true;
                c.read_space.reset();
                c.machine.read_ended();
            } else {
                continue;
            }
            drive(c);
            moved = true;
        }
        // One turn per round: the next goes behind the I/O found in between.
        if (!turns_.empty()) {
            Client* c = turns_.front();
            turns_.pop_front();
            c->machine.turn_granted();
            drive(*c);
            moved = true;
        }
    }
}

void Run::execute(const std::uint8_t* data, std::size_t size) {
    data_ = data;
    size_ = size;
    // The first byte: how much the socket takes before the client reads
    // (0: it takes everything at once).
    const std::uint8_t cap = next();
    socket_capacity_ = (cap & 7) == 0 ? SIZE_MAX / 2 : std::size_t{16} << (cap & 7);
    for (std::size_t i = 0; i < kClients; ++i) {
        clients_.push_back(std::make_unique<Client>(*this, i));
        Client& c = *clients_.back();
        // As Session: an answer that makes the front ready wakes the session
        // from the loop, not inside the backend's call stack.
        c.machine.replies().on_front_ready = [&c] { c.wake_posted = true; };
        c.idle_at = c.machine.idle_deadline();
        c.machine.start();
        drive(c);
    }
    for (std::size_t step = 0; step < kMaxSteps && pos_ < size_; ++step) {
        const std::uint8_t op = next();
        switch (op & 15) {
        case 0:
        case 1:
        case 2:
        case 3: {
            const std::uint8_t how = next();
            send_request(how, next());
            break;
        }
        case 4:
            extended(next());
            break;
        case 5:
            send_malformed(next());
            break;
        case 6:
            send_blank(op >> 4);
            break;
        case 7:
        case 8:
            backend_.complete(next());
            break;
        case 9:
            gate_.land(true);
            break;
        case 10:
            gate_.land(false);
            break;
        case 11:
            hub_.on_reset(kKeys[event_seq_ % kKeyCount], static_cast<std::int64_t>(event_seq_));
            ++event_seq_;
            break;
        case 12:
            client_reads(client(), std::size_t{1} << (op >> 4));
            break;
        case 13:
            client_reads(client(), SIZE_MAX / 2);
            break;
        case 14:
            clock_.advance(std::int64_t{1000} << (op >> 4));
            backend_.tick();
            break;
        default:
            send_burst(next());
            break;
        }
        run_loop();
    }
    finish();
}

// --- the checks -------------------------------------------------------------

void Run::deliver(Client& c, std::string_view bytes) {
    while (!bytes.empty()) {
        const std::size_t nl = bytes.find('\n');
        if (nl == std::string_view::npos) {
            c.partial.append(bytes);
            return;
        }
        if (c.partial.empty()) {
            check_line(c, bytes.substr(0, nl));
        } else {
            c.partial.append(bytes.substr(0, nl));
            const std::string whole = std::move(c.partial);
            c.partial.clear();
            check_line(c, whole);
        }
        bytes.remove_prefix(nl + 1);
    }
}

std::size_t occurrences(std::string_view text, std::string_view what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1))
        ++n;
    return n;
}

void Run::check_line(Client& c, std::string_view text) {
    if (text.starts_with("{\"event\":")) {
        if (c.replies_seen != c.dispatched.size())
            fail("an event came before the reply to line %zu", c.dispatched[c.replies_seen]);
        if (c.watch_line == SIZE_MAX)
            fail("an event reached a connection that never asked to watch");
        if (c.overflow_seen)
            fail("a line came after the overflow line");
        if (text.starts_with("{\"event\":\"overflow\""))
            c.overflow_seen = true;
        ++c.events_seen;
        return;
    }
    if (c.events_seen > 0)
        fail("a reply came after an event: %.*s", static_cast<int>(text.size()), text.data());
    if (c.too_long_line != SIZE_MAX)
        fail("a reply came after the overlong line's: %.*s", static_cast<int>(text.size()),
             text.data());
    if (c.replies_seen == c.dispatched.size() && c.next_dispatch < c.sent.size() &&
        lines_[c.sent[c.next_dispatch]].too_long) {
        if (text.find("\"code\":\"line_too_long\"") == std::string_view::npos)
            fail("the overlong line %zu got %.*s", c.sent[c.next_dispatch],
                 static_cast<int>(text.size()), text.data());
        c.too_long_line = c.sent[c.next_dispatch];
        return;
    }
    if (c.replies_seen >= c.dispatched.size())
        fail("a reply to no request: %.*s", static_cast<int>(text.size()), text.data());
    const std::size_t i = c.dispatched[c.replies_seen++];
    const Line& l = lines_[i];
    std::string_view rest = text;
    if (!rest.starts_with('{'))
        fail("reply to line %zu is not an object: %.*s", i, static_cast<int>(text.size()),
             text.data());
    rest.remove_prefix(1);
    if (l.id_rule == IdRule::Exact) {
        if (!rest.starts_with("\"id\":") || !rest.substr(5).starts_with(l.id_json) ||
            !rest.substr(5 + l.id_json.size()).starts_with(','))
            fail("reply out of order: line %zu (id %s) got %.*s", i, l.id_json.c_str(),
                 static_cast<int>(text.size()), text.data());
        rest.remove_prefix(5 + l.id_json.size() + 1);
    } else if (rest.starts_with("\"id\":")) {
        fail("reply out of order: line %zu carries no id but got %.*s", i,
             static_cast<int>(text.size()), text.data());
    }
    const bool ok = rest.starts_with("\"ok\":true");
    if (!ok && !rest.starts_with("\"ok\":false"))
        fail("reply to line %zu has no ok: %.*s", i, static_cast<int>(text.size()), text.data());
    if (l.held > 0)
        fail("line %zu was answered before the commit it waited for landed", i);
    const std::size_t unavailable = occurrences(text, "\"code\":\"storage_unavailable\"");
    if (l.batch) {
        // Entries answer one by one inside the batch's one reply.
        if (!ok)
            fail("reportBatch line %zu failed as a whole: %.*s", i, static_cast<int>(text.size()),
                 text.data());
        if (unavailable != l.undone)
            fail("line %zu: a failed commit undid %zu of its entries, but the reply says %.*s", i,
                 l.undone, static_cast<int>(text.size()), text.data());
    } else if (l.undone > 0 ? ok || unavailable == 0 : unavailable > 0) {
        fail("line %zu: %s, but the reply says %.*s", i,
             l.undone > 0 ? "a failed commit undid its key" : "its commit did not fail",
             static_cast<int>(text.size()), text.data());
    }
    if (l.answer == Answer::Throw && l.circuit_op &&
        text.find("\"code\":\"internal_error\"") == std::string_view::npos)
        fail("line %zu: the backend threw, but the reply is %.*s", i, static_cast<int>(text.size()),
             text.data());
}

void Run::finish() {
    // Everything comes, one thing at a time: the backend completes what it
    // deferred, the commits land, and the clients read until nothing more
    // is written. Each step consumes something finite; the cap only turns a
    // session that loops into a clear failure.
    for (std::size_t steps = 0;; ++steps) {
        if (steps > 1'000'000)
            fail("the connections did not settle");
        if (backend_.complete(0)) {
        } else if (!gate_.idle()) {
            gate_.land(true);
        } else {
            bool read = false;
            for (auto& c : clients_)
                if (c->write_pending || c->in_socket > 0) {
                    client_reads(*c, SIZE_MAX / 2);
                    read = true;
                }
            if (!read)
                break;
        }
        run_loop();
    }
    for (auto& c : clients_)
        finish_client(*c);
}

void Run::finish_client(Client& c) {
    // Cut off: what it got was checked as it came. A watcher's input is
    // read only to see it leave, so its EOF, or the end of that read at a
    // stop, ends it at once, replies owed or not.
    const bool watcher_left = c.watch_line != SIZE_MAX && (c.causes.eof || c.causes.stop);
    if (c.closed && (c.causes.timeout || c.causes.overflow || watcher_left))
        return;
    if (!c.partial.empty())
        fail("client %zu got an unfinished line: %s", c.index, c.partial.c_str());
    if (c.write_pending)
        fail("client %zu: %zu bytes left unwritten", c.index, c.write_rest.size());
    const bool ended = c.watch_line != SIZE_MAX || c.too_long_line != SIZE_MAX;
    // What was sent after `watch` or an overlong line is read and ignored;
    // after a stop, nothing more is read.
    if (!ended && !c.stopped) {
        if (!c.unread.empty())
            if (!c.unread.empty())
                fail("client %zu: %zu bytes sent but never read (the session stalled)", c.index,
                     c.unread.size());
        for (std::size_t n = c.next_dispatch; n < c.sent.size(); ++n)
            if (!lines_[c.sent[n]].too_long)
                fail("line %zu was read but never dispatched (the session stalled)", c.sent[n]);
    }
    if (c.replies_seen != c.dispatched.size())
        fail("client %zu: %zu of %zu dispatched lines got no reply", c.index,
             c.dispatched.size() - c.replies_seen, c.dispatched.size());
    cbd::ReplyQueue& replies = c.machine.replies();
    if (!replies.empty() || replies.waiting() != 0)
        fail("client %zu: %zu replies still waiting, %zu bytes ready but unsent", c.index,
             replies.waiting(), replies.ready_bytes());
    for (std::size_t n = c.next_dispatch; n < c.sent.size() && !c.stopped; ++n)
        if (lines_[c.sent[n]].too_long && c.too_long_line == SIZE_MAX && c.watch_line == SIZE_MAX)
            fail("the overlong line %zu got no line_too_long", c.sent[n]);
    // Everything owed is out: a stopped or half-closed connection is closed.
    if ((c.stopped || (c.eof_sent && c.unread.empty())) && !c.closed)
        fail("client %zu: %s, everything answered, yet the session is open", c.index,
             c.stopped ? "stopped" : "half-closed");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool quiet = [] {
        cbd::log_init(cbd::LogLevel::Error);
        return true;
    }();
    (void)quiet;
    World& w = world();
    w.reset();
    {
        Run run(w);
        run.execute(data, size);
    }
    // Emptied again, so that a run frees what it allocated: libFuzzer's leak
    // check compares mallocs and frees per run.
    w.reset();
    return 0;
}
