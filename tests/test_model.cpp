// Tests for model.h: model files round-trip and bad ones are refused; the linear read-out.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

TEST_CASE("model files round-trip; bad model files are refused with a reason") {
    EkvaeConfig c = tiny_train_config();
    Ekvae<float> m;
    ekvae_init(m, c, 9);
    m.readout_W.setConstant(0.5f);
    m.has_readout = true;
    SafeTensors st;
    ekvae_to_safetensors(m, st);
    std::vector<uint8_t> bytes = safetensors_serialize(st);
    Ekvae<float> back;
    std::string err;
    REQUIRE(ekvae_load(bytes.data(), bytes.size(), back, err));
    CHECK(back.cfg.image_size == 8);
    CHECK(back.has_readout);
    for (size_t i = 0; i < m.ps.list.size(); i++) CHECK(back.ps.list[i]->value == m.ps.list[i]->value);

    auto refused = [&](SafeTensors s, const char * needle) {
        std::vector<uint8_t> b = safetensors_serialize(s);
        Ekvae<float> x;
        std::string e;
        const bool ok = ekvae_load(b.data(), b.size(), x, e);
        INFO("error: " << e);
        CHECK(!ok);
        CHECK(e.find(needle) != std::string::npos);
    };
    { SafeTensors s = st; s.tensors.erase("H"); refused(s, "'H'"); }
    { SafeTensors s = st; float z[2] = {0, 0}; s.tensors["H"] = Tensor::from_f32(z, {2, 1}); refused(s, "'H'"); }
    { SafeTensors s = st; s.metadata["version"] = "99"; refused(s, "version"); }
    { SafeTensors s = st; s.metadata.erase("format"); refused(s, "not an ekvae model"); }
    { SafeTensors s = st; s.metadata["config"] = "{\"n_z\": \"three\"}"; refused(s, "n_z"); }
    { SafeTensors s = st; s.metadata["config"] = "{\"flux\": 1}"; refused(s, "flux"); }
    { SafeTensors s = st; float nanv = NAN; std::memcpy(s.tensors["mu1"].data.data(), &nanv, 4); refused(s, "NaN"); }
}

TEST_CASE("readout: angle, velocity and their standard deviations by linearisation") {
    EkvaeConfig c = tiny_train_config();
    Ekvae<double> m;
    ekvae_init(m, c, 1);
    m.readout_W << 0.8, -0.3, 0.1, 0.2, 0.9, -0.4, 0.5, 0.1, 1.5;
    m.readout_b << 0.1, -0.2, 0.3;
    m.has_readout = true;
    Md z(3, 2);
    z << 0.3, 1.0, -0.7, 0.2, 0.5, -1.0;
    Md A(3, 3);
    A << 0.5, 0.1, 0.0, 0.1, 0.3, 0.05, 0.0, 0.05, 0.2;
    Md P(9, 2);
    P.col(0) = A.reshaped(9, 1);
    P.col(1) = (2.0 * A).reshaped(9, 1);
    for (int col = 0; col < 2; col++) {
        const Readout r = readout(m, z, P, col);
        const Vd o = m.readout_W * z.col(col) + m.readout_b;
        CHECK(r.value[0] == doctest::Approx(std::atan2(o(1), o(0))));
        CHECK(r.value[1] == doctest::Approx(o(2)));
        // gradient of theta in z by central differences
        Vd g(3);
        for (int i = 0; i < 3; i++) {
            Md zp = z, zm = z;
            zp(i, col) += 1e-6;
            zm(i, col) -= 1e-6;
            g(i) = (readout(m, zp, P, col).value[0] - readout(m, zm, P, col).value[0]) / 2e-6;
        }
        const Md Pc = P.col(col).reshaped(3, 3);
        CHECK(r.sigma[0] == doctest::Approx(std::sqrt(g.dot(Pc * g))).epsilon(1e-6));
        const Vd w = m.readout_W.row(2).transpose();
        CHECK(r.sigma[1] == doctest::Approx(std::sqrt(w.dot(Pc * w))));
    }
}
