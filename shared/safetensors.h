// safetensors.h: reader and writer for the safetensors format, on byte buffers.
//
// Layout: 8-byte little-endian header length n, an n-byte JSON header
//   {"__metadata__": {"key": "string", ...}, "name": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// then the raw little-endian tensor data (offsets relative to the end of the header).
// NumPy and PyTorch users open these files directly. One reader/writer serves datasets,
// model weights and checkpoints. The core never touches the file system: callers pass bytes.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ekvae {

// Limits checked before any large allocation.
constexpr uint64_t kMaxSafetensorsHeader = 16ull << 20;  // 16 MiB of JSON header
constexpr uint64_t kMaxSafetensorsFile = 8ull << 30;     // 8 GiB
constexpr int kMaxTensorRank = 8;

struct Tensor {
    std::string dtype;            // "F32", "F64", "I64", "I32", "U64", "U8", ...
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;    // raw little-endian bytes, size = numel * dtype size
    uint64_t file_offset = 0;     // where the bytes start in the parsed file (data is empty when
                                  // the file was parsed without copying, see safetensors_parse)

    int64_t numel() const;
    // Convenience for the common case. The tensor must be F32 (F64 is converted).
    std::vector<float> to_f32() const;
    static Tensor from_f32(const float * x, std::vector<int64_t> shape);
    static Tensor from_f64(const double * x, std::vector<int64_t> shape);
    static Tensor from_i64(const int64_t * x, std::vector<int64_t> shape);
    static Tensor from_u64(const uint64_t * x, std::vector<int64_t> shape);
};

// Bytes per element of a dtype name, 0 for an unknown dtype.
int safetensors_dtype_size(const std::string & dtype);

struct SafeTensors {
    std::map<std::string, std::string> metadata; // "__metadata__" (string -> string)
    std::map<std::string, Tensor> tensors;       // name -> tensor (written in name order)

    const Tensor * find(const std::string & name) const;
    // Finds a tensor and checks its dtype and shape. Returns nullptr and sets err
    // ("tensor 'x': expected F32 [3, 4], found F32 [3, 5]" / "missing tensor 'x'") otherwise.
    const Tensor * require(const std::string & name, const std::string & dtype,
                           const std::vector<int64_t> & shape, std::string & err) const;
};

// Parses a whole file held in memory. Never reads outside [data, data + size). Returns false
// and sets err naming the problem (truncated file, header longer than the file, malformed
// JSON, duplicate keys, unknown dtype, offsets out of range or overlapping, shape/offset
// mismatch, limits, a checksum that does not match). copy_data = false leaves every
// Tensor::data empty (the caller reads the bytes at file_offset itself).
bool safetensors_parse(const uint8_t * data, size_t size, SafeTensors & out, std::string & err, bool copy_data = true);

// The checksum ekvae writes into the metadata (key kChecksumKey, "h64:" and 16 hex digits):
// a 64-bit hash of every metadata key and value but itself, and of every tensor's name,
// dtype, shape and bytes. Other safetensors readers see one more metadata string.
// safetensors_parse verifies it when present; the model and checkpoint loaders require it.
constexpr const char * kChecksumKey = "checksum";
std::string safetensors_checksum(const SafeTensors & st, const uint8_t * file = nullptr);

// Serialises to the safetensors layout (header padded with spaces to a multiple of 8), with
// the checksum in the metadata.
std::vector<uint8_t> safetensors_serialize(const SafeTensors & st);

// Parses JSON text, refusing duplicate keys in any object (last-wins would hide an edit);
// err gives the parser's message with its position.
bool json_parse_strict(const char * text, size_t n, nlohmann::json & out, std::string & err);

} // namespace ekvae
