#include "model/transformer.h"

#include <cstring>

#include "core/error.h"
#include "ops/ops.h"

namespace loratune {

Transformer::Transformer(const std::string& model_dir)
    : config_(load_model_config(model_dir)),
      weights_(std::make_unique<ModelWeights>(model_dir, config_)),
      inv_freq_(config_.head_dim() / 2) {
  ops::rope_inv_freq(inv_freq_.data(), config_.head_dim(), config_.rope_theta);
}

void Transformer::check_inputs(const std::vector<int>& tokens,
                               const std::vector<SequenceSpan>& seqs, const KVCache* cache,
                               const std::vector<int>& logit_rows) const {
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
  for (int r : logit_rows)
    if (r < 0 || r >= N) throw Error("logit row outside the batch");
}

void Transformer::forward(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                          KVCache* cache, const std::vector<int>& logit_rows, float* logits) {
  check_inputs(tokens, seqs, cache, logit_rows);
  const ModelConfig& c = config_;
  const ModelWeights& w = *weights_;
  const int N = static_cast<int>(tokens.size());
  const int C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim();
  const int QD = H * D, KVD = Hkv * D;
  const float eps = static_cast<float>(c.rms_norm_eps);

  x_.resize(static_cast<size_t>(N) * C);     // residual stream [N, C]
  xn_.resize(static_cast<size_t>(N) * C);    // normed input [N, C]
  q_.resize(static_cast<size_t>(N) * QD);    // [N, H·D]
  k_.resize(static_cast<size_t>(N) * KVD);   // [N, Hkv·D]
  v_.resize(static_cast<size_t>(N) * KVD);   // [N, Hkv·D]
  att_.resize(static_cast<size_t>(N) * QD);  // [N, H·D]
  gate_.resize(static_cast<size_t>(N) * F);  // [N, F]
  up_.resize(static_cast<size_t>(N) * F);    // [N, F]
  pos_.resize(N);

  for (const SequenceSpan& s : seqs) {
    const int past = cache ? cache->length(s.slot) : 0;
    for (int i = 0; i < s.length; ++i) pos_[s.start + i] = past + i;
  }
  for (int n = 0; n < N; ++n)
    std::memcpy(&x_[static_cast<size_t>(n) * C], w.embed + static_cast<size_t>(tokens[n]) * C,
                C * sizeof(float));

  std::vector<ops::AttentionSpan> spans(seqs.size());
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    ops::rmsnorm_forward(xn_.data(), nullptr, x_.data(), lw.input_norm, N, C, eps);
    ops::linear_forward(q_.data(), xn_.data(), lw.wq, lw.bq, N, C, QD);
    ops::linear_forward(k_.data(), xn_.data(), lw.wk, lw.bk, N, C, KVD);
    ops::linear_forward(v_.data(), xn_.data(), lw.wv, lw.bv, N, C, KVD);
    ops::rope_forward(q_.data(), pos_.data(), inv_freq_.data(), N, H, D);
    ops::rope_forward(k_.data(), pos_.data(), inv_freq_.data(), N, Hkv, D);
    for (size_t i = 0; i < seqs.size(); ++i) {
      const SequenceSpan& s = seqs[i];
      spans[i] = {s.start, s.length, 0, &k_[static_cast<size_t>(s.start) * KVD],
                  &v_[static_cast<size_t>(s.start) * KVD]};
      if (cache) {
        // Append this step's keys/values to the slot, then attend over the whole slot.
        const int past = cache->length(s.slot);
        float* kc = cache->keys(l, s.slot);
        float* vc = cache->values(l, s.slot);
        std::memcpy(kc + static_cast<size_t>(past) * KVD, spans[i].k,
                    static_cast<size_t>(s.length) * KVD * sizeof(float));
        std::memcpy(vc + static_cast<size_t>(past) * KVD, spans[i].v,
                    static_cast<size_t>(s.length) * KVD * sizeof(float));
        spans[i] = {s.start, s.length, past, kc, vc};
      }
    }
    ops::attention_forward(att_.data(), q_.data(), spans.data(), static_cast<int>(spans.size()), H,
                           Hkv, D, KVD);
    ops::linear_accumulate(x_.data(), att_.data(), lw.wo, N, QD, C);

    ops::rmsnorm_forward(xn_.data(), nullptr, x_.data(), lw.post_norm, N, C, eps);
    ops::linear_forward(gate_.data(), xn_.data(), lw.w_gate, nullptr, N, C, F);
    ops::linear_forward(up_.data(), xn_.data(), lw.w_up, nullptr, N, C, F);
    ops::swiglu_forward(gate_.data(), gate_.data(), up_.data(), static_cast<long>(N) * F);
    ops::linear_accumulate(x_.data(), gate_.data(), lw.w_down, N, F, C);
  }
  if (cache)
    for (const SequenceSpan& s : seqs) cache->set_length(s.slot, cache->length(s.slot) + s.length);

  // Final norm and lm_head only for the rows whose logits are wanted.
  const int R = static_cast<int>(logit_rows.size());
  rows_.resize(static_cast<size_t>(R) * C);
  for (int r = 0; r < R; ++r)
    std::memcpy(&rows_[static_cast<size_t>(r) * C], &x_[static_cast<size_t>(logit_rows[r]) * C],
                C * sizeof(float));
  ops::rmsnorm_forward(rows_.data(), nullptr, rows_.data(), w.final_norm, R, C, eps);
  ops::linear_forward(logits, rows_.data(), w.lm_head, nullptr, R, C, V);
}

}  // namespace loratune
