// arm.cpp: the two-link arm world, its renderer and its image read-out (see arm.h).
//
// Reproducibility as in pendulum.cpp: double arithmetic, no fused multiply-add (the tree is
// built with -ffp-contract=off), portable_sin_cos for every sine and cosine of the data.
#include "arm.h"

#include <Eigen/Dense>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

namespace ekvae {

namespace {

constexpr double kPi = 3.14159265358979311600e+00; // nearest double to pi
constexpr int kGrid = 36;                           // template grid: 10 degrees per angle

// pixels per metre: l1 + l2 spans 0.85 W/2
double arm_scale(const ArmParams & p, int W) { return 0.85 * (0.5 * W) / (p.l1 + p.l2); }

// |a - b|^2 over n pixels (float: only compared with other such sums)
float sq_err(const float * a, const float * b, int n) {
    float e = 0.0f;
    for (int i = 0; i < n; i++) e += (a[i] - b[i]) * (a[i] - b[i]);
    return e;
}

// x [W*W] smoothed in place by the separable kernel [1 2 1] / 4 (edges repeated): matching
// smoothed images makes the squared error vary smoothly with the angles, for sharp rendered
// frames and blurred decoded ones alike.
void smooth(float * x, int W) {
    std::vector<float> t((size_t)W * W);
    for (int i = 0; i < W; i++)
        for (int j = 0; j < W; j++) {
            const float * r = x + (size_t)i * W;
            t[(size_t)i * W + j] = 0.25f * r[j > 0 ? j - 1 : 0] + 0.5f * r[j] + 0.25f * r[j + 1 < W ? j + 1 : W - 1];
        }
    for (int i = 0; i < W; i++)
        for (int j = 0; j < W; j++) {
            const int a = i > 0 ? i - 1 : 0, b = i + 1 < W ? i + 1 : W - 1;
            x[(size_t)i * W + j] = 0.25f * t[(size_t)a * W + j] + 0.5f * t[(size_t)i * W + j] + 0.25f * t[(size_t)b * W + j];
        }
}

// The arm rendered (and smoothed) at every grid point, theta1 = -pi + 2 pi i / kGrid and theta2
// = -pi + 2 pi k / kGrid, with the squared norms the matching needs.
struct TemplateBank {
    Eigen::MatrixXf templates; // [W*W, kGrid * kGrid], column i * kGrid + k
    Eigen::VectorXf norms;     // [kGrid * kGrid] |t|^2
};

// One bank per (l1, l2, W), built on first use and kept (a few hundred kB each).
std::shared_ptr<const TemplateBank> template_bank(const ArmParams & p, int W) {
    static std::mutex mu;
    static std::map<std::tuple<double, double, int>, std::shared_ptr<const TemplateBank>> banks;
    std::lock_guard<std::mutex> lock(mu);
    auto & slot = banks[std::make_tuple(p.l1, p.l2, W)];
    if (!slot) {
        auto b = std::make_shared<TemplateBank>();
        b->templates.resize((Eigen::Index)W * W, kGrid * kGrid);
        for (int i = 0; i < kGrid; i++)
            for (int k = 0; k < kGrid; k++) {
                float * t = b->templates.col(i * kGrid + k).data();
                render_arm(p, -kPi + 2 * kPi * i / kGrid, -kPi + 2 * kPi * k / kGrid, W, t);
                smooth(t, W);
            }
        b->norms = b->templates.colwise().squaredNorm().transpose();
        slot = b;
    }
    return slot;
}

} // namespace

void arm_derivative(const ArmParams & p, const double * s, const double * u, double * ds) {
    const double w1 = s[2], w2 = s[3];
    double s2, c2;
    portable_sin_cos(s[1], s2, c2);
    const double m2l1l2 = p.m2 * p.l1 * p.l2;
    const double M11 = (p.m1 + p.m2) * p.l1 * p.l1 + p.m2 * p.l2 * p.l2 + 2.0 * m2l1l2 * c2;
    const double M12 = p.m2 * p.l2 * p.l2 + m2l1l2 * c2;
    const double M22 = p.m2 * p.l2 * p.l2;
    const double h = m2l1l2 * s2;
    // right-hand side u - b omega - c(q, omega)
    double r1 = u[0] - p.damping * w1 + h * (2.0 * w1 * w2 + w2 * w2);
    double r2 = u[1] - p.damping * w2 - h * w1 * w1;
    if (p.g != 0.0) { // -dV/dq of V = (m1 + m2) g l1 cos theta1 + m2 g l2 cos(theta1 + theta2)
        double s1, c1, s12, c12;
        portable_sin_cos(s[0], s1, c1);
        portable_sin_cos(s[0] + s[1], s12, c12);
        r1 += (p.m1 + p.m2) * p.g * p.l1 * s1 + p.m2 * p.g * p.l2 * s12;
        r2 += p.m2 * p.g * p.l2 * s12;
    }
    if (p.stiffness != 0.0) {
        double s1, c1;
        portable_sin_cos(s[0], s1, c1);
        r1 -= p.stiffness * s1;
        r2 -= p.stiffness * s2;
    }
    // M^-1 r by Cramer's rule; det = m2 l1^2 l2^2 (m1 + m2 sin^2 theta2) > 0
    const double det = M11 * M22 - M12 * M12;
    ds[0] = w1;
    ds[1] = w2;
    ds[2] = (M22 * r1 - M12 * r2) / det;
    ds[3] = (M11 * r2 - M12 * r1) / det;
}

void arm_step(const ArmParams & p, const double * s, const double * u_in, double * next) {
    const double u[2] = {clip(u_in[0], -p.max_torque, p.max_torque), clip(u_in[1], -p.max_torque, p.max_torque)};
    const int n = p.substeps < 1 ? 1 : (int)p.substeps;
    const double h = p.dt / n;
    double x[4] = {s[0], s[1], s[2], s[3]};
    double k1[4], k2[4], k3[4], k4[4], y[4];
    for (int it = 0; it < n; it++) {
        arm_derivative(p, x, u, k1);
        for (int i = 0; i < 4; i++) y[i] = x[i] + 0.5 * h * k1[i];
        arm_derivative(p, y, u, k2);
        for (int i = 0; i < 4; i++) y[i] = x[i] + 0.5 * h * k2[i];
        arm_derivative(p, y, u, k3);
        for (int i = 0; i < 4; i++) y[i] = x[i] + h * k3[i];
        arm_derivative(p, y, u, k4);
        for (int i = 0; i < 4; i++) x[i] = x[i] + h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    }
    next[0] = wrap_angle(x[0]);
    next[1] = wrap_angle(x[1]);
    next[2] = clip(x[2], -p.max_speed, p.max_speed);
    next[3] = clip(x[3], -p.max_speed, p.max_speed);
}

void arm_joints_px(const ArmParams & p, double theta1, double theta2, int W, double * xy) {
    const double sc = arm_scale(p, W);
    double s1, c1, s12, c12;
    portable_sin_cos(theta1, s1, c1);
    portable_sin_cos(theta1 + theta2, s12, c12);
    xy[0] = 0.5 * W + sc * p.l1 * s1;
    xy[1] = 0.5 * W - sc * p.l1 * c1;
    xy[2] = xy[0] + sc * p.l2 * s12;
    xy[3] = xy[1] - sc * p.l2 * c12;
}

void render_arm(const ArmParams & p, double theta1, double theta2, int W, float * out) {
    double xy[4];
    arm_joints_px(p, theta1, theta2, W, xy);
    const double radius = 0.75 * W / 16.0;
    const Capsule caps[2] = {
        {0.5 * W, 0.5 * W, xy[0] - 0.5 * W, xy[1] - 0.5 * W, radius, 0.5}, // link 1, dim
        {xy[0], xy[1], xy[2] - xy[0], xy[3] - xy[1], radius, 1.0},         // link 2, bright
    };
    render_capsules(caps, 2, W, out);
}

void arm_image_angles(const ArmParams & p, const float * img, int W, double * angles) {
    const int px = W * W;
    double total = 0.0;
    for (int i = 0; i < px; i++) total += img[i];
    angles[0] = angles[1] = 0.0;
    if (!(total > 0.0)) return;
    // 1. the closest template: argmin |img - t|^2 = argmin |t|^2 - 2 img.t
    const std::shared_ptr<const TemplateBank> bank = template_bank(p, W);
    std::vector<float> xs(img, img + px);
    smooth(xs.data(), W);
    const Eigen::Map<const Eigen::VectorXf> x(xs.data(), px);
    const Eigen::VectorXf score = bank->norms - 2.0f * (bank->templates.transpose() * x); // [grid]
    Eigen::Index best = 0;
    score.minCoeff(&best);
    const float best_e = score(best) + x.squaredNorm();
    // 2. pattern search over the links' absolute angles (theta1, phi = theta1 + theta2), which
    // the image constrains more independently than (theta1, theta2): try the 8 neighbours at
    // distance h, move to the best improvement, else halve h
    double th[2] = {-kPi + 2 * kPi * (best / kGrid) / kGrid, 0.0};
    th[1] = th[0] + (-kPi + 2 * kPi * (best % kGrid) / kGrid);
    std::vector<float> r((size_t)px);
    float e0 = best_e;
    for (double h = kPi / kGrid; h > 0.004;) {
        float be = e0;
        double b0 = th[0], b1 = th[1];
        for (int di = -1; di <= 1; di++)
            for (int dj = -1; dj <= 1; dj++) {
                if (!di && !dj) continue;
                const double c0 = th[0] + di * h, c1 = th[1] + dj * h;
                render_arm(p, c0, c1 - c0, W, r.data());
                smooth(r.data(), W);
                const float e = sq_err(xs.data(), r.data(), px);
                if (e < be) { be = e; b0 = c0; b1 = c1; }
            }
        if (be < e0) { e0 = be; th[0] = b0; th[1] = b1; }
        else h *= 0.5;
    }
    th[1] -= th[0];
    angles[0] = wrap_angle(th[0]);
    angles[1] = wrap_angle(th[1]);
}

// ---- the World ----------------------------------------------------------------------------

ArmWorld::ArmWorld(const ArmParams & params) : p(params) {
    name = "arm";
    description = "a two-link arm hanging in a vertical plane (a double pendulum), a torque at each joint, damped";
    title = "two-link arm";
    state_names = {"theta1", "theta2", "omega1", "omega2"};
    angle = {true, true, false, false};
    action_names = {"torque1", "torque2"};
    S = (int)state_names.size();
    U = (int)action_names.size();
    target_names = {"cos1", "sin1", "cos2", "sin2", "omega1", "omega2"};
    state_range_keys = {"", "", "max_speed", "max_speed"};
    action_range_key = "max_torque";
    default_image_size = 24;
    rest = {kPi, 0.0, 0.0, 0.0};        // both links hanging down (theta2 is relative to link 1)
    demo_start = {0.6, -0.9, 0.0, 1.0}; // link 1 near upright, bent at the elbow, the elbow moving
}

std::vector<World::Param> ArmWorld::param_table() const {
    return {{"l1", &p.l1, Range::Positive},           {"l2", &p.l2, Range::Positive},
            {"m1", &p.m1, Range::Positive},           {"m2", &p.m2, Range::Positive},
            {"damping", &p.damping, Range::NonNegative}, {"dt", &p.dt, Range::Positive},
            {"substeps", &p.substeps, Range::Count},  {"max_speed", &p.max_speed, Range::Positive},
            {"max_torque", &p.max_torque, Range::NonNegative}, {"init_speed", &p.init_speed, Range::NonNegative},
            {"g", &p.g, Range::NonNegative},          {"stiffness", &p.stiffness, Range::NonNegative}};
}

bool ArmWorld::param_before_key(const std::string & key, double & value) const {
    if (key != "g" && key != "stiffness") return false;
    value = 0.0;
    return true;
}

void ArmWorld::initial_state(Rng & rng, double * s) const {
    s[0] = wrap_angle(draw_uniform(rng, -kPi, kPi));
    s[1] = wrap_angle(draw_uniform(rng, -kPi, kPi));
    s[2] = draw_uniform(rng, -p.init_speed, p.init_speed);
    s[3] = draw_uniform(rng, -p.init_speed, p.init_speed);
}

void ArmWorld::random_action(Rng & rng, double * u) const {
    u[0] = draw_uniform(rng, -p.max_torque, p.max_torque);
    u[1] = draw_uniform(rng, -p.max_torque, p.max_torque);
}

void ArmWorld::step(const double * s, const double * u, double * next) const { arm_step(p, s, u, next); }

void ArmWorld::render(const double * s, int W, float * out) const { render_arm(p, s[0], s[1], W, out); }

void ArmWorld::image_angles(const float * img, int W, double * angles) const { arm_image_angles(p, img, W, angles); }

std::vector<double> ArmWorld::skeleton(const double * s) const {
    const double L = p.l1 + p.l2;
    double s1, c1, s12, c12;
    portable_sin_cos(s[0], s1, c1);
    portable_sin_cos(s[0] + s[1], s12, c12);
    const double ex = p.l1 / L * s1, ey = p.l1 / L * c1;
    return {0.0, 0.0, ex, ey, ex + p.l2 / L * s12, ey + p.l2 / L * c12};
}

std::unique_ptr<World> make_arm_world() { return std::make_unique<ArmWorld>(); }

} // namespace ekvae
