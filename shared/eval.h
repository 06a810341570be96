// eval.h: the quality measures of a trained model on a dataset: linear and k-NN r^2 of the
// world's state from the smoothed latent means, open-loop forecasts against the
// repeat-last-frame baseline, and the held-out ELBO; plus a finiteness check for loaded files.
#pragma once
#include "train.h"

#include <string>
#include <vector>

namespace ekvae {

// The forecast protocol: filter the first kForecastFilterSteps frames of a sequence, then
// predict the next kForecastHorizon frames open-loop under the true actions.
constexpr int kForecastFilterSteps = 16;
constexpr int kForecastHorizon = 32;
constexpr int kForecastSequenceSteps = kForecastFilterSteps + kForecastHorizon; // sequences must be this long
constexpr int kEvalChunk = 50;      // sequences per batch of inference
constexpr int kReadoutSequences = 200; // sequences the model file's read-out is fitted on

struct EvalMetrics {
    std::vector<std::string> targets;     // the world's read-out targets (pendulum: cos, sin, omega)
    std::vector<double> r2, r2_knn;       // [targets]: linear and 10-NN r^2, fitted on the first half
    std::vector<int> horizons;            // 1, 5, 10, 20, 32
    // at the horizons; angle errors are the mean over the world's angles (radians, read off
    // the images with World::image_angles), velocity errors the mean absolute error over its
    // other components through the linear read-out (baseline: the last filtered estimate held)
    std::vector<double> forecast_mse, baseline_mse, forecast_angle_err, baseline_angle_err;
    std::vector<double> forecast_velocity_err, baseline_velocity_err;
    std::vector<double> angle_err_curve, baseline_angle_curve, mse_curve, baseline_mse_curve; // every horizon 1..32
    std::vector<std::string> angle_names;                  // the world's angles
    std::vector<std::vector<double>> angle_err_by_angle;   // [angles][horizons] (reported when there are several)
    std::vector<std::vector<double>> baseline_by_angle;
    double elbo = 0, distortion = 0, rate = 0;
    int sequences = 0;

    // r^2 of a target by name (NaN when the world has no such target)
    double r2_of(const std::string & target, bool knn = false) const;
};

// The metrics on dataset d (needs T >= kForecastSequenceSteps for the forecasts). Fits the
// linear read-out on the first half of the sequences; when fit_readout, stores it into m.
void evaluate(Ekvae<float> & m, const Dataset & d, EvalMetrics & out, bool fit_readout, uint64_t seed = 0);
// Fits the linear read-out z -> the world's targets by least squares on smoothed means.
void fit_readout(Ekvae<float> & m, const Dataset & d, int max_sequences = kReadoutSequences);
// The generated data of a run (its world, image size and seeds): the training set
// (cfg.train_sequences x cfg.sequence_steps from cfg.train_seed) and the held-out set that
// chooses among starts and is probed (cfg.test_sequences from cfg.test_seed, long enough for
// the forecast protocol). Either pointer may be null. False and err when the generator refuses.
bool generate_run_data(const EkvaeConfig & cfg, Dataset * train, Dataset * heldout, std::string & err);
// A trained model as a model file (safetensors bytes): the read-out fitted on the first
// max_sequences of its training data first (what ekvae_train writes and the app loads).
std::vector<uint8_t> model_file_bytes(Ekvae<float> & m, const Dataset & train, int max_sequences = kReadoutSequences);
// The latent space of a model on held-out data, for plots: the smoothed means of the first
// `sequences` of d projected on their two principal axes, P [sequences*T, 2] (sequence-major),
// and the true states beside them, states [sequences*T, S].
void latent_plane(Ekvae<float> & m, const Dataset & d, int sequences, Eigen::MatrixXd & P, Eigen::MatrixXd & states);
// The quality bar of a world (docs/results.md; scripts/sweep_report.py's BARS are the same checks):
// pendulum: k-NN r^2 of cos and sin >= 0.95, linear r^2 of omega >= 0.9, forecast angle error
// <= 0.3 rad at 10 steps and <= 0.6 at 32; arm: linear r^2 of omega1 and omega2 >= 0.8,
// forecast angle error <= 1/3 of the baseline's at 10 steps and <= 1/2 at 32.
struct BarCheck {
    std::string name;    // "r2_knn_cos", "angle_err_10", "angle_ratio_32", ...
    double value, limit;
    bool at_least;       // value >= limit (else value <= limit)
    bool met;
};
std::vector<BarCheck> quality_bar(const EvalMetrics & e, const std::string & world); // {} for a world without a bar
// Every check met, and there is at least one: a world without a bar never reads as "met".
bool bar_met(const std::vector<BarCheck> & bar);
// metrics.json: r2 and r2_knn by target name, forecast_* / baseline_* by horizon, the curves,
// elbo, distortion, rate, sequences (the pendulum's keys r2.cos, forecast_angle_err, ...).
std::string metrics_to_json(const EvalMetrics & e, int indent = 2);
// The name of the first non-finite metric ("r2.omega", "elbo", ...), or "" when all are finite.
std::string metrics_nonfinite(const EvalMetrics & e);
// Runs a loaded model on two short sequences of its world (filter, smoother, forecast,
// decoder, objective, read-out) and checks every output is finite: weights that are finite
// but huge pass the loader and produce NaN here. Returns false and sets err naming the first
// non-finite output.
bool ekvae_check_outputs(Ekvae<float> & m, std::string & err);

// Least squares with intercept from Z [N, p] onto y [N] (fit rows), R^2 on the test rows.
double r2_linear(const Eigen::MatrixXd & Zfit, const Eigen::VectorXd & yfit, const Eigen::MatrixXd & Ztest, const Eigen::VectorXd & ytest);
double r2_knn(const Eigen::MatrixXd & Zfit, const Eigen::VectorXd & yfit, const Eigen::MatrixXd & Ztest, const Eigen::VectorXd & ytest, int k);

} // namespace ekvae
