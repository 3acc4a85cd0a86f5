#include "io/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/half.h"
#include "io/atomic_file.h"

namespace loratune {

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kVersion = 3;
constexpr size_t kDefaultAlignment = 32;
constexpr int kBlock = 32;   // values per q8_0 / q4_0 block
constexpr int kMaxDims = 4;  // ggml's GGML_MAX_DIMS

bool known_type(uint32_t t) {
  return t == 0 || t == 1 || t == 2 || t == 8 || t == 30;
}

// Reads the image front to back; every read is checked against the end.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& source)
      : data_(data), size_(size), source_(source) {}

  size_t offset() const { return at_; }
  size_t left() const { return size_ - at_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("not a valid GGUF file: " + what, source_ + " at byte " + std::to_string(at_));
  }
  const uint8_t* bytes(size_t n, const char* what) {
    if (n > left()) fail(std::string(what) + " runs past the end of the file");
    const uint8_t* p = data_ + at_;
    at_ += n;
    return p;
  }
  template <typename T>
  T read(const char* what) {
    T v;
    std::memcpy(&v, bytes(sizeof v, what), sizeof v);
    return v;
  }
  std::string string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    if (n > left()) fail(std::string(what) + " longer than the rest of the file");
    const uint8_t* p = bytes(static_cast<size_t>(n), what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
  const std::string& source_;
};

// Smallest encoded size of one value of type t (for bounding array counts).
size_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kString:  // its u64 length
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    case GgufValueType::kArray:  // element type and count
      return 12;
  }
  return 1;
}

GgufValue read_value(Cursor& c, GgufValueType t, int depth) {
  switch (t) {
    case GgufValueType::kU8:
      return {t, uint64_t{c.read<uint8_t>("a u8")}};
    case GgufValueType::kI8:
      return {t, int64_t{c.read<int8_t>("an i8")}};
    case GgufValueType::kU16:
      return {t, uint64_t{c.read<uint16_t>("a u16")}};
    case GgufValueType::kI16:
      return {t, int64_t{c.read<int16_t>("an i16")}};
    case GgufValueType::kU32:
      return {t, uint64_t{c.read<uint32_t>("a u32")}};
    case GgufValueType::kI32:
      return {t, int64_t{c.read<int32_t>("an i32")}};
    case GgufValueType::kF32:
      return {t, double{c.read<float>("an f32")}};
    case GgufValueType::kBool: {
      const uint8_t b = c.read<uint8_t>("a bool");
      if (b > 1) c.fail("a bool that is neither 0 nor 1");
      return {t, b == 1};
    }
    case GgufValueType::kString:
      return {t, c.string("a string")};
    case GgufValueType::kU64:
      return {t, c.read<uint64_t>("a u64")};
    case GgufValueType::kI64:
      return {t, c.read<int64_t>("an i64")};
    case GgufValueType::kF64:
      return {t, c.read<double>("an f64")};
    case GgufValueType::kArray: {
      if (depth > 0) c.fail("an array of arrays");
      const uint32_t et = c.read<uint32_t>("an array's type");
      if (et > static_cast<uint32_t>(GgufValueType::kF64)) c.fail("an unknown array type");
      const auto element = static_cast<GgufValueType>(et);
      const uint64_t n = c.read<uint64_t>("an array's length");
      if (n > c.left() / min_value_bytes(element)) c.fail("an array longer than the file");
      std::vector<GgufValue> values;
      values.reserve(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i) values.push_back(read_value(c, element, depth + 1));
      GgufValue v{t, std::move(values)};
      v.element_type = element;
      return v;
    }
  }
  c.fail("an unknown value type");
}

void put(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}
template <typename T>
void put(std::string& out, T v) {
  put(out, &v, sizeof v);
}
void put_string(std::string& out, const std::string& s) {
  put(out, static_cast<uint64_t>(s.size()));
  out += s;
}

