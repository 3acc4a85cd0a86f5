// Random Qwen2 models of any shape: how tests and benchmarks get models, since none can be
// downloaded. The same seed gives bit-identical weights on every machine and thread count.
#pragma once

#include <cstdint>
#include <string>

#include "io/safetensors.h"
#include "model/config.h"

namespace loratune {

// "tiny", "qwen2-0.5b", "qwen2-1.5b"; throws UsageError for other names.
ModelConfig model_preset(const std::string& name);

// Writes config.json, generation_config.json and model.safetensors into `dir` (created if
// needed). Weights: N(0, 0.02) for matrices and biases, 1 + N(0, 0.1) for norm weights, so
// every parameter matters in tests. `dtype` is F32 or BF16.
void write_random_model(const std::string& dir, const ModelConfig& config, uint64_t seed,
                        DType dtype);

// Creates a directory and its parents; throws Error when that fails.
void make_dirs(const std::string& dir);

}  // namespace loratune
