// ekvae.h: the Extended Kalman VAE (Klushyn et al., "Latent Matters", NeurIPS 2021).
//
//   encoder     q(a_t | x_t)            = N(mu(x_t), diag sigma^2(x_t))           (MLP)
//   decoder     p(x_t | a_t)            = Bernoulli(sigmoid(logits(a_t)))          (MLP)
//   observation p(a_t | z_t)            = N(H z_t, R),  R diagonal
//   transition  p(z_t | z_{t-1}, u_{t-1}) = N(F z_{t-1} + B u_{t-1}, Q)
//               alpha = softmax(MLP([z_{t-1}, u_{t-1}]))                          [K]
//               F = I + sum_k alpha_k A_k,  B = sum_k alpha_k B_k,  Q = diag(softplus(sum_k alpha_k q_k))
//   prior       p(z_1) = N(mu_1, diag(softplus(p_1)))  (learned)
//
// Inference: a_{1:T} ~ q (reparameterised), then the extended Kalman filter (the transition
// evaluated at the previous filtered mean), the Rauch-Tung-Striebel smoother with the same
// matrices, and a JOINT sample z_{1:T} from p(z_{1:T} | a_{1:T}, u_{1:T}) by backward sampling.
//
//   distortion D = -E[log p(x | a)]
//   rate       R =  E[log q(a | x) + log p(z | a, u) - log p(a | z) - log p(z | u)]
// both per time step. Objectives: "elbo" minimises R + D; "constrained" minimises the
// Lagrangian R + lambda (D - D0), lambda >= 0 updated from a moving average of D (see
// LambdaState).
//
// Dimension legend: B sequences in a batch, T time steps, W image side, D = W*W pixels,
// n_a auxiliary dims, n_z latent dims, n_u action dims, K base matrices.
// Sequence data is laid out time-major: column t*B + b holds sequence b at time t.
#pragma once
#include "autodiff.h"
#include "nn.h"
#include "pendulum.h"
#include "rng.h"
#include "safetensors.h"

#include <memory>
#include <string>
#include <vector>

