// Tests for safetensors.h: round trips, and every malformed file the reader must refuse.
#include "safetensors.h"

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace ekvae;

namespace {

// A raw file: 8-byte little-endian length n, the header text, then the data bytes.
std::vector<uint8_t> make_file(const std::string & header, const std::vector<uint8_t> & data,
                               uint64_t n_override = 0) {
    uint64_t n = n_override ? n_override : header.size();
    std::vector<uint8_t> f;
    for (int i = 0; i < 8; i++) f.push_back((uint8_t)(n >> (8 * i)));
    f.insert(f.end(), header.begin(), header.end());
    f.insert(f.end(), data.begin(), data.end());
    return f;
}

// Parses and expects failure with an error mentioning `expect`.
void check_refused(const std::vector<uint8_t> & f, const std::string & expect) {
    SafeTensors st;
    std::string err;
    bool ok = safetensors_parse(f.data(), f.size(), st, err);
    INFO("error: '" << err << "', expected to mention '" << expect << "'");
    CHECK_FALSE(ok);
    CHECK(err.find(expect) != std::string::npos);
    CHECK(st.tensors.empty()); // nothing half-filled
}

// a valid file with two small tensors (16 bytes of data)
std::vector<uint8_t> small_file() {
    SafeTensors st;
    float a[2] = {1.0f, 2.0f};
    float b[2] = {3.0f, 4.0f};
    st.tensors["a"] = Tensor::from_f32(a, {2});
    st.tensors["b"] = Tensor::from_f32(b, {1, 2});
    st.metadata["k"] = "v";
    return safetensors_serialize(st);
}

const std::vector<uint8_t> k16(16, 0);

} // namespace

TEST_CASE("dtype sizes") {
    CHECK(safetensors_dtype_size("F32") == 4);
    CHECK(safetensors_dtype_size("F64") == 8);
    CHECK(safetensors_dtype_size("I64") == 8);
    CHECK(safetensors_dtype_size("U8") == 1);
    CHECK(safetensors_dtype_size("BF16") == 2);
    CHECK(safetensors_dtype_size("F33") == 0);
    CHECK(safetensors_dtype_size("") == 0);
}

TEST_CASE("round trip of several dtypes, shapes and metadata") {
    SafeTensors st;
    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    double f64[4] = {3.141592653589793, -1e300, 2.5, 0.1};
    int64_t i64[4] = {-1, 0, 1, INT64_MIN};
    uint64_t u64[3] = {0, 1, UINT64_MAX};
    float scalar = 7.0f;
    st.tensors["w_f32"] = Tensor::from_f32(f32, {2, 3});
    st.tensors["b_f64"] = Tensor::from_f64(f64, {4});
    st.tensors["i64"] = Tensor::from_i64(i64, {2, 2});
    st.tensors["u64"] = Tensor::from_u64(u64, {3});
    st.tensors["scalar"] = Tensor::from_f32(&scalar, {});        // rank 0: one element
    st.tensors["empty"] = Tensor::from_f32(nullptr, {0, 5});     // zero elements
    Tensor u8;
    u8.dtype = "U8";
    u8.shape = {5};
    u8.data = {0, 1, 2, 254, 255};
    st.tensors["u8"] = u8;
    st.metadata["format"] = "test";
    st.metadata["quote \" and unicode \xc3\xa9"] = "line\nbreak";

    std::vector<uint8_t> bytes = safetensors_serialize(st);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    CHECK(n % 8 == 0);                    // header padded to a multiple of 8
    CHECK(bytes[8] == '{');
    CHECK(bytes.size() == 8 + n + 24 + 32 + 32 + 24 + 4 + 0 + 5);

    SafeTensors r;
    std::string err;
    REQUIRE_MESSAGE(safetensors_parse(bytes.data(), bytes.size(), r, err), err);
    std::map<std::string, std::string> plain = r.metadata;
    CHECK(plain.erase(kChecksumKey) == 1); // the writer adds the checksum
    CHECK(plain == st.metadata);
    REQUIRE(r.tensors.size() == st.tensors.size());
    for (const auto & kv : st.tensors) {
        const Tensor * t = r.find(kv.first);
        REQUIRE(t != nullptr);
        CHECK(t->dtype == kv.second.dtype);
        CHECK(t->shape == kv.second.shape);
        CHECK(t->data == kv.second.data);
    }
    CHECK(r.find("scalar")->numel() == 1);
    CHECK(r.find("empty")->numel() == 0);
    std::vector<float> w = r.find("w_f32")->to_f32();
    REQUIRE(w.size() == 6);
    CHECK(w[2] == 3.25f);
    std::vector<float> b = r.find("b_f64")->to_f32(); // F64 converted
    REQUIRE(b.size() == 4);
    CHECK(b[0] == (float)3.141592653589793);
    CHECK(r.find("i64")->to_f32().empty());          // not a float tensor
    CHECK(safetensors_serialize(r) == bytes);        // stable bytes

    // tensors are laid out in name order, contiguously
    const char * header = (const char *)bytes.data() + 8;
    std::string h(header, header + n);
    CHECK(h.find("\"b_f64\":{\"data_offsets\":[0,32]") != std::string::npos);
}

