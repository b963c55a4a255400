// StateFile (see state_file.hpp).
#include "daemon/backends/persist/state_file.hpp"

#include "daemon/backends/persist/fault_vfs.hpp"
#include "daemon/core/safe_file.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

namespace cbd {

namespace {

// "cbd1" in ASCII: marks a SQLite file as a cbd state file.
constexpr int kApplicationId = 0x63626431;
// 2: the `rule` column (trip-rule state: backoff, consecutive run, rate
// window). A version 1 file gains it when opened.
constexpr int kSchemaVersion = 2;

constexpr const char* kCreateSchema = R"sql(
CREATE TABLE circuits (
    key TEXT PRIMARY KEY NOT NULL,
    state TEXT,
    failure_count INTEGER,
    success_count INTEGER,
    last_failure_time INTEGER,
    last_state_change INTEGER,
    generation INTEGER,
    pin_state TEXT,
    pin_until INTEGER,
    pin_reason TEXT,
    pin_uid INTEGER,
    pin_pid INTEGER,
    policy TEXT,
    rule TEXT
) WITHOUT ROWID;
CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('last_generation', 0);
PRAGMA application_id = 1667392561;
PRAGMA user_version = 2;
)sql";
constexpr const char* kUpgradeFrom1 =
    "ALTER TABLE circuits ADD COLUMN rule TEXT; PRAGMA user_version = 2;";
static_assert(kApplicationId == 1667392561);

// An upsert updates the row in place (INSERT OR REPLACE would delete and
// re-insert it, touching more of the tree).
constexpr const char* kUpsert =
    "INSERT INTO circuits VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) "
    "ON CONFLICT (key) DO UPDATE SET state = excluded.state, failure_count = "
    "excluded.failure_count, success_count = excluded.success_count, last_failure_time = "
    "excluded.last_failure_time, last_state_change = excluded.last_state_change, generation = "
    "excluded.generation, pin_state = excluded.pin_state, pin_until = excluded.pin_until, "
    "pin_reason = excluded.pin_reason, pin_uid = excluded.pin_uid, pin_pid = excluded.pin_pid, "
    "policy = excluded.policy, rule = excluded.rule";
constexpr const char* kRemove = "DELETE FROM circuits WHERE key = ?1";
constexpr const char* kSetGeneration = "UPDATE meta SET value = ?1 WHERE name = 'last_generation'";
constexpr const char* kSelectAll =
    "SELECT key, state, failure_count, success_count, last_failure_time, last_state_change, "
    "generation, pin_state, pin_until, pin_reason, pin_uid, pin_pid, policy, rule FROM circuits";

std::string describe(sqlite3* db, int rc) {
    std::string text = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    // SQLite's messages for failed opens are terse; errno says more.
    const int sys = db ? sqlite3_system_errno(db) : 0;
    if (sys != 0 && (rc & 0xff) != SQLITE_CORRUPT && (rc & 0xff) != SQLITE_NOTADB)
        text += " (" + std::string(std::strerror(sys)) + ")";
    return text;
}

// Runs SQL that returns no rows we need; returns the SQLite code.
int exec(sqlite3* db, const char* sql) {
    return sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
}

// The first column of the first row of `sql` as an integer (0 if none).
int query_int(sqlite3* db, const char* sql, int& rc) {
    sqlite3_stmt* stmt = nullptr;
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
    int value = 0;
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            value = sqlite3_column_int(stmt, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(stmt);
    return value;
}

bool is_unreadable(int rc) {
    const int primary = rc & 0xff;
    return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB || primary == SQLITE_FORMAT;
}

std::optional<State> column_state(sqlite3_stmt* stmt, int col) {
    const auto* text = sqlite3_column_text(stmt, col);
    if (!text)
        return std::nullopt;
    return parse_state(reinterpret_cast<const char*>(text));
}

std::string column_string(sqlite3_stmt* stmt, int col) {
    const auto* text = sqlite3_column_text(stmt, col);
    return text ? std::string(reinterpret_cast<const char*>(text),
                              static_cast<std::size_t>(sqlite3_column_bytes(stmt, col)))
                : std::string();
}

bool is_null(sqlite3_stmt* stmt, int col) {
    return sqlite3_column_type(stmt, col) == SQLITE_NULL;
}

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF). The protocol's JSON parser refuses
// anything else in a request, so a key that fails this could never be named
// by a client; loaded, it would show as U+FFFD and export/import would change
// it. common/ has no validator to share (replies replace bad bytes through the
// JSON library), hence this one.
bool is_valid_utf8(std::string_view text) {
    std::size_t i = 0;
    while (i < text.size()) {
        const auto lead = static_cast<unsigned char>(text[i]);
        std::size_t length = 0;
        unsigned char low = 0x80, high = 0xBF; // the range of the second byte
        if (lead < 0x80) {
            ++i;
            continue;
        } else if (lead >= 0xC2 && lead <= 0xDF) {
            length = 2;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            length = 3;
            if (lead == 0xE0)
                low = 0xA0; // shorter forms are overlong
            else if (lead == 0xED)
                high = 0x9F; // U+D800..U+DFFF are surrogates
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            length = 4;
            if (lead == 0xF0)
                low = 0x90; // overlong
            else if (lead == 0xF4)
                high = 0x8F; // above U+10FFFF
        } else {
            return false; // a continuation byte, C0/C1 (overlong) or F5..FF
        }
        if (text.size() - i < length)
            return false;
        const auto second = static_cast<unsigned char>(text[i + 1]);
        if (second < low || second > high)
            return false;
        for (std::size_t k = 2; k < length; ++k) {
            const auto next = static_cast<unsigned char>(text[i + k]);
            if (next < 0x80 || next > 0xBF)
                return false;
        }
        i += length;
    }
    return true;
}

// A key as it can be shown in an error: printable ASCII as is, every other
// byte as \xHH, and at most 64 bytes of it, so that a bad key cannot break
// the log line or flood it.
std::string printable_key(std::string_view key) {
    constexpr std::size_t kShown = 64;
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out = "'";
    for (std::size_t i = 0; i < key.size() && i < kShown; ++i) {
        const auto c = static_cast<unsigned char>(key[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xF];
        }
    }
    out += '\'';
    if (key.size() > kShown)
        out += "... (" + std::to_string(key.size()) + " bytes)";
    return out;
}

} // namespace

