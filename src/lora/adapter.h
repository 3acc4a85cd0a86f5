// LoRA weights for a Qwen2 model (PEFT layout: A [r, in], B [out, r]) with their gradients,
// and PEFT's adapter files (adapter_config.json + adapter_model.safetensors).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lora/lora_config.h"
#include "model/config.h"

namespace loratune {

struct LoraWeights {
  int in = 0, out = 0, r = 0;
  std::vector<float> A, B;    // [r, in], [out, r]
  std::vector<float> dA, dB;  // gradients, same shapes (accumulated)
};

// One trainable tensor, as the optimizer sees it.
struct LoraParam {
  std::string
      name;  // PEFT name, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
  float* value;
  float* grad;
  size_t size;
  std::vector<int64_t> shape;
};

// Input and output sizes of a module of this model.
void lora_module_dims(const ModelConfig& m, LoraModule module, int* in, int* out);

class LoraAdapter {
 public:
  // A fresh adapter: A ~ kaiming_uniform(a=√5) = U(±1/sqrt(in)), B = 0 (PEFT's init), from a
  // seeded RNG. b_std > 0 draws B ~ N(0, b_std²) instead (for tests: every gradient flows).
  LoraAdapter(const ModelConfig& model, const LoraConfig& config, uint64_t seed,
              double b_std = 0.0);
  // Loads a PEFT adapter folder and checks every tensor against the model's shapes.
  static LoraAdapter load(const std::string& dir, const ModelConfig& model);
  // Writes adapter_config.json and adapter_model.safetensors (F32, {"format": "pt"}).
  void save(const std::string& dir) const;

  const LoraConfig& config() const { return config_; }
  float scale() const { return config_.scale(); }
  // nullptr when the module carries no LoRA.
  LoraWeights* at(int layer, LoraModule m) { return modules_[layer][static_cast<int>(m)].get(); }
  const LoraWeights* at(int layer, LoraModule m) const {
    return modules_[layer][static_cast<int>(m)].get();
  }
  std::vector<LoraParam> parameters();
  void zero_grad();

 private:
  explicit LoraAdapter(const LoraConfig& config) : config_(config) {}
  static std::string tensor_name(int layer, LoraModule m, char which);

  LoraConfig config_;
  std::vector<std::array<std::unique_ptr<LoraWeights>, kNumLoraModules>> modules_;
};

}  // namespace loratune
