// ekvae_eval: metrics of a trained EKVAE on a test set (see EvalMetrics in shared/ekvae.h),
// and the figures of "Latent Matters" for one or more models.
//
//   ekvae_eval --model FILE.safetensors [--data FILE.safetensors | --seed S --sequences N] [--json]
//   ekvae_eval --model A.safetensors[,B.safetensors...] [--log RUN/train.jsonl[,...]] --figures DIR ...
//
// Without --data the test set is generated in memory: N sequences (default 200) of 64 steps
// from seed S (default 3, a seed the default training run never uses).
//
// With --figures, the numbers behind the figures are written to DIR (figures.json and .npy
// arrays) and scripts/plot_figures.py, run with Debian's /usr/bin/python3, draws latent.png,
// predictions.png, forecast_error.png and (with --log) training.png from them.
#include "cli.h"
#include "ekvae.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace ekvae;
using json = nlohmann::json;

#ifndef EKVAE_PLOT_SCRIPT
#define EKVAE_PLOT_SCRIPT "scripts/plot_figures.py"
#endif

static const char * kUsage =
    "usage: ekvae_eval --model FILE.safetensors [--data FILE.safetensors | --seed S --sequences N] [--json]\n"
    "       ekvae_eval --model A.safetensors[,B.safetensors...] [--log RUN/train.jsonl[,...]] --figures DIR [...]\n"
    "       (--help for details)";

static const char * kHelp =
    "Prints, for the model on the test set:\n"
    "  r2 {cos, sin, omega}      least squares with intercept from smoothed means of z onto cos/sin theta and omega,\n"
    "                            fitted on the first half of the sequences, scored on the second\n"
    "  r2_knn                    the same with a 10-nearest-neighbour regression\n"
    "  forecast_mse              filter frames 1-16, predict 17-48 open-loop with the true actions: per-pixel MSE\n"
    "                            of the decoded mean image at horizons 1, 5, 10, 20, 32 (baseline_mse: repeat frame 16)\n"
    "  forecast_angle_err        mean |wrapped theta - angle read off the forecast image| at those horizons (rad)\n"
    "  elbo, distortion, rate    per time step\n"
    "\n"
    "--set-record TEXT --write OUT: copies --model FILE with the metadata key 'record' = TEXT (shown by the page\n"
    "beside the model's name, e.g. \"constrained: 10 of 10 seeds met the quality bar\"); the checksum is renewed.\n"
    "\n"
    "Figures (--figures DIR): --model takes a comma-separated list of models (compared in one set of figures;\n"
    "the metrics of each are printed), --log a comma-separated list of training logs (RUN/train.jsonl of\n"
    "ekvae_train). Writes into DIR:\n"
    "  latent.png          smoothed posterior means of z for the test frames (up to 100 sequences): the plane of z\n"
    "                      that best explains the angle (linear fits of sin/cos theta) coloured by the true angle,\n"
    "                      and that ring unrolled against the direction of z that best explains omega, coloured\n"
    "                      by the true angular velocity (one row per model)\n"
    "  predictions.png     3 test sequences, every second frame of 1-48: true frames; reconstruction = decoded H * smoothed\n"
    "                      mean of z (smoothed over the 48 frames); forecast = decoded H * filtered mean for\n"
    "                      frames 1-16, then the open-loop forecast with the true actions for 17-48\n"
    "  forecast_error.png  angle error and per-pixel MSE against horizon 1-32, each model and repeat-last-frame\n"
    "  training.png        from each --log: D (with D0), R, lambda (log scale), ELBO against step; r2 probes\n"
    "  figures.json, *.npy the numbers behind them (scripts/plot_figures.py DIR redraws without recomputing)\n"
    "Legends name models and logs by file stem (models/x.safetensors, models/x.train.jsonl -> x), or by folder for\n"
    "model.safetensors / train.jsonl (runs/c1/model.safetensors -> c1).\n"
    "The plots need /usr/bin/python3 with matplotlib and numpy (scripts/setup.sh, or apt-get install\n"
    "python3-matplotlib); EKVAE_PYTHON and EKVAE_PLOT_SCRIPT override the interpreter and the script.\n";

static std::vector<std::string> split_commas(const std::string & s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, ','))
        if (!part.empty()) out.push_back(part);
    return out;
}

