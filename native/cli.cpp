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
#include <new>
#include <stdexcept>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__SSE3__)
#include <pmmintrin.h>
#endif

namespace ekvae {

namespace {

std::string os_error(const std::string & what, const std::string & path) {
    return what + " '" + path + "': " + std::strerror(errno);
}

} // namespace

namespace {

// Opens a file for reading without blocking on a FIFO or device, and checks it is regular.
int open_regular(const std::string & path, uint64_t max_bytes, uint64_t & size, std::string & err) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) { err = os_error("cannot open", path); return -1; }
    struct stat st;
    if (::fstat(fd, &st) != 0) { err = os_error("cannot stat", path); ::close(fd); return -1; }
    if (!S_ISREG(st.st_mode)) {
        err = "cannot read '" + path + "': not a regular file (" +
              (S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a directory" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a special file") +
              "); give the path of a file";
        ::close(fd);
        return -1;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    size = (uint64_t)st.st_size;
    if (size > max_bytes) {
        err = "cannot read '" + path + "': " + std::to_string(size) + " bytes exceeds the limit of " +
              std::to_string(max_bytes) + " bytes";
        ::close(fd);
        return -1;
    }
    return fd;
}

bool read_all(int fd, const std::string & path, uint8_t * out, size_t size, std::string & err) {
    size_t got = 0;
    while (got < size) {
        ssize_t r = ::read(fd, out + got, size - got);
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

std::string base_of(const std::string & path) {
    const size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string dir_of(const std::string & path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

} // namespace

bool read_file(const std::string & path, std::vector<uint8_t> & out, std::string & err,
               uint64_t max_bytes) {
    uint64_t size = 0;
    int fd = open_regular(path, max_bytes, size, err);
    if (fd < 0) return false;
    out.assign((size_t)size, 0);
    return read_all(fd, path, out.data(), (size_t)size, err);
}

bool read_file_floats(const std::string & path, std::vector<float> & out, size_t * nbytes, std::string & err,
                      uint64_t max_bytes) {
    uint64_t size = 0;
    int fd = open_regular(path, max_bytes, size, err);
    if (fd < 0) return false;
    out.assign((size_t)((size + 3) / 4), 0.0f);
    *nbytes = (size_t)size;
    return read_all(fd, path, reinterpret_cast<uint8_t *>(out.data()), (size_t)size, err);
}

// The temporary name beside the target: ".NAME.XXXXXX.tmp" (hidden, random).
static const size_t kTmpExtra = 13;

bool check_output_path(const std::string & path, std::string & err) {
    if (path.empty() || path.back() == '/') {
        err = "'" + path + "' is not a file name";
        return false;
    }
    const std::string dir = dir_of(path);
    const std::string base = base_of(path);
    long name_max = ::pathconf(dir.c_str(), _PC_NAME_MAX);
    if (name_max <= 0) name_max = 255;
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        err = "cannot write '" + path + "': directory '" + dir + "' does not exist; create it or choose another path";
        return false;
    }
    if (base.size() + kTmpExtra > (size_t)name_max) {
        err = "cannot write '" + path + "': the file name has " + std::to_string(base.size()) + " bytes; at most " +
              std::to_string(name_max - (long)kTmpExtra) + " fit (with the temporary name beside it); choose a shorter name";
        return false;
    }
    if (path.size() + kTmpExtra >= 4096) {
        err = "cannot write '" + path + "': the path is longer than 4080 bytes; choose a shorter one";
        return false;
    }
    if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        err = "refusing to replace '" + path + "': it is " +
              (S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISDIR(st.st_mode) ? "a directory" :
               S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "not a regular file") +
              ", not a regular file; remove it or choose another path";
        return false;
    }
    return true;
}

bool write_file_atomic(const std::string & path, const std::vector<uint8_t> & bytes,
                       std::string & err) {
    if (!check_output_path(path, err)) return false;
    const std::string dir = dir_of(path);
    const std::string base = base_of(path);
    // an exclusive, never-followed temporary with a random name in the target's directory
    std::string tmp;
    int fd = -1;
    uint64_t r = 0;
    {
        int u = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (u >= 0) { if (::read(u, &r, sizeof r) != (ssize_t)sizeof r) r = 0; ::close(u); }
        r ^= (uint64_t)::getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)&r;
    }
    static const char kAlpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        std::string suffix;
        for (int i = 0; i < 6; i++) { suffix += kAlpha[r % 62]; r = r * 6364136223846793005ULL + 1442695040888963407ULL; r ^= r >> 29; }
        tmp = path.substr(0, path.size() - base.size()) + "." + base + "." + suffix + ".tmp"; // beside the target
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) { err = os_error("cannot write", tmp); return false; }
    }
    if (fd < 0) { err = "cannot create a temporary file beside '" + path + "'"; return false; }
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
    // the target may have changed since the check: refuse again to replace a non-regular file
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        ::unlink(tmp.c_str());
        return check_output_path(path, err);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("cannot replace", path);
    // make the rename itself durable (best effort: some file systems refuse a directory fsync)
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return true;
}

