// fuzz_main.cpp: the libFuzzer entry point; EKVAE_FUZZ_TARGET names the function it calls.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    return ekvae_fuzz::EKVAE_FUZZ_TARGET(data, size);
}
