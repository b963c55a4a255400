// libFuzzer target: one connection's request path, replies that come late.
// The input is a small program: the client sends request lines (built from a
// few bytes each: op, key, how the backend answers it) and reads what the
// session writes, while the backend completes operations late and out of
// order, the group commit lands or fails (undoing keys), and watch events
// arrive. The real Dispatcher, ReplyQueue, DurableBackend and
// MemoryCircuitStore do the work; a fake backend in front of DurableBackend
// decides when answers come, a fake CommitGate decides how commits end, and
// a model of Session's write side (pump, dispatch_lines, write_ready,
// flush_events, over_bound: the same control flow, without sockets) carries
// the replies to the client. Every reply is checked as it reaches the client:
//   - every non-blank request line gets exactly one reply line, in request
//     order (by the id each line carries; by position when it carries none);
//   - nothing after `watch` is dispatched, and no event line comes before a
//     reply to an earlier request;
//   - an answer held for a commit goes out only after the commit, and is a
//     storage_unavailable error exactly when the failed commit undid its key;
//   - once everything is completed and committed and the client reads, no
//     reply, line or event is left behind.
// A violation aborts, so libFuzzer reports it. Built with clang's
// -fsanitize=fuzzer when CBD_FUZZ is on, and linked with replay_main.cpp
// otherwise, so the committed seeds replay as a test.
#include "common/reply.hpp"
#include "daemon/backends/memory/durable_backend.hpp"
#include "daemon/backends/memory/memory_backend.hpp"
#include "daemon/backends/memory/memory_store.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/log.hpp"
#include "daemon/dispatch/circuit_json.hpp"
#include "daemon/dispatch/commit_gate.hpp"
#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/reply_queue.hpp"
#include "daemon/net/session.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
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

// What became of an answer the commit gate held.
enum class Fate : std::uint8_t { NotHeld, Held, Durable, Undone };

struct Line {
    std::string text;    // without "\n"
    std::string id_json; // the id the reply must carry (IdRule::Exact)
    IdRule id_rule = IdRule::None;
    int key = -1; // index into kKeys of the key it names, if any
    Answer answer = Answer::Now;
    bool blank = false;
    bool watch = false;      // a valid watch request: the connection turns into a stream
    bool circuit_op = false; // valid, and a circuit operation (goes to the backend)
    Fate fate = Fate::NotHeld;
};

class Run;

// The commit gate of --sync always, as Persistence implements it, with the
// input deciding when a commit starts and how it ends: changes gather in a
// forming group (each key's before-image at its first change), a commit
// takes the forming group, and a failed commit restores the before-images of
// both groups and tells every waiter which keys it undid.
class FakeGate final : public cbd::CommitGate, public cbd::ChangeTracker {
  public:
    FakeGate(Run& run, cbd::CircuitStore& store) : run_(run), store_(store) {}

    bool pending() const override { return !forming_.before.empty() || committing_active_; }
    void when_durable(std::function<void(const cbd::KeySet*)> done) override;
    void before_change(std::string_view key) override;

    // The writer takes the forming group (or, with nothing forming, answers
    // the waiters that came for reads).
    void start_commit();
    // The running commit ends; a commit that is not running starts instead.
    void land(bool ok);
    bool idle() const { return !pending() && forming_.waiters.empty(); }

  private:
    struct Waiter {
        std::size_t line;
        std::function<void(const cbd::KeySet*)> done;
    };
    struct Group {
        std::vector<std::pair<std::string, cbd::StoredCircuit>> before;
        std::vector<Waiter> waiters;
    };
    void answer(std::vector<Waiter>& waiters, const cbd::KeySet* undone);

    Run& run_;
    cbd::CircuitStore& store_;
    Group forming_;
    Group committing_;
    bool committing_active_ = false;
    bool undoing_ = false;
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
    FakeBackend(Run& run, cbd::DurableBackend& inner) : run_(run), inner_(inner) {}

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

// One input's world: the store, the backends, the dispatcher, the client's
// lines, and the session model with its checks.
class Run {
  public:
    explicit Run(World& w)
        : clock_(w.clock), store_(w.store), gate_(*this, store_), durable_(store_, gate_),
          backend_(*this, durable_), dispatcher_(backend_, stats_) {
        store_.set_change_tracker(&gate_);
        replies_ = std::make_shared<cbd::ReplyQueue>();
        replies_->on_front_ready = [this] { pump_posted_ = true; };
        ctx_.peer = cbd::Peer{1000, 1000, 42};
        ctx_.level = cbd::AccessLevel::Admin;
        ctx_.replies = replies_;
    }
    ~Run() {
        replies_->on_front_ready = nullptr;
        store_.set_change_tracker(nullptr);
    }
    Run(const Run&) = delete;
    Run& operator=(const Run&) = delete;

