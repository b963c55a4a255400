// The socket-path rule shared by cbd and cbctl.
#include "common/socket_path.hpp"

#include <catch2/catch.hpp>

using namespace cbd;

TEST_CASE("socket path precedence", "[socket_path]") {
    CHECK(resolve_socket_path({"/x.sock", "/env.sock", "/run/user/1000", false}) == "/x.sock");
    CHECK(resolve_socket_path({"", "/env.sock", "/run/user/1000", false}) == "/env.sock");
    CHECK(resolve_socket_path({"", "", "/run/user/1000", false}) == "/run/user/1000/cbd/cbd.sock");
    CHECK(resolve_socket_path({"", "", "/run/user/1000", true}) == "/run/cbd/cbd.sock");
    CHECK(resolve_socket_path({"", "", "", false}) == "/run/cbd/cbd.sock");
}