StateFile::StateFile(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

StateFile::~StateFile() {
    sqlite3_finalize(upsert_);
    sqlite3_finalize(remove_);
    sqlite3_finalize(set_generation_);
    sqlite3_close(db_);
}

std::string StateFile::error_text() const {
    return describe(db_, sqlite3_extended_errcode(db_));
}

std::unique_ptr<StateFile> StateFile::open(const StateFileOptions& options) {
    const std::string& path = options.path;
    using Kind = StateFileError::Kind;
    auto fail = [&](Kind kind, const std::string& why) -> StateFileError {
        return StateFileError(kind, "state file " + path + ": " + why);
    };

    // SQLite opens the file itself, and its -wal, -shm and -journal beside
    // it, so this is checked first: each is absent or a regular file, never
    // a symlink (the state file lives in cbd's own directory; following a
    // link there is how another user makes cbd write where they choose),
    // never a FIFO that would block the first read or a device. Between
    // this look and SQLite's open, only someone who may write to that
    // directory can change it. SQLITE_OPEN_NOFOLLOW makes SQLite refuse a
    // symlink too, and its unix VFS opens with O_NOFOLLOW and O_CLOEXEC.
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
        if (auto problem = existing_file_problem(path + suffix, Symlinks::Refuse, "state file"))
            throw StateFileError(Kind::Unwritable, *problem);

    const char* vfs = options.fault_file.empty() ? nullptr : register_fault_vfs(options.fault_file);
    sqlite3* raw = nullptr;
    const int open_rc = sqlite3_open_v2(path.c_str(), &raw,
                                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                            SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
                                        vfs);
    std::unique_ptr<StateFile> file(new StateFile(raw, path));
    if (open_rc != SQLITE_OK)
        throw fail(Kind::Unwritable, "cannot open or create it: " + describe(raw, open_rc));
    sqlite3_extended_result_codes(raw, 1);
    // Waiting on a lock would only hide a second daemon: fail at once.
    sqlite3_busy_timeout(raw, 0);

    // Held from the first read to close: no other process reads a state file
    // half-written or writes one under us. It also means no -shm file.
    exec(raw, "PRAGMA locking_mode = EXCLUSIVE");

    int rc = SQLITE_OK;
    const int app_id = query_int(raw, "PRAGMA application_id", rc);
    const int tables =
        rc == SQLITE_OK ? query_int(raw, "SELECT count(*) FROM sqlite_schema", rc) : 0;
    const int schema = rc == SQLITE_OK ? query_int(raw, "PRAGMA user_version", rc) : 0;
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
            throw fail(Kind::Unwritable, "in use by another process (is another cbd running?)");
        if (is_unreadable(rc))
            throw fail(Kind::Unreadable, "cannot be read: " + describe(raw, rc));
        throw fail(Kind::Unwritable, "cannot be read: " + describe(raw, rc));
    }
    const bool fresh = app_id == 0 && tables == 0;
    if (!fresh) {
        if (app_id != kApplicationId)
            throw fail(Kind::Unreadable, "not a cbd state file (a SQLite database of another "
                                         "application: application_id " +
                                             std::to_string(app_id) + ")");
        if (schema > kSchemaVersion)
            throw fail(Kind::Unreadable, "written by a newer cbd (schema " +
                                             std::to_string(schema) + "; this one reads " +
                                             std::to_string(kSchemaVersion) + ")");
        sqlite3_stmt* check = nullptr;
        rc = sqlite3_prepare_v2(raw, "PRAGMA quick_check(1)", -1, &check, nullptr);
        std::string verdict;
        if (rc == SQLITE_OK && sqlite3_step(check) == SQLITE_ROW)
            verdict = column_string(check, 0);
        else
            verdict = describe(raw, sqlite3_extended_errcode(raw));
        sqlite3_finalize(check);
        if (verdict != "ok")
            throw fail(Kind::Unreadable, "is damaged (SQLite quick_check: " + verdict + ")");
    }
    if (sqlite3_db_readonly(raw, "main") == 1)
        throw fail(Kind::Unwritable, "opened read-only: check its permissions and the "
                                     "filesystem's");

    // Only now, with the file known to be ours and sound, does anything get
    // written. WAL: a commit appends to the log instead of rewriting pages
    // twice, and FULL syncs the log at every commit (durable mode needs it).
    sqlite3_stmt* mode = nullptr;
    std::string journal;
    rc = sqlite3_prepare_v2(raw, "PRAGMA journal_mode = WAL", -1, &mode, nullptr);
    if (rc == SQLITE_OK && sqlite3_step(mode) == SQLITE_ROW)
        journal = column_string(mode, 0);
    sqlite3_finalize(mode);
    if (journal != "wal")
        throw fail(Kind::Unwritable, "cannot switch to WAL mode: " + file->error_text() +
                                         " (is its directory writable?)");
    exec(raw, "PRAGMA synchronous = FULL");
    if (fresh) {
        rc = exec(raw, (std::string("BEGIN IMMEDIATE;") + kCreateSchema + "COMMIT;").c_str());
        if (rc != SQLITE_OK) {
            const auto why = file->error_text();
            exec(raw, "ROLLBACK");
            throw fail(Kind::Unwritable, "cannot be initialised: " + why);
        }
    } else {
        // A write we can afford to find out about now rather than at the
        // first commit: the directory and file must take the log.
        rc = exec(raw, (std::string("BEGIN IMMEDIATE; ") + (schema < 2 ? kUpgradeFrom1 : "") +
                        " UPDATE meta SET value = value WHERE name = 'last_generation'; COMMIT;")
                           .c_str());
        if (rc != SQLITE_OK) {
            const auto why = file->error_text();
            exec(raw, "ROLLBACK");
            throw fail(Kind::Unwritable, "cannot be written: " + why);
        }
    }
    file->prepare();
    return file;
}

