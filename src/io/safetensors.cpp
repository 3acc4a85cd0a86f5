#include "io/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/json_file.h"

namespace loratune {

namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::F32, "F32", 4},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::F64, "F64", 8},   {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

bool dtype_from_name(const std::string& name, DType* out) {
  for (const auto& e : kDTypes)
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  return false;
}

const char* kHint = "the file is truncated or not a safetensors file; re-download or re-export it";

}  // namespace

const char* dtype_name(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e.name;
  return "?";
}

size_t dtype_size(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e.size;
  return 0;
}

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& source) {
  if (size < 8) throw Error("file too small for a safetensors header", source, kHint);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > size - 8)
    throw Error("header length " + std::to_string(header_len) + " runs past the end of the file (" +
                    std::to_string(size) + " bytes)",
                source, kHint);
  const size_t data_start = 8 + header_len;
  const size_t data_size = size - data_start;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data + 8, data + data_start);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("header is not valid JSON: ") + e.what(), source, kHint);
  }
  if (!header.is_object()) throw Error("header is not a JSON object", source, kHint);

  SafetensorsHeader out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    const std::string where = source + ", tensor '" + name + "'";
    if (name == "__metadata__") {
      if (!entry.is_object()) throw Error("__metadata__ is not an object", source);
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          throw Error("__metadata__ value is not a string", source + ", key '" + m.key() + "'");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) throw Error("entry is not an object", where, kHint);
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || sh == entry.end() || off == entry.end())
      throw Error("entry needs dtype, shape and data_offsets", where, kHint);
    TensorInfo info;
    info.name = name;
    if (!dt->is_string() || !dtype_from_name(dt->get<std::string>(), &info.dtype))
      throw Error("unknown dtype " + dt->dump(), where, "supported: F32, F16, BF16 and integers");
    if (!sh->is_array()) throw Error("shape is not an array", where, kHint);
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) throw Error("shape entry is not a non-negative integer", where);
      uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > (uint64_t(1) << 62) / v)
        throw Error("shape is too large", where, kHint);
      numel *= v;
      info.shape.push_back(static_cast<int64_t>(v));
    }
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw Error("data_offsets must be two non-negative integers", where, kHint);
    uint64_t begin = (*off)[0].get<uint64_t>();
    uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end || end > data_size)
      throw Error("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                      "] out of range (data section holds " + std::to_string(data_size) + " bytes)",
                  where, kHint);
    uint64_t expected = numel * dtype_size(info.dtype);
    if (end - begin != expected)
      throw Error("byte range holds " + std::to_string(end - begin) +
                      " bytes but shape and dtype need " + std::to_string(expected),
                  where, kHint);
    info.data = data + data_start + begin;
    info.nbytes = static_cast<size_t>(expected);
    if (end > begin) ranges.emplace_back(begin, end);
    out.tensors.emplace(name, std::move(info));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      throw Error("tensor byte ranges overlap", source, kHint);
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)),
      header_(parse_safetensors(file_->data(), file_->size(), path)) {}

void release_pages(const TensorInfo& t) {
  if (!t.in_file) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data) + t.nbytes) / page * page;
  // A read-only private file mapping: the pages are read back from the file when touched.
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = header_.tensors.find(name);
  return it == header_.tensors.end() ? nullptr : &it->second;
}

TensorStore::TensorStore(const std::string& dir) : dir_(dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  std::map<std::string, std::string> name_to_file;
  if (file_exists(single_path)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single_path));
  } else if (file_exists(index_path)) {
    Json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error("index has no weight_map object", index_path);
    std::map<std::string, size_t> shard_ids;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw Error("weight_map value is not a string", index_path);
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.empty())
        throw Error("shard name '" + shard + "' must be a plain file name", index_path);
      if (!shard_ids.count(shard)) {
        shard_ids[shard] = files_.size();
        files_.push_back(std::make_unique<SafetensorsFile>(dir + "/" + shard));
      }
      name_to_file[it.key()] = shard;
    }
    for (const auto& [name, shard] : name_to_file) {
      const TensorInfo* t = files_[shard_ids[shard]]->find(name);
      if (!t)
        throw Error("tensor '" + name + "' listed in the index is missing", dir + "/" + shard);
      index_[name] = t;
    }
    return;
  } else {
    throw Error("no model.safetensors or model.safetensors.index.json", dir,
                "point --model at a Hugging Face model folder");
  }
  for (const auto& [name, info] : files_[0]->tensors()) index_[name] = &info;
}

TensorStore::TensorStore(const std::string& gguf_path,
                         const std::function<std::string(const std::string&)>& rename)
    : dir_(gguf_path), gguf_(std::make_unique<GgufFile>(gguf_path)) {
  for (const GgufTensor& g : gguf_->image().tensors) {
    auto t = std::make_unique<TensorInfo>();
    t->name = rename(g.name);
    t->shape.assign(g.ne.rbegin(), g.ne.rend());
    t->data = g.data;
    t->nbytes = g.nbytes;
    switch (g.type) {
      case GgmlType::kF32:
        t->dtype = DType::F32;
        break;
      case GgmlType::kF16:
        t->dtype = DType::F16;
        break;
      case GgmlType::kBF16:
        t->dtype = DType::BF16;
        break;
      case GgmlType::kQ8_0:
      case GgmlType::kQ4_0: {
        dequantized_.push_back(std::make_unique<float[]>(static_cast<size_t>(g.numel())));
        ggml_dequantize(g.type, g.data, g.numel(), dequantized_.back().get());
        t->dtype = DType::F32;
        t->data = reinterpret_cast<const uint8_t*>(dequantized_.back().get());
        t->nbytes = static_cast<size_t>(g.numel()) * sizeof(float);
        t->in_file = false;
        break;
      }
    }
    if (index_.count(t->name)) throw Error("two tensors are named " + t->name, gguf_path);
    index_[t->name] = t.get();
    gguf_infos_.push_back(std::move(t));
  }
}

TensorStore::~TensorStore() = default;

const TensorInfo* TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorInfo& TensorStore::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t)
    throw Error("missing tensor '" + name + "'", dir_, "is this a complete Qwen2 model folder?");
  return *t;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const auto& t : tensors) {
    const uint64_t n = dtype_size(t.dtype) * static_cast<uint64_t>(shape_numel(t.shape));
    header[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    sizes.push_back(n);
  }
  std::string json = header.dump();
  // Pad with spaces so that tensor data starts 8-byte aligned, as the reference writer does.
  json.resize((json.size() + 7) / 8 * 8, ' ');
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(uint64_t(json.size()) >> (8 * i));

  AtomicFile out(path);
  out.write(len_bytes, 8);
  out.write(json);
  std::vector<char> made;  // one tensor made on demand at a time
  for (size_t i = 0; i < tensors.size(); ++i) {
    const void* data = tensors[i].data;
    if (!data) {
      made.resize(sizes[i]);
      tensors[i].fill(made.data());
      data = made.data();
    }
    out.write(data, sizes[i]);
  }
  out.commit();
}

}  // namespace loratune
