// safetensors.cpp: reader and writer for the safetensors format, on byte buffers.
//
// The reader trusts nothing in the file: every length, shape and offset is checked (with
// overflow-safe arithmetic) before anything is allocated or copied, and it never reads
// outside [data, data + size).
#include "safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <limits>

// The raw tensor bytes are copied as they are, so the host must be little-endian (x86, ARM,
// WebAssembly all are).
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ekvae assumes a little-endian host");
#endif

namespace ekvae {

using json = nlohmann::json;

namespace {

// Deepest JSON nesting accepted in a header. A valid header has depth 3
// ({"name": {"shape": [..]}}); the limit only keeps nlohmann's recursive parser off the
// stack-overflow path on hostile input.
constexpr int kMaxJsonDepth = 8;

// a * b, or false when it does not fit in int64 (a, b >= 0)
bool mul_checked(int64_t a, int64_t b, int64_t & out) {
    if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
    out = a * b;
    return true;
}

std::string shape_string(const std::vector<int64_t> & shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); i++) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

// Largest number of JSON values (counted as commas) accepted in a header. An ekvae checkpoint
// has a few hundred; 2^17 allows thousands of tensors from other tools. The limit keeps a
// hostile 16 MiB header of tiny values (a shape of millions of zeros, a million metadata keys)
// from becoming ~400 MB of parsed JSON: at most ~15 MB are built.
constexpr size_t kMaxJsonItems = 1u << 17;

// Scans the header text, skipping string contents, for bracket nesting deeper than max_depth
// and for more than max_items commas. Returns false (with what) at the first limit crossed.
bool json_within_limits(const char * p, size_t n, int max_depth, size_t max_items, std::string & what) {
    int depth = 0;
    size_t items = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\') i++;          // skip the escaped character
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                what = "JSON nested deeper than " + std::to_string(max_depth) + " levels";
                return false;
            }
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && ++items > max_items) {
            what = "more than " + std::to_string(max_items) + " JSON values";
            return false;
        }
    }
    return true;
}

// Reads a JSON integer that must be >= 0 into out. False for anything else.
bool json_nonneg_int(const json & v, int64_t & out) {
    if (v.is_number_unsigned()) {
        uint64_t u = v.get<uint64_t>();
        if (u > (uint64_t)std::numeric_limits<int64_t>::max()) return false;
        out = (int64_t)u;
        return true;
    }
    if (v.is_number_integer()) {
        int64_t i = v.get<int64_t>();
        if (i < 0) return false;
        out = i;
        return true;
    }
    return false;
}

struct Entry {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    int64_t begin = 0, end = 0; // offsets into the data section
};

// Validates one tensor entry of the header (everything except its position relative to
// the other tensors). data_size is the length of the data section.
bool parse_entry(const std::string & name, const json & v, uint64_t data_size, Entry & e,
                 std::string & err) {
    const std::string where = "tensor '" + name + "': ";
    if (!v.is_object()) { err = where + "header entry is not a JSON object"; return false; }
    if (!v.contains("dtype")) { err = where + "missing 'dtype'"; return false; }
    if (!v.contains("shape")) { err = where + "missing 'shape'"; return false; }
    if (!v.contains("data_offsets")) { err = where + "missing 'data_offsets'"; return false; }

    const json & dt = v["dtype"];
    if (!dt.is_string()) { err = where + "'dtype' is not a string"; return false; }
    e.name = name;
    e.dtype = dt.get<std::string>();
    const int esize = safetensors_dtype_size(e.dtype);
    if (esize == 0) { err = where + "unknown dtype '" + e.dtype + "'"; return false; }

    const json & sh = v["shape"];
    if (!sh.is_array()) { err = where + "'shape' is not an array"; return false; }
    if (sh.size() > (size_t)kMaxTensorRank) {
        err = where + "shape has rank " + std::to_string(sh.size()) + ", more than the limit of " +
              std::to_string(kMaxTensorRank);
        return false;
    }
    int64_t numel = 1;
    for (const json & d : sh) {
        int64_t dim = 0;
        if (!json_nonneg_int(d, dim)) {
            err = where + "shape dimension " + d.dump() + " is not a non-negative integer";
            return false;
        }
        e.shape.push_back(dim);
        if (!mul_checked(numel, dim, numel)) {
            err = where + "element count of shape overflows (tensor too large)";
            return false;
        }
    }
    int64_t nbytes = 0;
    if (!mul_checked(numel, esize, nbytes)) {
        err = where + "byte size of shape overflows (tensor too large)";
        return false;
    }

    const json & off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !json_nonneg_int(off[0], e.begin) ||
        !json_nonneg_int(off[1], e.end)) {
        err = where + "'data_offsets' must be [begin, end] with non-negative integers";
        return false;
    }
    if (e.begin > e.end) {
        err = where + "data_offsets begin " + std::to_string(e.begin) + " > end " +
              std::to_string(e.end);
        return false;
    }
    if ((uint64_t)e.end > data_size) {
        err = where + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
              "] out of range: the data section has " + std::to_string(data_size) +
              " bytes (truncated file?)";
        return false;
    }
    if (e.end - e.begin != nbytes) {
        err = where + "data_offsets span " + std::to_string(e.end - e.begin) + " bytes but " +
              e.dtype + " " + shape_string(e.shape) + " needs " + std::to_string(nbytes) +
              " bytes (size mismatch)";
        return false;
    }
    return true;
}

} // namespace

