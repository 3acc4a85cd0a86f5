#include "export/gguf_export.h"

#include <cmath>

#include "core/error.h"
#include "io/json_file.h"
#include "model/gguf_model.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace loratune {

namespace {

// llama.cpp's token types.
constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

// llama_ftype of a file whose matrices are `type` (general.file_type).
uint32_t file_type(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 0;
    case GgmlType::kF16:
      return 1;
    case GgmlType::kQ4_0:
      return 2;
    case GgmlType::kQ8_0:
      return 7;
    case GgmlType::kBF16:
      return 32;
  }
  return 0;
}

GgufValue strings(std::vector<std::string> values) {
  std::vector<GgufValue> v;
  v.reserve(values.size());
  for (std::string& s : values) v.push_back(GgufValue::string(std::move(s)));
  return GgufValue::array(GgufValueType::kString, std::move(v));
}

// The hyper-parameters llama.cpp's qwen2 loader reads.
void add_hparams(std::vector<std::pair<std::string, GgufValue>>& kv, const ModelConfig& c) {
  kv.push_back({"qwen2.context_length", GgufValue::u32(c.max_position_embeddings)});
  kv.push_back({"qwen2.embedding_length", GgufValue::u32(c.hidden_size)});
  kv.push_back({"qwen2.block_count", GgufValue::u32(c.num_hidden_layers)});
  kv.push_back({"qwen2.feed_forward_length", GgufValue::u32(c.intermediate_size)});
  kv.push_back({"qwen2.attention.head_count", GgufValue::u32(c.num_attention_heads)});
  kv.push_back({"qwen2.attention.head_count_kv", GgufValue::u32(c.num_key_value_heads)});
  kv.push_back({"qwen2.rope.freq_base", GgufValue::f32(static_cast<float>(c.rope_theta))});
  kv.push_back({"qwen2.attention.layer_norm_rms_epsilon",
                GgufValue::f32(static_cast<float>(c.rms_norm_eps))});
}

// The vocabulary (padded to the embedding's rows), token types, merges, special ids and the
// chat template of tokenizer_config.json.
void add_tokenizer(std::vector<std::pair<std::string, GgufValue>>& kv,
                   const tokenizer::Tokenizer& tok, const ModelConfig& c,
                   const std::string& model_dir) {
  if (tok.vocab_size() > c.vocab_size)
    throw Error("the tokenizer has more tokens (" + std::to_string(tok.vocab_size()) +
                    ") than the model has embedding rows (" + std::to_string(c.vocab_size) + ")",
                model_dir);
  std::vector<std::string> tokens;
  std::vector<GgufValue> types;
  for (int32_t id = 0; id < c.vocab_size; ++id) {
    const bool valid = tok.is_valid(id);
    tokens.push_back(valid ? std::string(tok.token_string(id)) : "[PAD" + std::to_string(id) + "]");
    types.push_back(GgufValue::i32(kUnused));
  }
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.is_valid(id)) types[id] = GgufValue::i32(kNormal);
  for (const tokenizer::AddedToken& t : tok.added_tokens())
    types[t.id] = GgufValue::i32(t.special ? kControl : kUserDefined);
  std::vector<std::string> merges;
  for (const auto& [left, right] : tok.merges())
    merges.push_back(std::string(left) + " " + std::string(right));
  kv.push_back({"tokenizer.ggml.model", GgufValue::string("gpt2")});
  kv.push_back({"tokenizer.ggml.pre", GgufValue::string("qwen2")});
  kv.push_back({"tokenizer.ggml.tokens", strings(std::move(tokens))});
  kv.push_back(
      {"tokenizer.ggml.token_type", GgufValue::array(GgufValueType::kI32, std::move(types))});
  kv.push_back({"tokenizer.ggml.merges", strings(std::move(merges))});
  if (tok.bos_id() >= 0)
    kv.push_back({"tokenizer.ggml.bos_token_id", GgufValue::u32(tok.bos_id())});
  if (tok.eos_id() >= 0)
    kv.push_back({"tokenizer.ggml.eos_token_id", GgufValue::u32(tok.eos_id())});
  if (tok.pad_id() >= 0)
    kv.push_back({"tokenizer.ggml.padding_token_id", GgufValue::u32(tok.pad_id())});
  kv.push_back({"tokenizer.ggml.add_bos_token", GgufValue::boolean(false)});
  const std::string config_path = model_dir + "/tokenizer_config.json";
  if (file_exists(config_path)) {
    const Json j = read_json_file(config_path);
    if (j.contains("chat_template") && j["chat_template"].is_string())
      kv.push_back(
          {"tokenizer.chat_template", GgufValue::string(j["chat_template"].get<std::string>())});
  }
}

