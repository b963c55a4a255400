// EventHub (see event_hub.hpp).
#include "daemon/dispatch/event_hub.hpp"

#include "daemon/core/log.hpp"
#include "daemon/dispatch/circuit_json.hpp"

#include <algorithm>
#include <fstream>
#include <unistd.h>

namespace cbd {

std::uint64_t resident_memory_bytes() {
    std::ifstream statm("/proc/self/statm");
    std::uint64_t size = 0, resident = 0;
    if (!(statm >> size >> resident))
        return 0;
    return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

void EventHub::add(Watcher* w, WatchFilter filter) {
    subscriptions_.push_back({w, std::move(filter)});
    stats_.watchers = subscriptions_.size();
}

void EventHub::remove(Watcher* w) {
    std::erase_if(subscriptions_, [w](const Subscription& s) { return s.watcher == w; });
    stats_.watchers = subscriptions_.size();
}

void EventHub::publish(std::string_view key, std::string line) {
    std::shared_ptr<const std::string> shared;
    // A watcher may overflow and unsubscribe while we deliver: iterate a copy.
    const auto subscribers = subscriptions_;
    for (const auto& s : subscribers) {
        if (!s.filter.matches(key))
            continue;
        if (!shared)
            shared = std::make_shared<const std::string>(std::move(line));
        s.watcher->push_event(shared);
    }
}

void EventHub::on_transition(std::string_view key, const TransitionRecord& t,
                             const CircuitView& circuit) {
    stats_.count_transition(t);
    if (log_enabled(LogLevel::Info))
        log_info("circuit '" + std::string(key) + "': " + std::string(state_name(t.from)) + " -> " +
                 std::string(state_name(t.to)) + " (" +
                 std::string(transition_cause_name(t.cause)) + "), generation " +
                 std::to_string(t.generation));
    if (!subscriptions_.empty())
        publish(key, transition_event_line(key, t, circuit));
}

void EventHub::on_reset(std::string_view key, std::int64_t at) {
    if (log_enabled(LogLevel::Debug))
        log_debug("circuit '" + std::string(key) + "' removed");
    if (!subscriptions_.empty())
        publish(key, reset_event_line(key, at));
}

} // namespace cbd
