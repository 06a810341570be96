// eval.cpp: r^2 probes, forecasts against the repeat-last-frame baseline, the held-out ELBO,
// metrics.json, and the finiteness check of loaded models (see eval.h).
#include "eval.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

namespace ekvae {

using json = nlohmann::json;

double r2_linear(const Eigen::MatrixXd & Zf, const Eigen::VectorXd & yf, const Eigen::MatrixXd & Zt, const Eigen::VectorXd & yt) {
    Eigen::MatrixXd A(Zf.rows(), Zf.cols() + 1), At(Zt.rows(), Zt.cols() + 1);
    A << Zf, Eigen::VectorXd::Ones(Zf.rows());
    At << Zt, Eigen::VectorXd::Ones(Zt.rows());
    const Eigen::VectorXd w = A.colPivHouseholderQr().solve(yf);
    const double ss_res = (At * w - yt).squaredNorm();
    const double ss_tot = (yt.array() - yt.mean()).square().sum();
    return ss_tot > 0 ? 1.0 - ss_res / ss_tot : 0.0;
}

double r2_knn(const Eigen::MatrixXd & Zf, const Eigen::VectorXd & yf, const Eigen::MatrixXd & Zt, const Eigen::VectorXd & yt, int k) {
    const Eigen::Index nf = Zf.rows();
    k = (int)std::min<Eigen::Index>(k, nf);
    std::vector<std::pair<double, Eigen::Index>> d(nf);
    double ss_res = 0;
    const Eigen::VectorXd nf2 = Zf.rowwise().squaredNorm();
    for (Eigen::Index i = 0; i < Zt.rows(); i++) {
        const Eigen::VectorXd dist = nf2 - 2.0 * Zf * Zt.row(i).transpose();
        for (Eigen::Index j = 0; j < nf; j++) d[j] = {dist(j), j};
        std::nth_element(d.begin(), d.begin() + (k - 1), d.end());
        double pred = 0;
        for (int j = 0; j < k; j++) pred += yf(d[j].second);
        pred /= k;
        ss_res += (pred - yt(i)) * (pred - yt(i));
    }
    const double ss_tot = (yt.array() - yt.mean()).square().sum();
    return ss_tot > 0 ? 1.0 - ss_res / ss_tot : 0.0;
}

namespace {
// Smoothed posterior means of every frame of sequences [first, first + n) (a at the encoder
// mean): Z [n*T, n_z], and the world's read-out targets Y [n*T, targets].
void smoothed_means(Ekvae<float> & m, const Dataset & d, int first, int n, Eigen::MatrixXd & Z, Eigen::MatrixXd & Y) {
    Tape<float> t;
    const World & w = d.world();
    const int nz = m.cfg.n_z, chunk = kEvalChunk, ny = w.targets();
    Z.resize((Eigen::Index)n * d.T, nz);
    Y.resize((Eigen::Index)n * d.T, ny);
    Mat<float> X, U;
    Posterior<float> post;
    std::vector<double> s(d.S), y(ny);
    for (int c0 = 0; c0 < n; c0 += chunk) {
        const int B = std::min(chunk, n - c0);
        sequences_batch(d, first + c0, B, 0, d.T, X, U);
        infer_sequences(t, m, X, U, B, d.T, true, post);
        for (int b = 0; b < B; b++)
            for (int k = 0; k < d.T; k++) {
                const Eigen::Index row = (Eigen::Index)(c0 + b) * d.T + k;
                Z.row(row) = post.ms[k].col(b).cast<double>().transpose();
                for (int i = 0; i < d.S; i++) s[i] = d.state(first + c0 + b, k, i);
                w.readout_targets(s.data(), y.data());
                for (int j = 0; j < ny; j++) Y(row, j) = y[j];
            }
    }
}

void fit_linear(const Eigen::MatrixXd & Z, const Eigen::MatrixXd & Y, Eigen::MatrixXd & W, Eigen::VectorXd & b) {
    Eigen::MatrixXd A(Z.rows(), Z.cols() + 1);
    A << Z, Eigen::VectorXd::Ones(Z.rows());
    const Eigen::MatrixXd sol = A.colPivHouseholderQr().solve(Y); // [n_z + 1, targets]
    W = sol.topRows(Z.cols()).transpose();
    b = sol.row(Z.cols()).transpose();
}

double wrapped_abs(double a) { return std::abs(wrap_angle(a)); }

// Open-loop forecasts of every sequence of d (see kForecastFilterSteps): the curves of e
// against the repeat-last-frame baseline. Wr, br: the read-out for the velocity errors.
void forecast_curves(Ekvae<float> & m, const Dataset & d, const Eigen::MatrixXd & Wr, const Eigen::VectorXd & br, EvalMetrics & e) {
    const World & w = d.world();
    const int Dp = d.W * d.W, N = d.N, Tf = kForecastFilterSteps, Hmax = kForecastHorizon, na = w.angles();
    std::vector<int> angle_idx;
    for (int i = 0; i < w.S; i++)
        if (w.angle[i]) angle_idx.push_back(i);
    std::vector<int> vrows; // the read-out targets of the non-angle components (velocities)
    for (int k = 0; k < w.targets(); k++)
        if (!w.angle[w.target_component(k)]) vrows.push_back(k);
    e.mse_curve.assign(Hmax, 0); e.baseline_mse_curve.assign(Hmax, 0);
    e.angle_err_curve.assign(Hmax, 0); e.baseline_angle_curve.assign(Hmax, 0);
    e.angle_err_by_angle.assign(na, std::vector<double>(Hmax, 0));
    e.baseline_by_angle.assign(na, std::vector<double>(Hmax, 0));
    std::vector<double> vel_curve(Hmax, 0), vel_base(Hmax, 0);
    Tape<float> t;
    Mat<float> X, U, zs, Ps, imgs;
    Posterior<float> post;
    std::vector<double> pa(na), la(na);
    for (int c0 = 0; c0 < N; c0 += kEvalChunk) {
        const int B = std::min(kEvalChunk, N - c0);
        sequences_batch(d, c0, B, 0, Tf, X, U);
        infer_sequences(t, m, X, U, B, Tf, false, post);
        Mat<float> Uf(d.U, (Eigen::Index)Hmax * B);
        for (int k = 0; k < Hmax; k++)
            for (int b = 0; b < B; b++)
                for (int j = 0; j < d.U; j++) Uf(j, (Eigen::Index)k * B + b) = d.action(c0 + b, Tf - 1 + k, j);
        forecast(t, m, post.m[Tf - 1], post.P[Tf - 1], Uf, zs, Ps, &imgs);
        for (int b = 0; b < B; b++) {
            const int n = c0 + b;
            const float * last = d.image(n, Tf - 1);
            w.image_angles(last, d.W, la.data());
            const Eigen::VectorXd ylast = Wr * post.m[Tf - 1].col(b).cast<double>() + br;
            for (int k = 0; k < Hmax; k++) {
                const float * truth = d.image(n, Tf + k);
                const float * pred = imgs.col((Eigen::Index)k * B + b).data();
                double se = 0, seb = 0;
                for (int i = 0; i < Dp; i++) {
                    se += (pred[i] - truth[i]) * (pred[i] - truth[i]);
                    seb += (last[i] - truth[i]) * (last[i] - truth[i]);
                }
                e.mse_curve[k] += se / Dp / N;
                e.baseline_mse_curve[k] += seb / Dp / N;
                w.image_angles(pred, d.W, pa.data());
                double ea = 0, eb = 0;
                for (int a = 0; a < na; a++) {
                    const double th = d.state(n, Tf + k, angle_idx[a]);
                    const double fa = wrapped_abs(pa[a] - th), fb = wrapped_abs(la[a] - th);
                    e.angle_err_by_angle[a][k] += fa / N;
                    e.baseline_by_angle[a][k] += fb / N;
                    ea += fa;
                    eb += fb;
                }
                e.angle_err_curve[k] += ea / na / N;
                e.baseline_angle_curve[k] += eb / na / N;
                if (!vrows.empty()) {
                    const Eigen::VectorXd yk = Wr * zs.col((Eigen::Index)k * B + b).cast<double>() + br;
                    double ev = 0, evb = 0;
                    for (size_t v = 0; v < vrows.size(); v++) {
                        const double truth_v = d.state(n, Tf + k, w.target_component(vrows[v]));
                        ev += std::abs(yk(vrows[v]) - truth_v);
                        evb += std::abs(ylast(vrows[v]) - truth_v);
                    }
                    vel_curve[k] += ev / (double)vrows.size() / N;
                    vel_base[k] += evb / (double)vrows.size() / N;
                }
            }
        }
    }
    for (int h : e.horizons) {
        e.forecast_mse.push_back(e.mse_curve[h - 1]);
        e.baseline_mse.push_back(e.baseline_mse_curve[h - 1]);
        e.forecast_angle_err.push_back(e.angle_err_curve[h - 1]);
        e.baseline_angle_err.push_back(e.baseline_angle_curve[h - 1]);
        e.forecast_velocity_err.push_back(vel_curve[h - 1]);
        e.baseline_velocity_err.push_back(vel_base[h - 1]);
    }
}
} // namespace

double EvalMetrics::r2_of(const std::string & target, bool knn) const {
    for (size_t j = 0; j < targets.size(); j++)
        if (targets[j] == target) return knn ? r2_knn[j] : r2[j];
    return NAN;
}

void fit_readout(Ekvae<float> & m, const Dataset & d, int max_sequences) {
    Eigen::MatrixXd Z, Y, W;
    Eigen::VectorXd b;
    smoothed_means(m, d, 0, std::min(d.N, max_sequences), Z, Y);
    fit_linear(Z, Y, W, b);
    m.readout_W = W.cast<float>();
    m.readout_b = b.cast<float>();
    m.has_readout = true;
}

std::vector<uint8_t> model_file_bytes(Ekvae<float> & m, const Dataset & train, int max_sequences) {
    fit_readout(m, train, max_sequences);
    SafeTensors st;
    ekvae_to_safetensors(m, st);
    return safetensors_serialize(st);
}

bool generate_run_data(const EkvaeConfig & cfg, Dataset * train, Dataset * heldout, std::string & err) {
    for (int k = 0; k < 2; k++) {
        Dataset * out = k == 0 ? train : heldout;
        if (!out) continue;
        DatasetConfig dc;
        dc.sequences = k == 0 ? cfg.train_sequences : cfg.test_sequences;
        dc.steps = k == 0 ? cfg.sequence_steps : std::max(cfg.sequence_steps, kForecastSequenceSteps);
        dc.seed = (uint64_t)(k == 0 ? cfg.train_seed : cfg.test_seed);
        dc.image_size = cfg.image_size;
        dc.world = make_world(cfg.world);
        if (!validate_dataset_config(dc, err)) return false;
        *out = generate_dataset(dc);
    }
    return true;
}

void latent_plane(Ekvae<float> & m, const Dataset & d, int sequences, Eigen::MatrixXd & P, Eigen::MatrixXd & states) {
    Eigen::MatrixXd Z, Y;
    smoothed_means(m, d, 0, std::min(d.N, sequences), Z, Y);
    const Eigen::RowVectorXd mean = Z.colwise().mean();
    const Eigen::MatrixXd C = Z.rowwise() - mean;
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(C.transpose() * C); // eigenvalues ascending
    const int n = (int)Z.cols(), k = std::min(2, n);
    P = C * es.eigenvectors().rightCols(k).rowwise().reverse();
    if (k < 2) P.conservativeResize(Eigen::NoChange, 2), P.col(1).setZero();
    states.resize(Z.rows(), d.S);
    for (int i = 0; i < d.N && i < sequences; i++)
        for (int t = 0; t < d.T; t++)
            for (int j = 0; j < d.S; j++) states((Eigen::Index)i * d.T + t, j) = d.state(i, t, j);
}

std::vector<BarCheck> quality_bar(const EvalMetrics & e, const std::string & world) {
    auto at = [&](const std::vector<double> & v, int h) {
        for (size_t i = 0; i < e.horizons.size(); i++)
            if (e.horizons[i] == h && i < v.size()) return v[i];
        return (double)NAN;
    };
    std::vector<BarCheck> bar;
    auto check = [&](const std::string & name, double value, bool at_least, double limit) {
        bar.push_back({name, value, limit, at_least, at_least ? value >= limit : value <= limit}); // NaN fails
    };
    if (world == "pendulum") {
        check("r2_knn_cos", e.r2_of("cos", true), true, 0.95);
        check("r2_knn_sin", e.r2_of("sin", true), true, 0.95);
        check("r2_omega", e.r2_of("omega"), true, 0.90);
        check("angle_err_10", at(e.forecast_angle_err, 10), false, 0.3);
        check("angle_err_32", at(e.forecast_angle_err, 32), false, 0.6);
    } else if (world == "arm") {
        check("r2_omega1", e.r2_of("omega1"), true, 0.8);
        check("r2_omega2", e.r2_of("omega2"), true, 0.8);
        check("angle_ratio_10", at(e.forecast_angle_err, 10) / at(e.baseline_angle_err, 10), false, 1.0 / 3);
        check("angle_ratio_32", at(e.forecast_angle_err, 32) / at(e.baseline_angle_err, 32), false, 0.5);
    }
    return bar;
}

bool bar_met(const std::vector<BarCheck> & bar) {
    if (bar.empty()) return false;
    for (const BarCheck & b : bar)
        if (!b.met) return false;
    return true;
}

void evaluate(Ekvae<float> & m, const Dataset & d, EvalMetrics & e, bool fit, uint64_t seed) {
    const World & w = d.world();
    const int N = d.N;
    e = EvalMetrics{};
    e.sequences = N;
    e.horizons = {1, 5, 10, 20, kForecastHorizon};
    e.targets = w.target_names;
    for (int i = 0; i < w.S; i++)
        if (w.angle[i]) e.angle_names.push_back(w.state_names[i]);
    // r2 probes: fit on the first half of the sequences, score on the second
    Eigen::MatrixXd Z, Y;
    smoothed_means(m, d, 0, N, Z, Y);
    const Eigen::Index half = (Eigen::Index)(N / 2) * d.T;
    const Eigen::MatrixXd Zf = Z.topRows(half), Zt = Z.bottomRows(Z.rows() - half);
    for (int j = 0; j < w.targets(); j++) {
        e.r2.push_back(r2_linear(Zf, Y.col(j).head(half), Zt, Y.col(j).tail(Z.rows() - half)));
        e.r2_knn.push_back(r2_knn(Zf, Y.col(j).head(half), Zt, Y.col(j).tail(Z.rows() - half), 10));
    }
    Eigen::MatrixXd W;
    Eigen::VectorXd b;
    fit_linear(Zf, Y.topRows(half), W, b);
    if (fit) {
        m.readout_W = W.cast<float>();
        m.readout_b = b.cast<float>();
        m.has_readout = true;
    }
    if (d.T >= kForecastSequenceSteps) forecast_curves(m, d, W, b, e);
    // ELBO, distortion, rate per time step on whole sequences (a fixed noise seed)
    const HeldOut h = heldout_objective(m, d, N, seed + 77);
    e.distortion = h.D;
    e.rate = h.R;
    e.elbo = -(e.distortion + e.rate);
}

std::string metrics_to_json(const EvalMetrics & e, int indent) {
    json j;
    json r2 = json::object(), r2k = json::object();
    for (size_t k = 0; k < e.targets.size(); k++) {
        r2[e.targets[k]] = e.r2[k];
        r2k[e.targets[k]] = e.r2_knn[k];
    }
    j["r2"] = r2;
    j["r2_knn"] = r2k;
    auto at = [&](const std::vector<double> & v) {
        json o = json::object();
        for (size_t i = 0; i < e.horizons.size() && i < v.size(); i++) o[std::to_string(e.horizons[i])] = v[i];
        return o;
    };
    j["forecast_mse"] = at(e.forecast_mse);
    j["baseline_mse"] = at(e.baseline_mse);
    j["forecast_angle_err"] = at(e.forecast_angle_err);
    j["baseline_angle_err"] = at(e.baseline_angle_err);
    j["forecast_velocity_err"] = at(e.forecast_velocity_err);
    j["baseline_velocity_err"] = at(e.baseline_velocity_err);
    j["forecast_angle_err_curve"] = e.angle_err_curve;
    j["baseline_angle_err_curve"] = e.baseline_angle_curve;
    j["forecast_mse_curve"] = e.mse_curve;
    j["baseline_mse_curve"] = e.baseline_mse_curve;
    if (e.angle_names.size() > 1 && e.angle_err_by_angle.size() == e.angle_names.size()) {
        json fa = json::object(), ba = json::object();
        for (size_t a = 0; a < e.angle_names.size(); a++) {
            std::vector<double> f, b;
            for (int h : e.horizons) {
                f.push_back(e.angle_err_by_angle[a][h - 1]);
                b.push_back(e.baseline_by_angle[a][h - 1]);
            }
            fa[e.angle_names[a]] = at(f);
            ba[e.angle_names[a]] = at(b);
        }
        j["forecast_angle_err_by_angle"] = fa;
        j["baseline_angle_err_by_angle"] = ba;
    }
    j["elbo"] = e.elbo;
    j["distortion"] = e.distortion;
    j["rate"] = e.rate;
    j["sequences"] = e.sequences;
    return j.dump(indent);
}

std::string metrics_nonfinite(const EvalMetrics & e) {
    for (size_t k = 0; k < e.targets.size(); k++) {
        if (!std::isfinite(e.r2[k])) return "r2." + e.targets[k];
        if (!std::isfinite(e.r2_knn[k])) return "r2_knn." + e.targets[k];
    }
    const std::pair<const char *, double> scalars[] = {{"elbo", e.elbo}, {"distortion", e.distortion}, {"rate", e.rate}};
    for (const auto & [name, v] : scalars)
        if (!std::isfinite(v)) return name;
    const std::pair<const char *, const std::vector<double> *> curves[] = {{"forecast_mse", &e.mse_curve}, {"forecast_angle_err", &e.angle_err_curve}};
    for (const auto & [name, v] : curves)
        for (size_t k = 0; k < v->size(); k++)
            if (!std::isfinite((*v)[k])) return std::string(name) + " at horizon " + std::to_string(k + 1);
    return "";
}

bool ekvae_check_outputs(Ekvae<float> & m, std::string & err) {
    DatasetConfig dc;
    dc.sequences = 2;
    dc.steps = 24;
    dc.image_size = m.cfg.image_size;
    dc.seed = 12345;
    dc.world = m.world;
    const Dataset d = generate_dataset(dc);
    Tape<float> t;
    Mat<float> X, U, zs, Ps, imgs;
    Posterior<float> post;
    sequences_batch(d, 0, 2, 0, d.T, X, U);
    infer_sequences(t, m, X, U, 2, d.T, true, post);
    auto bad = [&](const char * what, const Mat<float> & x) {
        if (x.allFinite()) return false;
        err = std::string("the model's ") + what + " is not finite on a test sequence: its weights are unusable (retrain it, or "
              "take an earlier checkpoint)";
        return true;
    };
    for (int k = 0; k < d.T; k++)
        if (bad("filtered state", post.m[k]) || bad("filtered covariance", post.P[k]) || bad("smoothed state", post.ms[k])) return false;
    Mat<float> Uf = U.rightCols(2 * 8);
    forecast(t, m, post.m[d.T - 1], post.P[d.T - 1], Uf, zs, Ps, &imgs);
    if (bad("forecast state", zs) || bad("forecast covariance", Ps) || bad("decoded forecast image", imgs)) return false;
    const HeldOut h = heldout_objective(m, d, 2);
    if (!std::isfinite(h.D) || !std::isfinite(h.R)) {
        err = std::string("the model's objective (") + (std::isfinite(h.D) ? "rate" : "distortion") +
              ") is not finite on a test sequence: its weights are unusable (retrain it, or take an earlier checkpoint)";
        return false;
    }
    if (m.has_readout) {
        const Readout r = readout(m, post.m[d.T - 1], post.P[d.T - 1], 0);
        for (int i = 0; i < d.S; i++)
            if (!std::isfinite(r.value[i] + r.sigma[i])) {
                err = "the model's read-out (" + d.world().state_names[i] + ") is not finite on a test sequence: the file is unusable";
                return false;
            }
    }
    return true;
}

} // namespace ekvae
