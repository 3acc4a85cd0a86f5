// Model configuration, read from a Hugging Face config.json and generation_config.json:
// model_type "qwen2" (Qwen2, Qwen2.5), "qwen3", "llama" (Llama 2/3.x, SmolLM2, TinyLlama) or
// "mistral". They share one decoder (RMSNorm, GQA attention with RoPE, SwiGLU MLP); what
// differs is below: biases, head_dim, Qwen3's q/k norms, RoPE scaling, Mistral's sliding
// window.
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

// rope_scaling: "linear" divides every frequency by `factor`; "llama3" (Llama 3.1/3.2)
// divides the low frequencies by `factor`, keeps the high ones and blends those between, as
// transformers' _compute_llama3_parameters.
struct RopeScaling {
  std::string type;  // empty: none
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type = "qwen2";
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
  // Biases: Qwen2 has them on q/k/v; Llama, Mistral and Qwen3 on q/k/v/o with attention_bias,
  // Llama and Mistral on gate/up/down with mlp_bias.
  bool qkv_bias = true;
  bool o_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;       // Qwen3: RMSNorm of each q and k head before RoPE
  int head_dim_override = 0;  // config.json's head_dim; 0: hidden_size / heads
  RopeScaling rope_scaling;
  int sliding_window = 0;  // Mistral: a token sees this many positions (itself included); 0: all
  int bos_token_id = -1;   // -1: none
  std::vector<int> eos_token_ids;
  GenerationConfig generation;  // from generation_config.json when present

  int head_dim() const {  // D
    return head_dim_override > 0 ? head_dim_override : hidden_size / num_attention_heads;
  }
  int kv_dim() const { return num_key_value_heads * head_dim(); }
  // Throws Error (naming `source`) when sizes are missing or inconsistent.
  void validate(const std::string& source) const;
};

// Reads DIR/config.json (and DIR/generation_config.json when present).
ModelConfig load_model_config(const std::string& dir);
ModelConfig parse_model_config(const Json& j, const std::string& source);
// RoPE's inv_freq[D/2] for this config: 1 / θ^(2i/D) in fp32, then rope_scaling.
std::vector<float> rope_inv_freq(const ModelConfig& c);
Json model_config_to_json(const ModelConfig& c);
Json generation_config_to_json(const ModelConfig& c);

}  // namespace loratune
