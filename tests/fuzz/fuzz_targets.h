// fuzz_targets.h: the loaders fuzzed by libFuzzer (tests/fuzz/fuzz_main.cpp) and replayed over
// the committed corpus by ctest (tests/fuzz/test_fuzz_corpus.cpp). Each takes the bytes of a
// whole file, calls one public loader, and when the loader accepts the file checks what an
// accepted file promises (sizes agree, values finite, a save/load round trip is exact).
// A broken promise prints the reason and aborts; a refused file is fine (returns 0).
#pragma once
#include <cstddef>
#include <cstdint>

namespace ekvae_fuzz {

int fuzz_safetensors(const uint8_t * data, size_t size); // safetensors_parse
int fuzz_dataset(const uint8_t * data, size_t size);     // dataset_from_safetensors
int fuzz_model(const uint8_t * data, size_t size);       // ekvae_load (+ one filter step)
int fuzz_checkpoint(const uint8_t * data, size_t size);  // Trainer::restore (+ one training step)

// Name of the input being replayed (printed when a promise is broken); nullptr under libFuzzer.
extern const char * current_input;

} // namespace ekvae_fuzz