int safetensors_dtype_size(const std::string & dtype) {
    if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
    if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
    if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
    if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
        dtype == "F8_E5M2")
        return 1;
    return 0;
}

int64_t Tensor::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::vector<float> Tensor::to_f32() const {
    const size_t n = (size_t)numel();
    std::vector<float> out;
    if (dtype == "F32" && data.size() == n * 4) {
        out.resize(n);
        if (n) std::memcpy(out.data(), data.data(), n * 4);
    } else if (dtype == "F64" && data.size() == n * 8) {
        out.resize(n);
        for (size_t i = 0; i < n; i++) {
            double x;
            std::memcpy(&x, data.data() + i * 8, 8);
            out[i] = (float)x;
        }
    }
    return out;
}

namespace {
template <typename T>
Tensor tensor_from(const char * dtype, const T * x, std::vector<int64_t> shape) {
    Tensor t;
    t.dtype = dtype;
    t.shape = std::move(shape);
    const size_t n = (size_t)t.numel();
    t.data.resize(n * sizeof(T));
    if (n) std::memcpy(t.data.data(), x, n * sizeof(T));
    return t;
}
} // namespace

Tensor Tensor::from_f32(const float * x, std::vector<int64_t> shape) { return tensor_from("F32", x, std::move(shape)); }
Tensor Tensor::from_f64(const double * x, std::vector<int64_t> shape) { return tensor_from("F64", x, std::move(shape)); }
Tensor Tensor::from_i64(const int64_t * x, std::vector<int64_t> shape) { return tensor_from("I64", x, std::move(shape)); }
Tensor Tensor::from_u64(const uint64_t * x, std::vector<int64_t> shape) { return tensor_from("U64", x, std::move(shape)); }

const Tensor * SafeTensors::find(const std::string & name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
}

const Tensor * SafeTensors::require(const std::string & name, const std::string & dtype,
                                    const std::vector<int64_t> & shape, std::string & err) const {
    const Tensor * t = find(name);
    if (!t) {
        err = "missing tensor '" + name + "'";
        return nullptr;
    }
    if (t->dtype != dtype || t->shape != shape) {
        err = "tensor '" + name + "': expected " + dtype + " " + shape_string(shape) + ", found " +
              t->dtype + " " + shape_string(t->shape);
        return nullptr;
    }
    return t;
}

