// libFuzzer target: arbitrary bytes through the daemon's real line splitter,
// request parser and dispatcher (with a store behind it). Every reply must be
// exactly one line holding one JSON object with a boolean "ok", whose numbers
// (but the echoed id) are integers from 0 to 2^53-1; a line holding a NUL is
// never answered ok; blank lines get no reply. Built with clang's
// -fsanitize=fuzzer when CBD_FUZZ is on, and linked with replay_main.cpp
// otherwise, so the corpus replays as a test.
//
// Speed: CI fuzzes for one minute, so executions per second are what the
// fuzzer finds. The store, dispatcher, clock and stats are built once and
// set back to their start before every input (MemoryCircuitStore::
// start_over()): building a store per input cost ten times the rest of the
// run. Each input still starts from the same empty state, so any crash
// reproduces from its one input. Replies are checked by a small JSON reader
// of our own, left out of the coverage: a DOM parse of each reply with
// nlohmann, instrumented in this file, took most of each run and filled
// the fuzzer's coverage with the checker's branches instead of the daemon's.
#include "daemon/backends/memory/memory_backend.hpp"
#include "daemon/backends/memory/memory_store.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/log.hpp"
#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/net/line_buffer.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace {

constexpr std::int64_t kStartMs = 1'764'201'600'000;

[[noreturn]] void fail(const char* what, std::string_view text) {
    std::fprintf(stderr, "%s: %.*s\n", what, static_cast<int>(text.size()), text.data());
    std::abort();
}

// The fast path may only ever agree with the DOM parser.
void check_parsers_agree(std::string_view line) {
    cbd::Request flat, dom;
    if (!cbd::parse_request_flat(line, flat))
        return;
    auto err = cbd::parse_request_dom(line, dom);
    if (err)
        fail("the flat parser accepted what the DOM parser refused", line);
    if (!(flat == dom))
        fail("the flat parser read differently from the DOM parser", line);
}

// The reply checker's own branches are not what we fuzz: leave them out of
// the coverage the fuzzer steers by (clang only; the replay build is gcc).
#if defined(__clang__)
#define CBD_NOT_FUZZED __attribute__((no_sanitize("coverage")))
#else
#define CBD_NOT_FUZZED
#endif

// A strict JSON reader (RFC 8259, UTF-8 checked) for one reply, and the
// reply rules: one object with a boolean "ok", every number (but the
// top-level "id", echoed as the client sent it) an integer in 0..2^53-1.
// Written for this check alone: nlohmann's parser, instantiated in this
// instrumented file, took most of each run.
class ReplyReader {
  public:
    explicit ReplyReader(std::string_view text)
        : p_(text.data()), end_(text.data() + text.size()) {}

    // nullptr when the reply keeps the rules; else what it breaks.
    CBD_NOT_FUZZED const char* check() {
        skip_ws();
        if (!eat('{'))
            return "not an object";
        if (!object(1))
            return problem_;
        skip_ws();
        if (p_ != end_)
            return "more than one value";
        return ok_seen_ ? nullptr : "no boolean ok";
    }
    bool ok() const { return ok_; }

  private:
    static constexpr int kMaxDepth = 64;

