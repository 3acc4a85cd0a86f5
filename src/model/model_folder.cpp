#include "model/model_folder.h"

#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/half.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "model/init_model.h"
#include "model/weights.h"

namespace loratune {

void write_model_folder(const std::string& dir, const ModelConfig& config,
                        const TensorValues& values, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16) throw UsageError("--dtype must be f32 or bf16");
  const std::vector<TensorSpec> specs = model_tensor_specs(config);
  make_dirs(dir);
  ModelConfig c = config;
  c.torch_dtype = dtype == DType::F32 ? "float32" : "bfloat16";
  std::vector<TensorToWrite> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t n = static_cast<size_t>(shape_numel(specs[i].shape));
    auto fill = [&values, i, n, dtype](void* bytes) {
      if (dtype == DType::F32) return values(i, static_cast<float*>(bytes));
      std::vector<float> f32(n);
      values(i, f32.data());
      uint16_t* half = static_cast<uint16_t*>(bytes);
#pragma omp parallel for schedule(static)
      for (size_t k = 0; k < n; ++k) half[k] = float_to_bf16(f32[k]);
    };
    out.push_back({specs[i].name, dtype, specs[i].shape, nullptr, fill});
  }
  write_safetensors(dir + "/model.safetensors", out, {{"format", "pt"}});
  write_file_atomic(dir + "/config.json", model_config_to_json(c).dump(2) + "\n");
  write_file_atomic(dir + "/generation_config.json", generation_config_to_json(c).dump(2) + "\n");
}

std::vector<std::string> tokenizer_files(const std::string& dir) {
  static const char* const kNames[] = {"tokenizer.json",    "tokenizer_config.json",
                                       "vocab.json",        "merges.txt",
                                       "added_tokens.json", "special_tokens_map.json"};
  std::vector<std::string> found;
  for (const char* name : kNames)
    if (file_exists(dir + "/" + name)) found.push_back(name);
  return found;
}

void copy_files(const std::string& from_dir, const std::string& to_dir,
                const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    std::ifstream in(from_dir + "/" + name, std::ios::binary);
    if (!in) throw Error("cannot read file", from_dir + "/" + name);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_file_atomic(to_dir + "/" + name, content);
  }
}

}  // namespace loratune
