// Random Qwen2 models of any shape: how tests and benchmarks get models, since none can be
// downloaded. The same seed gives bit-identical weights on every machine and thread count.
#pragma once

#include <cstdint>
#include <string>

#include "io/safetensors.h"
#include "model/config.h"

namespace loratune {

// "tiny", "qwen2-0.5b", "qwen2-1.5b"; throws UsageError for other names.
// "tiny, tiny-llama, …, or mistral-7b": the preset names, for help and errors.
std::string model_preset_names();
ModelConfig model_preset(const std::string& name);

// How random weights are drawn. Norm weights are 1 + N(0, 0.1) and biases N(0, 0.02) in both,
// so that every parameter matters in tests.
//   scaled: matrices N(0, 1/in), embeddings N(0, 0.25): activations keep their scale through
//           the layers and logits are far from uniform, so a tiny model can learn (default);
//   hf:     everything N(0, 0.02²), Hugging Face's initializer_range.
enum class InitScheme { kScaled, kHf };
InitScheme parse_init_scheme(const std::string& name);  // throws UsageError

// Writes config.json, generation_config.json and model.safetensors into `dir` (created if
// needed). `dtype` is F32 or BF16.
void write_random_model(const std::string& dir, const ModelConfig& config, uint64_t seed,
                        DType dtype, InitScheme scheme = InitScheme::kScaled);

// Creates a directory and its parents; throws Error when that fails.
void make_dirs(const std::string& dir);

}  // namespace loratune
