// Tests for arm.h: the two-link arm's dynamics against an independent derivation and
// integration, its renderer against its geometry, the image read-out, and its datasets.
#include "test_util.h"

#include <cstring>

using namespace ekvae;
using namespace ekvae_test;

namespace {

// ---- an independent model of the arm, from its kinetic and potential energy ----------------
// The point masses sit at p1(q) = l1 (sin q1, cos q1) and p2(q) = p1 + l2 (sin(q1+q2), cos(q1+q2));
// the mass matrix is M(q) = sum_i m_i J_i^T J_i with the Jacobians J_i = d p_i / d q, and the
// velocity terms come from the Christoffel symbols of M, differentiated numerically:
//   M q'' = u - b q' - sum_jk G_ijk q'_j q'_k - dV/dq,  G_ijk = (dM_ij/dq_k + dM_ik/dq_j - dM_jk/dq_i) / 2
// with the potential V of potential() below, also differentiated numerically.

void mass_matrix(const ArmParams & p, double q1, double q2, double M[2][2]) {
    const double J1[2][2] = {{p.l1 * std::cos(q1), 0.0}, {-p.l1 * std::sin(q1), 0.0}};
    const double a = q1 + q2;
    const double J2[2][2] = {{p.l1 * std::cos(q1) + p.l2 * std::cos(a), p.l2 * std::cos(a)},
                             {-p.l1 * std::sin(q1) - p.l2 * std::sin(a), -p.l2 * std::sin(a)}};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            M[i][j] = 0.0;
            for (int r = 0; r < 2; r++) M[i][j] += p.m1 * J1[r][i] * J1[r][j] + p.m2 * J2[r][i] * J2[r][j];
        }
}

// The potential: gravity g pulls the masses down the image (their height is the y of p_i above),
// each joint's spring stores stiffness (1 - cos q_i); its forces -dV/dq are differentiated numerically.
double potential(const ArmParams & p, double q1, double q2) {
    const double y1 = p.l1 * std::cos(q1), y2 = y1 + p.l2 * std::cos(q1 + q2);
    return p.g * (p.m1 * y1 + p.m2 * y2) + p.stiffness * (2.0 - std::cos(q1) - std::cos(q2));
}

void reference_derivative(const ArmParams & p, const double * s, const double * u, double * ds) {
    const double q[2] = {s[0], s[1]}, w[2] = {s[2], s[3]};
    double M[2][2], dM[2][2][2]; // dM[k] = dM / dq_k
    mass_matrix(p, q[0], q[1], M);
    const double e = 1e-5;
    for (int k = 0; k < 2; k++) {
        double Mp[2][2], Mm[2][2];
        mass_matrix(p, q[0] + (k == 0 ? e : 0), q[1] + (k == 1 ? e : 0), Mp);
        mass_matrix(p, q[0] - (k == 0 ? e : 0), q[1] - (k == 1 ? e : 0), Mm);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) dM[k][i][j] = (Mp[i][j] - Mm[i][j]) / (2 * e);
    }
    double rhs[2];
    for (int i = 0; i < 2; i++) {
        const double dq[2] = {i == 0 ? e : 0.0, i == 1 ? e : 0.0};
        rhs[i] = u[i] - p.damping * w[i] -
                 (potential(p, q[0] + dq[0], q[1] + dq[1]) - potential(p, q[0] - dq[0], q[1] - dq[1])) / (2 * e);
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 2; k++) rhs[i] -= 0.5 * (dM[k][i][j] + dM[j][i][k] - dM[i][j][k]) * w[j] * w[k];
    }
    const double det = M[0][0] * M[1][1] - M[0][1] * M[1][0];
    ds[0] = w[0];
    ds[1] = w[1];
    ds[2] = (M[1][1] * rhs[0] - M[0][1] * rhs[1]) / det;
    ds[3] = (M[0][0] * rhs[1] - M[1][0] * rhs[0]) / det;
}

double kinetic_energy(const ArmParams & p, const double * s) {
    double M[2][2];
    mass_matrix(p, s[0], s[1], M);
    return 0.5 * (M[0][0] * s[2] * s[2] + 2 * M[0][1] * s[2] * s[3] + M[1][1] * s[3] * s[3]);
}

} // namespace

