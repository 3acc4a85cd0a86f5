// LoRA settings as PEFT's LoraConfig, and the adapter_config.json PEFT reads and writes.
#pragma once

#include <string>
#include <vector>

#include "io/json_file.h"

namespace loratune {

// The seven linear layers of a Qwen2 block, in PEFT's module names.
enum class LoraModule { kQ, kK, kV, kO, kGate, kUp, kDown };
constexpr int kNumLoraModules = 7;
const char* lora_module_name(LoraModule m);  // "q_proj", ...
std::string lora_module_path(LoraModule m);  // "self_attn.q_proj", "mlp.gate_proj", ...

struct LoraConfig {
  int r = 8;
  double lora_alpha = 16;
  double lora_dropout = 0.05;
  bool use_rslora = false;
  // Module names (q_proj, ...) or "all-linear"; a single string that is neither is a regex
  // over the full module name, as in PEFT.
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  std::string target_regex;
  std::string base_model_name_or_path;

  // s = alpha / r, or alpha / sqrt(r) with rsLoRA.
  float scale() const;
  // Whether layer `layer`'s module `m` carries LoRA.
  bool targets(int layer, LoraModule m) const;
  void validate() const;  // throws UsageError
};

// Parses "q_proj,v_proj" / "all-linear" as given on the command line.
std::vector<std::string> parse_target_modules(const std::string& text);

// Reads adapter_config.json; unknown keys are ignored, features loratune cannot honour
// (DoRA, bias training, rank patterns, ...) are refused with a clear message.
LoraConfig read_lora_config(const std::string& path);
Json lora_config_to_json(const LoraConfig& c, bool inference_mode);

}  // namespace loratune
