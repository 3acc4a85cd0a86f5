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
                        const std::vector<const float*>& tensors, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16) throw UsageError("--dtype must be f32 or bf16");
  const std::vector<TensorSpec> specs = qwen2_tensor_specs(config);
  if (specs.size() != tensors.size())
    throw Error("internal: tensor list does not match the config");
  make_dirs(dir);
  ModelConfig c = config;
  c.torch_dtype = dtype == DType::F32 ? "float32" : "bfloat16";
  std::vector<std::vector<uint16_t>> bf16_buffers;
  std::vector<TensorToWrite> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    const void* data = tensors[i];
    if (dtype == DType::BF16) {
      std::vector<uint16_t> half(static_cast<size_t>(shape_numel(specs[i].shape)));
      for (size_t k = 0; k < half.size(); ++k) half[k] = float_to_bf16(tensors[i][k]);
      bf16_buffers.push_back(std::move(half));
      data = bf16_buffers.back().data();
    }
    out.push_back({specs[i].name, dtype, specs[i].shape, data});
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