TEST_CASE("arm_derivative equals the accelerations derived from the kinetic and potential energy") {
    ArmParams p;
    p.l1 = 1.1; p.l2 = 0.7; p.m1 = 0.9; p.m2 = 1.3; p.damping = 0.2;
    Rng rng(11);
    for (int k = 0; k < 600; k++) {
        // without potentials, with gravity, with springs
        p.g = k < 200 ? 0.0 : k < 400 ? 7.5 : 0.0;
        p.stiffness = k < 400 ? 0.0 : 3.0;
        const double s[4] = {rng.uniform(-kPi, kPi), rng.uniform(-kPi, kPi), rng.uniform(-4, 4), rng.uniform(-4, 4)};
        const double u[2] = {rng.uniform(-1, 1), rng.uniform(-1, 1)};
        double a[4], b[4];
        arm_derivative(p, s, u, a);
        reference_derivative(p, s, u, b);
        for (int i = 0; i < 4; i++) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-6).scale(1.0));
    }
}

TEST_CASE("arm_step agrees with an independent fine midpoint integration") {
    // Step by step: each of 40 steps from the arm's own state, so that the comparison is of one
    // step's integration (the hanging arm is chaotic: over many steps any two integrators part)
    ArmParams p;
    Rng rng(5);
    double s[4] = {0.3, -1.2, 0.8, -0.5};
    const int steps = 40, fine = 2000;
    double worst = 0.0;
    for (int t = 0; t < steps; t++) {
        const double u[2] = {rng.uniform(-1, 1), rng.uniform(-1, 1)};
        double r[4] = {s[0], s[1], s[2], s[3]}; // the reference, unwrapped
        arm_step(p, s, u, s);
        const double h = p.dt / fine;
        for (int it = 0; it < fine; it++) { // explicit midpoint, second order
            double k1[4], mid[4], k2[4];
            reference_derivative(p, r, u, k1);
            for (int i = 0; i < 4; i++) mid[i] = r[i] + 0.5 * h * k1[i];
            reference_derivative(p, mid, u, k2);
            for (int i = 0; i < 4; i++) r[i] += h * k2[i];
        }
        INFO("step " << t << ": arm " << s[0] << " " << s[1] << " " << s[2] << " " << s[3] << ", reference " << r[0] << " " << r[1] << " " << r[2] << " " << r[3]);
        CHECK(std::fabs(r[2]) < p.max_speed); // the clip was not needed: the comparison is of the dynamics
        CHECK(std::fabs(r[3]) < p.max_speed);
        worst = std::max({worst, angle_diff(s[0], r[0]), angle_diff(s[1], r[1]), std::fabs(s[2] - r[2]), std::fabs(s[3] - r[3])});
    }
    CHECK(worst < 1e-6); // the bound of the earlier 40-step comparison, now per step
    // and the arm moved: the steps were not trivially alike
    CHECK(angle_diff(s[0], 0.3) > 0.1);
}

TEST_CASE("arm: energy is conserved without torque and damping, and falls with damping") {
    // kinetic + potential energy, with each potential alone and both together
    for (int c = 0; c < 3; c++) {
        ArmParams p;
        p.g = c == 1 ? 0.0 : 6.0;
        p.stiffness = c == 0 ? 0.0 : 2.5;
        p.damping = 0.0;
        p.max_speed = 100.0; // no clip: the test is of the dynamics
        p.substeps = 16;     // and of the dynamics, not of RK4's drift at the default 4 substeps
        double s[4] = {0.5, 2.0, 1.5, -2.5};
        const double u[2] = {0.0, 0.0};
        auto energy = [&](const double * x) { return kinetic_energy(p, x) + potential(p, x[0], x[1]); };
        const double E0 = energy(s);
        for (int t = 0; t < 400; t++) arm_step(p, s, u, s);
        CHECK(energy(s) == doctest::Approx(E0).epsilon(1e-6));
        p.damping = 0.1;
        double prev = energy(s);
        bool falls = true;
        for (int t = 0; t < 100; t++) {
            arm_step(p, s, u, s);
            const double E = energy(s);
            falls = falls && E < prev;
            prev = E;
        }
        CHECK(falls);
    }
}

TEST_CASE("arm_step clips torques and speeds, and wraps angles") {
    ArmParams p;
    const double s[4] = {3.1, -3.1, 0.5, 0.5};
    double a[4], b[4];
    const double big[2] = {50.0, -50.0}, max[2] = {p.max_torque, -p.max_torque};
    arm_step(p, s, big, a);
    arm_step(p, s, max, b);
    for (int i = 0; i < 4; i++) CHECK(a[i] == b[i]);
    for (int i = 0; i < 2; i++) {
        CHECK(a[i] > -kPi);
        CHECK(a[i] <= kPi);
    }
    double f[4] = {0, 0, 100.0, -100.0};
    const double zero[2] = {0, 0};
    arm_step(p, f, zero, f);
    CHECK(std::fabs(f[2]) <= p.max_speed);
    CHECK(std::fabs(f[3]) <= p.max_speed);
}

