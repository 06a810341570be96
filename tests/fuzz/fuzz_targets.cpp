// fuzz_targets.cpp: the fuzzed loaders and the promises an accepted file must keep
// (see fuzz_targets.h). Shared by the libFuzzer binaries and the corpus replay test.
#include "fuzz_targets.h"

#include "ekvae.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace ekvae;

namespace ekvae_fuzz {

const char * current_input = nullptr;

namespace {

[[noreturn]] void broken(const char * what, const char * file, int line) {
    std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s%s%s\n", file, line, what,
                 current_input ? " on input " : "", current_input ? current_input : "");
    std::abort();
}
#define FUZZ_CHECK(cond) \
    do {                 \
        if (!(cond)) broken(#cond, __FILE__, __LINE__); \
    } while (0)

bool same_tensors(const SafeTensors & a, const SafeTensors & b) {
    if (a.tensors.size() != b.tensors.size()) return false;
    for (const auto & kv : a.tensors) {
        const Tensor * t = b.find(kv.first);
        if (!t || t->dtype != kv.second.dtype || t->shape != kv.second.shape || t->data != kv.second.data) return false;
    }
    return true;
}

template <class T> bool same_values(const Ekvae<T> & a, const Ekvae<T> & b) {
    if (a.ps.list.size() != b.ps.list.size() || a.has_readout != b.has_readout) return false;
    for (size_t i = 0; i < a.ps.list.size(); i++) {
        if (a.ps.list[i]->name != b.ps.list[i]->name) return false;
        if (a.ps.list[i]->value.rows() != b.ps.list[i]->value.rows() || a.ps.list[i]->value.cols() != b.ps.list[i]->value.cols()) return false;
        if (a.ps.list[i]->value != b.ps.list[i]->value) return false;
    }
    return !a.has_readout || (a.readout_W == b.readout_W && a.readout_b == b.readout_b);
}

// Work on a model is bounded by its parameter count, which an accepted file holds in full, so
// fuzzed inputs (a few KB) can only describe small models. Stay clear of larger ones anyway.
bool small_enough(const EkvaeConfig & c, size_t numel) {
    return numel <= 200000 && c.image_size <= 32;
}

} // namespace

int fuzz_safetensors(const uint8_t * data, size_t size) {
    SafeTensors st;
    std::string err;
    if (!safetensors_parse(data, size, st, err)) {
        FUZZ_CHECK(!err.empty());
        FUZZ_CHECK(st.tensors.empty() && st.metadata.empty());
        return 0;
    }
    size_t total = 0;
    for (const auto & kv : st.tensors) {
        const Tensor & t = kv.second;
        FUZZ_CHECK(t.shape.size() <= (size_t)kMaxTensorRank);
        FUZZ_CHECK(t.numel() >= 0);
        FUZZ_CHECK(t.data.size() == (size_t)t.numel() * (size_t)safetensors_dtype_size(t.dtype));
        total += t.data.size();
        if (t.dtype == "F32" || t.dtype == "F64") FUZZ_CHECK(t.to_f32().size() == (size_t)t.numel());
        FUZZ_CHECK(st.require(kv.first, t.dtype, t.shape, err) == &t);
    }
    FUZZ_CHECK(total <= size); // tensors never share bytes
    // what was read writes back and reads again unchanged
    const std::vector<uint8_t> bytes = safetensors_serialize(st);
    SafeTensors back;
    FUZZ_CHECK(safetensors_parse(bytes.data(), bytes.size(), back, err));
    // (the writer adds or renews the checksum; everything else is as read)
    auto plain = [](std::map<std::string, std::string> m) { m.erase(kChecksumKey); return m; };
    FUZZ_CHECK(plain(back.metadata) == plain(st.metadata));
    FUZZ_CHECK(back.metadata.count(kChecksumKey) == 1);
    FUZZ_CHECK(same_tensors(st, back));
    FUZZ_CHECK(safetensors_serialize(back) == bytes);
    return 0;
}

int fuzz_dataset(const uint8_t * data, size_t size) {
    Dataset d;
    std::string err;
    if (!dataset_from_safetensors(data, size, d, err)) {
        FUZZ_CHECK(!err.empty());
        return 0;
    }
    FUZZ_CHECK(d.N >= 1 && d.T >= 1 && d.W >= 1 && d.W <= kMaxImageSize);
    const size_t frames = (size_t)d.N * (size_t)d.T;
    FUZZ_CHECK(d.images.size() == frames * (size_t)d.W * (size_t)d.W);
    FUZZ_CHECK(d.actions.size() == frames * d.U);
    FUZZ_CHECK(d.states.size() == frames * d.S);
    for (float v : d.images) FUZZ_CHECK(v >= 0.0f && v <= 1.0f);
    for (float v : d.actions) FUZZ_CHECK(std::isfinite(v));
    for (float v : d.states) FUZZ_CHECK(std::isfinite(v));
    // the accessors stay inside the arrays
    FUZZ_CHECK(d.image(d.N - 1, d.T - 1) + d.W * d.W == d.images.data() + d.images.size());
    FUZZ_CHECK(d.S == d.world().S && d.U == d.world().U);
    FUZZ_CHECK(std::isfinite(d.action(d.N - 1, d.T - 1, d.U - 1) + d.state(d.N - 1, d.T - 1, 0) + d.state(d.N - 1, d.T - 1, d.S - 1)));
    // a round trip keeps every value and setting
    const std::vector<uint8_t> bytes = dataset_to_safetensors(d);
    Dataset back;
    FUZZ_CHECK(dataset_from_safetensors(bytes.data(), bytes.size(), back, err));
    FUZZ_CHECK(back.N == d.N && back.T == d.T && back.W == d.W);
    FUZZ_CHECK(back.images == d.images && back.actions == d.actions && back.states == d.states);
    FUZZ_CHECK(back.config.seed == d.config.seed && back.world().name == d.world().name && back.world().params() == d.world().params());
    // a batch of windows can be cut from it
    if (d.T >= 2 && frames * (size_t)d.W * (size_t)d.W <= (1u << 20)) {
        Rng rng(1);
        Mat<float> X, U;
        sample_batch(d, 2, 2, rng, X, U);
        FUZZ_CHECK(X.rows() == d.W * d.W && X.cols() == 4 && U.cols() == 4);
    }
    return 0;
}

int fuzz_model(const uint8_t * data, size_t size) {
    Ekvae<float> m;
    std::string err;
    if (!ekvae_load(data, size, m, err)) {
        FUZZ_CHECK(!err.empty());
        return 0;
    }
    std::string verr;
    FUZZ_CHECK(config_validate(m.cfg, verr));
    FUZZ_CHECK(params_finite(m.ps));
    // save and load again: same config, same values
    SafeTensors st;
    ekvae_to_safetensors(m, st);
    const std::vector<uint8_t> bytes = safetensors_serialize(st);
    Ekvae<float> back;
    FUZZ_CHECK(ekvae_load(bytes.data(), bytes.size(), back, err));
    FUZZ_CHECK(config_to_json(back.cfg) == config_to_json(m.cfg));
    FUZZ_CHECK(same_values(m, back));
    // what the app does with a loaded model: filter a frame, predict, forecast, read the angle
    if (small_enough(m.cfg, m.ps.numel())) {
        const int D = m.cfg.image_size * m.cfg.image_size, nz = m.cfg.n_z;
        Tape<float> t;
        Mat<float> z, P;
        Mat<float> x = Mat<float>::Constant(D, 1, 0.25f);
        const Mat<float> u0 = Mat<float>::Zero(m.cfg.n_u, 1), u1 = Mat<float>::Ones(m.cfg.n_u, 1);
        filter_step(t, m, z, P, true, u0, &x);
        filter_step(t, m, z, P, false, u1, (const Mat<float> *)nullptr);
        FUZZ_CHECK(z.rows() == nz && z.cols() == 1 && P.size() == nz * nz);
        if (z.allFinite() && P.allFinite()) {
            Mat<float> zs, Ps, img;
            forecast(t, m, z, P, Mat<float>(Mat<float>::Zero(m.cfg.n_u, 3)), zs, Ps, &img);
            FUZZ_CHECK(zs.cols() == 3 && img.rows() == D && img.cols() == 3);
            if (m.has_readout) {
                const Readout r = readout(m, zs, Ps, 2);
                for (double sd : r.sigma) FUZZ_CHECK(!(sd < 0));
            }
        }
    }
    return 0;
}

int fuzz_checkpoint(const uint8_t * data, size_t size) {
    Trainer tr;
    std::string err;
    if (!tr.restore(data, size, err)) {
        FUZZ_CHECK(!err.empty());
        return 0;
    }
    FUZZ_CHECK(params_finite(tr.model.ps));
    FUZZ_CHECK(tr.step >= 0 && tr.rejected >= 0);
    // the restored state writes back to the same bytes
    const std::vector<uint8_t> ck = tr.checkpoint();
    Trainer again;
    FUZZ_CHECK(again.restore(ck.data(), ck.size(), err));
    FUZZ_CHECK(again.checkpoint() == ck);
    // one training step from it (one thread, two time steps) keeps the weights finite, and the
    // state after it is again a loadable checkpoint
    const EkvaeConfig & c = tr.cfg();
    if (small_enough(c, tr.model.ps.numel()) && c.batch <= 8) {
        FUZZ_CHECK(tr.resume(ck.data(), ck.size(), {{"threads", "1"}}, nullptr, err));
        const int D = c.image_size * c.image_size, B = c.batch, T_ = 2;
        Mat<float> X(D, B * T_), U = Mat<float>::Zero(c.n_u, B * T_);
        for (Eigen::Index i = 0; i < X.size(); i++) X(i) = (float)((i * 7) % 5) / 4.0f;
        tr.train_step(X, U);
        FUZZ_CHECK(params_finite(tr.model.ps));
        const std::vector<uint8_t> ck2 = tr.checkpoint();
        Trainer after;
        FUZZ_CHECK(after.restore(ck2.data(), ck2.size(), err));
    }
    return 0;
}

} // namespace ekvae_fuzz
