// ekvae_eval: metrics of a trained EKVAE on a test set (see EvalMetrics in shared/ekvae.h).
//
//   ekvae_eval --model FILE.safetensors [--data FILE.safetensors | --seed S --sequences N] [--json]
//
// Without --data the test set is generated in memory: N sequences (default 200) of 64 steps
// from seed S (default 3, a seed the default training run never uses).
#include "cli.h"
#include "ekvae.h"

#include <chrono>
#include <cstdio>

using namespace ekvae;

static const char * kUsage =
    "usage: ekvae_eval --model FILE.safetensors [--data FILE.safetensors | --seed S --sequences N] [--json]   (--help for details)";

static const char * kHelp =
    "Prints, for the model on the test set:\n"
    "  r2 {cos, sin, omega}      least squares with intercept from smoothed means of z onto cos/sin theta and omega,\n"
    "                            fitted on the first half of the sequences, scored on the second\n"
    "  r2_knn                    the same with a 10-nearest-neighbour regression\n"
    "  forecast_mse              filter frames 1-16, predict 17-48 open-loop with the true actions: per-pixel MSE\n"
    "                            of the decoded mean image at horizons 1, 5, 10, 20, 32 (baseline_mse: repeat frame 16)\n"
    "  forecast_angle_err        mean |wrapped theta - angle read off the forecast image| at those horizons (rad)\n"
    "  elbo, distortion, rate    per time step\n";

int main(int argc, char ** argv) {
    Args args(argc, argv, {"model", "data", "seed", "sequences"}, {"json", "help"});
    if (!args.ok()) usage_error(args.err, kUsage);
    if (args.has("help")) {
        std::printf("%s\n\n%s", kUsage, kHelp);
        return 0;
    }
    const std::string model_path = args.get_string("model");
    if (model_path.empty()) usage_error("--model FILE.safetensors is required", kUsage);
    if (args.has("data") && (args.has("seed") || args.has("sequences")))
        usage_error("give --data FILE or --seed/--sequences, not both", kUsage);
    uint64_t seed = 3;
    int sequences = 200;
    if (!args.get_u64("seed", seed) || !args.get_int("sequences", sequences, 2, 100000)) usage_error(args.err, kUsage);

    std::string err;
    std::vector<uint8_t> bytes;
    if (!read_file(model_path, bytes, err)) usage_error(err, kUsage);
    Ekvae<float> m;
    if (!ekvae_load(bytes.data(), bytes.size(), m, err)) usage_error(model_path + ": " + err, kUsage);

    Dataset d;
    if (args.has("data")) {
        const std::string path = args.get_string("data");
        if (!read_file(path, bytes, err)) usage_error(err, kUsage);
        if (!dataset_from_safetensors(bytes.data(), bytes.size(), d, err)) usage_error(path + ": " + err, kUsage);
    } else {
        DatasetConfig dc;
        dc.sequences = sequences;
        dc.steps = 64;
        dc.image_size = m.cfg.image_size;
        dc.seed = seed;
        d = generate_dataset(dc);
    }
    if (d.W != m.cfg.image_size)
        usage_error("the data has " + std::to_string(d.W) + "x" + std::to_string(d.W) + " images but the model expects " +
                        std::to_string(m.cfg.image_size) + "x" + std::to_string(m.cfg.image_size) +
                        " (generate data with ekvae_data --image-size " + std::to_string(m.cfg.image_size) + ")", kUsage);
    if (d.T < 48) usage_error("the test sequences have " + std::to_string(d.T) + " steps; the forecast metrics need at least 48", kUsage);
    if (d.N < 2) usage_error("the test set needs at least 2 sequences", kUsage);

    const auto t0 = std::chrono::steady_clock::now();
    EvalMetrics e;
    evaluate(m, d, e, false, seed);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (args.has("json")) {
        std::printf("%s\n", metrics_to_json(e).c_str());
        return 0;
    }
    std::printf("%s on %d test sequences (%.1f s)\n", model_path.c_str(), e.sequences, secs);
    std::printf("  r2 linear   cos %.3f  sin %.3f  omega %.3f\n", e.r2_cos, e.r2_sin, e.r2_omega);
    std::printf("  r2 k-NN     cos %.3f  sin %.3f  omega %.3f\n", e.r2knn_cos, e.r2knn_sin, e.r2knn_omega);
    std::printf("  horizon            ");
    for (int h : e.horizons) std::printf("%8d", h);
    std::printf("\n  forecast MSE       ");
    for (double v : e.forecast_mse) std::printf("%8.4f", v);
    std::printf("\n  baseline MSE       ");
    for (double v : e.baseline_mse) std::printf("%8.4f", v);
    std::printf("\n  forecast angle err ");
    for (double v : e.forecast_angle_err) std::printf("%8.3f", v);
    std::printf("\n  baseline angle err ");
    for (double v : e.baseline_angle_err) std::printf("%8.3f", v);
    std::printf("\n  per time step: elbo %.3f  distortion %.3f  rate %.3f\n", e.elbo, e.distortion, e.rate);
    return 0;
}
