#include "model/transformer.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace loratune {

namespace {

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// y[N, C] += b[C] (nothing when b is null).
void add_bias(float* y, const float* b, int N, int C) {
  if (!b) return;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) y[static_cast<size_t>(n) * C + c] += b[c];
}

}  // namespace

Transformer::Transformer(const std::string& model_dir, bool share_file_pages)
    : config_(load_model_config(model_dir)),
      weights_(std::make_unique<ModelWeights>(model_dir, config_, share_file_pages)),
      inv_freq_(rope_inv_freq(config_)) {}

void Transformer::check_inputs(const std::vector<int>& tokens,
                               const std::vector<SequenceSpan>& seqs, const KVCache* cache) const {
  const int N = static_cast<int>(tokens.size());
  for (int i = 0; i < N; ++i)
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
      throw Error("token id " + std::to_string(tokens[i]) + " out of range [0, " +
                      std::to_string(config_.vocab_size) + ")",
                  "input position " + std::to_string(i),
                  "ids must come from this model's vocabulary");
  int covered = 0;
  for (const SequenceSpan& s : seqs) {
    if (s.start != covered || s.length < 0)
      throw Error("sequence spans must tile the batch in order");
    covered += s.length;
    if (cache) {
      if (s.slot < 0 || s.slot >= cache->slots()) throw Error("sequence slot outside the cache");
      if (cache->length(s.slot) + s.length > cache->capacity())
        throw Error("sequence longer than the KV cache (" + std::to_string(cache->capacity()) +
                        " positions)",
                    "", "raise the context length or generate fewer tokens");
    }
  }
  if (covered != N) throw Error("sequence spans do not cover the batch");
}

void Transformer::embed(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                        const KVCache* cache) {
  const int N = static_cast<int>(tokens.size()), C = config_.hidden_size;
  grow(x_, static_cast<size_t>(N) * C);
  grow(pos_, static_cast<size_t>(N));
  for (const SequenceSpan& s : seqs) {
    const int past = cache ? cache->length(s.slot) : 0;
    for (int i = 0; i < s.length; ++i) pos_[s.start + i] = past + i;
  }
  for (int n = 0; n < N; ++n) weights_->embedding_row(tokens[n], &x_[static_cast<size_t>(n) * C]);
}

ops::KeepMask Transformer::lora_keep(int l, LoraModule m, LayerActivations& a, int N, int in,
                                     const Dropout& dropout, bool training, bool saved) {
  if (!training || dropout.p <= 0.0f) return {};
  const int words = ops::lora_keep_words(in);
  auto& keep = a.lora_keep[static_cast<int>(m)];
  if (!saved) {
    grow(keep, static_cast<size_t>(N) * words);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n)
      dropout_mask(&keep[static_cast<size_t>(n) * words], dropout, l, m, n, in);
  }
  return {keep.data(), dropout.scale()};
}

const LoraAdapter* Transformer::adapter_for(const SequenceSpan& s) const {
  return s.adapter ? s.adapter : adapter_;
}

bool Transformer::has_lora(int l, LoraModule m, const std::vector<SequenceSpan>& seqs) const {
  if (adapter_ && adapter_->at(l, m)) return true;
  for (const SequenceSpan& s : seqs)
    if (s.adapter && s.adapter->at(l, m)) return true;
  return false;
}

void Transformer::lora_forward(int l, LoraModule m, LayerActivations& a, float* y, const float* x,
                               const std::vector<SequenceSpan>& seqs, const Dropout& dropout,
                               bool training) {
  // Consecutive sequences with the same adapter share one product: the whole batch when
  // there is one adapter.
  for (size_t i = 0; i < seqs.size();) {
    const LoraAdapter* adapter = adapter_for(seqs[i]);
    size_t j = i + 1;
    while (j < seqs.size() && adapter_for(seqs[j]) == adapter) ++j;
    const int start = seqs[i].start;
    const int rows = seqs[j - 1].start + seqs[j - 1].length - start;
    i = j;
    const LoraWeights* w = adapter ? adapter->at(l, m) : nullptr;
    if (!w || rows == 0) continue;
    const ops::KeepMask keep = lora_keep(l, m, a, rows, w->in, dropout, training, false);
    auto& u = a.lora_u[static_cast<int>(m)];
    grow(u, static_cast<size_t>(start + rows) * w->r);
    ops::lora_forward(y + static_cast<size_t>(start) * w->out,
                      u.data() + static_cast<size_t>(start) * w->r,
                      x + static_cast<size_t>(start) * w->in, keep, w->A.data(), w->B.data(),
                      adapter->scale(), rows, w->in, w->out, w->r);
  }
}

