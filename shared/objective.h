// objective.h: the EKVAE's objective on one batch, and lambda of the constrained optimisation.
//
//   distortion D = -E[log p(x | a)]
//   rate       R =  E[log q(a | x) + log p(z | a, u) - log p(a | z) - log p(z | u)]
// both per time step. Objectives: "elbo" minimises R + D; "constrained" minimises the
// Lagrangian R + lambda (D - D0), lambda >= 0 updated from a moving average of D (see
// LambdaState).
#pragma once
#include "kalman.h"

namespace ekvae {

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
// within about 10% of 1). lambda_warmup "skip" drops the warm-up of either rule: with
// "authors" the loss is D + R / lambda from the first step (the ELBO while lambda = 1) and
// lambda rises every 100 steps while the untrained decoder is above D0.
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

} // namespace ekvae
