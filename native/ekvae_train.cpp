// ekvae_train: trains an EKVAE on image sequences of a world (the pendulum, the two-link arm).
//
//   ekvae_train [--preset pendulum|arm|browser|arm-browser] [--config FILE.json] [--objective constrained|elbo] [--seed S]
//               [--minutes M | --steps N] [--data FILE.safetensors] [--out DIR] [--resume]
//               [--threads N] [--<any config key> VALUE]
//
// Writes into DIR: config.json (the resolved config), train.jsonl (one line per step, plus
// probe lines), checkpoint.safetensors (every few minutes, at the end and on Ctrl-C) and
// model.safetensors (the weights with the config in its metadata: the file the app loads).
#include "cli.h"
#include "ekvae.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdarg>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace ekvae;
using json = nlohmann::json;

static const char * kUsage =
    "usage: ekvae_train [--preset pendulum|arm|browser|arm-browser] [--config FILE.json] [--objective constrained|elbo] [--seed S]\n"
    "                   [--minutes M | --steps N] [--data FILE.safetensors] [--out DIR] [--resume] [--threads N]\n"
    "                   [--<config key> VALUE ...]   (--help for details)";

static std::atomic<int> g_signal{0};
static void on_signal(int sig) { g_signal = sig; }

// Progress lines go to stderr until it fails (a closed terminal or pipe): training goes on.
static bool g_quiet = false;
static void say(const char * fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char * fmt, ...) {
    if (g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    const int r = std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (r < 0 || std::fflush(stderr) != 0) g_quiet = true;
}

static std::string dashed(std::string k) {
    for (char & c : k) if (c == '_') c = '-';
    return k;
}

static bool file_exists(const std::string & p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
}
static bool dir_exists(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

static bool make_dir(const std::string & dir, std::string & err) {
    std::string cur;
    std::stringstream ss(dir);
    std::string part;
    if (!dir.empty() && dir[0] == '/') cur = "/";
    while (std::getline(ss, part, '/')) {
        if (part.empty()) continue;
        cur += part + "/";
        if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
            err = "cannot create directory '" + cur + "': " + std::strerror(errno);
            return false;
        }
    }
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        err = "'" + dir + "' is not a directory";
        return false;
    }
    return true;
}

static bool write_text(const std::string & path, const std::string & text, std::string & err) {
    return write_file_atomic(path, std::vector<uint8_t>(text.begin(), text.end()), err);
}

// Keeps the log lines of steps <= last_step (a resumed run repeats what came after its checkpoint).
static void truncate_log(const std::string & path, int64_t last_step) {
    std::ifstream in(path);
    if (!in) return;
    std::string line, kept;
    while (std::getline(in, line)) {
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.contains("step") || !j["step"].is_number() || j["step"].get<int64_t>() > last_step) continue;
        kept += line + "\n";
    }
    std::string err;
    write_text(path, kept, err);
}

// 7 significant digits keep the log readable and small
static double r7(double x) {
    if (!std::isfinite(x)) return x;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.7g", x);
    return std::strtod(buf, nullptr);
}

static std::string fmt_time(double s) {
    char buf[32];
    if (s < 0 || !std::isfinite(s)) return "?";
    const int m = (int)(s / 60), sec = (int)s % 60;
    std::snprintf(buf, sizeof buf, "%d:%02d", m, sec);
    return buf;
}

// Probes on held-out sequences during training: r2 of smoothed means (a at the encoder mean)
// and the forecast angle errors at horizons 10 and 32, on the first 60 test sequences cut to
// 48 steps (the same metrics as ekvae_eval on fewer, shorter sequences).
static EvalMetrics probe(Ekvae<float> & m, const Dataset & test) {
    const Dataset cut = dataset_slice(test, std::min(test.N, 60), std::min(test.T, kForecastSequenceSteps));
    EvalMetrics e;
    evaluate(m, cut, e, false, 0);
    return e;
}
static double at_horizon(const EvalMetrics & e, const std::vector<double> & v, int h) {
    for (size_t i = 0; i < e.horizons.size() && i < v.size(); i++)
        if (e.horizons[i] == h) return v[i];
    return NAN;
}

