#include "export/gguf_export.h"

#include <algorithm>
#include <cmath>
#include <list>

#include "core/error.h"
#include "io/json_file.h"
#include "model/gguf_model.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace loratune {

namespace {

// llama.cpp's token types.
constexpr int32_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;

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

// llama.cpp's architecture for the model: its qwen2, qwen3 and llama loaders (Llama 2 and 3.x,
// SmolLM2, TinyLlama; Mistral is a llama to llama.cpp, which attends over all positions, so
// a sliding window shorter than the context is refused).
std::string gguf_architecture(const ModelConfig& c, const std::string& where) {
  if (c.model_type == "qwen2" || c.model_type == "qwen3" || c.model_type == "llama")
    return c.model_type;
  if (c.model_type == "mistral") {
    if (c.sliding_window > 0 && c.sliding_window < c.max_position_embeddings)
      throw Error("GGUF export cannot write Mistral's sliding window of " +
                      std::to_string(c.sliding_window) + " positions",
                  where, "llama.cpp's llama architecture attends over all positions");
    return "llama";
  }
  throw Error(
      "GGUF export writes qwen2, qwen3, llama and mistral models; this one is " + c.model_type,
      where);
}

// llama.cpp's llama architecture rotates adjacent feature pairs of a head where Hugging Face
// rotates its two halves (qwen2 and qwen3 rotate halves in both): q and k rows, and their
// biases and LoRA B rows, are reordered as llama.cpp's converter does, from (head, half t,
// j) to (head, j, t).
bool reorders_rope_rows(const std::string& arch) {
  return arch == "llama";
}
std::vector<float> rope_pair_rows(const float* rows, int heads, int head_dim, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(heads) * head_dim * cols);
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h)
    for (int j = 0; j < half; ++j)
      for (int t = 0; t < 2; ++t)
        std::copy_n(rows + (static_cast<int64_t>(h) * head_dim + t * half + j) * cols, cols,
                    out.begin() + (static_cast<int64_t>(h) * head_dim + 2 * j + t) * cols);
  return out;
}
// The heads of a q_proj or k_proj tensor name, or 0 for any other tensor.
int rope_heads(const std::string& hf_name, const ModelConfig& c) {
  if (hf_name.find("self_attn.q_proj.") != std::string::npos) return c.num_attention_heads;
  if (hf_name.find("self_attn.k_proj.") != std::string::npos) return c.num_key_value_heads;
  return 0;
}

// The hyper-parameters llama.cpp's loader of `arch` reads.
void add_hparams(std::vector<std::pair<std::string, GgufValue>>& kv, const ModelConfig& c,
                 const std::string& arch) {
  const auto key = [&](const char* name) { return arch + "." + name; };
  kv.push_back({key("context_length"), GgufValue::u32(c.max_position_embeddings)});
  kv.push_back({key("embedding_length"), GgufValue::u32(c.hidden_size)});
  kv.push_back({key("block_count"), GgufValue::u32(c.num_hidden_layers)});
  kv.push_back({key("feed_forward_length"), GgufValue::u32(c.intermediate_size)});
  kv.push_back({key("attention.head_count"), GgufValue::u32(c.num_attention_heads)});
  kv.push_back({key("attention.head_count_kv"), GgufValue::u32(c.num_key_value_heads)});
  kv.push_back({key("attention.key_length"), GgufValue::u32(c.head_dim())});
  kv.push_back({key("attention.value_length"), GgufValue::u32(c.head_dim())});
  kv.push_back({key("rope.dimension_count"), GgufValue::u32(c.head_dim())});
  kv.push_back({key("rope.freq_base"), GgufValue::f32(static_cast<float>(c.rope_theta))});
  kv.push_back({key("attention.layer_norm_rms_epsilon"),
                GgufValue::f32(static_cast<float>(c.rms_norm_eps))});
  if (c.rope_scaling.type == "linear") {
    kv.push_back({key("rope.scaling.type"), GgufValue::string("linear")});
    kv.push_back(
        {key("rope.scaling.factor"), GgufValue::f32(static_cast<float>(c.rope_scaling.factor))});
  }
}

// llama3 RoPE scaling as llama.cpp takes it: a divisor of each frequency (rope_freqs.weight),
// the unscaled over the scaled frequency.
std::vector<float> rope_frequency_divisors(const ModelConfig& c) {
  ModelConfig unscaled = c;
  unscaled.rope_scaling = {};
  const std::vector<float> base = rope_inv_freq(unscaled), scaled = rope_inv_freq(c);
  std::vector<float> divisors(base.size());
  for (size_t i = 0; i < base.size(); ++i) divisors[i] = base[i] / scaled[i];
  return divisors;
}

