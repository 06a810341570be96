// arm.h: the two-link arm world and its renderer.
//
// A planar arm hanging in a vertical plane, a double pendulum with a motor at each joint: link 1
// turns about a fixed shoulder at the image centre, link 2 about the elbow at link 1's end, each
// joint driven by its own torque and damped, gravity pulling down the image. Point masses m1 at
// the elbow and m2 at the hand, massless links of lengths l1, l2.
// State (theta1, theta2, omega1, omega2): theta1 is link 1's angle (0 = up in the image,
// positive clockwise, as the pendulum's theta), theta2 the elbow angle of link 2 relative to
// link 1 (0 = straight), both wrapped to (-pi, pi]; omega = d theta / dt.
//
// Equations of motion (Lagrangian of the two point masses, q = (theta1, theta2)):
//   M(q) q'' + c(q, q') + b q' = u + g(q)
//   M11 = (m1 + m2) l1^2 + m2 l2^2 + 2 m2 l1 l2 cos theta2
//   M12 = M21 = m2 l2^2 + m2 l1 l2 cos theta2,   M22 = m2 l2^2
//   c1 = -m2 l1 l2 sin theta2 (2 omega1 omega2 + omega2^2),   c2 = m2 l1 l2 sin theta2 omega1^2
//   g1 = (m1 + m2) g l1 sin theta1 + m2 g l2 sin(theta1 + theta2),   g2 = m2 g l2 sin(theta1 + theta2)
// (g(q) = -dV/dq of V = (m1 + m2) g l1 cos theta1 + m2 g l2 cos(theta1 + theta2): theta = 0 is
// up, so the arm hangs at theta1 = pi, theta2 = 0). An optional spring at each joint (stiffness,
// 0 by default) adds -stiffness sin theta_i; g = 0 is the arm seen from above.
// u is clipped to [-max_torque, max_torque] per joint and held over a step of dt, integrated
// by `substeps` classic Runge-Kutta (RK4) steps; then each omega is clipped to
// [-max_speed, max_speed] and the angles wrapped.
//
// Why gravity (docs/results.md, the arm): seen from above (g = 0), no run of the arm held the
// elbow's velocity in its latent state; without a potential a link's (position, Cartesian
// velocity) is an equally simple state for the locally-linear transition, and the models chose
// it. With gravity, as for the pendulum, (angle, angular velocity) is the simpler one.
//
// Renderer: the shoulder at the image centre, the arm scaled so l1 + l2 spans 0.85 W/2.
// Link 1 is drawn at intensity 0.5 and link 2 at 1 (the brighter one on top), both with
// radius 0.75 W/16 as the pendulum's rod, so both angles can be read from one frame, even
// folded (theta2 = pi puts the bright link 2 over the end of the dim link 1, since l2 < l1).
#pragma once
#include "world.h"

namespace ekvae {

struct ArmParams {
    double l1 = 1.0, l2 = 0.8;   // link lengths (m); the renderer needs l2 < l1
    double m1 = 1.0, m2 = 1.0;   // point masses at the elbow and the hand (kg)
    double damping = 0.3;        // viscous friction at each joint (N m s / rad)
    double dt = 0.05;            // seconds per step
    double substeps = 4;         // RK4 steps per step (an integer >= 1)
    double max_speed = 8.0;      // |omega_i| clip (rad/s)
    double max_torque = 2.0;     // |u_i| clip (N m)
    double init_speed = 3.0;     // the generator's omega_i(0) ~ U(-init_speed, init_speed)
    double g = 5.0;              // gravity (m/s^2), down the image; 0: the arm seen from above
    double stiffness = 0.0;      // a spring at each joint, torque -stiffness sin(theta_i) (N m), pulling towards 0
};

// One step under torques u [2] (clipped): s, next [4] = (theta1, theta2, omega1, omega2).
void arm_step(const ArmParams & p, const double * s, const double * u, double * next);
// d/dt of the state s [4] under torques u [2] (not clipped): ds [4].
void arm_derivative(const ArmParams & p, const double * s, const double * u, double * ds);

// The arm at angles (theta1, theta2) into out [W*W] (see the top of this file).
void render_arm(const ArmParams & p, double theta1, double theta2, int W, float * out);
// The elbow and hand in pixel coordinates (x right, y down): xy [4] = (ex, ey, hx, hy).
void arm_joints_px(const ArmParams & p, double theta1, double theta2, int W, double * xy);

// The angles (theta1, theta2) shown by an image [W*W], by template matching: the rendered
// arm closest in squared error on a 10-degree grid of both angles, refined by a pattern
// search down to ~0.1 degree. Copes with blurred (decoded) images; an empty image gives 0, 0.
void arm_image_angles(const ArmParams & p, const float * img, int W, double * angles);

// The arm as a World: draws theta1, theta2 ~ U(-pi, pi), omega1, omega2 ~ U(-init_speed,
// init_speed), then per step u ~ U(-max_torque, max_torque)^2. Parameters l1, l2, m1, m2,
// damping, dt, substeps, max_speed, max_torque, init_speed, g, stiffness. Default image size 24.
// The speeds are those of the pendulum's data (a few rad/s: a link's end moves about a pixel
// per frame); much slower arms move a fraction of a pixel per frame and their velocities can
// hardly be read from the images.
class ArmWorld : public World {
public:
    explicit ArmWorld(const ArmParams & params = {});
    ArmParams p;

    std::vector<Param> param_table() const override;
    // arm datasets written before 2026-12-06 have no g and no stiffness: they were made with 0
    bool param_before_key(const std::string & key, double & value) const override;
    void initial_state(Rng & rng, double * s) const override;
    void random_action(Rng & rng, double * u) const override;
    void step(const double * s, const double * u, double * next) const override;
    void render(const double * s, int W, float * out) const override;
    void image_angles(const float * img, int W, double * angles) const override;
    std::vector<double> skeleton(const double * s) const override; // shoulder, elbow, hand
    std::unique_ptr<World> clone() const override { return std::make_unique<ArmWorld>(*this); }
};

std::unique_ptr<World> make_arm_world();

} // namespace ekvae
