// libFuzzer target: arbitrary bytes through the daemon's real line splitter,
// request parser and dispatcher (with a store behind it). Every reply must be
// exactly one line holding one JSON object with a boolean "ok"; blank lines
// get none. Built with clang's -fsanitize=fuzzer when CBD_FUZZ is on, and
// linked with replay_main.cpp otherwise, so the corpus replays as a test.
#include "daemon/clock.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/memory_backend.hpp"
#include "daemon/event_hub.hpp"
#include "daemon/line_buffer.hpp"
#include "daemon/log.hpp"
#include "daemon/memory_store.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace {

// The fast path may only ever agree with the DOM parser.
void check_parsers_agree(std::string_view line) {
    cbd::Request flat, dom;
    if (!cbd::parse_request_flat(line, flat))
        return;
    auto err = cbd::parse_request_dom(line, dom);
    if (err || !(flat == dom)) {
        std::fprintf(stderr, "the flat parser accepted what the DOM parser %s: %.*s\n",
                     err ? "refused" : "read differently", static_cast<int>(line.size()),
                     line.data());
        std::abort();
    }
}

// The check that turns "no crash" into "no wrong answer".
void check_reply(std::string_view line, const std::string& out) {
    if (cbd::is_blank_line(line)) {
        if (!out.empty()) {
            std::fprintf(stderr, "a blank line was answered\n");
            std::abort();
        }
        return;
    }
    if (out.empty() || out.back() != '\n' || out.find('\n') != out.size() - 1) {
        std::fprintf(stderr, "reply is not exactly one line: %s\n", out.c_str());
        std::abort();
    }
    auto doc = nlohmann::json::parse(out, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("ok") || !doc["ok"].is_boolean()) {
        std::fprintf(stderr, "reply is not a JSON object with ok: %s\n", out.c_str());
        std::abort();
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool quiet = [] {
        cbd::log_init(cbd::LogLevel::Error);
        return true;
    }();
    (void)quiet;

    cbd::ManualClock clock(1'764'201'600'000);
    cbd::DaemonStats stats;
    cbd::EventHub events(stats);
    cbd::MemoryCircuitStore store(clock, 64, &events); // a small store hits its limit
    cbd::MemoryBackend backend(store);
    cbd::Dispatcher dispatcher(backend, stats);
    cbd::LineBuffer input(512); // a small line limit is reached often
    cbd::RequestContext ctx{cbd::Peer{1000, 1000, 42}, cbd::AccessLevel::Admin, std::nullopt, nullptr};

    // The first byte picks how the input arrives: in reads of 1..256 bytes,
    // as a socket would split it. Time moves on between reads.
    const std::size_t chunk = size > 0 ? std::size_t{data[0]} + 1 : 1;
    std::size_t pos = size > 0 ? 1 : 0;
    std::string out;
    while (pos < size) {
        std::size_t n = std::min({chunk, size - pos, input.write_space()});
        std::memcpy(input.write_pos(), data + pos, n);
        input.commit(n);
        pos += n;
        const auto drained = input.drain([&](std::string_view line) {
            check_parsers_agree(line);
            out.clear();
            dispatcher.handle_line(line, ctx, out);
            check_reply(line, out);
            if (ctx.start_watch)
                return false; // the connection would be an event stream now
            return true;
        });
        if (ctx.start_watch || drained == cbd::LineBuffer::Drained::LineTooLong)
            break; // the server would stop reading requests here
        clock.advance(250);
        store.expire_due();
    }
    return 0;
}
