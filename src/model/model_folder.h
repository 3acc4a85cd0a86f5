// Writing Hugging Face model folders: config.json, generation_config.json, model.safetensors,
// and the tokenizer files copied from another folder.
#pragma once

#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

namespace loratune {

// `tensors` holds the f32 data of every tensor of qwen2_tensor_specs(config), in that order;
// they are written as `dtype` (F32 or BF16) and config.json records it.
void write_model_folder(const std::string& dir, const ModelConfig& config,
                        const std::vector<const float*>& tensors, DType dtype);

// The tokenizer files (tokenizer.json, vocab.json, merges.txt, ...) present in `dir`.
std::vector<std::string> tokenizer_files(const std::string& dir);
void copy_files(const std::string& from_dir, const std::string& to_dir,
                const std::vector<std::string>& names);

}  // namespace loratune
