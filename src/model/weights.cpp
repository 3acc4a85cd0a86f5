#include "model/weights.h"

#include <cstring>
#include <set>

#include "core/error.h"
#include "core/half.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "ops/ops.h"

namespace loratune {

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The packed matrix of a layer that LoRA module m targets.
ops::PackedWeight& packed_matrix(LayerWeights& lw, LoraModule m) {
  ops::PackedWeight* slots[] = {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down};
  return *slots[static_cast<int>(m)];
}

std::string matrix_name(int layer, LoraModule m) {
  return "model.layers." + std::to_string(layer) + "." + lora_module_path(m) + ".weight";
}

// The tensor's data where the file holds aligned F32, else nullptr.
const float* as_f32(const TensorInfo& t) {
  const bool aligned = reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0;
  return t.dtype == DType::F32 && aligned ? reinterpret_cast<const float*>(t.data) : nullptr;
}

bool is_convertible(DType d) {
  return d == DType::F32 || d == DType::BF16 || d == DType::F16;
}

// An F32 copy of an F32 (unaligned), BF16 or F16 tensor.
std::unique_ptr<float[]> to_f32(const TensorInfo& t) {
  const size_t n = static_cast<size_t>(t.numel());
  auto buf = std::make_unique<float[]>(n);
  if (t.dtype == DType::F32) {
    std::memcpy(buf.get(), t.data, n * sizeof(float));
    return buf;
  }
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, t.data + 2 * i, 2);
    buf[i] = t.dtype == DType::BF16 ? bf16_to_float(h) : f16_to_float(h);
  }
  return buf;
}

}  // namespace

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = int64_t(c.num_attention_heads) * c.head_dim(), KVD = c.kv_dim();
  std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", {V, C}}};
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
      specs.push_back({p + name + ".weight", {out, in}});
      if (bias) specs.push_back({p + name + ".bias", {out}});
    };
    specs.push_back({p + "input_layernorm.weight", {C}});
    linear("self_attn.q_proj", QD, C, c.qkv_bias);
    linear("self_attn.k_proj", KVD, C, c.qkv_bias);
    linear("self_attn.v_proj", KVD, C, c.qkv_bias);
    if (c.qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", {c.head_dim()}});
      specs.push_back({p + "self_attn.k_norm.weight", {c.head_dim()}});
    }
    linear("self_attn.o_proj", C, QD, c.o_bias);
    specs.push_back({p + "post_attention_layernorm.weight", {C}});
    linear("mlp.gate_proj", F, C, c.mlp_bias);
    linear("mlp.up_proj", F, C, c.mlp_bias);
    linear("mlp.down_proj", C, F, c.mlp_bias);
  }
  specs.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {V, C}});
  return specs;
}

int64_t model_parameter_count(const ModelConfig& c) {
  int64_t n = 0;
  for (const TensorSpec& s : model_tensor_specs(c)) n += shape_numel(s.shape);
  return n;
}

