// Replays the committed fuzz corpus (tests/fuzz/corpus/<target>/*) through the fuzzed entry
// points, in the ordinary build: every input that once crashed a loader or reached new code
// stays a regression test. A broken promise aborts naming the file; EKVAE_FUZZ_VERBOSE=1 lists
// every file as it runs (to find the one behind a sanitizer report).
#include "fuzz_targets.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// Runs every file of corpus/<name>/ through fn; returns the number of files.
int replay(const std::string & name, int (*fn)(const uint8_t *, size_t)) {
    const fs::path dir = fs::path(EKVAE_FUZZ_CORPUS) / name;
    std::vector<fs::path> files;
    for (const auto & e : fs::directory_iterator(dir))
        if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path & p : files) {
        std::ifstream in(p, std::ios::binary);
        std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        ekvae_fuzz::current_input = p.c_str();
        if (std::getenv("EKVAE_FUZZ_VERBOSE")) std::fprintf(stderr, "%s\n", p.c_str());
        // an exact-size copy, so a read past the end is a real out-of-bounds read under ASan
        std::vector<uint8_t> exact(bytes);
        fn(exact.empty() ? nullptr : exact.data(), exact.size());
    }
    ekvae_fuzz::current_input = nullptr;
    return (int)files.size();
}

} // namespace

TEST_CASE("fuzz corpus: safetensors_parse") { CHECK(replay("safetensors", ekvae_fuzz::fuzz_safetensors) > 0); }
TEST_CASE("fuzz corpus: dataset_from_safetensors") { CHECK(replay("dataset", ekvae_fuzz::fuzz_dataset) > 0); }
TEST_CASE("fuzz corpus: ekvae_load") { CHECK(replay("model", ekvae_fuzz::fuzz_model) > 0); }
TEST_CASE("fuzz corpus: Trainer::restore") { CHECK(replay("checkpoint", ekvae_fuzz::fuzz_checkpoint) > 0); }