namespace ekvae {

constexpr const char * kModelFormat = "ekvae-model";
constexpr int kModelVersion = 2; // 2: a checksum in the metadata (version 1 files, without one, still load)

// Every setting of a model and its training run. One flat set of keys, so each one can be
// set from a JSON config file or a command-line flag of the same name (dashes for underscores).
struct EkvaeConfig {
    // model
    int image_size = 16;
    int n_a = 2;
    int n_z = 3;
    int n_u = 1;
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
    std::string lambda_warmup = "none";  // until Dbar first meets D0: "none", "hold" (lambda held
                                         // at lambda_init) or "rate_off" (loss = D, lambda held)
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
// Named presets ("pendulum"); returns false for an unknown name.
bool config_preset(const std::string & name, EkvaeConfig & cfg);

template <class T> struct Ekvae {
    EkvaeConfig cfg;
    Params<T> ps;
    MLP<T> enc;           // D -> ... -> 2 n_a  (mu, log sigma^2)
    MLP<T> dec;           // n_a -> ... -> D    (logits)
    MLP<T> alpha;         // n_z + n_u -> ... -> K
    Param<T> * H = nullptr;     // [n_a*n_z, 1]  (column-major n_a x n_z)
    Param<T> * r_raw = nullptr; // [n_a, 1]      R = diag(softplus(r_raw) + r_min)
    Param<T> * A = nullptr;     // [n_z*n_z, K]
    Param<T> * Bm = nullptr;    // [n_z*n_u, K]
    Param<T> * q_raw = nullptr; // [n_z, K]      Q = diag(softplus(q_raw alpha) + q_min)
    Param<T> * mu1 = nullptr;   // [n_z, 1]
    Param<T> * p1_raw = nullptr;// [n_z, 1]      P_1 = diag(softplus(p1_raw))
    // Linear read-out z -> (cos theta, sin theta, omega), fitted after training (not trained).
    Mat<T> readout_W;           // [3, n_z]
    Mat<T> readout_b;           // [3, 1]
    bool has_readout = false;

    Ekvae() = default;
    Ekvae(const Ekvae &) = delete;
    Ekvae & operator=(const Ekvae &) = delete;
};

// Builds a model with freshly initialised parameters (seeded). cfg must be valid.
template <class T> void ekvae_init(Ekvae<T> & m, const EkvaeConfig & cfg, uint64_t seed);
// Copies parameter values (same architecture).
template <class T, class S> void ekvae_copy_params(const Ekvae<S> & from, Ekvae<T> & to);

// ---- the model file ---------------------------------------------------------------------
// Model weights (+ read-out) with the full config in __metadata__ ("config": JSON).
template <class T> void ekvae_to_safetensors(const Ekvae<T> & m, SafeTensors & st);
// Loads a model from parsed safetensors. Checks format/version, the config, and every tensor's
// name, shape and finiteness; returns false and sets err otherwise (m is left unusable).
template <class T> bool ekvae_from_safetensors(const SafeTensors & st, Ekvae<T> & m, std::string & err);
// Same, from the bytes of a file.
template <class T> bool ekvae_load(const uint8_t * data, size_t size, Ekvae<T> & m, std::string & err);

// ---- inference on the tape -------------------------------------------------------------
template <class T> struct KalmanResult {
    int B = 0, T_ = 0;
    std::vector<Var> m, P;           // filtered mean [n_z, B] and covariance [n_z*n_z, B], t = 0..T-1
    std::vector<Var> m_pred, P_pred; // predicted (prior) moments at t (t = 0: the prior on z_1)
    std::vector<Var> F, Q;           // transition from t-1 to t (t >= 1); Q as variances [n_z, B]
    std::vector<Var> ms, Ps;         // smoothed moments (rts_smoother)
    std::vector<Var> J;              // smoother gains, t = 0..T-2
};

// The extended Kalman filter over a = [n_a, T*B], u = [n_u, T*B] (time-major columns).
// The transition into t is evaluated at the filtered mean of t-1.
template <class T> void kalman_filter(Tape<T> & t, Ekvae<T> & m, Var a, Var u, int B, int T_, KalmanResult<T> & kr);
// The RTS smoother with the filter's matrices (covariances only when asked).
template <class T> void rts_smoother(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr, bool covariances);
// A joint reparameterised sample z_{1:T} ~ p(z | a, u) by backward sampling:
//   z_T ~ N(m_T, P_T),  z_t | z_{t+1} ~ N(m_t + J_t (z_{t+1} - m_pred_{t+1}), (I - J_t F) P_t (I - J_t F)^T + J_t Q J_t^T).
// eps: [n_z, T*B] standard normals. Returns z [n_z, T*B]; log_post [1, B]: log p(z | a, u).
template <class T> Var backward_sample(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr, const Mat<T> & eps, Var & log_post);

// The terms of the objective, each a [1, 1] node, per time step (averaged over B*T frames).
struct EkvaeTerms {
    Var loss;       // what backward() is called on
    Var D, R;       // distortion, rate
    Var log_px, log_qa, log_post, log_paz, log_pz;
    Var a, z;       // the samples the terms are evaluated at: a [n_a, N], z [n_z, N]
};

// The loss as a weighted sum of the terms: loss = rate R + distortion D + offset.
struct LossWeights {
    double rate = 1, distortion = 1, offset = 0;
    static LossWeights elbo() { return {1, 1, 0}; }                                 // R + D
    static LossWeights lagrangian(double lambda, double D0) { return {1, lambda, -lambda * D0}; } // R + lambda (D - D0)
};

// One batch: X [D, T*B] in [0, 1], U [n_u, T*B]. Draws the reparameterisation noise from rng.
// scale: the loss is multiplied by it (for splitting a batch across threads).
template <class T> EkvaeTerms ekvae_objective(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, const Mat<T> & U, int B, int T_,
                                              Rng & rng, const LossWeights & w, double scale = 1.0);

// ---- inference without sampling (evaluation, the app) -----------------------------------
// Encoder means and log-variances for frames X [D, N].
template <class T> void encode(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, Mat<T> & mu, Mat<T> & logvar);
// Decoded mean images (sigmoid of the logits) for a = [n_a, N] -> [D, N].
template <class T> Mat<T> decode(Tape<T> & t, Ekvae<T> & m, const Mat<T> & a);

// Filter (and smooth) B sequences with a_t at the encoder mean. Outputs per time step.
template <class T> struct Posterior {
    std::vector<Mat<T>> m, P;       // filtered [n_z, B], [n_z*n_z, B]
    std::vector<Mat<T>> ms, Ps;     // smoothed
};
template <class T> void infer_sequences(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, const Mat<T> & U, int B, int T_,
                                        bool smooth, Posterior<T> & out);

// Open-loop forecast from a filtered state (mean z [n_z, 1], covariance P [n_z*n_z, 1]) under
// actions U [n_u, H]: z_{k+1} = F(z_k, u_k) z_k + B(z_k, u_k) u_k with F, B, Q evaluated at the
// mean; P_{k+1} = F P_k F^T + Q. Outputs H predicted means [n_z, H], covariances
// [n_z*n_z, H], and (if images != nullptr) decoded mean images [D, H] from a = H z.
template <class T> void forecast(Tape<T> & t, Ekvae<T> & m, const Mat<T> & z, const Mat<T> & P, const Mat<T> & U,
                                 Mat<T> & zs, Mat<T> & Ps, Mat<T> * images = nullptr);

// One filter step for a single stream (the app): from (z, P) predicted with u_prev (or the
// prior when first), updated with frame x [D, 1] unless x == nullptr (only predicts).
template <class T> void filter_step(Tape<T> & t, Ekvae<T> & m, Mat<T> & z, Mat<T> & P, bool first, T u_prev, const Mat<T> * x);

// The state read off column `col` of z [n_z, N] with covariances P [n_z*n_z, N] through the
// linear read-out: theta = atan2(sin, cos) and omega, with standard deviations by linearisation
// (sigma^2 = g^T P g, g the gradient of the read-out quantity in z). Requires has_readout.
struct Readout {
    double theta = 0, sigma_theta = 0, omega = 0, sigma_omega = 0;
};
template <class T> Readout readout(const Ekvae<T> & m, const Mat<T> & z, const Mat<T> & P, int col = 0);

// ---- constrained optimisation -------------------------------------------------------------
// lambda's update, once per training step from the batch distortion D (nats per frame).
// lambda_rule "ekvae":
//   Dbar   <- ma Dbar + (1 - ma) D                  (Dbar starts at the first D)
//   log lambda <- log lambda + clip(rate (Dbar - D0), -max_step, max_step)
//   lambda <- clamp(lambda, lambda_min, lambda_max)
// so lambda rises while the constraint D <= D0 is violated and falls once it holds, at most
// by a factor exp(max_step) per step either way; the loss is R + lambda (D - D0).
// lambda_warmup "hold" / "rate_off" keep lambda at lambda_init until Dbar first meets D0
// (no wind-up while the untrained decoder is far above D0); "rate_off" also leaves the rate
// out of the loss until then (loss = D). lambda_scale "normalized" divides the loss by
// 1 + lambda, so its scale does not grow with lambda.
// lambda_rule "authors" (the idea of argmax-ai/deep-variational-bayes-filters, beta_update.py):
// Dbar with decay 0.99; loss = D alone until Dbar first meets D0, then D + R / lambda; every
// 100 steps lambda <- lambda * clip(exp(rate f (Dbar - D0)), 0.9, 1.05) with f = 1 while the
// constraint is violated and f = -tanh(100 (1/lambda - 1)) once it holds (lambda is driven
// back toward 1, the ELBO, instead of falling far below it: the clipped factors make it circle
// within about 10% of 1).
struct LambdaState {
    double lambda = 1.0;
    double D_ma = 0.0;
    bool started = false;
    bool warm = true;    // the warm-up is over (Dbar has met D0), or there is none
    void init(const EkvaeConfig & cfg);
    // after training step `step` (1-based) with batch distortion D
    void update(const EkvaeConfig & cfg, double D, int64_t step = 0);
    // the loss weights for the next step
    LossWeights weights(const EkvaeConfig & cfg) const;
};

// ---- training ------------------------------------------------------------------------------
// A random batch of windows: B sequences drawn uniformly (with replacement), each with a
// uniform start; X [D, window*B], U [n_u, window*B] time-major.
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

// Everything a run needs to continue exactly: the model, the optimiser, lambda, RNG, step.
struct Trainer {
    EkvaeConfig cfg;
    Ekvae<float> model;
    Adam<float> opt;
    LambdaState lam;
    Rng rng{0};
    int64_t step = 0;
    int64_t rejected = 0; // non-finite steps skipped
    // restarts: the start being trained, the best finished one and its state
    const Dataset * validation = nullptr; // held-out data for choosing among starts
    int start = 0;
    int best_start = -1;
    std::vector<double> start_scores;
    std::vector<uint8_t> best_state;      // checkpoint bytes of the best finished start
    // per-thread replicas for a data-parallel batch
    std::vector<std::unique_ptr<Ekvae<float>>> replicas;
    std::vector<std::unique_ptr<Tape<float>>> tapes;
    std::vector<Mat<float>> Xs, Us; // each thread's share of the batch (the tapes read them in place)
    std::vector<Mat<float>> backup;  // the parameters before an update (restored if it is non-finite)
    std::shared_ptr<struct TrainerPool> pool; // worker threads kept from step to step