TEST_CASE("render_arm: specific pixels of the straight arm pointing up") {
    // W = 24: shoulder (12, 12), 0.85 * 12 / 1.8 = 5.667 px per metre, so the elbow is at
    // y = 6.33 and the hand at y = 1.80, both links along x = 12 with radius 1.125.
    const ArmParams p;
    const int W = 24;
    std::vector<float> img(W * W);
    render_arm(p, 0.0, 0.0, W, img.data());
    double xy[4];
    arm_joints_px(p, 0.0, 0.0, W, xy);
    CHECK(xy[0] == doctest::Approx(12.0));
    CHECK(xy[1] == doctest::Approx(12.0 - 0.85 * 12 / 1.8));
    CHECK(xy[3] == doctest::Approx(12.0 - 0.85 * 12));
    auto px = [&](int i, int j) { return img[(size_t)i * W + j]; };
    // columns 11 and 12 lie within 0.875 < 1.125 of x = 12: fully covered
    CHECK(px(9, 11) == 0.5f); // link 1 (rows 6.33..12), dim
    CHECK(px(9, 12) == 0.5f);
    CHECK(px(4, 11) == 1.0f); // link 2 (rows 1.8..6.33), bright
    CHECK(px(4, 12) == 1.0f);
    CHECK(px(9, 14) == 0.0f); // 2 px to the side
    CHECK(px(20, 3) == 0.0f);
    // row 0 meets the hand's round cap (centre y = 1.80): of column 12's samples only the row
    // y = 0.875 at x = 12.125, 12.375, 12.625 lie within 1.125 of it, so 3/16
    CHECK(px(0, 12) == 0.1875f);
    CHECK(px(0, 11) == 0.1875f);
}

TEST_CASE("render_arm: the image's mass matches the links' areas; values are 0, 1/32 steps, <= 1") {
    const ArmParams p;
    const int W = 48;
    std::vector<float> img(W * W);
    Rng rng(3);
    for (int k = 0; k < 20; k++) {
        const double t1 = rng.uniform(-kPi, kPi), t2 = rng.uniform(-2.0, 2.0); // not folded
        render_arm(p, t1, t2, W, img.data());
        double sum = 0.0;
        for (float v : img) {
            CHECK(v >= 0.0f);
            CHECK(v <= 1.0f);
            CHECK(v * 32 == std::floor(v * 32));
            sum += v;
        }
        // capsule areas: 2 r len + pi r^2; link 2's covers half of link 1's end cap (elbow)
        const double sc = 0.85 * (W / 2.0) / (p.l1 + p.l2), r = 0.75 * W / 16.0;
        const double a1 = 2 * r * sc * p.l1 + kPi * r * r, a2 = 2 * r * sc * p.l2 + kPi * r * r;
        const double expected = 0.5 * (a1 - 0.5 * kPi * r * r) + a2;
        CHECK(sum == doctest::Approx(expected).epsilon(0.1));
    }
}

TEST_CASE("arm_image_angles reads both angles back from rendered and from blurred frames") {
    const ArmParams p;
    const int W = 24;
    std::vector<float> img(W * W), blur(W * W);
    Rng rng(8);
    std::vector<double> err, err_blur;
    for (int k = 0; k < 300; k++) {
        const double t1 = rng.uniform(-kPi, kPi), t2 = rng.uniform(-kPi, kPi);
        render_arm(p, t1, t2, W, img.data());
        double a[2];
        arm_image_angles(p, img.data(), W, a);
        err.push_back(std::max(angle_diff(a[0], t1), angle_diff(a[1], t2)));
        // a 3x3 box blur, as a decoder's output is blurred
        for (int i = 0; i < W; i++)
            for (int j = 0; j < W; j++) {
                float s = 0;
                for (int di = -1; di <= 1; di++)
                    for (int dj = -1; dj <= 1; dj++) {
                        const int y = std::clamp(i + di, 0, W - 1), x = std::clamp(j + dj, 0, W - 1);
                        s += img[(size_t)y * W + x];
                    }
                blur[(size_t)i * W + j] = s / 9;
            }
        arm_image_angles(p, blur.data(), W, a);
        err_blur.push_back(std::max(angle_diff(a[0], t1), angle_diff(a[1], t2)));
    }
    std::sort(err.begin(), err.end());
    std::sort(err_blur.begin(), err_blur.end());
    INFO("rendered: median " << err[150] << " p95 " << err[285] << "; blurred: median " << err_blur[150] << " p95 " << err_blur[285]);
    CHECK(err[150] < 0.01);
    CHECK(err[285] < 0.05);
    CHECK(err_blur[150] < 0.03);
    CHECK(err_blur[285] < 0.1);
    std::vector<float> empty(W * W, 0.0f);
    double a[2] = {1, 1};
    arm_image_angles(p, empty.data(), W, a);
    CHECK(a[0] == 0.0);
    CHECK(a[1] == 0.0);
}

