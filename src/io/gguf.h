// GGUF v3, llama.cpp's single-file model format: a validating parser, a streaming writer and
// the ggml block formats loratune writes (f32, f16, bf16, q8_0, q4_0). Little-endian. A file
// is: "GGUF", version, tensor count, metadata count; the metadata (key, type, value); the
// tensor infos (name, dims innermost first, type, offset); then the tensor data, each tensor
// starting on general.alignment bytes (32 unless the file says otherwise).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "io/mapped_file.h"

namespace loratune {

// ggml tensor types (the numbering is the file format's).
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ8_0 = 8, kBF16 = 30 };
const char* ggml_type_name(GgmlType t);
// Values per block (32 for q8_0 and q4_0, else 1) and bytes per block.
int ggml_block_values(GgmlType t);
size_t ggml_block_bytes(GgmlType t);
// Bytes of n values; n must be a multiple of the block (throws Error otherwise).
size_t ggml_bytes(GgmlType t, int64_t n);

// n floats in the type's layout (dst holds ggml_bytes(t, n)), and back. q8_0: blocks of 32
// int8 with an f16 scale amax / 127; q4_0: blocks of 32 4-bit values (the first 16 in the low
// nibbles) with an f16 scale max / -8, stored offset by 8.
void ggml_quantize(GgmlType t, const float* src, int64_t n, uint8_t* dst);
void ggml_dequantize(GgmlType t, const uint8_t* src, int64_t n, float* dst);

// Metadata value types (the file format's numbering).
enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// One metadata value: a number (held as int64, uint64 or double), a bool, a string, or an
// array of values of one type.
struct GgufValue {
  GgufValueType type = GgufValueType::kU32;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> value;
  GgufValueType element_type = GgufValueType::kU32;  // of an array

  static GgufValue u32(uint32_t v) { return {GgufValueType::kU32, uint64_t{v}}; }
  static GgufValue i32(int32_t v) { return {GgufValueType::kI32, int64_t{v}}; }
  static GgufValue f32(float v) { return {GgufValueType::kF32, double{v}}; }
  static GgufValue boolean(bool v) { return {GgufValueType::kBool, v}; }
  static GgufValue string(std::string v) { return {GgufValueType::kString, std::move(v)}; }
  // An array; every element must have `element_type`.
  static GgufValue array(GgufValueType element_type, std::vector<GgufValue> values);

  // The value as a number or string; throws Error naming `key` when it is not one.
  int64_t as_int(const std::string& key) const;
  double as_float(const std::string& key) const;
  const std::string& as_string(const std::string& key) const;
  const std::vector<GgufValue>& as_array(const std::string& key) const;
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> ne;  // dims, innermost (contiguous) first
  GgmlType type = GgmlType::kF32;
  const uint8_t* data = nullptr;  // inside the file
  size_t nbytes = 0;
  int64_t numel() const;
};

struct GgufImage {
  uint32_t version = 3;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensor> tensors;  // in file order
  size_t alignment = 32;
  const GgufTensor* find(const std::string& name) const;
  const GgufValue* get(const std::string& key) const;
};

// Validates and parses a whole GGUF image in memory; `source` names it in errors. Refuses:
// a short file, another magic, versions other than 3, counts that the file cannot hold,
// strings or arrays running past the end, unknown value or tensor types, dims whose product
// overflows or is not whole blocks, tensor data outside the file or misaligned, duplicate
// names.
GgufImage parse_gguf(const uint8_t* data, size_t size, const std::string& source);

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  const GgufImage& image() const { return image_; }

 private:
  std::unique_ptr<MappedFile> file_;
  GgufImage image_;
};

// Whether `path` is a regular file that starts with GGUF's magic.
bool is_gguf_file(const std::string& path);

// A tensor to write: its bytes in `type`'s layout come from `fill` when its turn comes (so
// that a whole model never sits in memory at once).
struct GgufTensorToWrite {
  std::string name;
  std::vector<int64_t> ne;
  GgmlType type;
  std::function<void(uint8_t* bytes)> fill;
};

// Writes a GGUF v3 file through the atomic writer (whole or absent).
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kv,
                const std::vector<GgufTensorToWrite>& tensors);

}  // namespace loratune