void Transformer::layer_forward(int l, LayerActivations& a, const std::vector<SequenceSpan>& seqs,
                                KVCache* cache, const Dropout& dropout, bool training) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = weights_->layers[l];
  const int N = seqs.empty() ? 0 : seqs.back().start + seqs.back().length;
  const int C = c.hidden_size, F = c.intermediate_size;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim();
  const int QD = H * D, KVD = Hkv * D;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const size_t NC = static_cast<size_t>(N) * C;
  grow(a.x_in, NC);
  grow(a.rstd1, N);
  float* q = a.q.write(static_cast<size_t>(N) * QD, q_);
  float* k = a.k.write(static_cast<size_t>(N) * KVD, k_);
  float* v = a.v.write(static_cast<size_t>(N) * KVD, v_);
  float* att = a.att.write(static_cast<size_t>(N) * QD, att_);
  grow(a.lse, static_cast<size_t>(N) * H);
  grow(a.x_mid, NC);
  grow(a.rstd2, N);
  grow(xn_, std::max(NC, static_cast<size_t>(N) * F));  // normed input, later silu(gate)·up

  std::memcpy(a.x_in.data(), x_.data(), NC * sizeof(float));
  ops::rmsnorm_forward(xn_.data(), a.rstd1.data(), x_.data(), lw.input_norm, N, C, eps);
  const ops::LinearOut qkv[] = {{q, &lw.wq, lw.bq}, {k, &lw.wk, lw.bk}, {v, &lw.wv, lw.bv}};
  ops::linear_forward_shared(qkv, 3, xn_.data(), N);
  lora_forward(l, LoraModule::kQ, a, q, xn_.data(), seqs, dropout, training);
  lora_forward(l, LoraModule::kK, a, k, xn_.data(), seqs, dropout, training);
  lora_forward(l, LoraModule::kV, a, v, xn_.data(), seqs, dropout, training);
  if (lw.q_norm) {  // Qwen3: RMSNorm over each head's D features before RoPE
    grow(a.q_pre, static_cast<size_t>(N) * QD);
    grow(a.k_pre, static_cast<size_t>(N) * KVD);
    grow(a.rstd_q, static_cast<size_t>(N) * H);
    grow(a.rstd_k, static_cast<size_t>(N) * Hkv);
    std::memcpy(a.q_pre.data(), q, static_cast<size_t>(N) * QD * sizeof(float));
    std::memcpy(a.k_pre.data(), k, static_cast<size_t>(N) * KVD * sizeof(float));
    ops::rmsnorm_forward(q, a.rstd_q.data(), a.q_pre.data(), lw.q_norm, N * H, D, eps);
    ops::rmsnorm_forward(k, a.rstd_k.data(), a.k_pre.data(), lw.k_norm, N * Hkv, D, eps);
  }
  ops::rope_forward(q, pos_.data(), inv_freq_.data(), N, H, D);
  ops::rope_forward(k, pos_.data(), inv_freq_.data(), N, Hkv, D);

  spans_.resize(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SequenceSpan& s = seqs[i];
    const float* ks = k + static_cast<size_t>(s.start) * KVD;
    const float* vs = v + static_cast<size_t>(s.start) * KVD;
    spans_[i] = {s.start, s.length, 0, ks, vs};
    if (cache) {
      // Append this step's keys/values to the slot, then attend over the whole slot.
      const int past = cache->length(s.slot);
      float* kc = cache->keys(l, s.slot);
      float* vc = cache->values(l, s.slot);
      const size_t bytes = static_cast<size_t>(s.length) * KVD * sizeof(float);
      std::memcpy(kc + static_cast<size_t>(past) * KVD, ks, bytes);
      std::memcpy(vc + static_cast<size_t>(past) * KVD, vs, bytes);
      spans_[i] = {s.start, s.length, past, kc, vc};
    }
  }
  ops::attention_forward(att, a.lse.data(), q, spans_.data(), static_cast<int>(spans_.size()), H,
                         Hkv, D, KVD, config_.sliding_window);
  ops::linear_accumulate(x_.data(), att, lw.wo, N);
  add_bias(x_.data(), lw.bo, N, C);
  lora_forward(l, LoraModule::kO, a, x_.data(), att, seqs, dropout, training);
  if (training) a.q.keep(), a.k.keep(), a.v.keep(), a.att.keep();
  std::memcpy(a.x_mid.data(), x_.data(), NC * sizeof(float));

  ops::rmsnorm_forward(xn_.data(), a.rstd2.data(), x_.data(), lw.post_norm, N, C, eps);
  const size_t NF = static_cast<size_t>(N) * F;
  const bool mlp_lora = has_lora(l, LoraModule::kGate, seqs) || has_lora(l, LoraModule::kUp, seqs);
  if (ops::is_bf16(lw.w_gate.format()) && !mlp_lora && !lw.b_gate) {
    // In bf16 gate/up are bf16 products, as under autocast, written rounded straight into
    // their saved form: half the bytes, and no rounding pass.
    const ops::LinearOutBF16 gate_up[] = {{a.gate.write_bf16(NF), &lw.w_gate},
                                          {a.up.write_bf16(NF), &lw.w_up}};
    ops::linear_forward_to_bf16(gate_up, 2, xn_.data(), N);
    ops::swiglu_forward(xn_.data(), a.gate, a.up, static_cast<long>(NF));
  } else {
    // Where gate/up are kept in bf16, their fp32 values go through the backward's dh_ and
    // dup_ (unused until the backward).
    float* gate = a.gate.write(NF, dh_);
    float* up = a.up.write(NF, dup_);
    const ops::LinearOut gate_up[] = {{gate, &lw.w_gate, lw.b_gate}, {up, &lw.w_up, lw.b_up}};
    ops::linear_forward_shared(gate_up, 2, xn_.data(), N);
    lora_forward(l, LoraModule::kGate, a, gate, xn_.data(), seqs, dropout, training);
    lora_forward(l, LoraModule::kUp, a, up, xn_.data(), seqs, dropout, training);
    // SwiGLU reads the kept (in bf16 mode rounded) values, as in the branch above and as
    // autocast rounds base + LoRA: a row's value then does not depend on whether some other
    // sequence of its batch has a LoRA on gate/up.
    a.gate.keep(), a.up.keep();
    ops::swiglu_forward(xn_.data(), a.gate, a.up, static_cast<long>(NF));
  }
  ops::linear_accumulate(x_.data(), xn_.data(), lw.w_down, N);
  add_bias(x_.data(), lw.b_down, N, C);
  lora_forward(l, LoraModule::kDown, a, x_.data(), xn_.data(), seqs, dropout, training);
}

