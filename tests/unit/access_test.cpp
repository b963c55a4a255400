// Access levels from peer credentials.
#include "daemon/access.hpp"

#include <catch2/catch.hpp>

using namespace cbd;

TEST_CASE("without groups everyone is admin", "[access]") {
    AccessConfig open;
    CHECK(access_level_for(Peer{1000, 1000, 1}, {1000}, open, 500) == AccessLevel::Admin);
}

TEST_CASE("groups decide, root and cbd's own uid are always admin", "[access]") {
    AccessConfig c;
    c.writer_group = 200;
    c.admin_group = 300;
    const uid_t daemon_uid = 500;
    CHECK(access_level_for(Peer{0, 0, 1}, {0}, c, daemon_uid) == AccessLevel::Admin);
    CHECK(access_level_for(Peer{500, 500, 1}, {500}, c, daemon_uid) == AccessLevel::Admin);
    CHECK(access_level_for(Peer{1000, 1000, 1}, {1000}, c, daemon_uid) == AccessLevel::Read);
    CHECK(access_level_for(Peer{1000, 1000, 1}, {1000, 200}, c, daemon_uid) == AccessLevel::Write);
    CHECK(access_level_for(Peer{1000, 300, 1}, {300}, c, daemon_uid) == AccessLevel::Admin);
    CHECK(access_level_for(Peer{1000, 1000, 1}, {200, 300}, c, daemon_uid) == AccessLevel::Admin);

    AccessConfig writers_only;
    writers_only.writer_group = 200;
    CHECK(access_level_for(Peer{1000, 1000, 1}, {200}, writers_only, daemon_uid) ==
          AccessLevel::Write);
    CHECK(access_level_for(Peer{1001, 1001, 1}, {1001}, writers_only, daemon_uid) ==
          AccessLevel::Read);
}

TEST_CASE("groups resolve by name or number", "[access]") {
    std::string error;
    CHECK(resolve_group("0", error) == gid_t{0});
    CHECK(resolve_group("root", error) == gid_t{0});
    CHECK_FALSE(resolve_group("no-such-group-here", error));
    CHECK(error.find("no-such-group-here") != std::string::npos);
}
