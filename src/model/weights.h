// The frozen Qwen2 weights in fp32, under Hugging Face tensor names. F32 files are used in
// place (zero-copy from the memory map); BF16/F16 tensors are converted once at load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/config.h"

namespace loratune {

struct LayerWeights {
  const float* input_norm;  // [C]
  const float* wq;          // [H*D, C]
  const float* bq;          // [H*D]
  const float* wk;          // [Hkv*D, C]
  const float* bk;          // [Hkv*D]
  const float* wv;          // [Hkv*D, C]
  const float* bv;          // [Hkv*D]
  const float* wo;          // [C, H*D]
  const float* post_norm;   // [C]
  const float* w_gate;      // [F, C]
  const float* w_up;        // [F, C]
  const float* w_down;      // [C, F]
};

// One tensor of the Qwen2 layout: its HF name and shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a Qwen2 checkpoint holds, in a stable order (lm_head only when untied).
std::vector<TensorSpec> qwen2_tensor_specs(const ModelConfig& c);
int64_t qwen2_parameter_count(const ModelConfig& c);

class ModelWeights {
 public:
  // Loads DIR's safetensors and checks every tensor against the config.
  ModelWeights(const std::string& dir, const ModelConfig& config);
  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  const float* embed = nullptr;       // [V, C]
  const float* final_norm = nullptr;  // [C]
  const float* lm_head = nullptr;     // [V, C]; equals embed when tied
  std::vector<LayerWeights> layers;

  // Replaces every weight the adapter targets by W + s·B·A (owned copies; the file is not
  // touched). The merged model computes what the base model with the adapter unmerged does.
  void merge_lora(const LoraAdapter& adapter, const ModelConfig& config);
  // Every tensor of qwen2_tensor_specs(config), in that order.
  std::vector<const float*> tensors() const;

  // Pointer to any tensor by HF name (nullptr if unknown).
  const float* find(const std::string& name) const;
  int64_t parameter_count() const { return parameter_count_; }

 private:
  std::unique_ptr<TensorStore> store_;
  std::vector<std::unique_ptr<float[]>> owned_;  // converted BF16/F16 (or unaligned) tensors
  std::vector<std::pair<std::string, const float*>> by_name_;
  int64_t parameter_count_ = 0;
};

}  // namespace loratune
