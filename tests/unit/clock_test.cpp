// The clocks: SystemClock's never-stepping time, and the test clock file's
// two readings.
#include "daemon/core/clock.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>

using namespace cbd;

TEST_CASE("the test clock file holds one time, or the wall and the monotonic one", "[clock]") {
    FileClockReading r{};
    REQUIRE(parse_file_clock("1000\n", r));
    CHECK((r.wall == 1000 && r.mono == 1000));
    REQUIRE(parse_file_clock("3601000 1000", r));
    CHECK((r.wall == 3601000 && r.mono == 1000));
    REQUIRE(parse_file_clock("0 9007199254740991 \n", r));
    CHECK((r.wall == 0 && r.mono == 9007199254740991));
    for (const char* bad : {"", "\n", "9007199254740992", "1 9007199254740997", "-1", "1 2 3",
                            "1  2", " 1", "1,2", "abc", "1 x"}) {
        INFO(bad);
        CHECK_FALSE(parse_file_clock(bad, r));
    }
}

TEST_CASE("the system clock starts at the wall clock and does not step with it", "[clock]") {
    SystemClock clock;
    using namespace std::chrono;
    const auto wall = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    // Read a moment apart: within a second, on the slowest machine.
    CHECK(std::llabs(clock.now_ms() - wall) < 1000);
    CHECK(clock.wall_offset_ms() == 0);
    const auto a = clock.now_ms();
    const auto b = clock.now_ms();
    CHECK(b >= a);
}