void put_value(std::string& out, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::kU8:
      return put(out, static_cast<uint8_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::kI8:
      return put(out, static_cast<int8_t>(std::get<int64_t>(v.value)));
    case GgufValueType::kU16:
      return put(out, static_cast<uint16_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::kI16:
      return put(out, static_cast<int16_t>(std::get<int64_t>(v.value)));
    case GgufValueType::kU32:
      return put(out, static_cast<uint32_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::kI32:
      return put(out, static_cast<int32_t>(std::get<int64_t>(v.value)));
    case GgufValueType::kF32:
      return put(out, static_cast<float>(std::get<double>(v.value)));
    case GgufValueType::kBool:
      return put(out, static_cast<uint8_t>(std::get<bool>(v.value)));
    case GgufValueType::kString:
      return put_string(out, std::get<std::string>(v.value));
    case GgufValueType::kU64:
      return put(out, std::get<uint64_t>(v.value));
    case GgufValueType::kI64:
      return put(out, std::get<int64_t>(v.value));
    case GgufValueType::kF64:
      return put(out, std::get<double>(v.value));
    case GgufValueType::kArray: {
      const auto& values = std::get<std::vector<GgufValue>>(v.value);
      put(out, static_cast<uint32_t>(v.element_type));
      put(out, static_cast<uint64_t>(values.size()));
      for (const GgufValue& e : values) put_value(out, e);
      return;
    }
  }
}

size_t align_up(size_t n, size_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

float block_amax(const float* x, int n, float* signed_max) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  if (signed_max) *signed_max = max;
  return amax;
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return "f32";
    case GgmlType::kF16:
      return "f16";
    case GgmlType::kQ4_0:
      return "q4_0";
    case GgmlType::kQ8_0:
      return "q8_0";
    case GgmlType::kBF16:
      return "bf16";
  }
  return "?";
}

int ggml_block_values(GgmlType t) {
  return t == GgmlType::kQ4_0 || t == GgmlType::kQ8_0 ? kBlock : 1;
}

size_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return 4;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      return 2;
    case GgmlType::kQ4_0:
      return 2 + kBlock / 2;
    case GgmlType::kQ8_0:
      return 2 + kBlock;
  }
  return 0;
}

size_t ggml_bytes(GgmlType t, int64_t n) {
  const int block = ggml_block_values(t);
  if (n < 0 || n % block != 0)
    throw Error(std::to_string(n) + " values are not whole " + ggml_type_name(t) + " blocks of " +
                std::to_string(block));
  return static_cast<size_t>(n / block) * ggml_block_bytes(t);
}

void ggml_quantize(GgmlType t, const float* src, int64_t n, uint8_t* dst) {
  ggml_bytes(t, n);  // whole blocks
  switch (t) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = t == GgmlType::kF16 ? float_to_f16(src[i]) : float_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case GgmlType::kQ8_0:
      for (int64_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        uint8_t* out = dst + b * ggml_block_bytes(t);
        const float d = block_amax(x, kBlock, nullptr) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = float_to_f16(d);
        std::memcpy(out, &dh, 2);
        for (int j = 0; j < kBlock; ++j)
          out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
      }
      return;
    case GgmlType::kQ4_0:
      for (int64_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        uint8_t* out = dst + b * ggml_block_bytes(t);
        float max = 0.0f;
        block_amax(x, kBlock, &max);
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = float_to_f16(d);
        std::memcpy(out, &dh, 2);
        for (int j = 0; j < kBlock / 2; ++j) {
          const int lo = std::min(15, static_cast<int>(x[j] * id + 8.5f));
          const int hi = std::min(15, static_cast<int>(x[j + kBlock / 2] * id + 8.5f));
          out[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
        }
      }
      return;
  }
}

