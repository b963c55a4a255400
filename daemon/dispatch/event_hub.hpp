// The event hub: told of every state change by the store (CircuitObserver),
// it logs it, counts it, and queues one event line to every watcher whose
// filter matches, in the order the changes happened.
#pragma once

#include "daemon/breaker/circuit_store.hpp"
#include "daemon/dispatch/stats.hpp"

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cbd {

struct WatchFilter {
    enum class Kind { All, Key, Prefix, Keys };
    Kind kind = Kind::All;
    std::string value;
    // Keys: sorted, without duplicates. Shared, because the hub copies its
    // subscriptions for every event it delivers.
    std::shared_ptr<const std::vector<std::string>> keys;

    bool matches(std::string_view key) const {
        switch (kind) {
        case Kind::All:
            return true;
        case Kind::Key:
            return key == value;
        case Kind::Prefix:
            return key.starts_with(value);
        case Kind::Keys:
            return keys && std::binary_search(keys->begin(), keys->end(), key, std::less<>{});
        }
        return false;
    }
};

// What a watching session offers the hub.
class Watcher {
  public:
    // Queues one event line; the watcher bounds its own queue.
    virtual void push_event(const std::shared_ptr<const std::string>& line) = 0;

  protected:
    ~Watcher() = default;
};

class EventHub final : public CircuitObserver {
  public:
    explicit EventHub(DaemonStats& stats) : stats_(stats) {}

    void add(Watcher* w, WatchFilter filter);
    void remove(Watcher* w);

    void on_transition(std::string_view key, const TransitionRecord& t,
                       const CircuitView& circuit) override;
    void on_reset(std::string_view key, std::int64_t at) override;

  private:
    void publish(std::string_view key, std::string line);

    struct Subscription {
        Watcher* watcher;
        WatchFilter filter;
    };
    DaemonStats& stats_;
    std::vector<Subscription> subscriptions_;
};

} // namespace cbd
