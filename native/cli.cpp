// cli.cpp: file I/O with atomic writes and the flag parser shared by the command-line programs.
#include "cli.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ekvae {

namespace {

std::string os_error(const std::string & what, const std::string & path) {
    return what + " '" + path + "': " + std::strerror(errno);
}

} // namespace

bool read_file(const std::string & path, std::vector<uint8_t> & out, std::string & err,
               uint64_t max_bytes) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) { err = os_error("cannot open", path); return false; }
    struct stat st;
    if (::fstat(fd, &st) != 0) { err = os_error("cannot stat", path); ::close(fd); return false; }
    if (!S_ISREG(st.st_mode)) {
        err = "cannot read '" + path + "': not a regular file";
        ::close(fd);
        return false;
    }
    const uint64_t size = (uint64_t)st.st_size;
    if (size > max_bytes) {
        err = "cannot read '" + path + "': " + std::to_string(size) + " bytes exceeds the limit of " +
              std::to_string(max_bytes) + " bytes";
        ::close(fd);
        return false;
    }
    out.assign((size_t)size, 0);
    size_t got = 0;
    while (got < size) {
        ssize_t r = ::read(fd, out.data() + got, (size_t)size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { err = os_error("cannot read", path); ::close(fd); return false; }
        if (r == 0) break; // file shrank while reading
        got += (size_t)r;
    }
    ::close(fd);
    if (got != size) {
        err = "cannot read '" + path + "': file changed size while reading";
        return false;
    }
    return true;
}

bool write_file_atomic(const std::string & path, const std::vector<uint8_t> & bytes,
                       std::string & err) {
    const std::string tmp = path + ".tmp." + std::to_string((long)::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { err = os_error("cannot write", tmp); return false; }
    auto fail = [&](const std::string & what, const std::string & p) {
        err = os_error(what, p); // before close/unlink, which may change errno
        if (fd >= 0) ::close(fd);
        ::unlink(tmp.c_str());
        return false;
    };
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return fail("cannot write", tmp);
        done += (size_t)w;
    }
    if (::fsync(fd) != 0) return fail("cannot sync", tmp);
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) return fail("cannot write", tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("cannot replace", path);
    // make the rename itself durable (best effort: some file systems refuse a directory fsync)
    std::string dir = ".";
    size_t slash = path.find_last_of('/');
    if (slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return true;
}

Args::Args(int argc, char ** argv, const std::vector<std::string> & value_flags,
           const std::vector<std::string> & bool_flags) {
    program = argc > 0 ? argv[0] : "";
    auto is_in = [](const std::vector<std::string> & v, const std::string & s) {
        for (const std::string & x : v)
            if (x == s) return true;
        return false;
    };
    for (int i = 1; i < argc && err.empty(); i++) {
        std::string a = argv[i];
        if (a == "-h" && is_in(bool_flags, "help")) a = "--help";
        if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
            err = "unexpected argument '" + a + "' (flags start with --)";
            break;
        }
        std::string name = a.substr(2), value;
        bool has_value = false;
        size_t eq = name.find('=');
        if (eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
            has_value = true;
        }
        if (has(name)) {
            err = "--" + name + " is given more than once";
        } else if (is_in(bool_flags, name)) {
            if (has_value) err = "--" + name + " takes no value";
            else flags[name] = true;
        } else if (is_in(value_flags, name)) {
            if (!has_value) {
                // the next argument is the value, unless there is none or it is another flag
                if (i + 1 >= argc || std::strncmp(argv[i + 1], "--", 2) == 0) {
                    err = "missing value for --" + name;
                    break;
                }
                value = argv[++i];
            }
            values[name] = value;
        } else {
            err = "unknown flag --" + name;
        }
    }
}

bool Args::has(const std::string & name) const {
    return values.count(name) != 0 || flags.count(name) != 0;
}

std::string Args::get_string(const std::string & name, const std::string & fallback) const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
}

bool Args::get_int(const std::string & name, int & x, int lo, int hi) {
    auto it = values.find(name);
    if (it == values.end()) return true;
    const std::string & s = it->second;
    errno = 0;
    char * end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || std::isspace((unsigned char)s[0]) || end != s.c_str() + s.size()) {
        err = "--" + name + ": '" + s + "' is not an integer";
        return false;
    }
    if (errno == ERANGE || v < lo || v > hi) {
        err = "--" + name + " must be between " + std::to_string(lo) + " and " +
              std::to_string(hi) + " (got " + s + ")";
        return false;
    }
    x = (int)v;
    return true;
}

bool Args::get_u64(const std::string & name, uint64_t & x, uint64_t lo, uint64_t hi) {
    auto it = values.find(name);
    if (it == values.end()) return true;
    const std::string & s = it->second;
    // strtoull silently wraps "-1", so require a leading digit
    if (s.empty() || s[0] < '0' || s[0] > '9') {
        err = "--" + name + ": '" + s + "' is not a non-negative integer";
        return false;
    }
    errno = 0;
    char * end = nullptr;
    unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (end != s.c_str() + s.size()) {
        err = "--" + name + ": '" + s + "' is not a non-negative integer";
        return false;
    }
    if (errno == ERANGE || v < lo || v > hi) {
        err = "--" + name + " must be between " + std::to_string(lo) + " and " +
              std::to_string(hi) + " (got " + s + ")";
        return false;
    }
    x = (uint64_t)v;
    return true;
}

bool Args::get_double(const std::string & name, double & x, double lo, double hi) {
    auto it = values.find(name);
    if (it == values.end()) return true;
    const std::string & s = it->second;
    char * end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || std::isspace((unsigned char)s[0]) || end != s.c_str() + s.size() ||
        !std::isfinite(v)) {
        err = "--" + name + ": '" + s + "' is not a finite number";
        return false;
    }
    if (v < lo || v > hi) {
        err = "--" + name + " must be between " + std::to_string(lo) + " and " +
              std::to_string(hi) + " (got " + s + ")";
        return false;
    }
    x = v;
    return true;
}

void usage_error(const std::string & message, const std::string & usage) {
    std::fprintf(stderr, "error: %s\n%s\n", message.c_str(), usage.c_str());
    std::exit(2);
}

} // namespace ekvae
