// rng.h: a small, portable, seeded random number generator.
// std::mt19937 is portable but std::*_distribution are not (their outputs differ between
// standard libraries), so ekvae draws uniforms and normals itself: identical sequences on
// every machine and in WebAssembly.
#pragma once
#include <cmath>
#include <cstdint>

namespace ekvae {

// xoshiro256** seeded through splitmix64.
struct Rng {
    uint64_t s[4];

    explicit Rng(uint64_t seed = 0) { reseed(seed); }

    void reseed(uint64_t seed) {
        uint64_t x = seed;
        for (int i = 0; i < 4; i++) {
            x += 0x9e3779b97f4a7c15ULL;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            s[i] = z ^ (z >> 31);
        }
    }

    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

    uint64_t next_u64() {
        const uint64_t result = rotl(s[1] * 5, 7) * 9;
        const uint64_t t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
    }

    // uniform in [0, 1) with 53 random bits
    double uniform() { return (double)(next_u64() >> 11) * 0x1.0p-53; }
    // uniform in [lo, hi)
    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
    // integer in [0, n), n > 0 (negligible modulo bias for the small n used here)
    uint64_t below(uint64_t n) { return next_u64() % n; }
    // standard normal by Box-Muller (one value per call; simple and portable)
    double normal() {
        double u1 = uniform();
        double u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
};

} // namespace ekvae
