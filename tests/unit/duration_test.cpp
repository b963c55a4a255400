// Durations on the command line.
#include "common/duration.hpp"

#include <catch2/catch.hpp>

using cbd::parse_duration;
using std::chrono::milliseconds;

TEST_CASE("durations with and without units", "[duration]") {
    CHECK(parse_duration("300ms") == milliseconds(300));
    CHECK(parse_duration("5s") == milliseconds(5000));
    CHECK(parse_duration("1.5s") == milliseconds(1500));
    CHECK(parse_duration("2m") == milliseconds(120'000));
    CHECK(parse_duration("1h") == milliseconds(3'600'000));
    CHECK(parse_duration("7") == milliseconds(7000)); // seconds, as timeout(1)
}

TEST_CASE("malformed durations are refused", "[duration]") {
    for (const char* bad : {"", "ms", "5x", "-5s", "1.2.3s", ".5s", "5.s", "0", "0ms", "400d",
                            "99999999999999999999s"})
        CHECK_FALSE(parse_duration(bad));
}
