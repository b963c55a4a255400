// Time as the store sees it: wall-clock epoch milliseconds, injectable so
// unit tests can step it by hand.
#pragma once

#include <chrono>
#include <cstdint>

namespace cbd {

class Clock {
  public:
    virtual ~Clock() = default;
    virtual std::int64_t now_ms() const = 0;
};

class SystemClock final : public Clock {
  public:
    std::int64_t now_ms() const override {
        using namespace std::chrono;
        return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    }
};

// A clock that moves only when told to; for tests.
class ManualClock final : public Clock {
  public:
    explicit ManualClock(std::int64_t start_ms) : now_(start_ms) {}
    std::int64_t now_ms() const override { return now_; }
    void advance(std::int64_t ms) { now_ += ms; }
    void set(std::int64_t ms) { now_ = ms; }

  private:
    std::int64_t now_;
};

} // namespace cbd
