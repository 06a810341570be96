// cli.h: what the command-line programs share: whole-file reads, atomic writes, and a tiny
// flag parser. Native only (POSIX file calls); the core in shared/ never opens files.
#pragma once
#include "safetensors.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ekvae {

// Reads a whole file. Refuses files larger than max_bytes before allocating. Returns false
// and sets err (naming the path and the OS error) on failure.
bool read_file(const std::string & path, std::vector<uint8_t> & out, std::string & err,
               uint64_t max_bytes = kMaxSafetensorsFile);

// Writes bytes to path + ".tmp.<pid>" in the same directory, fsyncs it and renames it over
// path, so readers see either the old file or the complete new one. On any failure the
// temporary file is removed, the old file is left untouched, and false is returned with err
// naming the path and the OS error.
bool write_file_atomic(const std::string & path, const std::vector<uint8_t> & bytes,
                       std::string & err);

// Command-line flags: "--name value", "--name=value" and boolean "--name" (also "-h" for
// "--help" when "help" is a boolean flag). Unknown flags, missing values, repeated flags and
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