void StateFile::prepare() {
    if (sqlite3_prepare_v2(db_, kUpsert, -1, &upsert_, nullptr) != SQLITE_OK ||
        sqlite3_prepare_v2(db_, kRemove, -1, &remove_, nullptr) != SQLITE_OK ||
        sqlite3_prepare_v2(db_, kSetGeneration, -1, &set_generation_, nullptr) != SQLITE_OK)
        throw StateFileError(StateFileError::Kind::Unreadable,
                             "state file " + path_ + ": unexpected schema: " + error_text());
}

std::uint64_t StateFile::load(const std::function<void(const StoredCircuit&)>& visit) {
    auto bad = [&](const std::string& why) {
        return StateFileError(StateFileError::Kind::Unreadable, "state file " + path_ + ": " + why);
    };
    int rc = SQLITE_OK;
    sqlite3_stmt* meta = nullptr;
    std::uint64_t last_generation = 0;
    rc = sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE name = 'last_generation'", -1, &meta,
                            nullptr);
    bool counter_in_range = true;
    if (rc == SQLITE_OK && sqlite3_step(meta) == SQLITE_ROW) {
        // The counter is a generation: 0..2^53-1. A larger one (or a value
        // of another type) would make the store refuse every change, or
        // give out generations clients cannot read, so the file is refused.
        counter_in_range = sqlite3_column_type(meta, 0) == SQLITE_INTEGER &&
                           sqlite3_column_int64(meta, 0) >= 0 &&
                           sqlite3_column_int64(meta, 0) <= kMaxSafeInteger;
        last_generation = static_cast<std::uint64_t>(sqlite3_column_int64(meta, 0));
    }
    sqlite3_finalize(meta);
    if (rc != SQLITE_OK)
        throw bad("cannot be read: " + error_text());
    if (!counter_in_range)
        throw bad("the generation counter (meta 'last_generation') is not an integer from 0 to " +
                  std::to_string(kMaxSafeInteger));
    meta_generation_ = last_generation;

    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, kSelectAll, -1, &stmt, nullptr) != SQLITE_OK)
        throw bad("cannot be read: " + error_text());
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> guard(stmt, sqlite3_finalize);
    StoredCircuit record;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        record = StoredCircuit{};
        record.key = column_string(stmt, 0);
        // The key rules are the protocol's: a key no request could carry
        // cannot be addressed, so the row is corruption, not a circuit.
        if (auto problem = key_problem(record.key))
            throw bad("row " + printable_key(record.key) + ": " + std::string(*problem));
        if (!is_valid_utf8(record.key))
            throw bad("row " + printable_key(record.key) + ": key is not valid UTF-8");
        auto row_error = [&](const std::string& why) {
            return bad("row '" + record.key + "': " + why);
        };
        if (!is_null(stmt, 1)) {
            CircuitView v;
            auto state = column_state(stmt, 1);
            if (!state)
                throw row_error("'" + column_string(stmt, 1) + "' is not a state");
            v.snapshot.state = *state;
            // Counts, times and the generation: what the protocol allows.
            auto integer_column = [&](int col, const char* name, std::int64_t max) {
                if (sqlite3_column_type(stmt, col) != SQLITE_INTEGER ||
                    sqlite3_column_int64(stmt, col) < 0 || sqlite3_column_int64(stmt, col) > max)
                    throw row_error(std::string("column ") + name +
                                    " is not an integer from 0 to " + std::to_string(max));
                return sqlite3_column_int64(stmt, col);
            };
            static constexpr const char* kNumberColumns[] = {"failure_count", "success_count",
                                                             "last_failure_time",
                                                             "last_state_change", "generation"};
            for (int col = 2; col <= 6; ++col)
                integer_column(col, kNumberColumns[col - 2], kMaxSafeInteger);
            v.snapshot.failure_count = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 2));
            v.snapshot.success_count = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 3));
            v.snapshot.last_failure_time = sqlite3_column_int64(stmt, 4);
            v.snapshot.last_state_change = sqlite3_column_int64(stmt, 5);
            v.generation = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 6));
            if (!is_null(stmt, 7)) {
                auto pin_state = column_state(stmt, 7);
                if (!pin_state || *pin_state == State::HalfOpen)
                    throw row_error("'" + column_string(stmt, 7) + "' is not a forced state");
                // until: 0 for no TTL, else epoch ms; uid a 32-bit uid_t;
                // pid a positive pid_t, 0 when unknown.
                ForcePin pin{*pin_state, integer_column(8, "pin_until", kMaxSafeInteger),
                             column_string(stmt, 9), Peer{}};
                pin.by.uid = static_cast<uid_t>(integer_column(10, "pin_uid", 0xffffffffLL));
                pin.by.pid = static_cast<pid_t>(integer_column(11, "pin_pid", 0x7fffffffLL));
                v.forced = std::move(pin);
            }
            record.circuit = std::move(v);
        }
        if (!is_null(stmt, 12)) {
            auto json = nlohmann::json::parse(column_string(stmt, 12), nullptr, false);
            if (json.is_discarded())
                throw row_error("its policy is not JSON");
            if (auto err = parse_policy_patch(json, record.policy))
                throw row_error("its policy is not valid: " + *err);
        }
        if (!is_null(stmt, 13)) {
            if (!record.circuit)
                throw row_error("has trip-rule state but no circuit");
            record.rule = column_string(stmt, 13); // checked when restored
        }
        if (record.empty())
            throw row_error("holds neither a circuit nor a policy");
        visit(record);
        last_generation =
            std::max(last_generation, record.circuit ? record.circuit->generation : 0);
    }
    if (rc != SQLITE_DONE)
        throw bad("cannot be read: " + error_text());
    return last_generation;
}