static void print_metrics(const std::string & path, const EvalMetrics & e, double secs) {
    std::printf("%s on %d test sequences (%.1f s)\n", path.c_str(), e.sequences, secs);
    std::printf("  r2 linear ");
    for (size_t k = 0; k < e.targets.size(); k++) std::printf("  %s %.3f", e.targets[k].c_str(), e.r2[k]);
    std::printf("\n  r2 k-NN   ");
    for (size_t k = 0; k < e.targets.size(); k++) std::printf("  %s %.3f", e.targets[k].c_str(), e.r2_knn[k]);
    std::printf("\n");
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
    if (e.angle_names.size() > 1)
        for (size_t a = 0; a < e.angle_names.size(); a++) {
            std::printf("\n    %-8.8s fc/base", e.angle_names[a].c_str());
            for (int h : e.horizons) std::printf(" %.2f/%.2f", e.angle_err_by_angle[a][h - 1], e.baseline_by_angle[a][h - 1]);
        }
    std::printf("\n  forecast vel. err  ");
    for (double v : e.forecast_velocity_err) std::printf("%8.3f", v);
    std::printf("\n  baseline vel. err  ");
    for (double v : e.baseline_velocity_err) std::printf("%8.3f", v);
    std::printf("\n  per time step: elbo %.3f  distortion %.3f  rate %.3f\n", e.elbo, e.distortion, e.rate);
}

// ---- figures ---------------------------------------------------------------------------------

constexpr int kFilterSteps = kForecastFilterSteps; // frames filtered before the open-loop forecast (eval.h)
constexpr int kHorizon = kForecastHorizon;         // forecast steps
constexpr int kStripSequences = 3;
constexpr int kLatentSequences = 100;

// A float32 array in NumPy's .npy format (version 1.0), C order.
static std::vector<uint8_t> npy_bytes(const std::vector<float> & data, const std::vector<int> & shape) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
    for (size_t i = 0; i < shape.size(); i++) header += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? ", " : "");
    header += "), }";
    const size_t total = 10 + header.size() + 1;
    header += std::string((64 - total % 64) % 64, ' ') + "\n";
    std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    out.push_back((uint8_t)(header.size() & 0xff));
    out.push_back((uint8_t)(header.size() >> 8));
    out.insert(out.end(), header.begin(), header.end());
    const uint8_t * p = reinterpret_cast<const uint8_t *>(data.data());
    out.insert(out.end(), p, p + data.size() * sizeof(float)); // little-endian hosts (x86, arm, wasm)
    return out;
}

static void write_npy(const std::string & dir, const std::string & name, const std::vector<float> & data,
                      const std::vector<int> & shape) {
    std::string err;
    if (!write_file_atomic(dir + "/" + name, npy_bytes(data, shape), err)) usage_error(err, kUsage);
}

// Appends the image column img [D] to out.
static void append_image(std::vector<float> & out, const float * img, int D) { out.insert(out.end(), img, img + D); }

