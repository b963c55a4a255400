// Time as the store sees it: wall-clock epoch milliseconds, injectable so
// unit tests can step it by hand.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

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

// cbd --test-clock FILE: the time is whatever FILE says (decimal epoch ms),
// read afresh each time it is asked, so a test can step a real daemon's
// clock (and, through it, the time Redis scripts use) without sleeping. It
// keeps the last good reading when the file is missing or malformed. Tests
// only: it costs a file read per reading, and anyone who can write FILE
// decides every timeout.
class FileClock final : public Clock {
  public:
    explicit FileClock(std::string path);
    std::int64_t now_ms() const override;

  private:
    std::string path_;
    mutable std::int64_t last_;
};

} // namespace cbd