bool json_parse_strict(const char * text, size_t n, json & out, std::string & err) {
    std::vector<std::vector<std::string>> keys; // the keys seen in each open object
    std::string dup;
    json::parser_callback_t cb = [&](int, json::parse_event_t ev, json & parsed) {
        if (ev == json::parse_event_t::object_start) keys.emplace_back();
        else if (ev == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
        else if (ev == json::parse_event_t::key && !keys.empty()) {
            const std::string k = parsed.get<std::string>();
            for (const std::string & seen : keys.back())
                if (seen == k) {
                    dup = k;
                    throw std::runtime_error("duplicate key");
                }
            keys.back().push_back(k);
        }
        return true;
    };
    try {
        out = json::parse(text, text + n, cb, true);
    } catch (const json::parse_error & e) {
        std::string w = e.what(); // "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
        const size_t at = w.find("parse error");
        err = "malformed JSON: " + (at == std::string::npos ? w : w.substr(at));
        return false;
    } catch (const std::exception & e) {
        err = dup.empty() ? std::string("malformed JSON: ") + e.what() : "duplicate key '" + dup + "' in a JSON object (give each key once)";
        return false;
    }
    return true;
}

namespace {
// 64-bit hash, 8 bytes per round (a multiply-xorshift mix; not cryptographic: it catches
// corruption and accidental edits, not forgery).
struct Hash64 {
    uint64_t h = 0x9E3779B97F4A7C15ULL;
    void mix(uint64_t w) {
        h ^= w + 0x632BE59BD9B4E019ULL;
        h *= 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    void bytes(const uint8_t * p, size_t n) {
        mix(n);
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            mix(w);
        }
        uint64_t w = 0;
        for (size_t k = 0; i < n; i++, k++) w |= (uint64_t)p[i] << (8 * k);
        mix(w);
    }
    void str(const std::string & s) { bytes((const uint8_t *)s.data(), s.size()); }
};
} // namespace

namespace {
std::string content_hash(const std::map<std::string, std::string> & metadata, const std::map<std::string, Tensor> & tensors,
                         const uint8_t * file) {
    Hash64 h;
    for (const auto & [k, v] : metadata)
        if (k != kChecksumKey) { h.str(k); h.str(v); }
    for (const auto & [name, t] : tensors) {
        h.str(name);
        h.str(t.dtype);
        for (int64_t d : t.shape) h.mix((uint64_t)d);
        const size_t n = (size_t)(t.numel() * safetensors_dtype_size(t.dtype));
        if (!t.data.empty() || !file) h.bytes(t.data.data(), t.data.size());
        else h.bytes(file + t.file_offset, n);
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "h64:%016llx", (unsigned long long)h.h);
    return buf;
}
} // namespace

std::string safetensors_checksum(const SafeTensors & st, const uint8_t * file) { return content_hash(st.metadata, st.tensors, file); }

bool safetensors_parse(const uint8_t * data, size_t size, SafeTensors & out, std::string & err, bool copy_data) {
    out = SafeTensors();
    // 8-byte little-endian header length n
    if (data == nullptr || size < 8) {
        err = "truncated file: " + std::to_string(size) +
              " bytes, but a safetensors file starts with an 8-byte header length";
        return false;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > kMaxSafetensorsHeader) {
        err = "header length " + std::to_string(n) + " exceeds the limit of " +
              std::to_string(kMaxSafetensorsHeader) + " bytes (not a safetensors file?)";
        return false;
    }
    if (n > size - 8) {
        err = "header length " + std::to_string(n) + " is longer than the file (" +
              std::to_string(size - 8) + " bytes after the length; truncated file?)";
        return false;
    }
    const char * header = (const char *)data + 8;
    const uint64_t data_size = size - 8 - n;
    const uint8_t * body = data + 8 + n;

    // JSON header: nesting depth and size checked before the parser sees it
    std::string what;
    if (!json_within_limits(header, n, kMaxJsonDepth, kMaxJsonItems, what)) {
        err = "malformed header: " + what;
        return false;
    }
    json h;
    if (!json_parse_strict(header, n, h, what)) {
        err = "header: " + what;
        return false;
    }
    if (!h.is_object()) {
        err = "malformed header: the JSON header is not an object";
        return false;
    }

    // Validate every entry before allocating anything.
    std::vector<Entry> entries;
    std::map<std::string, std::string> metadata;
    try {
        for (auto it = h.begin(); it != h.end(); ++it) {
            const std::string & name = it.key();
            if (name == "__metadata__") {
                if (!it.value().is_object()) {
                    err = "'__metadata__' is not a JSON object";
                    return false;
                }
                for (auto m = it.value().begin(); m != it.value().end(); ++m) {
                    if (!m.value().is_string()) {
                        err = "'__metadata__' value for key '" + m.key() + "' is not a string";
                        return false;
                    }
                    metadata[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            Entry e;
            if (!parse_entry(name, it.value(), data_size, e, err)) return false;
            entries.push_back(std::move(e));
        }
    } catch (const std::exception & ex) {
        // type accessors should not throw after the checks above; this is a last guard
        err = std::string("malformed header: ") + ex.what();
        return false;
    }

    // Tensors must not share bytes: sort by begin and compare neighbours (empty tensors,
    // begin == end, occupy nothing and cannot overlap).
    std::vector<const Entry *> order;
    for (const Entry & e : entries)
        if (e.end > e.begin) order.push_back(&e);
    std::sort(order.begin(), order.end(),
              [](const Entry * a, const Entry * b) { return a->begin < b->begin; });
    for (size_t i = 1; i < order.size(); i++) {
        if (order[i]->begin < order[i - 1]->end) {
            err = "tensors '" + order[i - 1]->name + "' and '" + order[i]->name +
                  "' overlap in the data section";
            return false;
        }
    }

    // All checked: the total copied is at most data_size bytes.
    out.metadata = std::move(metadata);
    for (const Entry & e : entries) {
        Tensor t;
        t.dtype = e.dtype;
        t.shape = e.shape;
        t.file_offset = 8 + n + (uint64_t)e.begin;
        if (copy_data) t.data.assign(body + e.begin, body + e.end);
        out.tensors[e.name] = std::move(t);
    }
    auto ck = out.metadata.find(kChecksumKey);
    if (ck != out.metadata.end() && ck->second != safetensors_checksum(out, data)) {
        err = "checksum mismatch: the file was changed or damaged after it was written (metadata '" +
              std::string(kChecksumKey) + "' is " + ck->second + ", the content hashes to " + safetensors_checksum(out, data) + ")";
        out = SafeTensors();
        return false;
    }
    return true;
}

std::vector<uint8_t> safetensors_serialize(const SafeTensors & in) {
    // metadata strings as a reader will see them (invalid UTF-8 replaced), then the checksum
    SafeTensors st;
    for (const auto & kv : in.metadata) {
        if (kv.first == kChecksumKey) continue;
        auto clean = [](const std::string & x) { return json::parse(json(x).dump(-1, ' ', false, json::error_handler_t::replace)).get<std::string>(); };
        st.metadata[clean(kv.first)] = clean(kv.second);
    }
    st.metadata[kChecksumKey] = content_hash(st.metadata, in.tensors, nullptr);
    // header: tensors in name order (std::map), data contiguous in that order
    json h = json::object();
    {
        json m = json::object();
        for (const auto & kv : st.metadata) m[kv.first] = kv.second;
        h["__metadata__"] = m;
    }
    const SafeTensors & src = in;
    uint64_t offset = 0;
    for (const auto & kv : src.tensors) {
        const Tensor & t = kv.second;
        json e = json::object();
        e["dtype"] = t.dtype;
        e["shape"] = t.shape;
        e["data_offsets"] = {offset, offset + t.data.size()};
        h[kv.first] = e;
        offset += t.data.size();
    }
    // invalid UTF-8 in names is replaced rather than throwing
    std::string text = h.dump(-1, ' ', false, json::error_handler_t::replace);
    while (text.size() % 8 != 0) text += ' '; // pad with spaces to a multiple of 8

    std::vector<uint8_t> out;
    out.reserve(8 + text.size() + offset);
    const uint64_t n = text.size();
    for (int i = 0; i < 8; i++) out.push_back((uint8_t)(n >> (8 * i)));
    out.insert(out.end(), text.begin(), text.end());
    for (const auto & kv : src.tensors) out.insert(out.end(), kv.second.data.begin(), kv.second.data.end());
    return out;
}

} // namespace ekvae