// Everything model-specific the plots need: latent means (z_<i>.npy), and for the strip
// sequences the reconstructions (recon_<i>.npy) and forecasts (forecast_<i>.npy).
static json figure_data(Ekvae<float> & m, const Dataset & d, int index, const std::string & dir) {
    Tape<float> t;
    const int nz = m.cfg.n_z, D = d.W * d.W;
    Mat<float> X, U;
    Posterior<float> post;
    // latent: smoothed means over whole test sequences
    const int nl = std::min(d.N, kLatentSequences);
    std::vector<float> z((size_t)nl * d.T * nz);
    for (int c0 = 0; c0 < nl; c0 += kEvalChunk) {
        const int B = std::min(kEvalChunk, nl - c0);
        sequences_batch(d, c0, B, 0, d.T, X, U);
        infer_sequences(t, m, X, U, B, d.T, true, post);
        for (int b = 0; b < B; b++)
            for (int k = 0; k < d.T; k++)
                for (int i = 0; i < nz; i++) z[((size_t)(c0 + b) * d.T + k) * nz + i] = post.ms[k](i, b);
    }
    const std::string zname = "z_" + std::to_string(index) + ".npy";
    write_npy(dir, zname, z, {nl * d.T, nz});
    // strips: smoothed reconstructions of frames 1..48, filtered 1..16 + forecast 17..48
    const int S = std::min(d.N, kStripSequences), F = kFilterSteps + kHorizon;
    std::vector<float> recon, fore;
    sequences_batch(d, 0, S, 0, F, X, U);
    infer_sequences(t, m, X, U, S, F, true, post);
    Mat<float> zs_smooth(nz, (Eigen::Index)F * S), zs_filt(nz, (Eigen::Index)kFilterSteps * S);
    for (int k = 0; k < F; k++) zs_smooth.middleCols((Eigen::Index)k * S, S) = post.ms[k];
    const Mat<float> rec = decode_states(t, m, zs_smooth); // [D, F*S]
    const Mat<float> Xf = X.leftCols((Eigen::Index)kFilterSteps * S), Uh = U.leftCols((Eigen::Index)kFilterSteps * S);
    infer_sequences(t, m, Xf, Uh, S, kFilterSteps, false, post);
    for (int k = 0; k < kFilterSteps; k++) zs_filt.middleCols((Eigen::Index)k * S, S) = post.m[k];
    const Mat<float> filt = decode_states(t, m, zs_filt);
    Mat<float> Uf(d.U, (Eigen::Index)kHorizon * S), zs, Ps, imgs;
    for (int k = 0; k < kHorizon; k++)
        for (int b = 0; b < S; b++)
            for (int j = 0; j < d.U; j++) Uf(j, (Eigen::Index)k * S + b) = d.action(b, kFilterSteps - 1 + k, j);
    forecast(t, m, post.m[kFilterSteps - 1], post.P[kFilterSteps - 1], Uf, zs, Ps, &imgs);
    for (int b = 0; b < S; b++)
        for (int k = 0; k < F; k++) {
            append_image(recon, rec.col((Eigen::Index)k * S + b).data(), D);
            append_image(fore, k < kFilterSteps ? filt.col((Eigen::Index)k * S + b).data()
                                                : imgs.col((Eigen::Index)(k - kFilterSteps) * S + b).data(), D);
        }
    const std::string rname = "recon_" + std::to_string(index) + ".npy", fname = "forecast_" + std::to_string(index) + ".npy";
    write_npy(dir, rname, recon, {S, F, d.W, d.W});
    write_npy(dir, fname, fore, {S, F, d.W, d.W});
    return json{{"z", zname}, {"recon", rname}, {"forecast", fname}};
}

// Writes DIR/figures.json and the arrays; returns its path.
static std::string write_figure_data(const std::string & dir, const std::vector<std::string> & paths,
                                     std::vector<std::unique_ptr<Ekvae<float>>> & models,
                                     const std::vector<EvalMetrics> & metrics, const Dataset & d, const std::string & test_set,
                                     const std::vector<std::string> & logs) {
    const int nl = std::min(d.N, kLatentSequences), S = std::min(d.N, kStripSequences), F = kFilterSteps + kHorizon;
    std::vector<float> states, truth;
    for (int n = 0; n < nl; n++)
        for (int k = 0; k < d.T; k++) {
            for (int i = 0; i < d.S; i++) states.push_back(d.state(n, k, i));
        }
    write_npy(dir, "states.npy", states, {nl * d.T, d.S});
    for (int n = 0; n < S; n++)
        for (int k = 0; k < F; k++) append_image(truth, d.image(n, k), d.W * d.W);
    write_npy(dir, "true.npy", truth, {S, F, d.W, d.W});
    json j;
    j["test_set"] = test_set;
    j["image_size"] = d.W;
    j["filter_steps"] = kFilterSteps;
    j["horizon"] = kHorizon;
    j["states"] = "states.npy";
    j["world"] = d.world().name;
    j["state_names"] = d.world().state_names;
    j["angles"] = d.world().angle;
    j["true"] = "true.npy";
    j["models"] = json::array();
    for (size_t i = 0; i < models.size(); i++) {
        json mj = figure_data(*models[i], d, (int)i, dir);
        mj["path"] = paths[i];
        mj["config"] = json::parse(config_to_json(models[i]->cfg));
        mj["metrics"] = json::parse(metrics_to_json(metrics[i]));
        j["models"].push_back(mj);
    }
    j["logs"] = logs;
    // paths need not be UTF-8: such bytes are replaced in this JSON (the figures' legends)
    const std::string path = dir + "/figures.json", text = j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
    std::string err;
    if (!write_file_atomic(path, std::vector<uint8_t>(text.begin(), text.end()), err)) usage_error(err, kUsage);
    return path;
}