    void execute(const std::uint8_t* data, std::size_t size);

    // For the fakes: the line being dispatched, and the lines.
    std::size_t current_line() const { return current_; }
    Line& line(std::size_t i) { return lines_[i]; }

  private:
    // Reads the program.
    std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
    void send_request(std::uint8_t how, std::uint8_t what);
    void send_malformed(std::uint8_t how);
    void send_blank(std::uint8_t how);
    void send_burst(std::uint8_t how);
    void send(Line line);

    // The session model (see daemon/net/session.cpp): the same steps, with the
    // client's reads standing in for the socket.
    bool over_bound() const {
        return replies_->ready_bytes() + out_.size() >= cbd::kMaxUnsentReplyBytes ||
               replies_->waiting() >= cbd::kMaxWaitingReplies;
    }
    void pump();
    void dispatch_lines();
    void dispatch(std::size_t i);
    void read_more();
    bool write_ready();
    void write_out();
    void client_reads(std::size_t n);
    void push_event();
    bool flush_events();
    // Runs the pumps the loop would have run (after a reply filled the front).
    void run_loop();
    void finish();

    // What reaches the client, checked line by line.
    void deliver(std::string_view bytes);
    void check_line(std::string_view line);

    const std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t pos_ = 0;

    cbd::ManualClock& clock_;
    cbd::MemoryCircuitStore& store_;
    FakeGate gate_;
    cbd::DurableBackend durable_;
    FakeBackend backend_;
    cbd::DaemonStats stats_;
    cbd::Dispatcher dispatcher_;
    std::shared_ptr<cbd::ReplyQueue> replies_;
    cbd::RequestContext ctx_;

    std::vector<Line> lines_;             // every line the client sent, in order
    std::size_t current_ = 0;             // the line being dispatched
    std::deque<std::size_t> kernel_;      // sent, not yet read by the session
    std::deque<std::size_t> in_;          // read, not yet dispatched
    std::vector<std::size_t> dispatched_; // non-blank lines dispatched, in order
    std::size_t watch_line_ = SIZE_MAX;
    std::size_t bursts_ = 0;
    std::uint64_t next_id_ = 1;

    std::string out_; // the batch being written
    std::size_t socket_capacity_ = 0;
    std::size_t in_socket_ = 0; // written, not yet read by the client
    bool reading_ = false;
    bool writing_ = false;
    bool pump_posted_ = false;
    bool close_after_write_ = false;
    bool closed_ = false;
    bool watching_ = false;
    bool overflowed_ = false;
    std::uint64_t dropped_ = 0;
    std::deque<std::string> events_;
    std::uint64_t event_seq_ = 0;

