// What a session needs of persistence in durable mode (--sync always): are
// there changes not yet on disk, and a call once they are. A session whose
// replies may reflect such changes holds them until then, so no client hears
// of a change that a crash could still lose.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>

namespace cbd {

struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view k) const noexcept {
        return std::hash<std::string_view>{}(k);
    }
};
using KeySet = std::unordered_set<std::string, KeyHash, std::equal_to<>>;

class CommitGate {
  public:
    // True while some change is applied in memory but not yet committed.
    virtual bool pending() const = 0;
    // `done` runs once the pending changes are committed (with nullptr) or
    // their commit failed (with the keys whose changes were undone: replies
    // about them must become storage_unavailable errors).
    virtual void when_durable(std::function<void(const KeySet* undone)> done) = 0;

  protected:
    ~CommitGate() = default;
};

} // namespace cbd