void ggml_dequantize(GgmlType t, const uint8_t* src, int64_t n, float* dst) {
  ggml_bytes(t, n);
  switch (t) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = t == GgmlType::kF16 ? f16_to_float(h) : bf16_to_float(h);
      }
      return;
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
      for (int64_t b = 0; b < n / kBlock; ++b) {
        const uint8_t* in = src + b * ggml_block_bytes(t);
        uint16_t dh;
        std::memcpy(&dh, in, 2);
        const float d = f16_to_float(dh);
        float* x = dst + b * kBlock;
        for (int j = 0; j < kBlock; ++j) {
          if (t == GgmlType::kQ8_0) {
            x[j] = static_cast<float>(static_cast<int8_t>(in[2 + j])) * d;
          } else {
            const uint8_t q = in[2 + j % (kBlock / 2)];
            const int v = j < kBlock / 2 ? (q & 0xf) : (q >> 4);
            x[j] = static_cast<float>(v - 8) * d;
          }
        }
      }
      return;
  }
}

GgufValue GgufValue::array(GgufValueType element_type, std::vector<GgufValue> values) {
  for (const GgufValue& v : values)
    if (v.type != element_type) throw Error("a GGUF array holds values of one type only");
  GgufValue a{GgufValueType::kArray, std::move(values)};
  a.element_type = element_type;
  return a;
}

int64_t GgufValue::as_int(const std::string& key) const {
  if (const auto* u = std::get_if<uint64_t>(&value)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error("GGUF value out of range", key);
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&value)) return *i;
  throw Error("GGUF value is not an integer", key);
}

double GgufValue::as_float(const std::string& key) const {
  if (const auto* d = std::get_if<double>(&value)) return *d;
  return static_cast<double>(as_int(key));
}

const std::string& GgufValue::as_string(const std::string& key) const {
  if (const auto* s = std::get_if<std::string>(&value)) return *s;
  throw Error("GGUF value is not a string", key);
}

const std::vector<GgufValue>& GgufValue::as_array(const std::string& key) const {
  if (const auto* a = std::get_if<std::vector<GgufValue>>(&value)) return *a;
  throw Error("GGUF value is not an array", key);
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

const GgufTensor* GgufImage::find(const std::string& name) const {
  for (const GgufTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const GgufValue* GgufImage::get(const std::string& key) const {
  const auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}

GgufImage parse_gguf(const uint8_t* data, size_t size, const std::string& source) {
  Cursor c(data, size, source);
  GgufImage img;
  if (std::memcmp(c.bytes(4, "the magic"), kMagic, 4) != 0) c.fail("the magic is not \"GGUF\"");
  img.version = c.read<uint32_t>("the version");
  if (img.version != kVersion)
    c.fail("version " + std::to_string(img.version) + " (loratune reads version 3)");
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // Each metadata entry takes at least 13 bytes (key length, a 1-byte key, type, a u8), each
  // tensor info at least 29 (name length, a 1-byte name, dim count, one dim, type, offset).
  if (n_kv > c.left() / 13) c.fail("a metadata count the file cannot hold");
  if (n_tensors > c.left() / 29) c.fail("a tensor count the file cannot hold");
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string("a metadata key");
    if (key.empty()) c.fail("an empty metadata key");
    const uint32_t t = c.read<uint32_t>("a value type");
    if (t > static_cast<uint32_t>(GgufValueType::kF64)) c.fail("unknown value type of " + key);
    GgufValue v = read_value(c, static_cast<GgufValueType>(t), 0);
    if (!img.metadata.emplace(key, std::move(v)).second) c.fail("duplicate key " + key);
  }
  if (const GgufValue* a = img.get("general.alignment")) {
    const int64_t al = a->as_int("general.alignment");
    if (al <= 0 || al > 1 << 20 || (al & (al - 1)) != 0)
      c.fail("general.alignment is not a power of two");
    img.alignment = static_cast<size_t>(al);
  }
  std::vector<uint64_t> offsets;
  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = c.string("a tensor name");
    if (t.name.empty() || !names.insert(t.name).second)
      c.fail("an empty or duplicate tensor name '" + t.name + "'");
    const uint32_t dims = c.read<uint32_t>("a dim count");
    if (dims < 1 || dims > kMaxDims)
      c.fail("tensor " + t.name + " has " + std::to_string(dims) + " dims");
    int64_t numel = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      const uint64_t ne = c.read<uint64_t>("a dim");
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / numel))
        c.fail("tensor " + t.name + " has a zero or overflowing size");
      numel *= static_cast<int64_t>(ne);
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    const uint32_t type = c.read<uint32_t>("a tensor type");
    if (!known_type(type))
      c.fail("tensor " + t.name + " has ggml type " + std::to_string(type) +
             " (loratune reads f32, f16, bf16, q8_0, q4_0)");
    t.type = static_cast<GgmlType>(type);
    if (t.ne[0] % ggml_block_values(t.type) != 0)
      c.fail("tensor " + t.name + "'s rows are not whole " + ggml_type_name(t.type) + " blocks");
    t.nbytes = static_cast<size_t>(numel / ggml_block_values(t.type)) * ggml_block_bytes(t.type);
    offsets.push_back(c.read<uint64_t>("a tensor offset"));
    img.tensors.push_back(std::move(t));
  }
  const size_t data_start = align_up(c.offset(), img.alignment);
  if (data_start > size && n_tensors > 0) c.fail("the tensor data starts past the end");
  for (size_t i = 0; i < img.tensors.size(); ++i) {
    GgufTensor& t = img.tensors[i];
    if (offsets[i] % img.alignment != 0) c.fail("tensor " + t.name + " is not aligned");
    if (offsets[i] > size - data_start || t.nbytes > size - data_start - offsets[i])
      c.fail("tensor " + t.name + "'s data lies past the end of the file");
    t.data = data + data_start + offsets[i];
  }
  return img;
}

