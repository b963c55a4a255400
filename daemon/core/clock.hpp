// Time as the store sees it, injectable so unit tests can step it by hand.
//
// now_ms() is cbd's own time: epoch milliseconds that never step. It is the
// wall clock when cbd started plus the monotonic time since, so open times,
// probe leases, pin TTLs and deadlines measure real durations whatever
// `date -s` or an NTP step does to the wall clock meanwhile.
//
// wall_offset_ms() is how far the wall clock has stepped since (wall =
// now_ms() + wall_offset_ms()). The store adds it to every epoch time it
// shows (a snapshot's times, a pin's `until`, a transition's `at`, an
// export, the state file) and takes it off every epoch time it is given
// (import), so the times clients see follow the wall clock from the moment
// it steps (docs/PROTOCOL.md, *Time*).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace cbd {

class Clock {
  public:
    virtual ~Clock() = default;
    virtual std::int64_t now_ms() const = 0;
    virtual std::int64_t wall_offset_ms() const { return 0; }
};

// The wall clock at construction plus CLOCK_MONOTONIC since. A step of the
// wall clock shows in wall_offset_ms(); a change under a millisecond (the
// two clocks read a few nanoseconds apart) is not a step and is ignored, so
// the offset of times already shown never flickers.
class SystemClock final : public Clock {
  public:
    SystemClock();
    std::int64_t now_ms() const override;
    std::int64_t wall_offset_ms() const override;

  private:
    std::int64_t base_ns_;                    // wall - monotonic at construction
    mutable std::int64_t wall_minus_mono_ns_; // the last step seen, as base_ns_ is
};

// A clock that moves only when told to; for tests. step_wall() moves the
// wall clock alone, as `date -s` does.
class ManualClock final : public Clock {
  public:
    explicit ManualClock(std::int64_t start_ms) : now_(start_ms) {}
    std::int64_t now_ms() const override { return now_; }
    std::int64_t wall_offset_ms() const override { return wall_offset_; }
    void advance(std::int64_t ms) { now_ += ms; }
    void set(std::int64_t ms) { now_ = ms; }
    void step_wall(std::int64_t ms) { wall_offset_ += ms; }

  private:
    std::int64_t now_;
    std::int64_t wall_offset_ = 0;
};

// cbd --test-clock FILE: the time is whatever FILE says, read afresh each
// time it is asked, so a test can step a real daemon's clock (and, through
// it, the time Redis functions use) without sleeping. FILE holds one
// decimal epoch ms (the wall and the monotonic clock both), or two: the wall
// clock, then the monotonic one (cbd's now_ms()), so a test can step one and
// not the other. It keeps the last good reading when the file is missing or
// malformed, or holds a time past 2^53-1 (the protocol's largest integer).
// Tests only: it costs a file read per reading, and anyone who can write
// FILE decides every timeout.
class FileClock final : public Clock {
  public:
    explicit FileClock(std::string path);
    std::int64_t now_ms() const override;
    std::int64_t wall_offset_ms() const override;

  private:
    void read() const;

    std::string path_;
    mutable std::int64_t wall_;
    mutable std::int64_t mono_;
};

// What FILE's text says, as (wall, monotonic); false when it is not one
// or two decimal integers from 0 to 2^53-1 (trailing spaces and newlines
// allowed).
struct FileClockReading {
    std::int64_t wall;
    std::int64_t mono;
};
bool parse_file_clock(std::string_view text, FileClockReading& out);

} // namespace cbd