    // validation: held-out data for choosing among starts (needed when cfg.restarts > 1; it
    // must outlive the Trainer).
    void init(const EkvaeConfig & c, const Dataset * validation = nullptr);
    // One step on a batch: splits the batch over cfg.threads, sums gradients, updates the
    // parameters (unless the loss or a gradient is non-finite: the step is rejected and
    // reported in the stats, parameters untouched), then lambda. With restarts, the step that
    // ends a start scores it on the validation data and begins the next start (or, after the
    // last, continues the best one).
    StepStats train_step(const Mat<float> & X, const Mat<float> & U);
    bool choosing() const { return cfg.restarts > 1 && start < cfg.restarts; }
    // Checkpoint = model + Adam state + lambda + RNG + step, as safetensors bytes.
    std::vector<uint8_t> checkpoint() const;
    bool restore(const uint8_t * data, size_t size, std::string & err);

  private:
    void begin_start(int k);
    void end_start(StepStats & st);
    std::vector<uint8_t> checkpoint_impl(bool with_starts) const;
    bool restore_impl(const uint8_t * data, size_t size, std::string & err, bool nested);
};

// ---- evaluation ------------------------------------------------------------------------------
struct EvalMetrics {
    double r2_cos = 0, r2_sin = 0, r2_omega = 0;
    double r2knn_cos = 0, r2knn_sin = 0, r2knn_omega = 0;
    std::vector<int> horizons;                 // 1, 5, 10, 20, 32
    std::vector<double> forecast_mse, baseline_mse, forecast_angle_err, baseline_angle_err;
    std::vector<double> angle_err_curve, baseline_angle_curve, mse_curve, baseline_mse_curve; // every horizon 1..32
    double elbo = 0, distortion = 0, rate = 0;
    int sequences = 0;
};
// The metrics of the EKVAE issue on dataset d (needs T >= 48). Fits the linear read-out on
// the first half of the sequences; when fit_readout, stores it into m.
void evaluate(Ekvae<float> & m, const Dataset & d, EvalMetrics & out, bool fit_readout, uint64_t seed = 0);
// Fits the linear read-out z -> (cos, sin, omega) by least squares on smoothed means.
void fit_readout(Ekvae<float> & m, const Dataset & d, int max_sequences = 200);
std::string metrics_to_json(const EvalMetrics & e, int indent = 2);
// The name of the first non-finite metric ("r2.omega", "elbo", ...), or "" when all are finite.
std::string metrics_nonfinite(const EvalMetrics & e);
// Runs a loaded model on two short rendered sequences (filter, smoother, forecast, decoder,
// objective) and checks every output is finite: weights that are finite but huge pass the
// loader and produce NaN here. Returns false and sets err naming the first non-finite output.
bool ekvae_check_outputs(Ekvae<float> & m, std::string & err);

// Least squares with intercept from Z [N, p] onto y [N] (fit rows), R^2 on the test rows.
double r2_linear(const Eigen::MatrixXd & Zfit, const Eigen::VectorXd & yfit, const Eigen::MatrixXd & Ztest, const Eigen::VectorXd & ytest);
double r2_knn(const Eigen::MatrixXd & Zfit, const Eigen::VectorXd & yfit, const Eigen::MatrixXd & Ztest, const Eigen::VectorXd & ytest, int k);

} // namespace ekvae