    CBD_NOT_FUZZED bool bad(const char* what) {
        problem_ = what;
        return false;
    }
    CBD_NOT_FUZZED void skip_ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r'))
            ++p_;
    }
    CBD_NOT_FUZZED bool eat(char c) {
        if (p_ < end_ && *p_ == c) {
            ++p_;
            return true;
        }
        return false;
    }
    CBD_NOT_FUZZED bool literal(std::string_view word) {
        if (static_cast<std::size_t>(end_ - p_) < word.size() ||
            std::string_view(p_, word.size()) != word)
            return bad("not JSON");
        p_ += word.size();
        return true;
    }

    // After the '{'. At depth 1, "ok" must hold a boolean.
    CBD_NOT_FUZZED bool object(int depth) {
        if (depth > kMaxDepth)
            return bad("nested too deep");
        skip_ws();
        if (eat('}'))
            return true;
        do {
            skip_ws();
            std::string_view key;
            if (!eat('"') || !string(key))
                return bad("not JSON");
            skip_ws();
            if (!eat(':'))
                return bad("not JSON");
            skip_ws();
            if (depth == 1 && key == "ok") {
                if (p_ < end_ && *p_ == 't')
                    ok_ = true;
                else if (p_ < end_ && *p_ == 'f')
                    ok_ = false;
                else
                    return bad("ok is not a boolean");
                if (!literal(ok_ ? "true" : "false"))
                    return false;
                ok_seen_ = true;
            } else if (!value(depth, depth == 1 && key == "id")) {
                return false;
            }
            skip_ws();
        } while (eat(','));
        return eat('}') || bad("not JSON");
    }

    CBD_NOT_FUZZED bool array(int depth) {
        if (depth > kMaxDepth)
            return bad("nested too deep");
        skip_ws();
        if (eat(']'))
            return true;
        do {
            skip_ws();
            if (!value(depth, false))
                return false;
            skip_ws();
        } while (eat(','));
        return eat(']') || bad("not JSON");
    }

    CBD_NOT_FUZZED bool value(int depth, bool is_id) {
        if (p_ == end_)
            return bad("not JSON");
        switch (*p_) {
        case '{':
            ++p_;
            return object(depth + 1);
        case '[':
            ++p_;
            return array(depth + 1);
        case '"': {
            ++p_;
            std::string_view ignored;
            return string(ignored) || bad("not JSON");
        }
        case 't':
            return literal("true");
        case 'f':
            return literal("false");
        case 'n':
            return literal("null");
        default:
            return number(is_id);
        }
    }

    // An integer, as JSON writes it; past 2^53-1 or negative only as the id.
    CBD_NOT_FUZZED bool number(bool is_id) {
        const bool negative = eat('-');
        const char* digits = p_;
        while (p_ < end_ && *p_ >= '0' && *p_ <= '9')
            ++p_;
        const auto n = static_cast<std::size_t>(p_ - digits);
        if (n == 0 || (digits[0] == '0' && n > 1))
            return bad("not JSON");
        if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E'))
            return bad("a number that is not an integer");
        if (is_id)
            return true;
        if (negative)
            return bad("a negative number");
        constexpr std::string_view kMax = "9007199254740991";
        const std::string_view text(digits, n);
        if (n > kMax.size() || (n == kMax.size() && text > kMax))
            return bad("a number past 2^53-1");
        return true;
    }

    // After the opening '"': its raw contents (escapes as written) in `out`.
    CBD_NOT_FUZZED bool string(std::string_view& out) {
        const char* start = p_;
        while (p_ < end_) {
            const auto c = static_cast<unsigned char>(*p_);
            if (c == '"') {
                out = std::string_view(start, static_cast<std::size_t>(p_ - start));
                ++p_;
                return true;
            }
            if (c < 0x20)
                return bad("a raw control character in a string");
            if (c == '\\') {
                if (!escape())
                    return false;
            } else if (c >= 0x80) {
                if (!utf8_sequence())
                    return false;
            } else {
                ++p_;
            }
        }
        return bad("an unterminated string");
    }

    CBD_NOT_FUZZED bool hex4(unsigned& code) {
        if (end_ - p_ < 4)
            return bad("a bad \\u escape");
        code = 0;
        for (int i = 0; i < 4; ++i, ++p_) {
            const char h = *p_;
            code <<= 4;
            if (h >= '0' && h <= '9')
                code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f')
                code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
                code |= static_cast<unsigned>(h - 'A' + 10);
            else
                return bad("a bad \\u escape");
        }
        return true;
    }

    // At a backslash. A \u escape of a surrogate must be a whole pair.
    CBD_NOT_FUZZED bool escape() {
        ++p_;
        if (p_ == end_)
            return bad("an unterminated string");
        const char e = *p_++;
        if (std::string_view("\"\\/bfnrt").find(e) != std::string_view::npos)
            return true;
        if (e != 'u')
            return bad("a bad escape");
        unsigned code = 0;
        if (!hex4(code))
            return false;
        if (code >= 0xDC00 && code <= 0xDFFF)
            return bad("a lone low surrogate");
        if (code >= 0xD800 && code <= 0xDBFF) {
            unsigned low = 0;
            if (!eat('\\') || !eat('u') || !hex4(low) || low < 0xDC00 || low > 0xDFFF)
                return bad("a lone high surrogate");
        }
        return true;
    }

    // At a byte >= 0x80: one well-formed UTF-8 sequence (no overlong forms,
    // no surrogates, nothing past U+10FFFF).
    CBD_NOT_FUZZED bool utf8_sequence() {
        const auto b0 = static_cast<unsigned char>(*p_);
        std::size_t extra = 0;
        unsigned char lo = 0x80, hi = 0xBF; // the second byte's range
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            extra = 1;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            extra = 2;
            if (b0 == 0xE0)
                lo = 0xA0;
            if (b0 == 0xED)
                hi = 0x9F;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            extra = 3;
            if (b0 == 0xF0)
                lo = 0x90;
            if (b0 == 0xF4)
                hi = 0x8F;
        } else {
            return bad("invalid UTF-8");
        }
        if (static_cast<std::size_t>(end_ - p_) <= extra)
            return bad("invalid UTF-8");
        for (std::size_t i = 1; i <= extra; ++i) {
            const auto b = static_cast<unsigned char>(p_[i]);
            if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
                return bad("invalid UTF-8");
        }
        p_ += extra + 1;
        return true;
    }

    const char* p_;
    const char* end_;
    bool ok_seen_ = false;
    bool ok_ = false;
    const char* problem_ = "not JSON";
};