bool is_gguf_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[4] = {};
  const bool ok = std::fread(magic, 1, 4, f) == 4 && std::memcmp(magic, kMagic, 4) == 0;
  std::fclose(f);
  return ok;
}

GgufFile::GgufFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)),
      image_(parse_gguf(file_->data(), file_->size(), path)) {}

void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kv,
                const std::vector<GgufTensorToWrite>& tensors) {
  std::string head;
  put(head, kMagic, 4);
  put(head, kVersion);
  put(head, static_cast<uint64_t>(tensors.size()));
  put(head, static_cast<uint64_t>(kv.size()));
  for (const auto& [key, value] : kv) {
    put_string(head, key);
    put(head, static_cast<uint32_t>(value.type));
    put_value(head, value);
  }
  std::vector<size_t> sizes;
  size_t offset = 0;
  for (const GgufTensorToWrite& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.ne) numel *= d;
    if (t.ne.empty() || t.ne.size() > kMaxDims || t.ne[0] % ggml_block_values(t.type) != 0)
      throw Error("tensor " + t.name + " cannot be written as " + ggml_type_name(t.type));
    sizes.push_back(ggml_bytes(t.type, numel));
    put_string(head, t.name);
    put(head, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put(head, static_cast<uint64_t>(d));
    put(head, static_cast<uint32_t>(t.type));
    put(head, static_cast<uint64_t>(offset));
    offset = align_up(offset + sizes.back(), kDefaultAlignment);
  }
  head.resize(align_up(head.size(), kDefaultAlignment), '\0');
  AtomicFile out(path);
  out.write(head);
  std::vector<uint8_t> bytes;
  const std::string zeros(kDefaultAlignment, '\0');
  for (size_t i = 0; i < tensors.size(); ++i) {
    bytes.assign(sizes[i], 0);
    tensors[i].fill(bytes.data());
    out.write(bytes.data(), bytes.size());
    out.write(zeros.data(), align_up(sizes[i], kDefaultAlignment) - sizes[i]);
  }
  out.commit();
}

}  // namespace loratune
