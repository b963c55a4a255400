// Persistence: the store's stored()/restore()/export_page(), the SQLite state
// file (round trip, refusals, injected write failures), and the durable
// mode's group commit and undo, with a hand-driven clock and a real file in a
// temporary directory.
#include "daemon/backends/memory/memory_store.hpp"
#include "daemon/backends/persist/persistence.hpp"
#include "daemon/backends/persist/state_file.hpp"

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sqlite3.h>
#include <unistd.h>

using namespace cbd;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t kPersistStart = 1'764'201'600'000;

// A fresh directory under the system's temporary one, removed afterwards.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "cbd-unit-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    std::string file(const char* name) const { return (path / name).string(); }
};

StoredCircuit sample(const std::string& key, State state, std::uint64_t generation) {
    StoredCircuit r;
    r.key = key;
    r.circuit = CircuitView{Snapshot{state, 4, 1, kPersistStart - 10, kPersistStart - 20},
                            generation, std::nullopt};
    return r;
}

std::vector<StoredCircuit> load_all(StateFile& file, std::uint64_t* generation = nullptr) {
    std::vector<StoredCircuit> out;
    auto g = file.load([&](const StoredCircuit& r) { out.push_back(r); });
    if (generation)
        *generation = g;
    return out;
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

} // namespace

// --- the store's side ------------------------------------------------------------