std::vector<int64_t> reversed(const std::vector<int64_t>& shape) {
  return {shape.rbegin(), shape.rend()};
}

}  // namespace

GgmlType parse_export_type(const std::string& name) {
  for (GgmlType t :
       {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0})
    if (name == ggml_type_name(t)) return t;
  throw UsageError("unknown --type '" + name + "'", "", "use f32, f16, bf16, q8_0 or q4_0");
}

void export_model_gguf(const std::string& model_dir, const LoraAdapter* adapter, GgmlType type,
                       const std::string& out) {
  const ModelConfig config = load_model_config(model_dir);
  if (config.model_type != "qwen2")
    throw Error("GGUF export writes qwen2 models; this one is " + config.model_type, model_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(model_dir);
  ModelWeights weights(model_dir, config);
  if (adapter) weights.merge_lora(*adapter, config);
  const std::vector<TensorSpec> specs = model_tensor_specs(config);
  const std::vector<const float*> values = weights.tensors();

  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", GgufValue::string("qwen2")},
      {"general.name", GgufValue::string("loratune export")},
      {"general.file_type", GgufValue::u32(file_type(type))},
      {"general.quantization_version", GgufValue::u32(2)},
      {"general.alignment", GgufValue::u32(32)},
  };
  add_hparams(kv, config);
  add_tokenizer(kv, tok, config, model_dir);

  std::vector<GgufTensorToWrite> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<int64_t> ne = reversed(specs[i].shape);
    GgmlType t = ne.size() == 2 ? type : GgmlType::kF32;
    if (ne[0] % ggml_block_values(t) != 0) t = GgmlType::kF16;
    const float* v = values[i];
    int64_t numel = 1;
    for (int64_t d : ne) numel *= d;
    tensors.push_back({gguf_tensor_name(specs[i].name), ne, t,
                       [t, v, numel](uint8_t* bytes) { ggml_quantize(t, v, numel, bytes); }});
  }
  write_gguf(out, kv, tensors);
}

void export_lora_gguf(const LoraAdapter& adapter, const ModelConfig& config,
                      const std::string& out) {
  if (config.model_type != "qwen2")
    throw Error("GGUF export writes adapters of qwen2 models; this one is " + config.model_type);
  // llama.cpp scales a LoRA by alpha / r: the alpha written is scale · r, which also carries
  // rsLoRA's alpha / sqrt(r).
  int rank = 0;
  std::vector<GgufTensorToWrite> tensors;
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (int m = 0; m < kNumLoraModules; ++m) {
      const LoraModule module = static_cast<LoraModule>(m);
      const LoraWeights* w = adapter.at(l, module);
      if (!w) continue;
      rank = w->r;
      const std::string base = gguf_tensor_name("model.layers." + std::to_string(l) + "." +
                                                lora_module_path(module) + ".weight");
      tensors.push_back({base + ".lora_a", {w->in, w->r}, GgmlType::kF32, [w](uint8_t* bytes) {
                           ggml_quantize(GgmlType::kF32, w->A.data(),
                                         static_cast<int64_t>(w->A.size()), bytes);
                         }});
      tensors.push_back({base + ".lora_b", {w->r, w->out}, GgmlType::kF32, [w](uint8_t* bytes) {
                           ggml_quantize(GgmlType::kF32, w->B.data(),
                                         static_cast<int64_t>(w->B.size()), bytes);
                         }});
    }
  if (tensors.empty()) throw Error("the adapter has no LoRA tensors");
  const std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", GgufValue::string("qwen2")},
      {"general.type", GgufValue::string("adapter")},
      {"general.name", GgufValue::string("loratune adapter")},
      {"general.alignment", GgufValue::u32(32)},
      {"adapter.type", GgufValue::string("lora")},
      {"adapter.lora.alpha", GgufValue::f32(adapter.scale() * static_cast<float>(rank))},
  };
  write_gguf(out, kv, tensors);
}

}  // namespace loratune
