#include "model/gguf_model.h"

#include <regex>

#include "core/error.h"

namespace loratune {

namespace {

// HF module path within a layer and llama.cpp's name for it.
constexpr std::pair<const char*, const char*> kBlockNames[] = {
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
};
constexpr std::pair<const char*, const char*> kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

int64_t required_int(const GgufImage& img, const std::string& key, const std::string& source) {
  const GgufValue* v = img.get(key);
  if (!v) throw Error("the GGUF file has no " + key, source);
  return v->as_int(key);
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf_name) {
  for (const auto& [hf, gguf] : kGlobalNames)
    if (hf_name == hf) return gguf;
  static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(hf_name, m, kLayer))
    for (const auto& [hf, gguf] : kBlockNames)
      if (m[2] == hf) return "blk." + m[1].str() + "." + gguf + "." + m[3].str();
  throw Error("no GGUF name for tensor " + hf_name, "", "llama.cpp's qwen2 has no such tensor");
}

std::string hf_tensor_name(const std::string& gguf_name) {
  for (const auto& [hf, gguf] : kGlobalNames)
    if (gguf_name == gguf) return hf;
  static const std::regex kBlock(R"(blk\.(\d+)\.(\w+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(gguf_name, m, kBlock))
    for (const auto& [hf, gguf] : kBlockNames)
      if (m[2] == gguf) return "model.layers." + m[1].str() + "." + hf + "." + m[3].str();
  throw Error("GGUF tensor " + gguf_name + " has no place in a Qwen2 model", "",
              "loratune reads llama.cpp's qwen2 GGUF files");
}

ModelConfig config_from_gguf(const GgufImage& img, const std::string& source) {
  const GgufValue* arch = img.get("general.architecture");
  if (!arch || arch->as_string("general.architecture") != "qwen2")
    throw Error("the GGUF file's architecture is not qwen2", source,
                "loratune reads Qwen2 models (llama.cpp's qwen2)");
  ModelConfig c;
  c.hidden_size = static_cast<int>(required_int(img, "qwen2.embedding_length", source));
  c.intermediate_size = static_cast<int>(required_int(img, "qwen2.feed_forward_length", source));
  c.num_hidden_layers = static_cast<int>(required_int(img, "qwen2.block_count", source));
  c.num_attention_heads = static_cast<int>(required_int(img, "qwen2.attention.head_count", source));
  c.num_key_value_heads =
      static_cast<int>(required_int(img, "qwen2.attention.head_count_kv", source));
  c.max_position_embeddings = static_cast<int>(required_int(img, "qwen2.context_length", source));
  if (const GgufValue* v = img.get("qwen2.rope.freq_base")) c.rope_theta = v->as_float("rope");
  if (const GgufValue* v = img.get("qwen2.attention.layer_norm_rms_epsilon"))
    c.rms_norm_eps = v->as_float("rms eps");
  const GgufTensor* embd = img.find("token_embd.weight");
  if (!embd || embd->ne.size() != 2) throw Error("the GGUF file has no token_embd.weight", source);
  c.vocab_size = static_cast<int>(embd->ne[1]);
  c.tie_word_embeddings = img.find("output.weight") == nullptr;
  if (const GgufValue* v = img.get("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = static_cast<int>(v->as_int("bos"));
  if (const GgufValue* v = img.get("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids = {static_cast<int>(v->as_int("eos"))};
  c.generation.eos_token_ids = c.eos_token_ids;
  c.validate(source);
  return c;
}

}  // namespace loratune
