// A Qwen2 model as llama.cpp's GGUF names it: tensor names both ways, and the hyper-parameters
// of a GGUF file as a ModelConfig (so that `--model FILE.gguf` loads like a folder).
#pragma once

#include <string>

#include "io/gguf.h"
#include "model/config.h"

namespace loratune {

// llama.cpp's name of an HF Qwen2 tensor ("model.layers.3.mlp.up_proj.weight" ->
// "blk.3.ffn_up.weight"); throws Error for a tensor it has no name for.
std::string gguf_tensor_name(const std::string& hf_name);
// The reverse; throws Error for a tensor loratune's Qwen2 has no place for.
std::string hf_tensor_name(const std::string& gguf_name);

// The config of a qwen2 GGUF file (architecture, sizes, RoPE base, RMSNorm eps, tied or not,
// special ids); throws Error for another architecture or missing keys.
ModelConfig config_from_gguf(const GgufImage& image, const std::string& source);

}  // namespace loratune
