// Writing Hugging Face model folders: config.json, generation_config.json, model.safetensors,
// and the tokenizer files copied from another folder.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

namespace loratune {

// Tensor `index` of model_tensor_specs(config) in f32 into `out` (its numel floats).
using TensorValues = std::function<void(size_t index, float* out)>;

// Writes every tensor of model_tensor_specs(config), in that order, as `dtype` (F32 or BF16),
// each made by `values` when it is written (so a 7B model never sits whole in memory), and
// config.json recording the dtype.
void write_model_folder(const std::string& dir, const ModelConfig& config,
                        const TensorValues& values, DType dtype);

// The tokenizer files (tokenizer.json, vocab.json, merges.txt, ...) present in `dir`.
std::vector<std::string> tokenizer_files(const std::string& dir);
void copy_files(const std::string& from_dir, const std::string& to_dir,
                const std::vector<std::string>& names);

}  // namespace loratune
