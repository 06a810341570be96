// train.h: batches, the training step with its schedule (restarts, learning-rate decay), and
// the Trainer that holds a run's whole state.
#pragma once
#include "objective.h"
#include "world.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ekvae {

// A random batch of windows: B sequences drawn uniformly (with replacement), each with a
// uniform start; X [D, window*B], U [n_u, window*B] time-major (n_u = the data's U).
void sample_batch(const Dataset & d, int B, int window, Rng & rng, Mat<float> & X, Mat<float> & U);
// Whole sequences [first, first + B) from time t0, T_ steps, time-major.
void sequences_batch(const Dataset & d, int first, int B, int t0, int T_, Mat<float> & X, Mat<float> & U);

struct StepStats {
    double loss = 0, D = 0, R = 0, elbo = 0, lambda = 0, D_ma = 0, grad_norm = 0, lr = 0;
    double log_px = 0, log_qa = 0, log_post = 0, log_paz = 0, log_pz = 0;
    bool ok = true;
    std::string error;
    int start = 0;              // the start this step trained (restarts > 1)
    bool start_done = false;    // this step ended a start: its held-out score is below
    double start_score = 0, start_D = 0, start_R = 0;
    int chosen = -1;            // the last start ended: the one continued
};

// The held-out objective that chooses among starts, from images and actions only: the
// distortion and rate on the first (up to) 100 sequences of d with fixed noise, and the score
// R + max(0, D - D0) for "constrained" (the rate at the distortion bound), R + D (-ELBO) for
// "elbo". Lower is better. (evaluate() reports the same D and R on its whole test set.)
struct HeldOut {
    double D = 0, R = 0, score = 0;
};
HeldOut heldout_objective(Ekvae<float> & m, const Dataset & d, int max_sequences = 100, uint64_t noise_seed = 77);

// The learning rate at a step (1-based) of the schedule.
double lr_at(const EkvaeConfig & cfg, int64_t step);

// Everything a run needs to continue exactly: the model, the optimiser, lambda, RNG, step,
// and the restart bookkeeping (a checkpoint holds all of it).
class Trainer {
public:
    Trainer();
    ~Trainer();
    Trainer(const Trainer &) = delete;
    Trainer & operator=(const Trainer &) = delete;

    // validation: held-out data for choosing among starts (needed when cfg.restarts > 1; it
    // must outlive the Trainer).
    void init(const EkvaeConfig & c, const Dataset * validation = nullptr);
    // One step on a batch: splits the batch over cfg.threads, sums gradients, updates the
    // parameters (unless the loss or a gradient is non-finite: the step is rejected and
    // reported in the stats, parameters untouched), then lambda. With restarts, the step that
    // ends a start scores it on the validation data and begins the next start (or, after the
    // last, continues the best one).
    StepStats train_step(const Mat<float> & X, const Mat<float> & U);
    bool choosing() const { return cfg_.restarts > 1 && start_ < cfg_.restarts; }
    // Checkpoint = model + Adam state + lambda + RNG + step (+ restarts), as safetensors bytes.
    std::vector<uint8_t> checkpoint() const;
    bool restore(const uint8_t * data, size_t size, std::string & err);
    // restore(), then the overrides (key, value as config_set takes them): only the run-control
    // keys (kRunKeys) may change; a key given with the value it already has is accepted.
    bool resume(const uint8_t * data, size_t size, const std::vector<std::pair<std::string, std::string>> & overrides,
                const Dataset * validation, std::string & err, std::string * refused_key = nullptr);
    static const std::vector<std::string> kRunKeys; // train_minutes, train_steps, threads, ...

    const EkvaeConfig & cfg() const { return cfg_; }
    // The run's planned total of steps, recorded in its checkpoints and model file (metadata:
    // nothing in a step reads it). A front end that resumes with "N more steps" sets the total
    // here; an override train_steps = N alone would be copied into every later start's model.
    void set_planned_steps(int total) { cfg_.train_steps = model.cfg.train_steps = total; }
    int start() const { return start_; }           // the start being trained (restarts > 1)
    int best_start() const { return best_start_; } // the best finished start, -1 before the first ends

    // Run on every thread that computes part of a step, before it does (null: nothing). The
    // native front ends flush denormal floats to zero here: tiny values (Adam's second moments
    // of rarely used weights, say) are otherwise ~100x slower on x86, and a run slowed 4x after
    // a few thousand steps. Platform code stays out of the core this way.
    void (*thread_setup)() = nullptr;

    Ekvae<float> model;
    Adam<float> opt;
    LambdaState lam;
    Rng rng{0};
    int64_t step = 0;
    int64_t rejected = 0; // non-finite steps skipped

private:
    struct Impl; // per-thread replicas, tapes, batch shares, the worker pool, the best start
    std::unique_ptr<Impl> impl_;
    EkvaeConfig cfg_;
    int start_ = 0;
    int best_start_ = -1;
    std::vector<double> start_scores_;

    void begin_start(int k);
    void end_start(StepStats & st);
    std::vector<uint8_t> checkpoint_impl(bool with_starts) const;
    bool restore_impl(const uint8_t * data, size_t size, std::string & err, bool nested);
};

} // namespace ekvae