std::FILE * open_append(const std::string & path, std::string & err) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) {
        err = errno == ELOOP ? "refusing to write '" + path + "': it is a symbolic link; remove it" : os_error("cannot open", path);
        return nullptr;
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err = "refusing to write '" + path + "': not a regular file; remove it";
        ::close(fd);
        return nullptr;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    std::FILE * f = ::fdopen(fd, "a");
    if (!f) { err = os_error("cannot open", path); ::close(fd); }
    return f;
}

int lock_directory(const std::string & dir, std::string & err) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { err = os_error("cannot open", dir); return -1; }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        err = errno == EWOULDBLOCK ? "'" + dir + "' is in use by another ekvae_train (it holds the directory's lock); wait for it or choose another --out"
                                   : os_error("cannot lock", dir);
        ::close(fd);
        return -1;
    }
    return fd;
}

uint64_t physical_memory_bytes() {
    long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    uint64_t m = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    auto lower = [&](uint64_t x) { if (x > 0 && (m == 0 || x < m)) m = x; };
    struct rlimit rl;
    if (::getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) lower((uint64_t)rl.rlim_cur);
    if (::getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) lower((uint64_t)rl.rlim_cur);
    if (std::FILE * f = std::fopen("/sys/fs/cgroup/memory.max", "r")) { // a container's limit (cgroup v2)
        unsigned long long v = 0;
        if (std::fscanf(f, "%llu", &v) == 1) lower((uint64_t)v);
        std::fclose(f);
    }
    return m;
}

std::string human_bytes(double b) {
    char buf[32];
    if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    else std::snprintf(buf, sizeof buf, "%.0f MiB", b / (1024.0 * 1024));
    return buf;
}

int cli_main(int argc, char ** argv, int (*body)(int, char **)) {
    // descriptors 0-2 closed by the caller would otherwise be handed to the next open()
    for (int fd = 0; fd <= 2; fd++)
        if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int n = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
            if (n >= 0 && n != fd) { ::dup2(n, fd); ::close(n); }
        }
    const char * prog = argc > 0 ? argv[0] : "ekvae";
    try {
        return body(argc, argv);
    } catch (const std::bad_alloc &) {
        std::fprintf(stderr, "error: %s ran out of memory; use fewer or smaller sequences (--sequences, --train-sequences, "
                             "--sequence-steps), a smaller --batch or --window, or a machine with more memory\n", prog);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "error: %s stopped on an unexpected error: %s\n", prog, e.what());
    } catch (...) {
        std::fprintf(stderr, "error: %s stopped on an unexpected error\n", prog);
    }
    return 1;
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
        for (char & c : name)
            if (c == '_') c = '-';
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

void flush_denormals() {
#if defined(__SSE3__)
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

} // namespace ekvae