std::optional<std::string> StateFile::write(const std::vector<StoredCircuit>& records,
                                            std::uint64_t last_generation) {
    auto failed = [&]() -> std::optional<std::string> {
        std::string why = error_text();
        if (!sqlite3_get_autocommit(db_))
            exec(db_, "ROLLBACK");
        return why;
    };
    if (exec(db_, "BEGIN IMMEDIATE") != SQLITE_OK)
        return failed();
    for (const auto& r : records) {
        sqlite3_stmt* stmt = r.empty() ? remove_ : upsert_;
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        sqlite3_bind_text(stmt, 1, r.key.data(), static_cast<int>(r.key.size()), SQLITE_STATIC);
        if (!r.empty()) {
            if (const auto& c = r.circuit) {
                const auto state = state_name(c->snapshot.state);
                sqlite3_bind_text(stmt, 2, state.data(), static_cast<int>(state.size()),
                                  SQLITE_STATIC);
                sqlite3_bind_int64(stmt, 3, static_cast<sqlite3_int64>(c->snapshot.failure_count));
                sqlite3_bind_int64(stmt, 4, static_cast<sqlite3_int64>(c->snapshot.success_count));
                sqlite3_bind_int64(stmt, 5, c->snapshot.last_failure_time);
                sqlite3_bind_int64(stmt, 6, c->snapshot.last_state_change);
                sqlite3_bind_int64(stmt, 7, static_cast<sqlite3_int64>(c->generation));
                if (const auto& pin = c->forced) {
                    const auto pin_state = state_name(pin->state);
                    sqlite3_bind_text(stmt, 8, pin_state.data(), static_cast<int>(pin_state.size()),
                                      SQLITE_STATIC);
                    sqlite3_bind_int64(stmt, 9, pin->until);
                    sqlite3_bind_text(stmt, 10, pin->reason.data(),
                                      static_cast<int>(pin->reason.size()), SQLITE_STATIC);
                    sqlite3_bind_int64(stmt, 11, static_cast<sqlite3_int64>(pin->by.uid));
                    sqlite3_bind_int64(stmt, 12, pin->by.pid);
                }
            }
            if (!r.policy.empty())
                sqlite3_bind_text(stmt, 13, policy_patch_json(r.policy).c_str(), -1,
                                  SQLITE_TRANSIENT);
            if (!r.rule.empty())
                sqlite3_bind_text(stmt, 14, r.rule.data(), static_cast<int>(r.rule.size()),
                                  SQLITE_STATIC);
        }
        if (sqlite3_step(stmt) != SQLITE_DONE)
            return failed();
    }
    // The counter is stored only when no row of this batch carries it and
    // the stored one is behind: load takes the larger of it and the rows'
    // largest generation, so the common commit (counts change, generations
    // do not) stays one page.
    std::uint64_t batch_max = 0;
    for (const auto& r : records)
        if (r.circuit)
            batch_max = std::max(batch_max, r.circuit->generation);
    const bool store_counter = last_generation > batch_max && last_generation != meta_generation_;
    if (store_counter) {
        sqlite3_reset(set_generation_);
        sqlite3_bind_int64(set_generation_, 1, static_cast<sqlite3_int64>(last_generation));
        if (sqlite3_step(set_generation_) != SQLITE_DONE)
            return failed();
    }
    if (exec(db_, "COMMIT") != SQLITE_OK)
        return failed();
    if (store_counter)
        meta_generation_ = last_generation;
    return std::nullopt;
}

std::string StateFile::move_aside(const std::string& path) {
    std::string target = path + ".corrupt-" + std::to_string(std::time(nullptr));
    if (std::rename(path.c_str(), target.c_str()) != 0)
        throw StateFileError(StateFileError::Kind::Unwritable,
                             "state file " + path + ": cannot move it aside to " + target + ": " +
                                 std::strerror(errno));
    for (const char* suffix : {"-wal", "-shm", "-journal"})
        std::rename((path + suffix).c_str(), (target + suffix).c_str()); // may not exist
    return target;
}

} // namespace cbd