TEST_CASE("an empty file (no tensors, no metadata) round-trips") {
    SafeTensors st;
    std::vector<uint8_t> bytes = safetensors_serialize(st);
    SafeTensors r;
    std::string err;
    CHECK(safetensors_parse(bytes.data(), bytes.size(), r, err));
    CHECK(r.tensors.empty());
}

TEST_CASE("files written by other tools: extra whitespace, holes between tensors") {
    // offsets [0, 4] and [8, 12]: a gap is allowed, only overlap is refused
    std::string h = "  {\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},\n"
                    "   \"y\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}   ";
    std::vector<uint8_t> f = make_file(h, std::vector<uint8_t>(12, 0));
    SafeTensors st;
    std::string err;
    CHECK_MESSAGE(safetensors_parse(f.data(), f.size(), st, err), err);
    CHECK(st.tensors.size() == 2);
}

TEST_CASE("malformed files are refused with a message naming the problem") {
    SUBCASE("shorter than 8 bytes") {
        std::vector<uint8_t> f = small_file();
        for (size_t n = 0; n < 8; n++) check_refused(std::vector<uint8_t>(f.begin(), f.begin() + n), "truncated");
        SafeTensors st;
        std::string err;
        CHECK_FALSE(safetensors_parse(nullptr, 0, st, err));
    }
    SUBCASE("header length larger than the file") {
        check_refused(make_file("{}", {}, 100), "longer than the file");
    }
    SUBCASE("header length over the limit") {
        check_refused(make_file("{}", {}, kMaxSafetensorsHeader + 1), "exceeds the limit");
        check_refused(make_file("{}", {}, UINT64_MAX), "exceeds the limit");
    }
    SUBCASE("malformed JSON") {
        check_refused(make_file("{\"a\": ", {}), "malformed JSON");
        check_refused(make_file("", {}), "malformed JSON");
        check_refused(make_file("{\"a\": {}} trailing", {}), "malformed JSON");
    }
    SUBCASE("nesting too deep (would strain the recursive parser)") {
        std::string deep(100000, '[');
        deep += std::string(100000, ']');
        check_refused(make_file(deep, {}), "nested deeper");
        // brackets inside strings do not count
        std::string ok = "{\"__metadata__\": {\"k\": \"[[[[[[[[[[[[[[[[[[[[\\\"[[[[\"}}";
        SafeTensors st;
        std::string err;
        std::vector<uint8_t> f = make_file(ok, {});
        CHECK_MESSAGE(safetensors_parse(f.data(), f.size(), st, err), err);
    }
    SUBCASE("header is not an object") {
        check_refused(make_file("[1, 2]", {}), "not an object");
        check_refused(make_file("\"text\"", {}), "not an object");
    }
    SUBCASE("entry is not an object") {
        check_refused(make_file("{\"a\": 3}", {}), "tensor 'a': header entry is not a JSON object");
    }
    SUBCASE("entry missing dtype / shape / data_offsets") {
        check_refused(make_file("{\"a\": {\"shape\": [4], \"data_offsets\": [0, 16]}}", k16), "missing 'dtype'");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 16]}}", k16), "missing 'shape'");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4]}}", k16), "missing 'data_offsets'");
    }
    SUBCASE("unknown or mistyped dtype") {
        check_refused(make_file("{\"a\": {\"dtype\": \"F33\", \"shape\": [4], \"data_offsets\": [0, 16]}}", k16), "unknown dtype 'F33'");
        check_refused(make_file("{\"a\": {\"dtype\": 4, \"shape\": [4], \"data_offsets\": [0, 16]}}", k16), "'dtype' is not a string");
    }
    SUBCASE("bad shapes") {
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]}}", k16), "not a non-negative integer");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 16]}}", k16), "not a non-negative integer");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [\"4\"], \"data_offsets\": [0, 16]}}", k16), "not a non-negative integer");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 16]}}", k16), "'shape' is not an array");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,4], \"data_offsets\": [0, 16]}}", k16), "rank 9");
        // 2^40 * 2^40 elements: the element count itself overflows int64
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], \"data_offsets\": [0, 16]}}", k16), "overflows");
        // 2^62 elements fit int64, but not their bytes
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904], \"data_offsets\": [0, 16]}}", k16), "overflows");
        // beyond int64 in a single dimension
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [18446744073709551615], \"data_offsets\": [0, 16]}}", k16), "not a non-negative integer");
    }
    SUBCASE("billions of elements are refused before any allocation") {
        // 10^5 x 10^5 F32 = 40 GB claimed by a 16-byte data section
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [100000, 100000], \"data_offsets\": [0, 40000000000]}}", k16), "out of range");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [100000, 100000], \"data_offsets\": [0, 16]}}", k16), "size mismatch");
    }
    SUBCASE("bad offsets") {
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [4, 20]}}", k16), "out of range");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [16, 0]}}", k16), "begin 16 > end 0");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 16]}}", k16), "size mismatch");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0]}}", k16), "'data_offsets' must be");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [-16, 0]}}", k16), "'data_offsets' must be");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": \"0-16\"}}", k16), "'data_offsets' must be");
    }
    SUBCASE("overlapping tensors") {
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 12]},"
                                " \"b\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [4, 16]}}", k16), "overlap");
        check_refused(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                                " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", k16), "overlap");
    }
    SUBCASE("metadata that is not string to string") {
        check_refused(make_file("{\"__metadata__\": {\"n\": 3}}", {}), "value for key 'n' is not a string");
        check_refused(make_file("{\"__metadata__\": [\"a\"]}", {}), "'__metadata__' is not a JSON object");
    }
}

