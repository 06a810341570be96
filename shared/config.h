// config.h: every setting of a model and its training run, as one flat set of keys, with its
// JSON form, validation and presets.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace ekvae {

// Every setting of a model and its training run. One flat set of keys, so each one can be
// set from a JSON config file or a command-line flag of the same name (dashes for underscores).
struct EkvaeConfig {
    // the system (world.h): its state and action sizes fix the data and n_u
    std::string world = "pendulum";
    // model
    int image_size = 16;
    int n_a = 2;
    int n_z = 3;
    int n_u = 1;            // must equal the world's action dimension
    int K = 16;
    std::vector<int> enc_hidden = {128, 128};
    std::vector<int> dec_hidden = {128, 128};
    std::vector<int> alpha_hidden = {64, 64};
    double q_min = 1e-4;      // floor of the transition noise variances
    double r_min = 1e-4;      // floor of the observation noise variances
    double jitter = 1e-5;     // added to covariance diagonals before a Cholesky
    double init_scale_A = 0.01; // std of the base matrices A_k, B_k at initialisation
    // data (generated in memory unless data/test_data name files)
    int train_sequences = 1000;
    int train_seed = 1;
    int test_sequences = 200;
    int test_seed = 2;
    int sequence_steps = 64; // T of generated sequences
    std::string data;      // training dataset file (safetensors), "" = generate
    // training
    std::string objective = "constrained"; // "constrained" | "elbo"
    int batch = 32;
    int window = 32;
    double lr = 1e-3;
    double clip_norm = 100.0;
    int seed = 0;
    int train_steps = 30000;   // 0 = until train_minutes (counts the starts' steps too)
    double train_minutes = 0;
    int threads = 2;
    double checkpoint_minutes = 2;
    int log_every = 50;        // terminal lines when not a TTY; the JSONL log gets every step
    int eval_every = 1000;     // steps between r2 probes on held-out data during training
    // training schedule (see Trainer); steps count every step of the run, starts included
    int restarts = 8;          // short starts from different initialisations; the one with the best
                               // held-out objective (never the true states) is continued
    int restart_steps = 1500;  // steps of each start
    int lr_decay_start = 22000; // the learning rate is constant up to this step, then falls along a
    int lr_decay_end = 30000;   // cosine to lr * lr_final at this step (0 = constant throughout)
    double lr_final = 0.1;
    // constrained optimisation (see LambdaState)
    double D0 = 10.0;          // distortion bound, nats per frame
    double lambda_init = 1.0;
    double lambda_min = 0.01;
    double lambda_max = 100.0;
    double lambda_rate = 0.05; // d log(lambda) per step per nat of (Dbar - D0)
    double lambda_max_step = 0.05; // |d log(lambda)| per step at most
    double lambda_ma = 0.95;   // moving-average decay of D
    std::string lambda_rule = "authors"; // "ekvae" (every step, see LambdaState) | "authors" (the
                                         // rule of the authors' lab: see LambdaState)
    std::string lambda_warmup = "none";  // until Dbar first meets D0: "none" (the rule's own: none
                                         // for 'ekvae', loss = D for 'authors'), "hold" (lambda held
                                         // at lambda_init), "rate_off" (loss = D, lambda held) or
                                         // "skip" (no warm-up under either rule: with 'authors' the
                                         // loss is D + R/lambda and lambda moves from the first step)
    std::string lambda_scale = "none";   // "none" | "normalized": the loss divided by 1 + lambda
};

// JSON <-> config. from_json applies the keys present over `cfg` (so presets are defaults);
// returns false and sets err for an unknown key, a wrong type or a value out of range.
std::string config_to_json(const EkvaeConfig & cfg, int indent = 2);
bool config_from_json(const std::string & text, EkvaeConfig & cfg, std::string & err);
// The keys and values of a config file as config_set takes them (strings raw, other values
// as JSON text), checked for syntax, duplicate and unknown keys but not applied.
bool config_json_items(const std::string & text, std::vector<std::pair<std::string, std::string>> & items, std::string & err);
bool config_set(EkvaeConfig & cfg, const std::string & key, const std::string & value, std::string & err);
bool config_validate(const EkvaeConfig & cfg, std::string & err);
std::vector<std::string> config_keys();
// Named presets: "pendulum" (the defaults) and "arm" (world arm, n_u 2, 24x24 frames, n_a 8,
// n_z 8, K 48, wider networks, its own D0; 200,000 steps in all on 4,000 sequences, 4 starts of
// 1,000 included), and "WORLD-browser" for every world with a preset of its name ("browser" for
// the pendulum, "arm-browser"): that preset on the page's short one-thread schedule (batch 16,
// 6,000 steps, 4 starts of 1,000, 1,000 sequences); returns false (cfg untouched) for an unknown name.
bool config_preset(const std::string & name, EkvaeConfig & cfg);
// The page's preset of a world ("browser" for the pendulum, else "WORLD-browser"), and the world
// a preset name points at ("browser" -> "pendulum", "WORLD-browser" -> "WORLD", else the name).
std::string browser_preset(const std::string & world);
std::string preset_world(const std::string & preset);

} // namespace ekvae
