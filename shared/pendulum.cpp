// pendulum.cpp: the Pendulum-v1 world and its renderer (see pendulum.h).
//
// Reproducibility: datasets must be the same bytes on every machine (and in WebAssembly).
// So all arithmetic is done in double and only converted to float at the end, this file is
// compiled with -ffp-contract=off (no fused multiply-add), and sin/cos come from
// portable_sin_cos (world.h) instead of the C library, whose last bit differs between libms.
#include "pendulum.h"

#include <cmath>

namespace ekvae {

namespace {
constexpr double kPi = 3.14159265358979311600e+00; // nearest double to pi
} // namespace

PendulumState pendulum_step(const PendulumParams & p, PendulumState s, double u) {
    u = clip(u, -p.max_torque, p.max_torque);
    double sin_theta, cos_theta;
    portable_sin_cos(s.theta, sin_theta, cos_theta);
    // omega' = clip(omega + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -max_speed, max_speed)
    double accel = 3.0 * p.g / (2.0 * p.l) * sin_theta + 3.0 / (p.m * p.l * p.l) * u;
    double omega = clip(s.omega + accel * p.dt, -p.max_speed, p.max_speed);
    // theta' = theta + omega' dt
    PendulumState next;
    next.theta = wrap_angle(s.theta + omega * p.dt);
    next.omega = omega;
    return next;
}

void render_pendulum(double theta, int W, float * out) {
    double sin_theta, cos_theta;
    portable_sin_cos(theta, sin_theta, cos_theta);
    // rod from c = (W/2, W/2) to tip = c + r (sin theta, -cos theta), r = 0.8 W/2
    const double rod = 0.8 * W / 2.0;
    const Capsule c{0.5 * W, 0.5 * W, rod * sin_theta, -rod * cos_theta, 0.75 * W / 16.0, 1.0};
    render_capsules(&c, 1, W, out);
}

double image_angle(const float * img, int W) {
    // intensity-weighted centroid of the pixel centres
    double total = 0.0, sx = 0.0, sy = 0.0;
    for (int i = 0; i < W; i++)
        for (int j = 0; j < W; j++) {
            double v = img[(size_t)i * W + j];
            total += v;
            sx += v * (j + 0.5);
            sy += v * (i + 0.5);
        }
    if (total <= 0.0) return 0.0;
    double xbar = sx / total, ybar = sy / total;
    // theta = 0 points up (image y grows downward)
    return std::atan2(xbar - 0.5 * W, -(ybar - 0.5 * W));
}

// ---- the World ----------------------------------------------------------------------------

PendulumWorld::PendulumWorld(const PendulumParams & params) : p(params) {
    name = "pendulum";
    description = "gym's Pendulum-v1: one rod, gravity, a torque at the pivot (theta = 0 upright)";
    title = "pendulum";
    state_names = {"theta", "omega"};
    angle = {true, false};
    action_names = {"torque"};
    S = (int)state_names.size();
    U = (int)action_names.size();
    target_names = {"cos", "sin", "omega"};
    state_range_keys = {"", "max_speed"};
    action_range_key = "max_torque";
    default_image_size = 16;
    rest = {kPi, 0.0};        // hanging down
    demo_start = {kPi, 1.0};  // hanging down with a small push
}

std::vector<World::Param> PendulumWorld::param_table() const {
    return {{"g", &p.g, Range::Finite},       {"m", &p.m, Range::Positive},         {"l", &p.l, Range::Positive},
            {"dt", &p.dt, Range::Positive},    {"max_speed", &p.max_speed, Range::Positive},
            {"max_torque", &p.max_torque, Range::NonNegative}};
}

void PendulumWorld::initial_state(Rng & rng, double * s) const {
    s[0] = wrap_angle(draw_uniform(rng, -kPi, kPi)); // U(-pi, pi) lies in [-pi, pi)
    s[1] = draw_uniform(rng, -1.0, 1.0);
}

void PendulumWorld::random_action(Rng & rng, double * u) const { u[0] = draw_uniform(rng, -p.max_torque, p.max_torque); }

void PendulumWorld::step(const double * s, const double * u, double * next) const {
    const PendulumState n = pendulum_step(p, PendulumState{s[0], s[1]}, u[0]);
    next[0] = n.theta;
    next[1] = n.omega;
}

void PendulumWorld::render(const double * s, int W, float * out) const { render_pendulum(s[0], W, out); }

void PendulumWorld::image_angles(const float * img, int W, double * angles) const { angles[0] = image_angle(img, W); }

std::vector<double> PendulumWorld::skeleton(const double * s) const {
    double sn, cs;
    portable_sin_cos(s[0], sn, cs);
    return {0.0, 0.0, sn, cs};
}

std::unique_ptr<World> make_pendulum_world() { return std::make_unique<PendulumWorld>(); }

} // namespace ekvae