// llama.cpp's pre-tokenizer names for the split regexes loratune implements; "" for a
// SentencePiece-style tokenizer (llama.cpp's "llama" model, which has none).
const char* gguf_pre_tokenizer(const tokenizer::Tokenizer& tok, const std::string& where) {
  const std::string name = tok.pre_tokenizer_name();
  if (name == "qwen2") return "qwen2";
  if (name == "llama3") return "llama-bpe";
  if (name == "gpt2") return "gpt2";
  if (name == "smollm") return "smollm";
  if (name == "sentencepiece") return "";
  throw Error("GGUF export has no llama.cpp tokenizer for this one (" + name + ")", where,
              "it writes byte-level BPE (Qwen2, Qwen3, Llama 3, SmolLM2) and SentencePiece-style "
              "BPE without a split at each \"▁\" (Llama 2, TinyLlama, Mistral)");
}

// llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined token scores
// highest: a token made by merge rank r scores −(r + 1), the others (characters, bytes, added
// tokens) far below, so that it merges in Hugging Face's order.
std::vector<GgufValue> sentencepiece_scores(const tokenizer::Tokenizer& tok, int32_t n) {
  std::vector<GgufValue> scores(static_cast<size_t>(n), GgufValue::f32(-1e9f));
  const auto merges = tok.merges();
  for (size_t rank = merges.size(); rank-- > 0;) {  // the first rank to make a token wins
    const auto& [left, right] = merges[rank];
    if (auto id = tok.token_id(std::string(left) + std::string(right)))
      scores[*id] = GgufValue::f32(-static_cast<float>(rank + 1));
  }
  return scores;
}

// The vocabulary (padded to the embedding's rows), token types, merges, special ids and the
// chat template of tokenizer_config.json.
void add_tokenizer(std::vector<std::pair<std::string, GgufValue>>& kv,
                   const tokenizer::Tokenizer& tok, const ModelConfig& c,
                   const std::string& model_dir) {
  const char* pre = gguf_pre_tokenizer(tok, model_dir);
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
  const bool sentencepiece = *pre == '\0';
  if (sentencepiece) {
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      const std::string_view s = tok.token_string(id);
      if (tok.is_valid(id) && s.size() == 6 && s.substr(0, 3) == "<0x" && s.back() == '>')
        types[id] = GgufValue::i32(kByte);
    }
  }
  for (const tokenizer::AddedToken& t : tok.added_tokens())
    types[t.id] = GgufValue::i32(t.special ? kControl : kUserDefined);
  if (sentencepiece && tok.unk_id() >= 0) types[tok.unk_id()] = GgufValue::i32(kUnknown);
  if (sentencepiece) {
    kv.push_back({"tokenizer.ggml.model", GgufValue::string("llama")});
    kv.push_back({"tokenizer.ggml.tokens", strings(std::move(tokens))});
    kv.push_back({"tokenizer.ggml.scores",
                  GgufValue::array(GgufValueType::kF32, sentencepiece_scores(tok, c.vocab_size))});
    kv.push_back(
        {"tokenizer.ggml.token_type", GgufValue::array(GgufValueType::kI32, std::move(types))});
    if (tok.unk_id() >= 0)
      kv.push_back({"tokenizer.ggml.unknown_token_id", GgufValue::u32(tok.unk_id())});
    kv.push_back({"tokenizer.ggml.add_space_prefix", GgufValue::boolean(tok.adds_space_prefix())});
  } else {
    std::vector<std::string> merges;
    for (const auto& [left, right] : tok.merges())
      merges.push_back(std::string(left) + " " + std::string(right));
    kv.push_back({"tokenizer.ggml.model", GgufValue::string("gpt2")});
    kv.push_back({"tokenizer.ggml.pre", GgufValue::string(pre)});
    kv.push_back({"tokenizer.ggml.tokens", strings(std::move(tokens))});
    kv.push_back(
        {"tokenizer.ggml.token_type", GgufValue::array(GgufValueType::kI32, std::move(types))});
    kv.push_back({"tokenizer.ggml.merges", strings(std::move(merges))});
  }
  if (tok.bos_id() >= 0)
    kv.push_back({"tokenizer.ggml.bos_token_id", GgufValue::u32(tok.bos_id())});
  if (tok.eos_id() >= 0)
    kv.push_back({"tokenizer.ggml.eos_token_id", GgufValue::u32(tok.eos_id())});
  if (tok.pad_id() >= 0)
    kv.push_back({"tokenizer.ggml.padding_token_id", GgufValue::u32(tok.pad_id())});
  // llama.cpp adds the BOS where the tokenizer's post-processor does (Llama 3.2's).
  const std::vector<int32_t>& leading = tok.leading_special_ids();
  kv.push_back({"tokenizer.ggml.add_bos_token",
                GgufValue::boolean(leading.size() == 1 && leading[0] == tok.bos_id())});
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
  const std::string arch = gguf_architecture(config, model_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(model_dir);
  ModelWeights weights(model_dir, config);
  if (adapter) weights.merge_lora(*adapter, config);
  const std::vector<TensorSpec> specs = model_tensor_specs(config);
  const std::vector<const float*> values = weights.tensors();

  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", GgufValue::string(arch)},
      {"general.name", GgufValue::string("loratune export")},
      {"general.file_type", GgufValue::u32(file_type(type))},
      {"general.quantization_version", GgufValue::u32(2)},
      {"general.alignment", GgufValue::u32(32)},
  };
  add_hparams(kv, config, arch);
  add_tokenizer(kv, tok, config, model_dir);

  std::vector<GgufTensorToWrite> tensors;
  std::list<std::vector<float>> reordered;  // q/k rows in llama.cpp's order, alive until written
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<int64_t> ne = reversed(specs[i].shape);
    GgmlType t = ne.size() == 2 ? type : GgmlType::kF32;
    if (ne[0] % ggml_block_values(t) != 0) t = GgmlType::kF16;
    const float* v = values[i];
    int64_t numel = 1;
    for (int64_t d : ne) numel *= d;
    if (const int heads = rope_heads(specs[i].name, config); heads && reorders_rope_rows(arch))
      v = reordered.emplace_back(rope_pair_rows(v, heads, config.head_dim(), ne[0])).data();
    tensors.push_back({gguf_tensor_name(specs[i].name), ne, t,
                       [t, v, numel](uint8_t* bytes) { ggml_quantize(t, v, numel, bytes); }});
  }
  if (config.rope_scaling.type == "llama3") {
    const std::vector<float>& divisors = reordered.emplace_back(rope_frequency_divisors(config));
    tensors.push_back({"rope_freqs.weight",
                       {static_cast<int64_t>(divisors.size())},
                       GgmlType::kF32,
                       [&divisors](uint8_t* bytes) {
                         ggml_quantize(GgmlType::kF32, divisors.data(),
                                       static_cast<int64_t>(divisors.size()), bytes);
                       }});
  } else if (!config.rope_scaling.type.empty() && config.rope_scaling.type != "linear") {
    throw Error("GGUF export has no form for rope_scaling '" + config.rope_scaling.type + "'",
                model_dir);
  }
  write_gguf(out, kv, tensors);
}