TEST_CASE("arm: both velocities are observable from the frames (read-out angles, central differences)") {
    // What a smoother over the frames could know: the angles read off frames t-1 and t+1 give
    // omega at t to r^2 0.999 (omega1) and 0.996 (omega2) on these 8 sequences (measured
    // 2026-12-06). The shipped models hold omega2 linearly to r^2 ~0.3-0.6 (docs/results.md):
    // the frames are not what limits them.
    auto world = std::make_shared<ArmWorld>();
    DatasetConfig c;
    c.sequences = 8;
    c.steps = 64;
    c.image_size = 24;
    c.seed = 3;
    c.world = world;
    const Dataset d = generate_dataset(c);
    const double dt = world->p.dt;
    for (int j = 0; j < 2; j++) {
        double se = 0, sy = 0, syy = 0;
        long n = 0;
        for (int s = 0; s < d.N; s++) {
            std::vector<double> th((size_t)d.T * 2);
            for (int t = 0; t < d.T; t++) arm_image_angles(world->p, d.image(s, t), d.W, &th[2 * (size_t)t]);
            for (int t = 1; t + 1 < d.T; t++) {
                const double diff = std::remainder(th[2 * (size_t)(t + 1) + j] - th[2 * (size_t)(t - 1) + j], 2 * kPi);
                const double est = diff / (2 * dt), y = d.state(s, t, 2 + j);
                se += (est - y) * (est - y);
                sy += y;
                syy += y * y;
                n++;
            }
        }
        const double r2 = 1 - (se / n) / (syy / n - (sy / n) * (sy / n));
        INFO("omega" << j + 1 << ": r2 " << r2);
        CHECK(r2 > 0.98);
    }
}

TEST_CASE("ArmWorld: the World interface, parameters and the skeleton") {
    std::unique_ptr<World> w = make_world("arm");
    REQUIRE(w);
    CHECK(w->name == "arm");
    CHECK(w->S == 4);
    CHECK(w->U == 2);
    CHECK(w->angles() == 2);
    CHECK(w->targets() == 6);
    CHECK(w->target_component(0) == 0);
    CHECK(w->target_component(3) == 1);
    CHECK(w->target_component(4) == 2);
    CHECK(w->target_component(5) == 3);
    CHECK(w->default_image_size == 24);
    std::string err;
    CHECK(w->set_param("damping", 0.0, err));
    CHECK_FALSE(w->set_param("l1", -1.0, err));
    CHECK_FALSE(w->set_param("substeps", 2.5, err));
    CHECK_FALSE(w->set_param("gravity", 9.8, err));
    CHECK(err.find("l1, l2") != std::string::npos);
    // each key of the parameter table sets the member of ArmParams it names
    ArmWorld aw;
    const std::vector<std::pair<std::string, double ArmParams::*>> members = {
        {"l1", &ArmParams::l1}, {"l2", &ArmParams::l2}, {"m1", &ArmParams::m1}, {"m2", &ArmParams::m2},
        {"damping", &ArmParams::damping}, {"dt", &ArmParams::dt}, {"substeps", &ArmParams::substeps},
        {"max_speed", &ArmParams::max_speed}, {"max_torque", &ArmParams::max_torque},
        {"init_speed", &ArmParams::init_speed}, {"g", &ArmParams::g}, {"stiffness", &ArmParams::stiffness}};
    REQUIRE(aw.params().size() == members.size());
    for (size_t i = 0; i < members.size(); i++) {
        CAPTURE(members[i].first);
        CHECK(aw.params()[i].first == members[i].first); // the order files list them in
        const double v = aw.p.*members[i].second + 7;
        REQUIRE(aw.set_param(members[i].first, v, err));
        CHECK(aw.p.*members[i].second == v);
    }
    const double s[4] = {0.0, 0.0, 0, 0};
    std::vector<double> k = w->skeleton(s);
    REQUIRE(k.size() == 6);
    CHECK(k[4] == doctest::Approx(0.0));
    CHECK(k[5] == doctest::Approx(1.0)); // straight up, the reach is 1
    const double f[4] = {kPi / 2, kPi, 0, 0};  // right, folded back: the hand at l1 - l2
    k = w->skeleton(f);
    CHECK(k[4] == doctest::Approx((1.0 - 0.8) / 1.8));
    CHECK(k[5] == doctest::Approx(0.0).scale(1.0));
}