// The check that turns "no crash" into "no wrong answer".
void check_reply(std::string_view line, std::string_view out) {
    if (cbd::is_blank_line(line)) {
        if (!out.empty())
            fail("a blank line was answered", out);
        return;
    }
    if (out.empty() || out.back() != '\n' || out.find('\n') != out.size() - 1)
        fail("reply is not exactly one line", out);
    ReplyReader reply(out.substr(0, out.size() - 1));
    if (const char* problem = reply.check())
        fail(problem, out);
    // docs/PROTOCOL.md: a NUL anywhere in a line is parse_error; such a line
    // is never applied.
    if (reply.ok() && line.find('\0') != std::string_view::npos)
        fail("a line with a NUL was answered ok", out);
}

// A daemon's parts, built once. All use of the dispatcher is here: it is
// built with the Rig and called in answer().
class Rig {
  public:
    Rig() { cbd::log_init(cbd::LogLevel::Error); }

    // A daemon as it starts: an empty store (small, so its limit is hit),
    // zeroed stats, the clock at the start, an empty line buffer (with a
    // small limit, so it is reached often).
    void fresh() {
        store_.start_over();
        clock_.set(kStartMs);
        stats_ = cbd::DaemonStats{};
        input_.emplace(512);
        ctx_ = cbd::RequestContext{cbd::Peer{1000, 1000, 42}, cbd::AccessLevel::Admin, std::nullopt,
                                   nullptr};
    }

    // One request line in, its reply (or nothing) in `out`.
    void answer(std::string_view line, std::string& out) {
        out.clear();
        dispatcher_.handle_line(line, ctx_, out);
    }

    // Time moves on between reads, and what it decides is applied.
    void tick() {
        clock_.advance(250);
        store_.expire_due();
    }

    cbd::LineBuffer& input() { return *input_; }
    bool watching() const { return ctx_.start_watch.has_value(); }

  private:
    cbd::ManualClock clock_{kStartMs};
    cbd::DaemonStats stats_;
    cbd::EventHub events_{stats_};
    cbd::MemoryCircuitStore store_{clock_, 64, &events_};
    cbd::MemoryBackend backend_{store_};
    cbd::Dispatcher dispatcher_{backend_, stats_};
    std::optional<cbd::LineBuffer> input_;
    cbd::RequestContext ctx_;
};

} // namespace

// ASan's defaults, for speed (ASAN_OPTIONS still overrides them): most of
// a run is the daemon's own allocations, which ASan's allocator makes costly
// by recording a stack per malloc, filling new blocks, and keeping 256 MB of
// freed ones (the fresh pages fault). The daemon's libraries are not
// ASan-instrumented in this build, so those buy little here; a crash
// reproduces from its one input, so rerun it with
// ASAN_OPTIONS=malloc_context_size=30 for the allocation stacks.
extern "C" const char* __asan_default_options() {
    return "malloc_context_size=0:max_malloc_fill_size=0:quarantine_size_mb=16";
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static Rig rig;
    static std::string out;
    rig.fresh();

    // The first byte picks how the input arrives: in reads of 1..256 bytes,
    // as a socket would split it.
    const std::size_t chunk = size > 0 ? std::size_t{data[0]} + 1 : 1;
    std::size_t pos = size > 0 ? 1 : 0;
    cbd::LineBuffer& input = rig.input();
    while (pos < size) {
        std::size_t n = std::min({chunk, size - pos, input.write_space()});
        std::memcpy(input.write_pos(), data + pos, n);
        input.commit(n);
        pos += n;
        const auto drained = input.drain([&](std::string_view line) {
            check_parsers_agree(line);
            rig.answer(line, out);
            check_reply(line, out);
            return !rig.watching(); // a watch makes the connection an event stream
        });
        if (rig.watching() || drained == cbd::LineBuffer::Drained::LineTooLong)
            break; // the server would stop reading requests here
        rig.tick();
    }
    return 0;
}