void Transformer::forward(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                          KVCache* cache, const std::vector<int>& logit_rows, float* logits) {
  check_inputs(tokens, seqs, cache);
  // Generation: one kernel whatever the batch's row count.
  const ops::OneKernelPerShape one_kernel;
  const int N = static_cast<int>(tokens.size());
  for (int r : logit_rows)
    if (r < 0 || r >= N) throw Error("logit row outside the batch");
  const int C = config_.hidden_size;
  embed(tokens, seqs, cache);
  acts_.resize(std::max<size_t>(acts_.size(), 1));
  for (int l = 0; l < config_.num_hidden_layers; ++l)
    layer_forward(l, acts_[0], seqs, cache, Dropout{}, false);
  if (cache)
    for (const SequenceSpan& s : seqs) cache->set_length(s.slot, cache->length(s.slot) + s.length);

  // Final norm and lm_head only for the rows whose logits are wanted.
  const int R = static_cast<int>(logit_rows.size());
  grow(rows_, static_cast<size_t>(R) * C);
  for (int r = 0; r < R; ++r)
    std::memcpy(&rows_[static_cast<size_t>(r) * C], &x_[static_cast<size_t>(logit_rows[r]) * C],
                C * sizeof(float));
  ops::rmsnorm_forward(rows_.data(), nullptr, rows_.data(), weights_->final_norm, R, C,
                       static_cast<float>(config_.rms_norm_eps));
  ops::linear_forward(logits, rows_.data(), weights_->lm_head, nullptr, R);
}

}  // namespace loratune
