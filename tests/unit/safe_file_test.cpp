// Opening files safely: the rules on stat() results, and reading a file
// under its bound whatever it is (a FIFO, /dev/zero, a directory, a link).
#include "daemon/core/safe_file.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace cbd;

namespace {

struct stat with(mode_t mode, uid_t uid = 1000, gid_t gid = 1000, nlink_t links = 1) {
    struct stat st {};
    st.st_mode = mode;
    st.st_uid = uid;
    st.st_gid = gid;
    st.st_nlink = links;
    return st;
}

struct TempDir {
    std::string path;
    TempDir() {
        std::string pattern = "/tmp/cbd-safe-file-XXXXXX";
        path = ::mkdtemp(pattern.data());
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string write(const std::string& name, const std::string& text) const {
        std::ofstream(path + "/" + name, std::ios::binary) << text;
        return path + "/" + name;
    }
};

} // namespace

TEST_CASE("a file's kind in words", "[safe_file]") {
    CHECK(std::string(file_kind(S_IFREG | 0644)) == "a regular file");
    CHECK(std::string(file_kind(S_IFIFO | 0644)) == "a FIFO");
    CHECK(std::string(file_kind(S_IFCHR | 0666)) == "a character device");
    CHECK(std::string(file_kind(S_IFDIR | 0755)) == "a directory");
    CHECK(std::string(file_kind(S_IFLNK | 0777)) == "a symbolic link");
    CHECK_FALSE(not_regular_problem("f", S_IFREG | 0600));
    CHECK(not_regular_problem("configuration file /c", S_IFIFO | 0600) ==
          "configuration file /c is a FIFO, not a regular file");
}

TEST_CASE("who else may write to a directory", "[safe_file]") {
    const uid_t me = 1000;
    const gid_t mine = 1000;
    CHECK_FALSE(other_directory_writers(S_IFDIR | 0755, me, mine, me, mine));
    CHECK_FALSE(other_directory_writers(S_IFDIR | 0755, 0, 0, me, mine));     // root's
    CHECK_FALSE(other_directory_writers(S_IFDIR | 0770, me, mine, me, mine)); // own group
    CHECK_FALSE(other_directory_writers(S_IFDIR | 0775, 0, 0, me, mine));     // root's group
    CHECK(other_directory_writers(S_IFDIR | 0777, me, mine, me, mine) == "every user");
    CHECK(other_directory_writers(S_IFDIR | 0775, me, 100, me, mine) == "group 100");
    CHECK(other_directory_writers(S_IFDIR | 0755, 2000, mine, me, mine) == "its owner, uid 2000");
    CHECK_FALSE(other_directory_writers(S_IFDIR | 0755, 0, 0, 0, 0));
    CHECK(other_directory_writers(S_IFDIR | 0755, 65534, 0, 0, 0) == "its owner, uid 65534");
}

TEST_CASE("the socket directory rule", "[safe_file]") {
    CHECK_FALSE(socket_directory_problem("/run/cbd", with(S_IFDIR | 0755, 0, 0), 0, 0));
    // Writable by everyone: only with the sticky bit, as /tmp.
    CHECK_FALSE(socket_directory_problem("/tmp", with(S_IFDIR | 01777, 0, 0), 0, 0));
    auto problem = socket_directory_problem("/srv/d", with(S_IFDIR | 0777, 0, 0), 0, 0);
    REQUIRE(problem);
    CHECK(problem->find("refusing to serve from /srv/d (mode 0777") == 0);
    CHECK(problem->find("every user may write there and it has no sticky bit") !=
          std::string::npos);
    // Writable by another group, or owned by another user.
    CHECK(socket_directory_problem("/d", with(S_IFDIR | 0775, 0, 50), 0, 0));
    CHECK_FALSE(socket_directory_problem("/d", with(S_IFDIR | 01775, 0, 50), 0, 0));
    CHECK(socket_directory_problem("/d", with(S_IFDIR | 0700, 65534, 65534), 0, 0));
    CHECK(socket_directory_problem("/d", with(S_IFREG | 0644, 0, 0), 0, 0) ==
          "/d is a regular file, not a directory");
}

TEST_CASE("a file cbd writes must be its own", "[safe_file]") {
    CHECK_FALSE(own_file_problem("lock file /d/s.lock", with(S_IFREG | 0644, 0), 0));
    CHECK(own_file_problem("lock file /d/s.lock", with(S_IFREG | 0644, 65534), 0) ==
          "lock file /d/s.lock is owned by uid 65534, not by cbd's user (uid 0): someone else "
          "made it; remove it if it is not in use");
    CHECK(own_file_problem("lock file /d/s.lock", with(S_IFIFO | 0644, 0), 0) ==
          "lock file /d/s.lock is a FIFO, not a regular file");
    auto linked = own_file_problem("lock file /d/s.lock", with(S_IFREG | 0644, 0, 0, 2), 0);
    REQUIRE(linked);
    CHECK(linked->find("has 2 hard links") != std::string::npos);
}

TEST_CASE("a regular file is read whole, within its bound", "[safe_file]") {
    TempDir dir;
    std::string text;
    const auto path = dir.write("c.json", "{}\n");
    CHECK_FALSE(read_regular_file(path, 16, Symlinks::Follow, text));
    CHECK(text == "{}\n");
    // Exactly at the limit is fine; one byte over is not.
    const auto at_limit = dir.write("at", std::string(16, 'x'));
    CHECK_FALSE(read_regular_file(at_limit, 16, Symlinks::Follow, text));
    CHECK(text.size() == 16);
    text = "kept";
    CHECK(read_regular_file(at_limit, 15, Symlinks::Follow, text, "configuration file") ==
          "configuration file " + at_limit + " is larger than 15 bytes");
    CHECK(text == "kept");
    CHECK(read_regular_file(dir.path + "/missing", 16, Symlinks::Follow, text) ==
          "cannot read " + dir.path + "/missing: No such file or directory");
}

TEST_CASE("what is not a regular file is refused without blocking", "[safe_file]") {
    TempDir dir;
    std::string text;
    // /dev/zero never ends: refused before a byte is read.
    CHECK(read_regular_file("/dev/zero", 1024, Symlinks::Follow, text) ==
          "/dev/zero is a character device, not a regular file");
    // A FIFO with no writer would block a plain open.
    const std::string fifo = dir.path + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(read_regular_file(fifo, 1024, Symlinks::Follow, text) ==
          fifo + " is a FIFO, not a regular file");
    CHECK(read_regular_file(dir.path, 1024, Symlinks::Follow, text) ==
          dir.path + " is a directory, not a regular file");
    // A link to /dev/zero is followed to what it is.
    const std::string zero_link = dir.path + "/zero";
    REQUIRE(::symlink("/dev/zero", zero_link.c_str()) == 0);
    CHECK(read_regular_file(zero_link, 1024, Symlinks::Follow, text) ==
          zero_link + " is a character device, not a regular file");
}

TEST_CASE("symlinks are followed or refused as asked", "[safe_file]") {
    TempDir dir;
    std::string text;
    const auto target = dir.write("real", "data");
    const std::string link = dir.path + "/link";
    REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
    CHECK_FALSE(read_regular_file(link, 64, Symlinks::Follow, text));
    CHECK(text == "data");
    CHECK(read_regular_file(link, 64, Symlinks::Refuse, text) ==
          link + " is a symbolic link, not a regular file");

    CHECK_FALSE(existing_file_problem(dir.path + "/absent", Symlinks::Refuse));
    CHECK_FALSE(existing_file_problem(target, Symlinks::Refuse));
    CHECK(existing_file_problem(link, Symlinks::Refuse, "state file") ==
          "state file " + link + " is a symbolic link, not a regular file");
    CHECK_FALSE(existing_file_problem(link, Symlinks::Follow));
    const std::string fifo = dir.path + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(existing_file_problem(fifo, Symlinks::Refuse, "state file") ==
          "state file " + fifo + " is a FIFO, not a regular file");
}
