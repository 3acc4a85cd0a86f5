// safetensors: a little-endian u64 header length, a JSON header, then raw tensor bytes.
// The reader maps the file and validates the whole header before any tensor is touched;
// the writer produces the same layout atomically.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace loratune {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType d);
size_t dtype_size(DType d);

// Product of the dimensions (1 for a scalar).
int64_t shape_numel(const std::vector<int64_t>& shape);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file (or, !in_file, memory)
  size_t nbytes = 0;
  bool in_file = true;  // false: converted into memory, whose pages must stay

  int64_t numel() const { return shape_numel(shape); }
};

struct SafetensorsHeader {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

// Validates and parses a whole safetensors image held in memory. `source` names it in
// errors. Checks: header length inside the buffer, valid JSON object, known dtypes,
// non-negative shapes, shape x dtype size == byte range, ranges inside the data section,
// no overlapping ranges.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& source);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::map<std::string, TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(const std::string& name) const;
  const std::string& path() const { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  SafetensorsHeader header_;
};

// All tensors of a model folder: model.safetensors, or the shards named by
// model.safetensors.index.json.
class TensorStore {
 public:
  explicit TensorStore(const std::string& dir);
  // The tensors of a GGUF file under the names `rename` gives them, with dims in row-major
  // order ([out, in]); f32, f16 and bf16 stay in the file, q8_0 and q4_0 are dequantised.
  TensorStore(const std::string& gguf_path,
              const std::function<std::string(const std::string&)>& rename);
  ~TensorStore();
  const TensorInfo* find(const std::string& name) const;
  // Like find(), but throws an Error naming the tensor and folder when it is absent.
  const TensorInfo& get(const std::string& name) const;
  size_t size() const { return index_.size(); }
  const std::map<std::string, const TensorInfo*>& all() const { return index_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unique_ptr<class GgufFile> gguf_;
  std::vector<std::unique_ptr<TensorInfo>> gguf_infos_;
  std::vector<std::unique_ptr<float[]>> dequantized_;
  std::map<std::string, const TensorInfo*> index_;
};

// Drops the resident pages of a mapped tensor (those wholly inside it) from memory: once a
// tensor has been copied elsewhere its file pages need not stay resident. Reading it again
// brings them back from the file.
void release_pages(const TensorInfo& t);

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // numel x dtype_size bytes, or null: `fill` writes them when their turn comes
  std::function<void(void* bytes)> fill = nullptr;
};

// Writes tensors (in the given order) with the __metadata__ map, atomically.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace loratune
