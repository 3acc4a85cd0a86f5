#include "model/init_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "model/model_folder.h"
#include "model/weights.h"

namespace loratune {

ModelConfig model_preset(const std::string& name) {
  ModelConfig c;
  c.rope_theta = 1e6;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = true;
  if (name == "tiny") {
    // Small enough for tests in milliseconds; the vocabulary holds the 256 byte tokens and
    // the special tokens of the built-in byte-level tokenizer.
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.vocab_size = 512;
    c.max_position_embeddings = 4096;
    c.bos_token_id = 256;
    c.eos_token_ids = {256};
  } else if (name == "qwen2-0.5b") {
    c.hidden_size = 896;
    c.intermediate_size = 4864;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 14;
    c.num_key_value_heads = 2;
    c.vocab_size = 151936;
    c.max_position_embeddings = 131072;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151643};
  } else if (name == "qwen2-1.5b") {
    c.hidden_size = 1536;
    c.intermediate_size = 8960;
    c.num_hidden_layers = 28;
    c.num_attention_heads = 12;
    c.num_key_value_heads = 2;
    c.vocab_size = 151936;
    c.max_position_embeddings = 131072;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151643};
  } else if (name == "qwen2-7b") {
    c.hidden_size = 3584;
    c.intermediate_size = 18944;
    c.num_hidden_layers = 28;
    c.num_attention_heads = 28;
    c.num_key_value_heads = 4;
    c.vocab_size = 152064;
    c.max_position_embeddings = 131072;
    c.tie_word_embeddings = false;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151643};
  } else if (name == "qwen2.5-0.5b") {
    c.hidden_size = 896;
    c.intermediate_size = 4864;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 14;
    c.num_key_value_heads = 2;
    c.vocab_size = 151936;
    c.max_position_embeddings = 32768;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151643};
  } else if (name == "tiny-llama") {
    // The tiny shape as a Llama 3: no biases, an untied head, a head_dim of its own and
    // llama3 RoPE scaling (whose three frequency bands this head_dim reaches).
    c.model_type = "llama";
    c.qkv_bias = false;
    c.hidden_size = 64;
    c.intermediate_size = 96;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim_override = 24;
    c.vocab_size = 512;
    c.max_position_embeddings = 4096;
    c.rope_theta = 500000;
    c.rms_norm_eps = 1e-5;
    c.tie_word_embeddings = false;
    c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 64};
    c.bos_token_id = 256;
    c.eos_token_ids = {256};
  } else if (name == "tiny-qwen3") {
    // The tiny shape as a Qwen3: q/k norms, no biases, a head_dim unlike hidden / heads.
    c.model_type = "qwen3";
    c.qkv_bias = false;
    c.qk_norm = true;
    c.hidden_size = 64;
    c.intermediate_size = 96;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim_override = 32;
    c.vocab_size = 512;
    c.max_position_embeddings = 4096;
    c.bos_token_id = 256;
    c.eos_token_ids = {256};
  } else if (name == "qwen3-0.6b") {
    c.model_type = "qwen3";
    c.qkv_bias = false;
    c.qk_norm = true;
    c.hidden_size = 1024;
    c.intermediate_size = 3072;
    c.num_hidden_layers = 28;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.head_dim_override = 128;
    c.vocab_size = 151936;
    c.max_position_embeddings = 40960;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151645};
  } else if (name == "llama3.2-1b") {
    c.model_type = "llama";
    c.qkv_bias = false;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_hidden_layers = 16;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim_override = 64;
    c.vocab_size = 128256;
    c.max_position_embeddings = 131072;
    c.rope_theta = 500000;
    c.rms_norm_eps = 1e-5;
    c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001};
  } else if (name == "smollm2-135m") {
    c.model_type = "llama";
    c.qkv_bias = false;
    c.hidden_size = 576;
    c.intermediate_size = 1536;
    c.num_hidden_layers = 30;
    c.num_attention_heads = 9;
    c.num_key_value_heads = 3;
    c.vocab_size = 49152;
    c.max_position_embeddings = 8192;
    c.rope_theta = 100000;
    c.rms_norm_eps = 1e-5;
    c.bos_token_id = 0;
    c.eos_token_ids = {0};
  } else if (name == "mistral-7b") {
    c.model_type = "mistral";
    c.qkv_bias = false;
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_hidden_layers = 32;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.vocab_size = 32000;
    c.max_position_embeddings = 32768;
    c.rope_theta = 10000;
    c.rms_norm_eps = 1e-5;
    c.tie_word_embeddings = false;
    c.sliding_window = 4096;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  } else {
    throw UsageError("unknown preset '" + name + "'", "",
                     "use tiny, tiny-llama, tiny-qwen3, qwen2-0.5b, qwen2-1.5b, qwen2-7b, "
                     "qwen2.5-0.5b, qwen3-0.6b, llama3.2-1b, smollm2-135m or mistral-7b");
  }
  c.generation.eos_token_ids = c.eos_token_ids;
  return c;
}

void make_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
      throw Error(std::string("cannot create directory: ") + std::strerror(errno), part);
  }
  if (!dir_exists(dir)) throw Error("not a directory", dir);
}

namespace {

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

bool is_norm(const std::string& name) {
  return name.find("norm.weight") != std::string::npos;
}

// Fills one tensor; chunks have their own RNG streams so threads do not change the values.
// Standard deviation of a tensor's entries (norm weights are 1 + N(0, 0.1) either way).
double init_std(const TensorSpec& spec, InitScheme scheme) {
  if (scheme == InitScheme::kHf) return 0.02;  // HF initializer_range
  const bool embedding = spec.name == "model.embed_tokens.weight" || spec.name == "lm_head.weight";
  if (embedding) return 0.5;
  if (spec.shape.size() == 2) return 1.0 / std::sqrt(static_cast<double>(spec.shape[1]));
  return 0.02;  // biases
}

// Fills one tensor; chunks have their own RNG streams so threads do not change the values.
void fill_tensor(float* out, const TensorSpec& spec, uint64_t seed, InitScheme scheme) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = shape_numel(spec.shape);
  const bool norm = is_norm(spec.name);
  const double std = init_std(spec, scheme);
  const uint64_t base = hash_name(spec.name) ^ (seed * 0x9e3779b97f4a7c15ull);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) {
    Rng rng(base + static_cast<uint64_t>(c) * 0xd1b54a32d192ed03ull);
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; ++i) {
      double z = rng.normal();
      out[i] = static_cast<float>(norm ? 1.0 + 0.1 * z : std * z);
    }
  }
}

}  // namespace

InitScheme parse_init_scheme(const std::string& name) {
  if (name == "scaled") return InitScheme::kScaled;
  if (name == "hf") return InitScheme::kHf;
  throw UsageError("unknown --init '" + name + "'", "", "use scaled or hf");
}

void write_random_model(const std::string& dir, const ModelConfig& config, uint64_t seed,
                        DType dtype, InitScheme scheme) {
  config.validate("model shape");
  const std::vector<TensorSpec> specs = model_tensor_specs(config);
  write_model_folder(
      dir, config, [&](size_t i, float* out) { fill_tensor(out, specs[i], seed, scheme); }, dtype);
}

}  // namespace loratune