// Runs PYTHON SCRIPT DIR; returns its exit status (127 when it cannot be started).
static int run_plot(const std::string & python, const std::string & script, const std::string & dir) {
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0) return 127;
    if (pid == 0) {
        execl(python.c_str(), python.c_str(), script.c_str(), dir.c_str(), (char *)nullptr);
        std::fprintf(stderr, "error: cannot run %s: %s\n", python.c_str(), std::strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static bool is_dir(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static int run(int argc, char ** argv) {
    Args args(argc, argv, {"model", "data", "seed", "sequences", "figures", "log", "set-record", "write"}, {"json", "help"});
    if (!args.ok()) usage_error(args.err, kUsage);
    if (args.has("help")) {
        std::printf("%s\n\n%s", kUsage, kHelp);
        return 0;
    }
    // --set-record TEXT --write OUT: copy a model file with its "record" metadata (the page shows
    // it beside the model's name), e.g. its objective's seed study; the checksum is renewed
    if (args.has("set-record") || args.has("write")) {
        if (!args.has("set-record") || !args.has("write") || !args.has("model"))
            usage_error("--set-record TEXT needs --model FILE and --write OUT", kUsage);
        std::string err;
        std::vector<uint8_t> bytes;
        const std::string in = args.get_string("model"), outp = args.get_string("write");
        if (!read_file(in, bytes, err)) usage_error(err, kUsage);
        SafeTensors st;
        Ekvae<float> m;
        if (!safetensors_parse(bytes.data(), bytes.size(), st, err) || !ekvae_from_safetensors(st, m, err)) usage_error(in + ": " + err, kUsage);
        ekvae_to_safetensors(m, st); // rewritten as this build writes models (version, checksum)
        st.metadata["record"] = args.get_string("set-record");
        if (!write_file_atomic(outp, safetensors_serialize(st), err)) usage_error(err, kUsage);
        std::printf("wrote %s with record: %s\n", outp.c_str(), args.get_string("set-record").c_str());
        return 0;
    }
    const std::vector<std::string> model_paths = split_commas(args.get_string("model"));
    if (model_paths.empty()) usage_error("--model FILE.safetensors is required", kUsage);
    const bool figures = args.has("figures");
    const std::string fig_dir = args.get_string("figures");
    if (figures && fig_dir.empty()) usage_error("--figures needs a directory", kUsage);
    if (model_paths.size() > 1 && !figures)
        usage_error("several models (--model A,B) are compared only in figures: add --figures DIR", kUsage);
    const std::vector<std::string> logs = split_commas(args.get_string("log"));
    if (args.has("log") && !figures) usage_error("--log is used only for figures: add --figures DIR", kUsage);
    for (const std::string & l : logs)
        if (!is_file(l)) usage_error("--log " + l + ": no such file (ekvae_train writes RUN/train.jsonl)", kUsage);
    if (args.has("data") && (args.has("seed") || args.has("sequences")))
        usage_error("give --data FILE or --seed/--sequences, not both", kUsage);
    uint64_t seed = 3;
    int sequences = 200;
    if (!args.get_u64("seed", seed) || !args.get_int("sequences", sequences, 2, 5000)) usage_error(args.err, kUsage);

    std::string err;
    std::vector<uint8_t> bytes;
    std::vector<std::unique_ptr<Ekvae<float>>> models;
    for (const std::string & path : model_paths) {
        if (!read_file(path, bytes, err)) usage_error(err, kUsage);
        models.push_back(std::make_unique<Ekvae<float>>());
        if (!ekvae_load(bytes.data(), bytes.size(), *models.back(), err)) usage_error(path + ": " + err, kUsage);
        if (!ekvae_check_outputs(*models.back(), err)) {
            std::fprintf(stderr, "error: %s: %s\n", path.c_str(), err.c_str());
            return 1;
        }
        if (models.back()->cfg.world != models[0]->cfg.world)
            usage_error(path + " is a model of the " + models.back()->cfg.world + " world but " + model_paths[0] + " of the " +
                            models[0]->cfg.world + ": models compared together need the same world", kUsage);
        if (models.back()->cfg.image_size != models[0]->cfg.image_size)
            usage_error(path + " expects " + std::to_string(models.back()->cfg.image_size) + "x" +
                            std::to_string(models.back()->cfg.image_size) + " images but " + model_paths[0] + " expects " +
                            std::to_string(models[0]->cfg.image_size) + ": models compared together need the same image size",
                        kUsage);
    }
    const int image_size = models[0]->cfg.image_size;

    Dataset d;
    std::string test_set;
    if (args.has("data")) {
        const std::string path = args.get_string("data");
        std::vector<float> buf;
        size_t nbytes = 0;
        if (!read_file_floats(path, buf, &nbytes, err)) usage_error(err, kUsage);
        if (!dataset_from_safetensors(std::move(buf), nbytes, d, err)) usage_error(path + ": " + err, kUsage);
        test_set = path;
    } else {
        DatasetConfig dc;
        dc.sequences = sequences;
        dc.steps = 64;
        dc.image_size = image_size;
        dc.seed = seed;
        dc.world = models[0]->world;
        // the test set, the smoothed means and the k-NN fits, estimated before allocating
        const double need = (double)sequences * 64 * ((double)image_size * image_size * 4 + 64) + 64e6;
        const double have = (double)physical_memory_bytes();
        if (have > 0 && need > 0.9 * have)
            usage_error("--sequences " + std::to_string(sequences) + " needs about " + human_bytes(need) + " of memory but this process may use " +
                            human_bytes(have) + "; lower --sequences", kUsage);
        d = generate_dataset(dc);
        test_set = "generated: seed " + std::to_string(seed) + ", " + std::to_string(sequences) + " sequences of 64 steps";
    }
    if (d.W != image_size)
        usage_error("the data has " + std::to_string(d.W) + "x" + std::to_string(d.W) + " images but the model expects " +
                        std::to_string(image_size) + "x" + std::to_string(image_size) +
                        " (generate data with ekvae_data --image-size " + std::to_string(image_size) + ")", kUsage);
    if (d.world().name != models[0]->cfg.world)
        usage_error("the data holds the " + d.world().name + " world but the model is for the " + models[0]->cfg.world +
                        " (generate data with ekvae_data --preset " + models[0]->cfg.world + ")", kUsage);
    if (d.T < kForecastSequenceSteps)
        usage_error("the test sequences have " + std::to_string(d.T) + " steps; the forecast metrics need at least " +
                        std::to_string(kForecastSequenceSteps), kUsage);
    if (d.N < 2) usage_error("the test set needs at least 2 sequences", kUsage);
    if (figures) { // mkdir -p, then every file it will write must be writable
        for (size_t i = 1; i <= fig_dir.size(); i++) {
            if (i < fig_dir.size() && fig_dir[i] != '/') continue;
            const std::string part = fig_dir.substr(0, i);
            if (!is_dir(part) && ::mkdir(part.c_str(), 0755) != 0)
                usage_error(errno == EEXIST ? "'" + part + "' exists and is not a directory"
                                            : "cannot create directory '" + part + "': " + std::strerror(errno), kUsage);
        }
    }

    std::vector<EvalMetrics> metrics(models.size());
    for (size_t i = 0; i < models.size(); i++) {
        const auto t0 = std::chrono::steady_clock::now();
        evaluate(*models[i], d, metrics[i], false, seed);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const std::string nf = metrics_nonfinite(metrics[i]);
        if (!nf.empty()) {
            std::fprintf(stderr, "error: %s: the metric '%s' is not finite on the test set: the model's weights are unusable "
                                 "(retrain it, or take an earlier checkpoint)\n", model_paths[i].c_str(), nf.c_str());
            return 1;
        }
        if (args.has("json")) {
            if (models.size() == 1) std::printf("%s\n", metrics_to_json(metrics[i]).c_str());
            else std::printf("%s%s%s", i == 0 ? "[\n" : "", metrics_to_json(metrics[i]).c_str(), i + 1 < models.size() ? ",\n" : "\n]\n");
        } else {
            print_metrics(model_paths[i], metrics[i], secs);
        }
    }
    if (!figures) return 0;

    const std::string json_path = write_figure_data(fig_dir, model_paths, models, metrics, d, test_set, logs);
    const char * py_env = std::getenv("EKVAE_PYTHON");
    const char * script_env = std::getenv("EKVAE_PLOT_SCRIPT");
    const std::string python = py_env && *py_env ? py_env : "/usr/bin/python3";
    const std::string script = script_env && *script_env ? script_env : EKVAE_PLOT_SCRIPT;
    if (!is_file(python)) {
        std::fprintf(stderr, "error: %s not found; the figures need Python 3 with matplotlib: apt-get install python3-matplotlib "
                             "python3-numpy (or run scripts/setup.sh). The data is in %s\n", python.c_str(), json_path.c_str());
        return 1;
    }
    if (!is_file(script)) {
        std::fprintf(stderr, "error: plotting script %s not found (set EKVAE_PLOT_SCRIPT). The data is in %s\n", script.c_str(),
                     json_path.c_str());
        return 1;
    }
    const int status = run_plot(python, script, fig_dir);
    if (status != 0) {
        std::fprintf(stderr, "error: %s %s %s failed (exit status %d); the data is in %s\n", python.c_str(), script.c_str(),
                     fig_dir.c_str(), status, json_path.c_str());
        return 1;
    }
    return 0;
}

int main(int argc, char ** argv) { return cli_main(argc, argv, run); }