    std::string partial_; // the client's unfinished line
    std::size_t replies_seen_ = 0;
    std::size_t events_seen_ = 0;
    bool overflow_seen_ = false;
};

// --- the fakes --------------------------------------------------------------

void FakeGate::when_durable(std::function<void(const cbd::KeySet*)> done) {
    const std::size_t line = run_.current_line();
    run_.line(line).fate = Fate::Held;
    // As Persistence: what is applied so far is durable with the forming
    // group, or with the running commit when nothing is forming.
    Group& group = !forming_.before.empty() || !committing_active_ ? forming_ : committing_;
    group.waiters.push_back(Waiter{line, std::move(done)});
}

void FakeGate::before_change(std::string_view key) {
    if (undoing_)
        return;
    for (const auto& [k, before] : forming_.before)
        if (k == key)
            return;
    forming_.before.emplace_back(std::string(key), store_.stored(key));
}

void FakeGate::answer(std::vector<Waiter>& waiters, const cbd::KeySet* undone) {
    for (auto& w : waiters) {
        Line& l = run_.line(w.line);
        if (l.fate != Fate::Held)
            fail("line %zu: the gate answered a waiter twice", w.line);
        const bool lost = undone && l.key >= 0 &&
                          undone->find(kKeys[static_cast<std::size_t>(l.key)]) != undone->end();
        l.fate = lost ? Fate::Undone : Fate::Durable;
        w.done(undone);
    }
}

void FakeGate::start_commit() {
    if (committing_active_)
        return;
    if (forming_.before.empty()) {
        auto waiters = std::move(forming_.waiters);
        forming_.waiters.clear();
        answer(waiters, nullptr);
        return;
    }
    committing_ = std::move(forming_);
    forming_ = Group{};
    committing_active_ = true;
}

void FakeGate::land(bool ok) {
    if (!committing_active_) {
        start_commit();
        return;
    }
    committing_active_ = false;
    if (ok) {
        auto waiters = std::move(committing_.waiters);
        committing_ = Group{};
        answer(waiters, nullptr);
        return;
    }
    // Newest group first: the forming group's before-images were taken on
    // top of the failed one's.
    cbd::KeySet undone;
    undoing_ = true;
    for (Group* g : {&forming_, &committing_})
        for (auto& [key, before] : g->before) {
            store_.restore(before);
            undone.insert(key);
        }
    undoing_ = false;
    auto waiters = std::move(committing_.waiters);
    for (auto& w : forming_.waiters)
        waiters.push_back(std::move(w));
    committing_ = Group{};
    forming_ = Group{};
    answer(waiters, &undone);
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
    if (!inner_.run(req, peer, now, relay))
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

// --- the program ------------------------------------------------------------

void Run::send(Line line) {
    lines_.push_back(std::move(line));
    kernel_.push_back(lines_.size() - 1);
    if (reading_) {
        // The pending read completes: everything the client sent so far.
        reading_ = false;
        while (!kernel_.empty()) {
            in_.push_back(kernel_.front());
            kernel_.pop_front();
        }
        pump();
    }
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
        l.key = static_cast<int>(key);
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

void Run::execute(const std::uint8_t* data, std::size_t size) {
    data_ = data;
    size_ = size;
    lines_.reserve(16);
    // The first byte: how much the socket takes before the client reads
    // (0: it takes everything at once).
    const std::uint8_t cap = next();
    socket_capacity_ = (cap & 7) == 0 ? SIZE_MAX / 2 : std::size_t{16} << (cap & 7);
    pump(); // the session starts
    for (std::size_t step = 0; step < kMaxSteps && pos_ < size_ && !closed_; ++step) {
        const std::uint8_t op = next();
        switch (op & 15) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4: {
            const std::uint8_t how = next();
            send_request(how, next());
            break;
        }
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
            push_event();
            break;
        case 12:
            client_reads(std::size_t{1} << (op >> 4));
            break;
        case 13:
            client_reads(SIZE_MAX / 2);
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

// --- the session model ------------------------------------------------------

void Run::run_loop() {
    while (pump_posted_) {
        pump_posted_ = false;
        pump();
    }
}

void Run::pump() {
    for (;;) {
        if (closed_)
            return;
        dispatch_lines();
        const bool wrote = write_ready();
        if (closed_ || writing_)
            return;
        if (!wrote)
            break;
    }
    if (replies_->empty() && events_.empty() && close_after_write_) {
        closed_ = true; // drain_then_close: nothing more is written
        return;
    }
    if (watching_)
        return; // input is only read to see the client leave
    if (!reading_ && !close_after_write_ && !over_bound() && in_.empty())
        read_more();
}

void Run::read_more() {
    reading_ = true;
    if (kernel_.empty())
        return; // the next line the client sends completes the read
    // The read completes from the loop with what the client has sent.
    reading_ = false;
    while (!kernel_.empty()) {
        in_.push_back(kernel_.front());
        kernel_.pop_front();
    }
    pump_posted_ = true;
}

void Run::dispatch_lines() {
    if (watching_ || close_after_write_ || over_bound())
        return;
    while (!in_.empty()) {
        const std::size_t i = in_.front();
        in_.pop_front();
        dispatch(i);
        if (ctx_.start_watch || over_bound())
            break;
    }
    if (ctx_.start_watch) {
        watching_ = true;
        ctx_.start_watch.reset();
    }
}

void Run::dispatch(std::size_t i) {
    if (watching_ || watch_line_ != SIZE_MAX)
        fail("line %zu was dispatched after the watch on line %zu", i, watch_line_);
    Line& l = lines_[i];
    const std::size_t ready_before = replies_->ready_bytes();
    const std::size_t waiting_before = replies_->waiting();
    current_ = i;
    dispatcher_.handle_line(l.text, ctx_);
    const std::size_t ready_after = replies_->ready_bytes();
    const std::size_t waiting_after = replies_->waiting();
    if (l.blank) {
        if (ready_after != ready_before || waiting_after != waiting_before)
            fail("blank line %zu was answered", i);
        return;
    }
    dispatched_.push_back(i);
    const bool now = waiting_after == waiting_before && ready_after > ready_before;
    const bool later = waiting_after == waiting_before + 1 && ready_after == ready_before;
    if (now == later)
        fail("line %zu took no reply or more than one (ready %zu -> %zu, waiting %zu -> %zu)", i,
             ready_before, ready_after, waiting_before, waiting_after);
    if (l.watch != ctx_.start_watch.has_value())
        fail("line %zu: watch %s", i, l.watch ? "did not start" : "started by a non-watch line");
    if (l.watch)
        watch_line_ = i;
    // DurableBackend must hold every answer given while a change (this
    // request's own, or an earlier one) is uncommitted, and only those.
    const bool must_hold = gate_.pending() && l.circuit_op && l.answer != Answer::Throw;
    if (must_hold && l.fate != Fate::Held)
        fail("line %zu was answered while a commit was pending, without waiting for it", i);
    if (!must_hold && l.fate != Fate::NotHeld)
        fail("line %zu waited for a commit when none was pending", i);
}

bool Run::write_ready() {
    if (writing_ || closed_)
        return false;
    if (replies_->front_ready()) {
        replies_->take_ready(out_);
        if (!out_.empty()) {
            write_out();
            return true;
        }
    }
    // Events go out only behind every earlier reply.
    if (watching_ && replies_->empty())
        return flush_events();
    return false;
}

void Run::write_out() {
    // write_some: what the socket takes now; the rest waits for the client.
    const std::size_t n = std::min(socket_capacity_ - in_socket_, out_.size());
    deliver(std::string_view(out_).substr(0, n));
    in_socket_ += n;
    if (n == out_.size()) {
        out_.clear();
        return;
    }
    out_.erase(0, n);
    writing_ = true;
}

void Run::client_reads(std::size_t n) {
    in_socket_ -= std::min(n, in_socket_);
    if (!writing_)
        return;
    // The pending async_write goes on; it completes once all is written.
    const std::size_t more = std::min(socket_capacity_ - in_socket_, out_.size());
    deliver(std::string_view(out_).substr(0, more));
    in_socket_ += more;
    out_.erase(0, more);
    if (!out_.empty())
        return;
    writing_ = false; // on_written
    pump();
}

void Run::push_event() {
    // Only a watcher is told of events, and not after it overflowed.
    if (!watching_ || overflowed_ || closed_)
        return;
    if (events_.size() >= kWatchQueue) {
        dropped_ = events_.size() + 1;
        events_.clear();
        overflowed_ = true;
    } else {
        events_.push_back(cbd::reset_event_line(kKeys[event_seq_ % kKeyCount],
                                                static_cast<std::int64_t>(event_seq_)));
        ++event_seq_;
    }
    if (!writing_)
        pump();
}

bool Run::flush_events() {
    if (writing_ || closed_ || !replies_->empty())
        return false;
    if (overflowed_) {
        if (close_after_write_)
            return false;
        out_ = cbd::overflow_event_line(dropped_);
        close_after_write_ = true;
        write_out();
        return true;
    }
    if (events_.empty())
        return false;
    for (const auto& e : events_)
        out_ += e;
    events_.clear();
    write_out();
    return true;
}

// --- the checks -------------------------------------------------------------

void Run::deliver(std::string_view bytes) {
    while (!bytes.empty()) {
        const std::size_t nl = bytes.find('\n');
        if (nl == std::string_view::npos) {
            partial_.append(bytes);
            return;
        }
        if (partial_.empty()) {
            check_line(bytes.substr(0, nl));
        } else {
            partial_.append(bytes.substr(0, nl));
            check_line(partial_);
            partial_.clear();
        }
        bytes.remove_prefix(nl + 1);
    }
}

void Run::check_line(std::string_view text) {
    if (text.starts_with("{\"event\":")) {
        if (replies_seen_ != dispatched_.size())
            fail("an event came before the reply to line %zu", dispatched_[replies_seen_]);
        if (watch_line_ == SIZE_MAX)
            fail("an event reached a connection that never asked to watch");
        if (overflow_seen_)
            fail("a line came after the overflow line");
        if (text.starts_with("{\"event\":\"overflow\""))
            overflow_seen_ = true;
        ++events_seen_;
        return;
    }
    if (events_seen_ > 0)
        fail("a reply came after an event: %.*s", static_cast<int>(text.size()), text.data());
    if (replies_seen_ >= dispatched_.size())
        fail("a reply to no request: %.*s", static_cast<int>(text.size()), text.data());
    const std::size_t i = dispatched_[replies_seen_++];
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
    const bool unavailable =
        text.find("\"code\":\"storage_unavailable\"") != std::string_view::npos;
    switch (l.fate) {
    case Fate::Held:
        fail("line %zu was answered before the commit it waited for landed", i);
    case Fate::Undone:
        if (ok || !unavailable)
            fail("line %zu: a failed commit undid key %.*s, but the reply says %.*s", i,
                 static_cast<int>(kKeys[static_cast<std::size_t>(l.key)].size()),
                 kKeys[static_cast<std::size_t>(l.key)].data(), static_cast<int>(text.size()),
                 text.data());
        break;
    case Fate::NotHeld:
    case Fate::Durable:
        if (unavailable)
            fail("line %zu: storage_unavailable, but its commit did not fail: %.*s", i,
                 static_cast<int>(text.size()), text.data());
        break;
    }
    if (l.answer == Answer::Throw && l.circuit_op &&
        text.find("\"code\":\"internal_error\"") == std::string_view::npos)
        fail("line %zu: the backend threw, but the reply is %.*s", i, static_cast<int>(text.size()),
             text.data());
}

void Run::finish() {
    // Everything comes, one thing at a time: the backend completes what it
    // deferred, the commits land, and the client reads until nothing more
    // is written. Each step consumes something finite; the cap only turns a
    // model that loops into a clear failure.
    for (std::size_t steps = 0;; ++steps) {
        if (steps > 1'000'000)
            fail("the connection did not settle");
        if (backend_.complete(0)) {
        } else if (!gate_.idle()) {
            gate_.land(true);
        } else if (writing_ || in_socket_ > 0) {
            client_reads(SIZE_MAX / 2);
        } else {
            break;
        }
        run_loop();
    }
    if (closed_)
        return; // an overflowed watcher: its overflow line was the last
    if (!partial_.empty())
        fail("the client got an unfinished line: %s", partial_.c_str());
    if (!replies_->empty() || replies_->waiting() != 0)
        fail("%zu replies still waiting, %zu bytes ready but unsent", replies_->waiting(),
             replies_->ready_bytes());
    if (!out_.empty())
        fail("%zu bytes left unwritten", out_.size());
    // What the client sent after `watch` is read and ignored.
    if (!watching_ && !in_.empty())
        fail("line %zu was read but never dispatched (the session stalled)", in_.front());
    if (!watching_ && !kernel_.empty())
        fail("line %zu was sent but never read (the session stalled)", kernel_.front());
    if (replies_seen_ != dispatched_.size())
        fail("%zu of %zu dispatched lines got no reply", dispatched_.size() - replies_seen_,
             dispatched_.size());
    if (!events_.empty() && !overflowed_)
        fail("%zu events left unsent behind an empty reply queue", events_.size());
    // Every non-blank line up to the watch (or all of them) was dispatched.
    const std::size_t last = watch_line_ == SIZE_MAX ? lines_.size() : watch_line_ + 1;
    std::size_t expected = 0;
    for (std::size_t i = 0; i < last; ++i)
        expected += lines_[i].blank ? 0 : 1;
    if (expected != dispatched_.size())
        fail("%zu non-blank lines sent, %zu dispatched", expected, dispatched_.size());
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