ModelWeights::ModelWeights(const std::string& dir, const ModelConfig& config, bool share_file_pages)
    : store_(is_gguf_file(dir) ? std::make_unique<TensorStore>(dir, hf_tensor_name)
                               : std::make_unique<TensorStore>(dir)) {
  // The matrices the kernels read packed. Those that need converting are converted when they
  // are packed, so that a BF16 model holds each matrix once.
  tied_ = config.tie_word_embeddings;
  std::set<std::string> packed_names = {tied_ ? "model.embed_tokens.weight" : "lm_head.weight"};
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (int i = 0; i < kNumLoraModules; ++i)
      packed_names.insert(matrix_name(l, static_cast<LoraModule>(i)));
  for (const TensorSpec& spec : model_tensor_specs(config)) {
    const TensorInfo& t = store_->get(spec.name);
    if (t.shape != spec.shape)
      throw Error("tensor '" + spec.name + "' has shape " + shape_str(t.shape) +
                      " but config.json implies " + shape_str(spec.shape),
                  dir, "config.json and the weights do not belong to the same model");
    const float* ptr = as_f32(t);
    if (!ptr && !is_convertible(t.dtype))
      throw Error(std::string("tensor '") + spec.name + "' has dtype " + dtype_name(t.dtype), dir,
                  "weights must be F32, BF16 or F16");
    if (!ptr && !packed_names.count(spec.name)) {
      owned_.push_back(to_f32(t));
      ptr = owned_.back().get();
    }
    entries_.push_back({spec.name, ptr, nullptr});
    parameter_count_ += t.numel();
  }
  embed_ = find("model.embed_tokens.weight");
  final_norm = find("model.norm.weight");
  // Packs a matrix (converting it first if need be) and lets its file pages go, or, sharing
  // file pages, uses the file's rows in place where the kernels read them as they are.
  const ops::WeightFormat format = ops::backend().format;
  auto pack = [&](const std::string& name, ops::PackedWeight& slot) {
    const TensorInfo& t = store_->get(name);
    Entry& e = entry(name);
    const int out = static_cast<int>(t.shape[0]), in = static_cast<int>(t.shape[1]);
    const bool bf16_rows = t.dtype == DType::BF16 && ops::is_bf16_rows(format) &&
                           reinterpret_cast<uintptr_t>(t.data) % alignof(uint16_t) == 0;
    const bool f32_rows = e.data && format == ops::WeightFormat::kRowsF32;
    if (share_file_pages && (bf16_rows || f32_rows)) {
      slot = ops::PackedWeight::view_rows(t.data, out, in, format);
      e.packed = &slot;
      return;
    }
    if (t.dtype == DType::BF16) {  // kept in bf16 where the run multiplies in bf16
      slot = ops::PackedWeight::from_bf16(t.data, out, in);
    } else {
      std::unique_ptr<float[]> converted = e.data ? nullptr : to_f32(t);
      slot = ops::PackedWeight(e.data ? e.data : converted.get(), out, in);
    }
    e.packed = &slot;
    release_pages(t);
  };
  pack(tied_ ? "model.embed_tokens.weight" : "lm_head.weight", lm_head);
  layers.resize(config.num_hidden_layers);
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& lw = layers[l];
    lw.input_norm = find(p + "input_layernorm.weight");
    lw.post_norm = find(p + "post_attention_layernorm.weight");
    lw.bq = find(p + "self_attn.q_proj.bias");
    lw.bk = find(p + "self_attn.k_proj.bias");
    lw.bv = find(p + "self_attn.v_proj.bias");
    lw.bo = find(p + "self_attn.o_proj.bias");
    lw.q_norm = find(p + "self_attn.q_norm.weight");
    lw.k_norm = find(p + "self_attn.k_norm.weight");
    lw.b_gate = find(p + "mlp.gate_proj.bias");
    lw.b_up = find(p + "mlp.up_proj.bias");
    lw.b_down = find(p + "mlp.down_proj.bias");
    for (int i = 0; i < kNumLoraModules; ++i) {
      const auto m = static_cast<LoraModule>(i);
      pack(matrix_name(l, m), packed_matrix(lw, m));
    }
  }
}

void ModelWeights::merge_lora(const LoraAdapter& adapter, const ModelConfig& config) {
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (int i = 0; i < kNumLoraModules; ++i) {
      const auto m = static_cast<LoraModule>(i);
      const LoraWeights* w = adapter.at(l, m);
      if (!w) continue;
      ops::PackedWeight& packed = packed_matrix(layers[l], m);
      auto merged = std::make_unique<float[]>(static_cast<size_t>(w->out) * w->in);
      packed.unpack(merged.get());
      ops::lora_merge(merged.get(), w->A.data(), w->B.data(), adapter.scale(), w->in, w->out, w->r);
      packed = ops::PackedWeight(merged.get(), w->out, w->in);
      entry(matrix_name(l, m)).data = merged.get();
      owned_.push_back(std::move(merged));
    }
}

void ModelWeights::embedding_row(int token, float* out) const {
  if (!tied_) {
    std::memcpy(out, embed_ + static_cast<size_t>(token) * lm_head.in(),
                lm_head.in() * sizeof(float));
    return;
  }
  for (int i = 0; i < lm_head.in(); ++i) out[i] = lm_head.at(token, i);
}

std::vector<const float*> ModelWeights::tensors() {
  std::vector<const float*> out;
  for (Entry& e : entries_) {
    if (!e.data) {  // converted only into its packed form: unpack a copy
      auto copy = std::make_unique<float[]>(static_cast<size_t>(e.packed->out()) * e.packed->in());
      e.packed->unpack(copy.get());
      e.data = copy.get();
      owned_.push_back(std::move(copy));
    }
    out.push_back(e.data);
  }
  return out;
}

ModelWeights::Entry& ModelWeights::entry(const std::string& name) {
  for (Entry& e : entries_)
    if (e.name == name) return e;
  throw Error("no tensor '" + name + "' in the model");
}

const float* ModelWeights::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return e.data;
  return nullptr;
}

}  // namespace loratune