// The memory a run needs, estimated before anything large is allocated: the training and
// held-out images, and per thread the tape of one batch (every layer's activations and
// gradients, measured ~1.5x of this count for the default model).
static double estimate_run_bytes(const EkvaeConfig & c, int64_t data_file_bytes) {
    const double D = (double)c.image_size * c.image_size;
    const double train_imgs = data_file_bytes > 0 ? (double)data_file_bytes : (double)c.train_sequences * c.sequence_steps * D * 4;
    const double test_imgs = (double)c.test_sequences * std::max(c.sequence_steps, kForecastSequenceSteps) * D * 4;
    double hidden = 0;
    for (int h : c.enc_hidden) hidden += h;
    for (int h : c.dec_hidden) hidden += h;
    for (int h : c.alpha_hidden) hidden += h;
    const double per_frame = (6 * D + 6 * hidden + 40.0 * c.n_z * c.n_z * (c.n_a + c.n_u + c.K)) * 4;
    const double tape = per_frame * c.batch * c.window * 1.5;
    return train_imgs + test_imgs + tape + 64e6;
}

static int run(int argc, char ** argv) {
    std::vector<std::string> value_flags = {"preset", "config", "minutes", "steps", "out"};
    for (const std::string & k : config_keys()) value_flags.push_back(dashed(k));
    Args args(argc, argv, value_flags, {"resume", "force", "help"});
    if (!args.ok()) usage_error(args.err, kUsage);
    if (args.has("help")) {
        std::printf("%s\n\n"
                    "The default run (no flags but --objective and --seed): 8 starts of 1500 steps from different\n"
                    "initialisations; the one with the best held-out objective (R + max(0, D - D0) for constrained,\n"
                    "-ELBO for elbo; held-out images only) is continued to 30000 steps in all, the learning rate falling\n"
                    "along a cosine from step 22000 to 0.1x at 30000; lambda follows the authors' rule. Deterministic for a\n"
                    "seed and a thread count; about 3.5 minutes with --threads 2 on 2 cores. --restarts 1 for one start.\n"
                    "A directory that holds a run is continued with --resume (to its planned steps; --resume --steps N:\n"
                    "N more) or started over with --force.\n\n"
                    "Worlds: --preset pendulum (the default) or --preset arm (two-link arm, two torques, 24x24 frames;\n"
                    "4 starts of 1000 steps, 200000 in all on 4000 sequences: about 65 minutes with --threads 2);\n"
                    "--preset browser / arm-browser: the page's short schedule (batch 16, 6000 steps, 4 starts of 1000, 1000 sequences,\n"
                    "1 thread; "
                    "browser: the lambda rule without its warm-up).\n\n"
                    "Config keys (set with --key value, dashes or underscores; defaults of the 'pendulum' preset):\n%s\n",
                    kUsage, config_to_json(EkvaeConfig{}).c_str());
        return 0;
    }
    const std::string out = args.get_string("out", "runs/pendulum");
    const bool resume = args.has("resume");
    if (resume && args.has("force")) usage_error("give --resume (continue the run) or --force (start it over), not both", kUsage);
    std::string err;

    // ---- resolve the config: preset < config file < flags --------------------------------
    EkvaeConfig cfg;
    const std::string preset = args.get_string("preset", "pendulum");
    if (!config_preset(preset, cfg)) usage_error("unknown preset '" + preset + "' (available: pendulum, arm, browser, arm-browser)", kUsage);
    std::vector<std::pair<std::string, std::string>> overrides;
    if (args.has("config")) {
        std::vector<uint8_t> bytes;
        if (!read_file(args.get_string("config"), bytes, err, 16u << 20)) usage_error("--config: " + err, kUsage);
        // the file's keys are applied exactly like flags (before them; a flag wins over the file)
        std::vector<std::pair<std::string, std::string>> kv;
        if (!config_json_items(std::string(bytes.begin(), bytes.end()), kv, err))
            usage_error(args.get_string("config") + ": " + err, kUsage);
        overrides.insert(overrides.end(), kv.begin(), kv.end());
    }
    if (args.has("minutes")) overrides.push_back({"train_minutes", args.get_string("minutes")});
    if (args.has("steps")) overrides.push_back({"train_steps", args.get_string("steps")});
    for (const std::string & k : config_keys())
        if (args.has(dashed(k))) overrides.push_back({k, args.get_string(dashed(k))});
    if (args.has("minutes") && args.has("steps")) usage_error("give --minutes or --steps, not both", kUsage);

    if (!resume && !args.has("force") && (file_exists(out + "/checkpoint.safetensors") || file_exists(out + "/train.jsonl") ||
                                          file_exists(out + "/model.safetensors")))
        usage_error("'" + out + "' already holds a run: add --resume to continue it, --force to start it over (its log, "
                    "checkpoint and model are replaced), or choose another --out", kUsage);
    Trainer tr;
    tr.thread_setup = flush_denormals;
    Dataset train, test; // test: held-out images for choosing among starts (filled below, before any step)
    const std::string ck_path = out + "/checkpoint.safetensors";
    const std::string model_path = out + "/model.safetensors";
    const std::string log_path = out + "/train.jsonl";
    // one process per run directory, for the whole run
    int lock_fd = -1;
    if (resume || dir_exists(out)) {
        lock_fd = lock_directory(out, err);
        if (lock_fd < 0) usage_error(err, kUsage);
    }
    if (resume) {
        std::vector<uint8_t> bytes;
        if (!read_file(ck_path, bytes, err)) usage_error("--resume: " + err + " (train into --out DIR first)", kUsage);
        // the run continues with the checkpoint's config; only run-control keys may change
        if (!args.has("minutes") && args.has("steps")) overrides.push_back({"train_minutes", "0"});
        std::string refused;
        if (!tr.resume(bytes.data(), bytes.size(), overrides, &test, err, &refused)) {
            if (refused.empty()) usage_error("--resume: " + ck_path + ": " + err, kUsage);
            usage_error("--" + dashed(refused) + (args.has(dashed(refused)) ? "" : " (from --config)") +
                            " cannot change when resuming (the run keeps its checkpoint's config)", kUsage);
        }
        const EkvaeConfig c = tr.cfg();
        cfg = c;
        // --resume alone finishes the run: the checkpoint's train_steps is the run's planned
        // total (until 2026-12-06 it trained that many steps more: a 30,000-step run
        // interrupted at 10,000 ended at 40,000)
        if (!args.has("steps") && !args.has("minutes") && cfg.train_minutes <= 0 && cfg.train_steps > 0) {
            if (tr.step >= cfg.train_steps)
                usage_error("the run in '" + out + "' has already trained its " + std::to_string(cfg.train_steps) +
                                " steps: add --steps N to train N more", kUsage);
            cfg.train_steps = (int)(cfg.train_steps - tr.step);
        }
    } else {
        for (auto & [k, v] : overrides)
            if (!config_set(cfg, k, v, err)) usage_error(err, kUsage);
        if (args.has("steps") && !args.has("minutes")) cfg.train_minutes = 0;
        if (!config_validate(cfg, err)) usage_error(err, kUsage);
    }
    if (cfg.train_steps == 0 && cfg.train_minutes <= 0) usage_error("nothing to do: give --steps N or --minutes M", kUsage);
    if (!make_dir(out, err)) usage_error(err + " (choose another --out)", kUsage);
    if (lock_fd < 0) {
        lock_fd = lock_directory(out, err);
        if (lock_fd < 0) usage_error(err, kUsage);
    }
    for (const std::string & f : {ck_path, model_path, log_path, out + "/config.json"})
        if (!check_output_path(f, err)) usage_error(err, kUsage);
    {
        struct stat dst;
        const int64_t file_bytes = !cfg.data.empty() && ::stat(cfg.data.c_str(), &dst) == 0 ? (int64_t)dst.st_size : 0;
        const double need = estimate_run_bytes(cfg, file_bytes), have = (double)physical_memory_bytes();
        if (have > 0 && need > 0.9 * have)
            usage_error("this run needs about " + human_bytes(need) + " of memory but this process may use " + human_bytes(have) +
                            "; lower --train-sequences, --sequence-steps, --test-sequences, --batch or --window (or use a smaller --data file)",
                        kUsage);
    }

    // ---- data ------------------------------------------------------------------------------------
    if (!cfg.data.empty()) {
        std::vector<float> buf;
        size_t nbytes = 0;
        if (!read_file_floats(cfg.data, buf, &nbytes, err)) usage_error("--data: " + err, kUsage);
        if (!dataset_from_safetensors(std::move(buf), nbytes, train, err)) usage_error("--data " + cfg.data + ": " + err, kUsage);
        if (train.W != cfg.image_size)
            usage_error("--data " + cfg.data + " has " + std::to_string(train.W) + "x" + std::to_string(train.W) +
                            " images but the model expects image_size " + std::to_string(cfg.image_size) +
                            " (pass --image-size " + std::to_string(train.W) + " or regenerate the data)", kUsage);
        if (train.world().name != cfg.world)
            usage_error("--data " + cfg.data + " holds the " + train.world().name + " world but the model is for the " + cfg.world +
                            " (pass --preset " + train.world().name + " or other data)", kUsage);
        if (train.T < cfg.window)
            usage_error("--data " + cfg.data + " has sequences of " + std::to_string(train.T) + " steps, shorter than --window " + std::to_string(cfg.window), kUsage);
    }
    // generated data (the training set only when there is no --data file), held-out set
    if (!generate_run_data(cfg, cfg.data.empty() ? &train : nullptr, &test, err)) usage_error(err, kUsage);

    if (!resume) {
        tr.init(cfg, &test);
        ::unlink(log_path.c_str());
    } else {
        truncate_log(log_path, tr.step);
    }
    // config.json and the config inside the files describe the whole run: a resumed run's
    // --steps N are N more steps, its train_steps the total (until 2026-12-06 config.json
    // recorded the N and the files the first session's plan)
    EkvaeConfig run_cfg = cfg;
    if (resume && cfg.train_steps > 0) run_cfg.train_steps = (int)(tr.step + cfg.train_steps);
    // the trainer's own config too: a start begun after the resume copies it into the model
    // (until 2026-12-07 a run resumed with --steps N during its starts recorded N from there on)
    tr.set_planned_steps(run_cfg.train_steps);
    if (!write_text(out + "/config.json", config_to_json(run_cfg) + "\n", err)) {
        std::fprintf(stderr, "error: %s\n", err.c_str());
        return 2;
    }
    std::FILE * log = open_append(log_path, err);
    if (!log) {
        std::fprintf(stderr, "error: %s\n", err.c_str());
        return 2;
    }

    // Ctrl-C, kill and a closed terminal save the run and exit 128 + signal; a closed pipe
    // only silences the progress lines
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGHUP, on_signal);
    std::signal(SIGPIPE, SIG_IGN);
    const bool tty = isatty(fileno(stderr));
    using clk = std::chrono::steady_clock;
    const auto t_start = clk::now();
    auto last_ck = t_start;
    const int64_t step0 = tr.step;
    const int64_t target = cfg.train_steps > 0 ? step0 + cfg.train_steps : INT64_MAX;
    const double budget_s = cfg.train_minutes > 0 ? cfg.train_minutes * 60 : 1e300;
    int consecutive_bad = 0;
    int rc = 0;
    std::string stop_reason = "done";
    say("ekvae_train: %s objective, %d training sequences, batch %d x window %d, %d thread(s), %zu parameters -> %s\n",
                 cfg.objective.c_str(), train.N, cfg.batch, cfg.window, cfg.threads, tr.model.ps.numel(), out.c_str());

    auto save_checkpoint = [&]() {
        std::string e;
        if (!params_finite(tr.model.ps)) {
            say("\nerror: weights hold NaN/Inf; checkpoint not written\n");
            return false;
        }
        if (!write_file_atomic(ck_path, tr.checkpoint(), e)) {
            say("\nerror: %s\n", e.c_str());
            return false;
        }
        return true;
    };

    Mat<float> X, U;
    double ema_sps = 0;
    auto t_last = clk::now();
    auto last_flush = t_start;
    while (!g_signal) {
        const double elapsed = std::chrono::duration<double>(clk::now() - t_start).count();
        if (tr.step >= target || elapsed >= budget_s) break;
        sample_batch(train, cfg.batch, cfg.window, tr.rng, X, U);
        const StepStats st = tr.train_step(X, U);
        const auto now = clk::now();
        const double dt = std::chrono::duration<double>(now - t_last).count();
        t_last = now;
        ema_sps = ema_sps == 0 ? 1.0 / dt : 0.98 * ema_sps + 0.02 / dt;
        json j = {{"step", tr.step}, {"time_s", r7(elapsed + dt)}, {"loss", r7(st.loss)}, {"D", r7(st.D)}, {"R", r7(st.R)},
                  {"elbo", r7(st.elbo)}, {"lambda", r7(st.lambda)}, {"D_ma", r7(st.D_ma)}, {"grad_norm", r7(st.grad_norm)}, {"ok", st.ok}};
        if (cfg.lr_decay_end > 0) j["lr"] = r7(st.lr);
        if (cfg.restarts > 1) j["start"] = st.start;
        if (!st.ok) j["error"] = st.error;
        std::fprintf(log, "%s\n", j.dump().c_str());
        if (st.start_done) { // a start ended: its held-out objective, and the choice after the last
            json sj = {{"step", tr.step}, {"start_done", st.start}, {"heldout", {{"D", r7(st.start_D)}, {"R", r7(st.start_R)}, {"score", r7(st.start_score)}}}};
            if (st.chosen >= 0) sj["chosen"] = st.chosen;
            std::fprintf(log, "%s\n", sj.dump().c_str());
            say("%sstart %d of %d ended at step %lld: held-out D %.3f R %.3f, score %.4f%s\n", tty ? "\n" : "",
                         st.start + 1, cfg.restarts, (long long)tr.step, st.start_D, st.start_R, st.start_score,
                         st.chosen >= 0 ? (" -> continuing start " + std::to_string(st.chosen + 1)).c_str() : "");
        }
        if (!st.ok) {
            consecutive_bad++;
            say("%sstep %lld rejected: %s\n", tty ? "\n" : "", (long long)tr.step, st.error.c_str());
            if (consecutive_bad >= 20) {
                stop_reason = "diverged";
                say("error: 20 consecutive non-finite steps: training diverged; the last good weights are kept. "
                                     "Lower --lr (now %g) or --clip-norm and --resume.\n", cfg.lr);
                rc = 1;
                break;
            }
        } else {
            consecutive_bad = 0;
        }
        if (cfg.eval_every > 0 && tr.step % cfg.eval_every == 0) {
            const EvalMetrics p = probe(tr.model, test);
            const double el = std::chrono::duration<double>(clk::now() - t_start).count();
            const double a10 = at_horizon(p, p.forecast_angle_err, 10), a32 = at_horizon(p, p.forecast_angle_err, 32);
            json pr = json::object();
            std::string r2s, knns;
            for (size_t k = 0; k < p.targets.size(); k++) {
                pr["r2_" + p.targets[k]] = r7(p.r2[k]);
                pr["r2knn_" + p.targets[k]] = r7(p.r2_knn[k]);
                char buf[64];
                std::snprintf(buf, sizeof buf, "%s%s %.3f", r2s.empty() ? "" : " ", p.targets[k].c_str(), p.r2[k]);
                r2s += buf;
                if (!tr.model.world->angle[tr.model.world->target_component((int)k)]) { // the velocities
                    std::snprintf(buf, sizeof buf, "%s%s %.3f", knns.empty() ? "" : " ", p.targets[k].c_str(), p.r2_knn[k]);
                    knns += buf;
                }
            }
            pr["angle_err_10"] = r7(a10);
            pr["angle_err_32"] = r7(a32);
            json pj = {{"step", tr.step}, {"time_s", r7(el)}, {"probe", pr}};
            if (cfg.restarts > 1) pj["start"] = tr.choosing() ? tr.start() : tr.best_start(); // the model probed
            std::fprintf(log, "%s\n", pj.dump().c_str());
            const std::string of = cfg.restarts > 1 ? " (start " + std::to_string((tr.choosing() ? tr.start() : tr.best_start()) + 1) + ")" : "";
            say("%sprobe at step %lld%s: r2 %s (k-NN %s), angle error %.3f @10 %.3f @32\n", tty ? "\n" : "", (long long)tr.step,
                of.c_str(), r2s.c_str(), knns.c_str(), a10, a32);
        }
        const double done_steps = (double)(tr.step - step0);
        const double eta_steps = target == INT64_MAX ? 1e300 : (double)(target - tr.step) / std::max(ema_sps, 1e-9);
        const double eta = std::min(eta_steps, budget_s - elapsed);
        if (tty) {
            const double frac = target != INT64_MAX ? done_steps / (double)(target - step0) : elapsed / budget_s;
            const int w = 24, filled = (int)(std::clamp(frac, 0.0, 1.0) * w);
            say("\r[%.*s%*s] step %lld  D %.3f  R %.3f  lambda %.3g  %.1f steps/s  ETA %s   ", filled,
                         "########################", w - filled, "", (long long)tr.step, st.D, st.R, st.lambda, ema_sps, fmt_time(eta).c_str());
        } else if (tr.step % cfg.log_every == 0) {
            say("step %lld  D %.3f  R %.3f  elbo %.3f  lambda %.4g  %.1f steps/s  elapsed %s  ETA %s\n", (long long)tr.step,
                         st.D, st.R, st.elbo, st.lambda, ema_sps, fmt_time(elapsed).c_str(), fmt_time(eta).c_str());
        }
        if (std::chrono::duration<double>(now - last_flush).count() > 2.0) { // the log is on disk within seconds
            std::fflush(log);
            last_flush = now;
        }
        // (not at the last step: the model is written before the final checkpoint, so a checkpoint
        // at the planned step always has its model beside it)
        if (tr.step < target && std::chrono::duration<double>(now - last_ck).count() > cfg.checkpoint_minutes * 60) {
            std::fflush(log);
            save_checkpoint();
            last_ck = now;
        }
    }
    std::fflush(log);
    std::fclose(log);
    if (tty) say("\n");
    if (g_signal) {
        stop_reason = g_signal == SIGHUP ? "hung up" : g_signal == SIGTERM ? "terminated" : "interrupted";
        rc = 128 + g_signal;
    }
    if (tr.choosing())
        say("note: stopped while choosing among starts (start %d of %d); --resume continues the choice\n", tr.start() + 1, cfg.restarts);
    // the read-out z -> the world's targets (pendulum: cos, sin, omega) from the training data,
    // then the model file, then the checkpoint (a kill between the two leaves an older
    // checkpoint, and --resume retrains the last steps: never a checkpoint at the planned step
    // beside an older model)
    const std::vector<uint8_t> model_bytes = model_file_bytes(tr.model, train, kReadoutSequences);
    if (!write_file_atomic(model_path, model_bytes, err)) {
        say("error: %s\n", err.c_str());
        return 1;
    }
    if (!save_checkpoint()) return 1;
    const double elapsed = std::chrono::duration<double>(clk::now() - t_start).count();
    say("%s at step %lld after %s (%lld rejected steps): wrote %s and %s%s\n", stop_reason.c_str(), (long long)tr.step,
        fmt_time(elapsed).c_str(), (long long)tr.rejected, model_path.c_str(), ck_path.c_str(),
        rc > 128 ? "; continue with --resume" : "");
    ::close(lock_fd);
    return rc;
}

int main(int argc, char ** argv) { return cli_main(argc, argv, run); }