TEST_CASE("arm datasets: consistent with the world's step and renderer, round trip, golden hash") {
    DatasetConfig c;
    c.sequences = 6; c.steps = 20; c.image_size = 24; c.seed = 4;
    c.world = std::shared_ptr<const World>(make_world("arm"));
    Dataset d = generate_dataset(c);
    REQUIRE(d.S == 4);
    REQUIRE(d.U == 2);
    const ArmParams p;
    std::vector<float> img(24 * 24);
    double worst = 0;
    for (int n = 0; n < d.N; n++)
        for (int t = 0; t < d.T; t++) {
            for (int j = 0; j < 2; j++) CHECK(std::fabs(d.action(n, t, j)) <= (float)p.max_torque);
            if (t + 1 < d.T) {
                double s[4], u[2], next[4];
                for (int i = 0; i < 4; i++) s[i] = d.state(n, t, i);
                for (int j = 0; j < 2; j++) u[j] = d.action(n, t, j);
                arm_step(p, s, u, next);
                for (int i = 0; i < 4; i++) worst = std::max(worst, i < 2 ? angle_diff(next[i], d.state(n, t + 1, i)) : std::fabs(next[i] - d.state(n, t + 1, i)));
            }
        }
    CHECK(worst < 1e-5); // float storage of the states limits the precision
    // round trip: the world and its parameters come back from the metadata
    std::vector<uint8_t> bytes = dataset_to_safetensors(d);
    Dataset r;
    std::string err;
    REQUIRE_MESSAGE(dataset_from_safetensors(bytes.data(), bytes.size(), r, err), err);
    CHECK(r.world().name == "arm");
    CHECK(r.S == 4);
    CHECK(r.U == 2);
    CHECK(r.images == d.images);
    CHECK(r.states == d.states);
    CHECK(dataset_to_safetensors(r) == bytes);
    // the tensor bytes of a small arm dataset (guards the draw order, physics and renderer
    // across machines and compilers)
    c.sequences = 3; c.steps = 5; c.image_size = 8; c.seed = 7;
    bytes = dataset_to_safetensors(generate_dataset(c));
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), 8);
    const std::vector<uint8_t> data(bytes.begin() + 8 + (long)header, bytes.end());
    char hex[32];
    std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fnv1a64(data));
    INFO("tensor FNV-1a 64 = 0x" << hex);
    CHECK(fnv1a64(data) == 0x6c6749b4079cc0b0ULL); // the hanging arm (g 5, damping 0.3) since 2026-12-06
}

TEST_CASE("arm datasets written before g and stiffness existed load as the arm they were made of") {
    // Files of the arm seen from above (before 2026-12-06) carry no 'g' and no 'stiffness':
    // they load with g = 0 (not today's default), the rest from their metadata as always.
    ArmParams old;
    old.g = 0.0;
    old.damping = 0.1;
    DatasetConfig c;
    c.sequences = 2; c.steps = 4; c.image_size = 8; c.seed = 1;
    c.world = std::make_shared<ArmWorld>(old);
    std::vector<uint8_t> bytes = dataset_to_safetensors(generate_dataset(c));
    SafeTensors st;
    std::string err;
    REQUIRE(safetensors_parse(bytes.data(), bytes.size(), st, err));
    REQUIRE(st.metadata.count("g"));
    st.metadata.erase("g");
    st.metadata.erase("stiffness");
    bytes = safetensors_serialize(st);
    Dataset r;
    REQUIRE_MESSAGE(dataset_from_safetensors(bytes.data(), bytes.size(), r, err), err);
    const auto * w = dynamic_cast<const ArmWorld *>(&r.world());
    REQUIRE(w);
    CHECK(w->p.g == 0.0);
    CHECK(w->p.stiffness == 0.0);
    CHECK(w->p.damping == doctest::Approx(0.1));
    // a file that names them keeps its values
    st.metadata["g"] = "2.5";
    bytes = safetensors_serialize(st);
    REQUIRE_MESSAGE(dataset_from_safetensors(bytes.data(), bytes.size(), r, err), err);
    CHECK(dynamic_cast<const ArmWorld &>(r.world()).p.g == 2.5);
    // and today's files load as today's arm
    CHECK(ArmWorld().p.g == 5.0);
}
