// config.json of the families as their Hugging Face folders ship them: parsed fields, the
// presets of the same shapes, and RoPE scaling.
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "model/config.h"
#include "model/init_model.h"
#include "test_util.h"

namespace loratune {
namespace {

// The config.json files of Qwen2.5-0.5B, Qwen2.5-7B, Qwen3-0.6B, Llama-3.2-1B, SmolLM2-135M
// and Mistral-7B-v0.1 (the keys that matter, as published).
const char* kQwen25_05b = R"({"architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864,
  "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
  "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false,
  "vocab_size": 151936})";
const char* kQwen25_7b = R"({"architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_size": 3584, "intermediate_size": 18944,
  "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2",
  "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
  "tie_word_embeddings": false, "use_sliding_window": false, "vocab_size": 152064})";
const char* kQwen3_06b = R"({"architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_size": 1024,
  "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28,
  "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
  "sliding_window": null, "tie_word_embeddings": true, "use_sliding_window": false,
  "vocab_size": 151936})";
const char* kLlama32_1b = R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false,
  "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_size": 2048,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256})";
const char* kSmolLM2_135m = R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false,
  "bos_token_id": 0, "eos_token_id": 0, "hidden_size": 576, "intermediate_size": 1536,
  "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
  "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000,
  "tie_word_embeddings": true, "vocab_size": 49152})";
const char* kMistral_7b = R"({"architectures": ["MistralForCausalLM"], "bos_token_id": 1,
  "eos_token_id": 2, "hidden_size": 4096, "intermediate_size": 14336,
  "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
  "vocab_size": 32000})";

ModelConfig parse(const char* text) {
  return parse_model_config(Json::parse(text), "config.json");
}

// The fields a preset sets, equal to those of the published config.
void expect_same_shape(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim(), b.head_dim());
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.o_bias, b.o_bias);
  EXPECT_EQ(a.mlp_bias, b.mlp_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
}

TEST(ModelConfig, PublishedConfigsParseAsTheirFamilies) {
  const ModelConfig q25 = parse(kQwen25_05b), q25_7b = parse(kQwen25_7b);
  EXPECT_TRUE(q25.qkv_bias);
  EXPECT_FALSE(q25.o_bias);
  EXPECT_EQ(q25.sliding_window, 0);  // use_sliding_window false
  EXPECT_TRUE(q25.tie_word_embeddings);
  EXPECT_FALSE(q25_7b.tie_word_embeddings);
  const ModelConfig q3 = parse(kQwen3_06b);
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_FALSE(q3.qkv_bias);
  EXPECT_EQ(q3.head_dim(), 128);  // not 1024 / 16
  const ModelConfig l = parse(kLlama32_1b);
  EXPECT_EQ(l.rope_scaling.type, "llama3");
  EXPECT_EQ(l.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(l.qkv_bias);
  EXPECT_EQ(parse(kMistral_7b).sliding_window, 4096);
  expect_same_shape(model_preset("qwen2.5-0.5b"), q25);
  expect_same_shape(model_preset("qwen3-0.6b"), q3);
  expect_same_shape(model_preset("llama3.2-1b"), l);
  expect_same_shape(model_preset("smollm2-135m"), parse(kSmolLM2_135m));
  expect_same_shape(model_preset("mistral-7b"), parse(kMistral_7b));
  ModelConfig q25_7b_preset = model_preset("qwen2-7b");
  q25_7b_preset.max_position_embeddings = 131072;
  expect_same_shape(q25_7b_preset, q25_7b);  // Qwen2-7B's shape is Qwen2.5-7B's
}

// llama3 scaling keeps the high frequencies, divides the low ones by the factor and blends
// those between; the config's published values for Llama 3.2.
TEST(ModelConfig, Llama3RopeScalingBands) {
  ModelConfig c = parse(kLlama32_1b);
  const std::vector<float> scaled = rope_inv_freq(c);
  c.rope_scaling = {};
  const std::vector<float> plain = rope_inv_freq(c);
  ASSERT_EQ(scaled.size(), 32u);
  int high = 0, low = 0, blended = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 8192.0 / 4) {
      EXPECT_EQ(scaled[i], plain[i]) << i;
      ++high;
    } else if (wavelen > 8192.0) {
      EXPECT_FLOAT_EQ(scaled[i], plain[i] / 32.0f) << i;
      ++low;
    } else {
      EXPECT_LT(scaled[i], plain[i]) << i;
      EXPECT_GT(scaled[i], plain[i] / 32.0f) << i;
      ++blended;
    }
  }
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(blended, 0);
  c.rope_scaling = {"linear", 4.0};
  EXPECT_FLOAT_EQ(rope_inv_freq(c)[3], plain[3] / 4.0f);
}

TEST(ModelConfig, RefusesWhatIsNotBuilt) {
  Json j = Json::parse(kQwen25_05b);
  j["use_sliding_window"] = true;
  EXPECT_THROW(parse_model_config(j, "config.json"), Error);
  j = Json::parse(kLlama32_1b);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_THROW(parse_model_config(j, "config.json"), Error);
  j["model_type"] = "gemma";
  EXPECT_THROW(parse_model_config(j, "config.json"), Error);
}

}  // namespace
}  // namespace loratune
