// test_cli.cpp: native/cli.h — exceptions never reach main's exit, flags, atomic writes.
#include "cli.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <new>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace ekvae;

namespace {
int body_ok(int, char **) { return 7; }
int body_oom(int, char **) { throw std::bad_alloc(); }
int body_throws(int, char **) { throw std::runtime_error("boom"); }
int body_throws_int(int, char **) { throw 42; }

std::string temp_dir() {
    char tmpl[] = "/tmp/ekvae-test-cli-XXXXXX";
    return ::mkdtemp(tmpl);
}
} // namespace

TEST_CASE("cli_main: a body's status passes through; any exception becomes exit 1") {
    char arg0[] = "prog";
    char * argv[] = {arg0, nullptr};
    CHECK(cli_main(1, argv, body_ok) == 7);
    CHECK(cli_main(1, argv, body_oom) == 1);
    CHECK(cli_main(1, argv, body_throws) == 1);
    CHECK(cli_main(1, argv, body_throws_int) == 1);
}

TEST_CASE("flags: underscores read as dashes") {
    char a0[] = "p", a1[] = "--n_z", a2[] = "4", a3[] = "--image_size=8";
    char * argv[] = {a0, a1, a2, a3, nullptr};
    Args args(4, argv, {"n-z", "image-size"}, {});
    REQUIRE(args.ok());
    CHECK(args.get_string("n-z") == "4");
    CHECK(args.get_string("image-size") == "8");
}

TEST_CASE("write_file_atomic: replaces a regular file, refuses links and FIFOs, leaves no temporary") {
    const std::string d = temp_dir();
    std::string err;
    const std::vector<uint8_t> bytes = {'n', 'e', 'w'};
    {
        std::ofstream(d + "/f") << "old";
        REQUIRE(write_file_atomic(d + "/f", bytes, err));
        std::ifstream in(d + "/f");
        std::string s;
        in >> s;
        CHECK(s == "new");
    }
    std::ofstream(d + "/victim") << "precious";
    REQUIRE(::symlink((d + "/victim").c_str(), (d + "/link").c_str()) == 0);
    CHECK(!write_file_atomic(d + "/link", bytes, err));
    CHECK(err.find("symbolic link") != std::string::npos);
    {
        std::ifstream in(d + "/victim");
        std::string s;
        in >> s;
        CHECK(s == "precious");
    }
    REQUIRE(::mkfifo((d + "/fifo").c_str(), 0644) == 0);
    CHECK(!write_file_atomic(d + "/fifo", bytes, err));
    CHECK(!write_file_atomic(d + "/no-such-dir/f", bytes, err));
    CHECK(err.find("does not exist") != std::string::npos);
    // nothing but the files made here
    std::FILE * p = ::popen(("ls -a " + d + " | grep -c tmp").c_str(), "r");
    int n = -1;
    REQUIRE(p);
    CHECK(std::fscanf(p, "%d", &n) == 1);
    ::pclose(p);
    CHECK(n == 0);
    (void)!std::system(("rm -rf " + d).c_str());
}

TEST_CASE("read_file: a FIFO is refused without blocking") {
    const std::string d = temp_dir();
    REQUIRE(::mkfifo((d + "/ff").c_str(), 0644) == 0);
    std::vector<uint8_t> out;
    std::string err;
    CHECK(!read_file(d + "/ff", out, err));
    CHECK(err.find("FIFO") != std::string::npos);
    (void)!std::system(("rm -rf " + d).c_str());
}
