// Qwen2 model configuration, read from a Hugging Face config.json (model_type "qwen2";
// Qwen2 and Qwen2.5 share it) and generation_config.json.
#pragma once

#include <string>
#include <vector>

#include "io/json_file.h"

namespace loratune {

struct GenerationConfig {
  bool do_sample = false;
  double temperature = 1.0;
  int top_k = 50;
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  std::vector<int> eos_token_ids;
};

struct ModelConfig {
  int hidden_size = 0;          // C
  int intermediate_size = 0;    // F
  int num_hidden_layers = 0;    // L
  int num_attention_heads = 0;  // H
  int num_key_value_heads = 0;  // Hkv
  int vocab_size = 0;           // V
  int max_position_embeddings = 0;
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";
  int bos_token_id = -1;  // -1: none
  std::vector<int> eos_token_ids;
  GenerationConfig generation;  // from generation_config.json when present

  int head_dim() const { return hidden_size / num_attention_heads; }  // D
  int kv_dim() const { return num_key_value_heads * head_dim(); }
  // Throws Error (naming `source`) when sizes are missing or inconsistent.
  void validate(const std::string& source) const;
};

// Reads DIR/config.json (and DIR/generation_config.json when present).
ModelConfig load_model_config(const std::string& dir);
ModelConfig parse_model_config(const Json& j, const std::string& source);
Json model_config_to_json(const ModelConfig& c);
Json generation_config_to_json(const ModelConfig& c);

}  // namespace loratune
