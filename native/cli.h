// cli.h: what the command-line programs share: whole-file reads, atomic writes, and a tiny
// flag parser. Native only (POSIX file calls); the core in shared/ never opens files.
#pragma once
#include "safetensors.h"

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace ekvae {

// Every program's main: makes sure file descriptors 0-2 are open (so a file opened later can
// never become stderr), runs body, and turns any exception that escapes it into an error
// message and exit status 1 (std::bad_alloc: "out of memory" with the flags that size a run).
int cli_main(int argc, char ** argv, int (*body)(int, char **));

// Reads a whole file. Refuses anything but a regular file (a FIFO or device is checked
// without blocking: opened O_NONBLOCK, then fstat) and files larger than max_bytes before
// allocating. Returns false and sets err (naming the path and the OS error) on failure.
bool read_file(const std::string & path, std::vector<uint8_t> & out, std::string & err,
               uint64_t max_bytes = kMaxSafetensorsFile);
// The same into float storage (for datasets: the images are moved into place, see
// dataset_from_safetensors); *nbytes gets the file size.
bool read_file_floats(const std::string & path, std::vector<float> & out, size_t * nbytes, std::string & err,
                      uint64_t max_bytes = kMaxSafetensorsFile);

// Checks, before any work is done, that path can be written by write_file_atomic: its
// directory exists, the name (and the temporary name beside it) fits the file system's limit,
// and anything already at path is a regular file (never a device, FIFO, directory or link).
bool check_output_path(const std::string & path, std::string & err);

// Writes bytes to a temporary file created exclusively (O_EXCL | O_NOFOLLOW, a random name,
// mode 0644) in path's directory, fsyncs it, renames it over path and fsyncs the directory,
// so readers see either the old file or the complete new one and nothing planted at a
// predictable name is followed. Refuses to replace anything but a regular file. On any
// failure the temporary file is removed, the old file is left untouched, and false is
// returned with err naming the path and the OS error.
bool write_file_atomic(const std::string & path, const std::vector<uint8_t> & bytes,
                       std::string & err);

// Opens path for appending (created 0644 if missing) without following a link; refuses
// anything but a regular file. Returns nullptr and sets err otherwise.
std::FILE * open_append(const std::string & path, std::string & err);

// An exclusive advisory lock (flock) on a directory, held until the returned descriptor is
// closed (or the process exits). Returns -1 and sets err when another process holds it.
int lock_directory(const std::string & dir, std::string & err);

// The memory this process may use in bytes: the machine's physical memory, or less under a
// ulimit (RLIMIT_AS, RLIMIT_DATA) or a cgroup limit (0 if unknown), and a size in human units ("3.2 GiB").
uint64_t physical_memory_bytes();

// Flushes denormal floats to zero on this thread (x86 SSE; nothing elsewhere). The training
// CLIs hand it to Trainer::thread_setup: denormals are ~100x slower on x86, and a run slowed
// 4x after a few thousand steps without it.
void flush_denormals();
std::string human_bytes(double bytes);

// Command-line flags: "--name value", "--name=value" and boolean "--name" (also "-h" for
// "--help" when "help" is a boolean flag). Underscores in a name are read as dashes
// (--n_z is --n-z). Unknown flags, missing values, repeated flags and
// stray arguments are recorded in err (the first problem only); callers check ok().
//
//   Args args(argc, argv, {"out", "seed"}, {"help"});
//   int n = 1000;
//   if (!args.ok() || !args.get_int("sequences", n, 1, 1000000)) usage_error(args.err, usage);
struct Args {
    std::string program;                       // argv[0]
    std::map<std::string, std::string> values; // flags given with a value
    std::map<std::string, bool> flags;         // boolean flags given
    std::string err;                           // first problem found, empty if none

    Args(int argc, char ** argv, const std::vector<std::string> & value_flags,
         const std::vector<std::string> & bool_flags);

    bool ok() const { return err.empty(); }
    bool has(const std::string & name) const; // given, as a value flag or a boolean flag
    std::string get_string(const std::string & name, const std::string & fallback = "") const;

    // Each getter leaves x unchanged when the flag is absent. When it is present but not a
    // number of the right kind or outside [lo, hi], it returns false and sets err.
    bool get_int(const std::string & name, int & x, int lo, int hi);
    bool get_u64(const std::string & name, uint64_t & x, uint64_t lo = 0,
                 uint64_t hi = UINT64_MAX);
    bool get_double(const std::string & name, double & x, double lo, double hi);
};

// Prints "error: <message>" and the one-line usage hint to stderr and exits with status 2.
[[noreturn]] void usage_error(const std::string & message, const std::string & usage);

} // namespace ekvae