TEST_CASE("restore makes a key hold exactly the record, counts and indexes included",
          "[persistence]") {
    ManualClock clock(kPersistStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");

    StoredCircuit r = sample("api", State::Open, 500);
    r.circuit->forced = ForcePin{State::Open, kPersistStart + 60'000, "maintenance", Peer{}};
    r.policy[PolicyField::FailureThreshold] = 3;
    REQUIRE_FALSE(store.restore(r));

    CHECK(store.stored("api") == r);
    auto counts = store.counts();
    CHECK(counts.total == 1);
    CHECK(counts.open == 1);
    CHECK(counts.closed == 0);
    CHECK(counts.forced == 1);
    CHECK(store.policy("api").resolved.policy.failure_threshold() == 3);
    // Generations stay unique: the next change takes one above the restored.
    CHECK(store.record_failure("other").circuit.generation == 501);
    // The pin's TTL is tracked like any other.
    clock.advance(60'000);
    store.expire_due();
    CHECK_FALSE(store.stored("api").circuit->forced);
}

TEST_CASE("restoring a record without a circuit removes it but keeps the policy", "[persistence]") {
    ManualClock clock(kPersistStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    StoredCircuit policy_only;
    policy_only.key = "api";
    policy_only.policy[PolicyField::HalfOpenMax] = 2;
    REQUIRE_FALSE(store.restore(policy_only));
    CHECK(store.size() == 0);
    CHECK(store.stored("api") == policy_only);
    CHECK(store.counts().closed == 0);
}

TEST_CASE("restore refuses past max circuits and changes nothing", "[persistence]") {
    ManualClock clock(kPersistStart);
    MemoryCircuitStore store(clock, 1);
    store.get("a");
    CHECK(store.restore(sample("b", State::Open, 9)) == ErrorCode::TooManyCircuits);
    CHECK(store.size() == 1);
    CHECK_FALSE(store.stored("b").circuit);
}

TEST_CASE("export pages through circuits and policy-only keys in key order", "[persistence]") {
    ManualClock clock(kPersistStart);
    MemoryCircuitStore store(clock, 100);
    for (const char* key : {"b", "d", "f"})
        store.get(key);
    PolicyPatch patch;
    patch[PolicyField::FailureThreshold] = 2;
    for (const char* key : {"a", "d", "e"})
        store.configure(key, patch, {}, false);

    std::vector<std::string> seen;
    std::string after;
    int pages = 0;
    do {
        auto page = store.export_page("", after, 2);
        for (const auto& r : page.circuits)
            seen.push_back(r.key);
        after = page.next;
        ++pages;
    } while (!after.empty() && pages < 10);
    CHECK(seen == std::vector<std::string>{"a", "b", "d", "e", "f"});
    auto all = store.export_page("", "", 100);
    REQUIRE(all.circuits.size() == 5);
    CHECK_FALSE(all.circuits[0].circuit); // "a": policy only
    CHECK(all.circuits[2].circuit);       // "d": both
    CHECK(all.circuits[2].policy == patch);
    CHECK(all.next.empty());
    CHECK(store.export_page("d", "", 100).circuits.size() == 1);
}

namespace {
struct RecordingTracker : ChangeTracker {
    std::vector<std::string> keys;
    void before_change(std::string_view key) override { keys.emplace_back(key); }
};
} // namespace

TEST_CASE("the store reports every persistent change before making it, and reads are not",
          "[persistence]") {
    ManualClock clock(kPersistStart);
    MemoryCircuitStore store(clock, 100);
    RecordingTracker tracker;
    store.set_change_tracker(&tracker);

    store.get("new");
    CHECK(tracker.keys == std::vector<std::string>{"new"}); // creation is a change
    tracker.keys.clear();
    store.get("new");
    store.policy("new");
    store.list(ListQuery{});
    CHECK(tracker.keys.empty());

    store.record_success("new");
    store.record_failure("new");
    store.transition("new", State::Open, {});
    PolicyPatch patch;
    patch[PolicyField::HalfOpenMax] = 2;
    store.configure("new", patch, {}, false);
    store.reset("new");
    CHECK(tracker.keys.size() >= 5);
    for (const auto& k : tracker.keys)
        CHECK(k == "new");
}

// --- the state file ----------------------------------------------------------------

TEST_CASE("the state file round-trips circuits, pins, policies and the generation",
          "[persistence]") {
    TempDir dir;
    const auto path = dir.file("state.db");
    StoredCircuit forced = sample("db", State::Open, 7);
    forced.circuit->forced = ForcePin{State::Open, 0, "reason with \"quotes\"", Peer{}};
    forced.circuit->forced->by.uid = 1000;
    forced.circuit->forced->by.pid = 4242;
    StoredCircuit policy_only;
    policy_only.key = "payments/";
    policy_only.policy[PolicyField::ResetTimeoutMs] = 5000;
    StoredCircuit both = sample("api", State::HalfOpen, 9);
    both.policy[PolicyField::HalfOpenMax] = 3;
    {
        auto file = StateFile::open({path, {}});
        REQUIRE_FALSE(
            file->write({forced, policy_only, both, sample("gone", State::Closed, 3)}, 12));
        StoredCircuit gone;
        gone.key = "gone";
        REQUIRE_FALSE(file->write({gone}, 13)); // an empty record deletes
    }
    auto file = StateFile::open({path, {}});
    std::uint64_t generation = 0;
    auto loaded = load_all(*file, &generation);
    CHECK(generation == 13);
    std::sort(loaded.begin(), loaded.end(),
              [](const auto& a, const auto& b) { return a.key < b.key; });
    REQUIRE(loaded.size() == 3);
    CHECK(loaded[0] == both);
    CHECK(loaded[1] == forced);
    CHECK(loaded[2] == policy_only);
}

TEST_CASE("a second opener of a state file in use is refused", "[persistence]") {
    TempDir dir;
    auto first = StateFile::open({dir.file("state.db"), {}});
    try {
        StateFile::open({dir.file("state.db"), {}});
        FAIL("a second open succeeded");
    } catch (const StateFileError& e) {
        CHECK(e.kind() == StateFileError::Kind::Unwritable);
        CHECK(std::string(e.what()).find("in use") != std::string::npos);
    }
}

TEST_CASE("files that are not cbd state are refused and left untouched", "[persistence]") {
    TempDir dir;
    const auto garbage = dir.file("garbage.db");
    const std::string text(8192, 'x');
    write_text(garbage, text);
    try {
        StateFile::open({garbage, {}});
        FAIL("garbage opened");
    } catch (const StateFileError& e) {
        CHECK(e.kind() == StateFileError::Kind::Unreadable);
        CHECK(std::string(e.what()).find(garbage) != std::string::npos);
    }
    CHECK(fs::file_size(garbage) == text.size());
    CHECK_FALSE(fs::exists(garbage + "-wal"));

    // A SQLite database of some other program.
    const auto foreign = dir.file("foreign.db");
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(foreign.c_str(), &db) == SQLITE_OK);
    sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    const auto size = fs::file_size(foreign);
    try {
        StateFile::open({foreign, {}});
        FAIL("a foreign database opened");
    } catch (const StateFileError& e) {
        CHECK(e.kind() == StateFileError::Kind::Unreadable);
        CHECK(std::string(e.what()).find("not a cbd state file") != std::string::npos);
    }
    CHECK(fs::file_size(foreign) == size);

    const auto moved = StateFile::move_aside(garbage);
    CHECK_FALSE(fs::exists(garbage));
    CHECK(fs::file_size(moved) == text.size());
}

TEST_CASE("a row that makes no sense is refused with its key", "[persistence]") {
    TempDir dir;
    const auto path = dir.file("state.db");
    {
        auto file = StateFile::open({path, {}});
        REQUIRE_FALSE(file->write({sample("api", State::Open, 2)}, 2));
    }
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "UPDATE circuits SET state = 'ajar'", nullptr, nullptr, nullptr) ==
            SQLITE_OK);
    sqlite3_close(db);
    auto file = StateFile::open({path, {}});
    try {
        load_all(*file);
        FAIL("a bad row loaded");
    } catch (const StateFileError& e) {
        CHECK(e.kind() == StateFileError::Kind::Unreadable);
        CHECK(std::string(e.what()).find("row 'api'") != std::string::npos);
        CHECK(std::string(e.what()).find("ajar") != std::string::npos);
    }
}

TEST_CASE("an injected write failure fails the whole transaction; writes resume after",
          "[persistence]") {
    TempDir dir;
    const auto path = dir.file("state.db");
    const auto trigger = dir.file("fault");
    auto file = StateFile::open({path, trigger});
    REQUIRE_FALSE(file->write({sample("a", State::Open, 1)}, 1));

    write_text(trigger, "full\n");
    auto error = file->write({sample("a", State::Closed, 2), sample("b", State::Open, 3)}, 3);
    REQUIRE(error);
    CHECK((error->find("full") != std::string::npos || error->find("disk") != std::string::npos));
    write_text(trigger, "io\n");
    CHECK(file->write({sample("c", State::Open, 4)}, 4));

    fs::remove(trigger);
    REQUIRE_FALSE(file->write({sample("d", State::Open, 5)}, 5));
    file.reset();
    auto reopened = StateFile::open({path, {}});
    auto loaded = load_all(*reopened);
    std::sort(loaded.begin(), loaded.end(),
              [](const auto& x, const auto& y) { return x.key < y.key; });
    REQUIRE(loaded.size() == 2); // a and d; nothing of the failed ones
    CHECK(loaded[0] == sample("a", State::Open, 1));
    CHECK(loaded[1].key == "d");
}

// --- durable mode ----------------------------------------------------------------

namespace {
// A store with persistence on a state file in a temporary directory, with
// the fault trigger beside it, and a loop to run.
struct Rig {
    TempDir dir;
    std::string path = dir.file("state.db");
    std::string trigger = dir.file("fault");
    ManualClock clock{kPersistStart};
    MemoryCircuitStore store{clock, 100};
    boost::asio::io_context io; // before persistence: its timers go first
    PersistenceOptions options;
    Persistence persistence;

    Rig(SyncMode mode, std::chrono::milliseconds interval)
        : options{{path, trigger}, mode, interval},
          persistence(StateFile::open(options.file), options, store) {
        persistence.load(clock.now_ms());
        persistence.start(io);
    }
    // Runs the loop until `done` (the writer thread works meanwhile).
    template <typename Done> bool run_until(Done done) {
        for (int i = 0; i < 1000 && !done(); ++i) {
            io.restart();
            io.run_for(std::chrono::milliseconds(5));
        }
        return done();
    }
};
} // namespace

TEST_CASE("durable mode commits a turn's changes together and undoes them when that fails",
          "[persistence]") {
    Rig rig(SyncMode::Always, std::chrono::milliseconds(100));
    const std::string& path = rig.path;
    const std::string& trigger = rig.trigger;
    ManualClock& clock = rig.clock;
    MemoryCircuitStore& store = rig.store;
    const StorageStats& stats = rig.persistence.stats();
    const PersistenceOptions& options = rig.options;
    Persistence& persistence = rig.persistence;
    auto run_until = [&](auto done) { return rig.run_until(done); };

    // One turn: two keys change; the commit runs when the loop gets to it.
    store.record_failure("a");
    store.record_failure("b");
    CHECK(persistence.pending());
    int released = 0;
    persistence.when_durable([&](const KeySet* undone) {
        CHECK(undone == nullptr);
        ++released;
    });
    REQUIRE(run_until([&] { return released == 1; }));
    CHECK_FALSE(persistence.pending());
    CHECK(stats.commits == 1);
    CHECK(stats.written == 2);

    // A failing turn: memory goes back to what it was before the turn.
    const auto before_a = store.stored("a");
    write_text(trigger, "io\n");
    store.record_failure("a");
    store.record_failure("a");
    store.transition("a", State::Open, {});
    store.get("c"); // created in this turn: undone means gone
    KeySet undone_keys;
    bool told = false;
    persistence.when_durable([&](const KeySet* undone) {
        REQUIRE(undone);
        undone_keys = *undone;
        told = true;
    });
    REQUIRE(run_until([&] { return told; }));
    CHECK(undone_keys == KeySet{"a", "c"});
    CHECK(store.stored("a") == before_a);
    CHECK_FALSE(store.stored("c").circuit);
    CHECK(store.counts().total == 2);
    CHECK(store.counts().open == 0);
    CHECK_FALSE(stats.healthy);
    CHECK(stats.undone == 2);

    // The disk is back: changes commit again and survive a reopen.
    fs::remove(trigger);
    store.record_failure("b");
    CHECK(run_until([&] { return stats.healthy && !persistence.pending(); }));
    persistence.stop_timer();
    REQUIRE(persistence.shut_down());

    MemoryCircuitStore reloaded(clock, 100);
    Persistence again(StateFile::open({path, {}}), options, reloaded);
    CHECK(again.load(clock.now_ms()) == 2);
    CHECK(reloaded.stored("a") == before_a);
    CHECK(reloaded.stored("b").circuit->snapshot.failure_count == 2);
    CHECK(reloaded.last_generation() >= store.last_generation());
}

TEST_CASE("batch mode writes changed circuits off the loop and retries after a failure",
          "[persistence]") {
    Rig rig(SyncMode::Batch, std::chrono::milliseconds(5));
    const std::string& path = rig.path;
    const std::string& trigger = rig.trigger;
    MemoryCircuitStore& store = rig.store;
    const StorageStats& stats = rig.persistence.stats();
    Persistence& persistence = rig.persistence;
    auto run_until = [&](auto done) { return rig.run_until(done); };
    write_text(trigger, "io\n");
    store.record_failure("a");
    CHECK(run_until([&] { return stats.failures >= 1; }));
    CHECK_FALSE(persistence.pending()); // batch mode never holds replies
    fs::remove(trigger);
    CHECK(run_until([&] { return stats.commits >= 1 && stats.healthy; }));
    persistence.stop_timer();
    REQUIRE(persistence.shut_down());

    auto file = StateFile::open({path, {}});
    auto loaded = load_all(*file);
    REQUIRE(loaded.size() == 1);
    CHECK(loaded[0].circuit->snapshot.failure_count == 1);
}

// --- numbers out of range in the state file --------------------------------------

namespace {

// Writes a good file with one circuit (pinned, so the pin columns are set),
// runs `sql` on it, and returns what loading it throws.
std::string load_error_after(const TempDir& dir, const std::string& sql) {
    const auto path = dir.file("range.db");
    std::filesystem::remove(path);
    {
        auto file = StateFile::open({path, {}});
        StoredCircuit r = sample("api", State::Open, 2);
        r.circuit->forced = ForcePin{State::Open, kPersistStart + 1000, "why", Peer{}};
        r.circuit->forced->by.uid = 1000;
        r.circuit->forced->by.pid = 42;
        REQUIRE_FALSE(file->write({r}, 9));
    }
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    auto file = StateFile::open({path, {}});
    try {
        load_all(*file);
    } catch (const StateFileError& e) {
        CHECK(e.kind() == StateFileError::Kind::Unreadable);
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("a state file with numbers past 2^53-1 is refused at load", "[persistence]") {
    TempDir dir;
    // The file as written loads.
    CHECK(load_error_after(dir, "SELECT 1") == "");
    // 2^53-1 itself is fine.
    CHECK(load_error_after(dir, "UPDATE circuits SET generation = 9007199254740991") == "");

    const struct {
        const char* sql;
        const char* named;
    } cases[] = {
        {"UPDATE meta SET value = 9007199254740992 WHERE name = 'last_generation'",
         "last_generation"},
        {"UPDATE meta SET value = -1 WHERE name = 'last_generation'", "last_generation"},
        {"UPDATE meta SET value = 'many' WHERE name = 'last_generation'", "last_generation"},
        {"UPDATE circuits SET generation = 9007199254740992", "generation"},
        {"UPDATE circuits SET generation = 9223372036854775807", "generation"},
        {"UPDATE circuits SET failure_count = 9007199254740992", "failure_count"},
        {"UPDATE circuits SET success_count = 9007199254740992", "success_count"},
        {"UPDATE circuits SET last_failure_time = 9007199254740992", "last_failure_time"},
        {"UPDATE circuits SET last_state_change = 9007199254740992", "last_state_change"},
        {"UPDATE circuits SET pin_until = 9007199254740992", "pin_until"},
        {"UPDATE circuits SET pin_until = -5", "pin_until"},
        {"UPDATE circuits SET pin_uid = 4294967296", "pin_uid"},
        {"UPDATE circuits SET pin_pid = 2147483648", "pin_pid"},
        {"UPDATE circuits SET policy = '{\"halfOpenMax\":9007199254740992}'", "halfOpenMax"},
    };
    for (const auto& c : cases) {
        INFO(c.sql);
        const auto error = load_error_after(dir, c.sql);
        CHECK(error.find(c.named) != std::string::npos);
        CHECK(error.find(dir.file("range.db")) != std::string::npos);
    }
}

TEST_CASE("a row whose key no request could carry is refused at load, naming it", "[persistence]") {
    TempDir dir;
    // Keys at the edges of the rules load: multi-byte UTF-8, 1024 bytes.
    CHECK(load_error_after(dir, "UPDATE circuits SET key = CAST(X'C3A9E282ACF09F9880' AS TEXT)") ==
          "");
    CHECK(load_error_after(dir, "UPDATE circuits SET key = substr(hex(zeroblob(512)), 1, 1024)") ==
          "");

    const struct {
        const char* sql;
        const char* named; // the row, as the error shows it
        const char* why;
    } cases[] = {
        {"UPDATE circuits SET key = CAST(X'41FF2042' AS TEXT)", "row 'A\\xFF B'", "UTF-8"},
        // Overlong '/', a lone surrogate, past U+10FFFF, a cut-off sequence.
        {"UPDATE circuits SET key = CAST(X'61C0AF' AS TEXT)", "row 'a\\xC0\\xAF'", "UTF-8"},
        {"UPDATE circuits SET key = CAST(X'61EDA080' AS TEXT)", "row 'a\\xED\\xA0\\x80'", "UTF-8"},
        {"UPDATE circuits SET key = CAST(X'61F4908080' AS TEXT)", "row 'a\\xF4\\x90\\x80\\x80'",
         "UTF-8"},
        {"UPDATE circuits SET key = CAST(X'61E282' AS TEXT)", "row 'a\\xE2\\x82'", "UTF-8"},
        {"UPDATE circuits SET key = CAST(X'610962' AS TEXT)", "row 'a\\x09b'", "control character"},
        {"UPDATE circuits SET key = ''", "row ''", "empty"},
        {"UPDATE circuits SET key = substr(hex(zeroblob(513)), 1, 1025)", "(1025 bytes)",
         "longer than 1024 bytes"},
    };
    for (const auto& c : cases) {
        INFO(c.sql);
        const auto error = load_error_after(dir, c.sql);
        CHECK(error.find(dir.file("range.db")) != std::string::npos);
        CHECK(error.find(c.named) != std::string::npos);
        CHECK(error.find(c.why) != std::string::npos);
    }
}

TEST_CASE("times later than the wall clock at load are taken as now", "[persistence][clock]") {
    // Written before the wall clock stepped back an hour: the open circuit
    // would otherwise stay open an hour longer than its timeout.
    TempDir dir;
    const auto path = dir.file("state.db");
    StoredCircuit ahead = sample("ahead", State::Open, 3);
    ahead.circuit->snapshot.last_failure_time = kPersistStart + 3'600'000;
    ahead.circuit->snapshot.last_state_change = kPersistStart + 3'600'000;
    StoredCircuit past = sample("past", State::Open, 4);
    REQUIRE_FALSE(StateFile::open({path, {}})->write({ahead, past}, 4));

    ManualClock clock{kPersistStart};
    MemoryCircuitStore store{clock, 100};
    PersistenceOptions options{{path, {}}, SyncMode::Off, std::chrono::milliseconds(100)};
    Persistence persistence(StateFile::open(options.file), options, store);
    CHECK(persistence.load(clock.now_ms()) == 2);
    const Snapshot loaded = store.stored("ahead").circuit->snapshot;
    CHECK(loaded.last_failure_time == kPersistStart);
    CHECK(loaded.last_state_change == kPersistStart);
    CHECK(store.acquire("ahead").retry_after_ms == 30'000); // the whole timeout, from now
    CHECK(store.stored("past") == past);                    // times in the past are kept
}
