// EventHub (see event_hub.hpp).
#include "daemon/dispatch/event_hub.hpp"

#include "daemon/core/log.hpp"
#include "daemon/dispatch/circuit_json.hpp"

#include <algorithm>

namespace cbd {

void EventHub::add(Watcher* w, WatchFilter filter) {
    subscriptions_.push_back({w, std::move(filter)});
    stats_.watchers = subscriptions_.size();
}

void EventHub::remove(Watcher* w) {
    std::erase_if(subscriptions_, [w](const Subscription& s) { return s.watcher == w; });
    stats_.watchers = subscriptions_.size();
}

void EventHub::publish(std::string_view key, std::string line) {
    // A watcher may overflow and unsubscribe while we deliver: iterate a
    // copy. The line is shared only once someone wants it.
    const auto subscribers = subscriptions_;
    auto first = std::find_if(subscribers.begin(), subscribers.end(),
                              [&](const auto& s) { return s.filter.matches(key); });
    if (first == subscribers.end())
        return;
    const auto shared = std::make_shared<const std::string>(std::move(line));
    for (auto it = first; it != subscribers.end(); ++it)
        if (it->filter.matches(key))
            it->watcher->push_event(shared);
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
