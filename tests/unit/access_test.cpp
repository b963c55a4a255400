// Access levels from peer credentials, and who may open one more connection.
#include "daemon/net/access.hpp"
#include "daemon/net/connection_limits.hpp"

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

// --- connection admission (connection_limits.hpp) ---------------------------

TEST_CASE("connection admission: total, per uid, and the reserve for writers", "[access]") {
    using cbd::AccessLevel;
    using cbd::Admission;
    const cbd::ConnectionLimits limits{64, 10, 4, 999};
    auto admit = [&](std::size_t total, std::size_t by_uid, uid_t uid, AccessLevel level) {
        return cbd::admit(limits, cbd::OpenConnections{total, by_uid}, uid, level);
    };
    CHECK(admit(0, 0, 1000, AccessLevel::Read) == Admission::Admit);
    // readers stop where the reserve begins; writers and admins go on
    CHECK(admit(59, 0, 1000, AccessLevel::Read) == Admission::Admit);
    CHECK(admit(60, 0, 1000, AccessLevel::Read) == Admission::ReservedOnly);
    CHECK(admit(60, 0, 1000, AccessLevel::Write) == Admission::Admit);
    CHECK(admit(63, 0, 1000, AccessLevel::Admin) == Admission::Admit);
    CHECK(admit(64, 0, 0, AccessLevel::Admin) == Admission::Full);
    // one uid's share, whatever its level; root and cbd's own uid exempt
    CHECK(admit(20, 9, 1000, AccessLevel::Admin) == Admission::Admit);
    CHECK(admit(20, 10, 1000, AccessLevel::Admin) == Admission::UidFull);
    CHECK(admit(20, 10, 1000, AccessLevel::Read) == Admission::UidFull);
    CHECK(admit(20, 40, 0, AccessLevel::Admin) == Admission::Admit);
    CHECK(admit(20, 40, 999, AccessLevel::Admin) == Admission::Admit);
    // no per-uid limit
    const cbd::ConnectionLimits open_limits{64, 0, 4, 999};
    CHECK(cbd::admit(open_limits, {20, 50}, 1000, AccessLevel::Write) == Admission::Admit);
    // each refusal names its flag
    CHECK(cbd::refusal_message(limits, Admission::Full, 1).find("--max-connections 64") !=
          std::string::npos);
    CHECK(
        cbd::refusal_message(limits, Admission::UidFull, 1000)
            .find(
                "uid 1000 has as many connections as one user may hold (--max-connections-per-uid "
                "10)") != std::string::npos);
    CHECK(cbd::refusal_message(limits, Admission::ReservedOnly, 1)
              .find("(--reserved-connections 4); read-level peers may hold 60 at once") !=
          std::string::npos);
    CHECK(cbd::default_reserved_connections(1024) == 64);
    CHECK(cbd::default_reserved_connections(8) == 1);
    CHECK(cbd::default_reserved_connections(2) == 1);
    CHECK(cbd::default_reserved_connections(1) == 0);
}