void export_lora_gguf(const LoraAdapter& adapter, const ModelConfig& config,
                      const std::string& out) {
  const std::string arch = gguf_architecture(config, "the adapter's base model");
  // llama.cpp scales a LoRA by alpha / r: the alpha written is scale · r, which also carries
  // rsLoRA's alpha / sqrt(r).
  int rank = 0;
  std::vector<GgufTensorToWrite> tensors;
  std::list<std::vector<float>> reordered;  // B of q/k in llama.cpp's row order
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (int m = 0; m < kNumLoraModules; ++m) {
      const LoraModule module = static_cast<LoraModule>(m);
      const LoraWeights* w = adapter.at(l, module);
      if (!w) continue;
      rank = w->r;
      const std::string hf_name =
          "model.layers." + std::to_string(l) + "." + lora_module_path(module) + ".weight";
      const std::string base = gguf_tensor_name(hf_name);
      const float* b = w->B.data();
      if (const int heads = rope_heads(hf_name, config); heads && reorders_rope_rows(arch))
        b = reordered.emplace_back(rope_pair_rows(b, heads, config.head_dim(), w->r)).data();
      tensors.push_back({base + ".lora_a", {w->in, w->r}, GgmlType::kF32, [w](uint8_t* bytes) {
                           ggml_quantize(GgmlType::kF32, w->A.data(),
                                         static_cast<int64_t>(w->A.size()), bytes);
                         }});
      tensors.push_back({base + ".lora_b", {w->r, w->out}, GgmlType::kF32, [w, b](uint8_t* bytes) {
                           ggml_quantize(GgmlType::kF32, b, static_cast<int64_t>(w->B.size()),
                                         bytes);
                         }});
    }
  if (tensors.empty()) throw Error("the adapter has no LoRA tensors");
  const std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", GgufValue::string(arch)},
      {"general.type", GgufValue::string("adapter")},
      {"general.name", GgufValue::string("loratune adapter")},
      {"general.alignment", GgufValue::u32(32)},
      {"adapter.type", GgufValue::string("lora")},
      {"adapter.lora.alpha", GgufValue::f32(adapter.scale() * static_cast<float>(rank))},
  };
  write_gguf(out, kv, tensors);
}

}  // namespace loratune
