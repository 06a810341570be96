// pendulum.h: the pendulum world ekvae learns from and its renderer.
//
// The world is exactly gym's Pendulum-v1 update (theta = 0 upright), so results compare with
// published work:
//   omega' = clip(omega + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -max_speed, max_speed)
//   theta' = theta + omega' dt            (reported wrapped to (-pi, pi])
//   u is clipped to [-max_torque, max_torque]
// State (theta, omega), one action (the torque u), read-out targets (cos, sin, omega).
#pragma once
#include "world.h"

namespace ekvae {

struct PendulumParams {
    double g = 10.0;
    double m = 1.0;
    double l = 1.0;
    double dt = 0.05;
    double max_speed = 8.0;
    double max_torque = 2.0;
};

struct PendulumState {
    double theta = 0.0; // angle, 0 = upright, wrapped to (-pi, pi]
    double omega = 0.0; // angular velocity (rad/s)
};

// One step of the world under torque u (clipped). Returns the next state, theta wrapped.
PendulumState pendulum_step(const PendulumParams & p, PendulumState s, double u);

// Render the pendulum at angle theta into a W*W grayscale image in [0, 1], row-major
// (out[i*W + j] is row i, column j). Pixel (i, j) covers [j, j+1] x [i, i+1]; the rod runs
// from c = (W/2, W/2) to c + r (sin theta, -cos theta), r = 0.8 W/2. A pixel's intensity is
// the fraction of its 4x4 sub-sample points (offsets (k + 0.5)/4) within 0.75 W/16 of the rod.
void render_pendulum(double theta, int W, float * out); // out: [W*W]

// The angle shown by an image: intensity-weighted centroid (pixel centres at (j+0.5, i+0.5)),
// angle = atan2(xbar - W/2, -(ybar - W/2)). Returns 0 for an all-zero image.
double image_angle(const float * img, int W); // img: [W*W]

// The pendulum as a World: draws theta_0 ~ U(-pi, pi), omega_0 ~ U(-1, 1), then per step
// u ~ U(-max_torque, max_torque); parameters g, m, l, dt, max_speed, max_torque.
class PendulumWorld : public World {
public:
    explicit PendulumWorld(const PendulumParams & params = {});
    PendulumParams p;

    std::vector<Param> param_table() const override;
    void initial_state(Rng & rng, double * s) const override;
    void random_action(Rng & rng, double * u) const override;
    void step(const double * s, const double * u, double * next) const override;
    void render(const double * s, int W, float * out) const override;
    void image_angles(const float * img, int W, double * angles) const override;
    std::vector<double> skeleton(const double * s) const override; // pivot, tip
    std::unique_ptr<World> clone() const override { return std::make_unique<PendulumWorld>(*this); }
};

std::unique_ptr<World> make_pendulum_world();

} // namespace ekvae