TEST_CASE("truncation sweep: every strict prefix of a valid file fails cleanly") {
    std::vector<uint8_t> f = small_file();
    SafeTensors st;
    std::string err;
    REQUIRE(safetensors_parse(f.data(), f.size(), st, err));
    for (size_t n = 0; n < f.size(); n++) {
        // a copy of exactly n bytes, so reading past it would be a real out-of-bounds read
        std::vector<uint8_t> prefix(f.begin(), f.begin() + n);
        SafeTensors r;
        std::string e;
        CHECK_FALSE(safetensors_parse(prefix.data(), prefix.size(), r, e));
        CHECK_FALSE(e.empty());
    }
}

TEST_CASE("corruption sweep: flipped bytes never crash the reader") {
    std::vector<uint8_t> f = small_file();
    int accepted = 0, refused = 0;
    for (size_t i = 0; i < f.size(); i++) {
        for (uint8_t x : {(uint8_t)0x01, (uint8_t)0x80, (uint8_t)0xff}) {
            std::vector<uint8_t> g = f;
            g[i] ^= x;
            SafeTensors r;
            std::string e;
            if (safetensors_parse(g.data(), g.size(), r, e)) accepted++;
            else refused++;
        }
    }
    // data-byte flips stay valid files; header flips mostly do not
    CHECK(accepted > 0);
    CHECK(refused > 0);
}

TEST_CASE("require() checks presence, dtype and shape") {
    std::vector<uint8_t> f = small_file();
    SafeTensors st;
    std::string err;
    REQUIRE(safetensors_parse(f.data(), f.size(), st, err));
    CHECK(st.require("a", "F32", {2}, err) != nullptr);

    CHECK(st.require("x", "F32", {2}, err) == nullptr);
    CHECK(err == "missing tensor 'x'");
    CHECK(st.require("b", "F32", {2, 1}, err) == nullptr);
    CHECK(err == "tensor 'b': expected F32 [2, 1], found F32 [1, 2]");
    CHECK(st.require("a", "F64", {2}, err) == nullptr);
    CHECK(err == "tensor 'a': expected F64 [2], found F32 [2]");
}
