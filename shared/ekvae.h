// ekvae.h: the whole core in one include. The Extended Kalman VAE (Klushyn et al., "Latent Matters", NeurIPS 2021).
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
//
// The modules, each with its own header (docs/architecture.md shows how they connect):
//   world.h      World interface, datasets          pendulum.h         the pendulum world
//                                                   arm.h              the two-link arm world
//   autodiff.h   the tape                           nn.h               layers, Adam
//   kalman_ops.h fused Kalman steps on the tape     safetensors.h      the file format
//   config.h     every setting                      model.h            parameters, model file, read-out
//   kalman.h     transition, filter, smoother, forecast
//   objective.h  the ELBO / Lagrangian, lambda      train.h            batches, Trainer
//   eval.h       r^2 probes, forecasts, metrics
#pragma once
#include "arm.h"
#include "autodiff.h"
#include "config.h"
#include "eval.h"
#include "kalman.h"
#include "kalman_ops.h"
#include "model.h"
#include "nn.h"
#include "objective.h"
#include "pendulum.h"
#include "rng.h"
#include "safetensors.h"
#include "train.h"
#include "world.h"
