#include "model/init_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iterator>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "model/model_folder.h"
#include "model/weights.h"

namespace loratune {

namespace {

// One preset: a family and its shape. Families set biases, q/k norms and the defaults below.
struct Preset {
  const char* name;
  const char* model_type;
  int hidden, intermediate, layers, heads, kv_heads;
  int head_dim;  // 0: hidden / heads
  int vocab, max_positions;
  double rope_theta, rms_norm_eps;
  bool tied;
  int bos, eos;
  RopeScaling rope_scaling = {};
  int sliding_window = 0;
};

// The tiny presets are small enough for tests in milliseconds; their vocabulary holds the 256
// byte tokens and the special tokens of the built-in byte-level tokenizer. tiny-llama has a
// head_dim of its own, an untied head and llama3 RoPE scaling whose three frequency bands its
// head_dim reaches; tiny-qwen3 a head_dim unlike hidden / heads; tiny-mistral a sliding window
// of 20 positions. The others are the real models' shapes.
const Preset kPresets[] = {
    {"tiny", "qwen2", 64, 128, 2, 4, 2, 0, 512, 4096, 1e6, 1e-6, true, 256, 256},
    {"tiny-llama",
     "llama",
     64,
     96,
     2,
     4,
     2,
     24,
     512,
     4096,
     500000,
     1e-5,
     false,
     256,
     256,
     {"llama3", 8.0, 1.0, 4.0, 64}},
    {"tiny-qwen3", "qwen3", 64, 96, 2, 4, 2, 32, 512, 4096, 1e6, 1e-6, true, 256, 256},
    {"tiny-mistral",
     "mistral",
     64,
     96,
     2,
     4,
     2,
     0,
     512,
     4096,
     10000,
     1e-5,
     false,
     256,
     256,
     {},
     20},
    {"qwen2-0.5b", "qwen2", 896, 4864, 24, 14, 2, 0, 151936, 131072, 1e6, 1e-6, true, 151643,
     151643},
    {"qwen2-1.5b", "qwen2", 1536, 8960, 28, 12, 2, 0, 151936, 131072, 1e6, 1e-6, true, 151643,
     151643},
    {"qwen2-7b", "qwen2", 3584, 18944, 28, 28, 4, 0, 152064, 131072, 1e6, 1e-6, false, 151643,
     151643},
    {"qwen2.5-0.5b", "qwen2", 896, 4864, 24, 14, 2, 0, 151936, 32768, 1e6, 1e-6, true, 151643,
     151643},
    {"qwen3-0.6b", "qwen3", 1024, 3072, 28, 16, 8, 128, 151936, 40960, 1e6, 1e-6, true, 151643,
     151645},
    {"llama3.2-1b",
     "llama",
     2048,
     8192,
     16,
     32,
     8,
     64,
     128256,
     131072,
     500000,
     1e-5,
     true,
     128000,
     128001,
     {"llama3", 32.0, 1.0, 4.0, 8192}},
    {"smollm2-135m", "llama", 576, 1536, 30, 9, 3, 0, 49152, 8192, 100000, 1e-5, true, 0, 0},
    {"mistral-7b",
     "mistral",
     4096,
     14336,
     32,
     32,
     8,
     0,
     32000,
     32768,
     10000,
     1e-5,
     false,
     1,
     2,
     {},
     4096},
};

}  // namespace

ModelConfig model_preset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    ModelConfig c;
    c.model_type = p.model_type;
    c.qkv_bias = c.model_type == "qwen2";  // others: attention_bias, false unless asked
    c.qk_norm = c.model_type == "qwen3";
    c.hidden_size = p.hidden;
    c.intermediate_size = p.intermediate;
    c.num_hidden_layers = p.layers;
    c.num_attention_heads = p.heads;
    c.num_key_value_heads = p.kv_heads;
    c.head_dim_override = p.head_dim;
    c.vocab_size = p.vocab;
    c.max_position_embeddings = p.max_positions;
    c.rope_theta = p.rope_theta;
    c.rms_norm_eps = p.rms_norm_eps;
    c.tie_word_embeddings = p.tied;
    c.rope_scaling = p.rope_scaling;
    c.sliding_window = p.sliding_window;
    c.bos_token_id = p.bos;
    c.eos_token_ids = {p.eos};
    c.generation.eos_token_ids = c.eos_token_ids;
    return c;
  }
  throw UsageError("unknown preset '" + name + "'", "", "use " + model_preset_names());
}

std::string model_preset_names() {
  std::string names;
  const size_t n = std::size(kPresets);
  for (size_t i = 0; i < n; ++i)
    names += std::string(i == 0 ? "" : i + 1 == n ? " or " : ", ") + kPresets[i].name;
  return names;
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
