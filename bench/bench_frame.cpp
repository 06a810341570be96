// bench_frame: the browser app's per-frame model work, timed natively and in WebAssembly.
//
//   bench_frame MODEL.safetensors [--frames N] [--horizon H] [--warmup W]
//
// A pendulum is simulated under random torques and rendered, as in the app; each frame then
// runs what the app runs for one stream: filter_step on the rendered frame, readout,
// the H-step open-loop forecast with decoded images (forecast(..., &images)) and a read-out of
// every forecast step. Only that model work is timed (not the simulation or rendering).
// Prints one JSON object: median, mean and 90th percentile per frame in ms.
//
// The same source builds natively (bench/CMakeLists.txt: bench_frame) and with Emscripten
// (wasm/CMakeLists.txt: bench_frame_wasm, linked with -sNODERAWFS so the model file is read
// from the disk under node).
#include "ekvae.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace ekvae;
using clk = std::chrono::steady_clock;

static bool read_all(const char * path, std::vector<uint8_t> & out) {
    std::FILE * f = std::fopen(path, "rb");
    if (!f) return false;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
    std::fclose(f);
    return true;
}

int main(int argc, char ** argv) {
    const char * path = nullptr;
    int frames = 1000, H = 30, warmup = 50;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a == "--frames" && i + 1 < argc) frames = std::max(1, std::atoi(argv[++i]));
        else if (a == "--horizon" && i + 1 < argc) H = std::max(1, std::atoi(argv[++i]));
        else if (a == "--warmup" && i + 1 < argc) warmup = std::max(0, std::atoi(argv[++i]));
        else if (!path && a.rfind("--", 0) != 0) path = argv[i];
        else {
            std::fprintf(stderr, "usage: bench_frame MODEL.safetensors [--frames N] [--horizon H] [--warmup W]\n");
            return 2;
        }
    }
    if (!path) {
        std::fprintf(stderr, "usage: bench_frame MODEL.safetensors [--frames N] [--horizon H] [--warmup W]\n");
        return 2;
    }
    std::vector<uint8_t> bytes;
    if (!read_all(path, bytes)) {
        std::fprintf(stderr, "error: cannot read %s\n", path);
        return 2;
    }
    Ekvae<float> m;
    std::string err;
    if (!ekvae_load(bytes.data(), bytes.size(), m, err)) {
        std::fprintf(stderr, "error: %s: %s\n", path, err.c_str());
        return 2;
    }
    const int W = m.cfg.image_size, nz = m.cfg.n_z;
    Tape<float> tape;
    Mat<float> z = Mat<float>::Zero(nz, 1), P = Mat<float>::Identity(nz * nz, 1), x(W * W, 1), zs, Ps, images;
    PendulumParams world;
    PendulumState s;
    s.theta = 2.0;
    Rng rng(9);
    double u = 0, sink = 0;
    std::vector<double> ms;
    for (int f = 0; f < warmup + frames; f++) {
        render_pendulum(s.theta, W, x.data());
        const Mat<float> U = Mat<float>::Constant(1, H, (float)u);
        const auto t0 = clk::now();
        filter_step(tape, m, z, P, f == 0, Mat<float>(Mat<float>::Constant(1, 1, (float)u)), &x);
        if (m.has_readout) sink += readout(m, z, P).value[0];
        forecast(tape, m, z, P, U, zs, Ps, &images);
        if (m.has_readout)
            for (int k = 0; k < H; k++) sink += readout(m, zs, Ps, k).value[0];
        const double dt = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
        if (f >= warmup) ms.push_back(dt);
        sink += images(0, 0);
        u = rng.uniform(-2, 2);
        s = pendulum_step(world, s, u);
    }
    double total = 0;
    for (double v : ms) total += v;
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2], p90 = ms[std::min(ms.size() - 1, ms.size() * 9 / 10)];
#if defined(__EMSCRIPTEN__)
    const char * target = "wasm";
#else
    const char * target = "native";
#endif
    std::printf("{\"mode\": \"frame\", \"target\": \"%s\", \"frames\": %d, \"horizon\": %d, \"median_ms\": %.5f, "
                "\"mean_ms\": %.5f, \"p90_ms\": %.5f, \"readout\": %s, \"finite\": %s}\n",
                target, frames, H, med, total / frames, p90, m.has_readout ? "true" : "false",
                std::isfinite(sink) ? "true" : "false");
    return 0;
}
