// The training pass: forward with saved activations, fused loss, and the backward read
// bottom-up from the forward (DESIGN.md §5). Only LoRA parameters get gradients.
#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "model/transformer.h"

#include <utility>

namespace loratune {

namespace {

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// lm_head rows per chunk: [256, V] logits at a time (155 MB for Qwen2). Smaller chunks make
// the lm_head products slower: the 0.5 GB weight streams from memory once per chunk.
constexpr int kLossChunk = 256;

}  // namespace

int64_t count_loss_targets(const std::vector<int>& labels, const std::vector<SequenceSpan>& seqs) {
  int64_t n = 0;
  for (const SequenceSpan& s : seqs)
    for (int t = 0; t + 1 < s.length; ++t) n += labels[s.start + t + 1] != -100;
  return n;
}

void Transformer::lora_backward(int l, LoraModule m, LayerActivations& a, float* dx,
                                const float* dy, const float* x, int N, const Dropout& dropout) {
  LoraWeights* w = adapter_ ? adapter_->at(l, m) : nullptr;
  if (!w) return;
  grow(du_, static_cast<size_t>(N) * w->r);
  ops::lora_backward(dx, w->dA.data(), w->dB.data(), du_.data(), dy,
                     a.lora_u[static_cast<int>(m)].data(), x,
                     lora_keep(l, m, a, N, w->in, dropout, true, true), w->A.data(), w->B.data(),
                     adapter_->scale(), N, w->in, w->out, w->r);
}

void Transformer::layer_backward(int l, LayerActivations& a, const std::vector<SequenceSpan>& seqs,
                                 const Dropout& dropout, bool lower_lora) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = weights_->layers[l];
  const int N = seqs.back().start + seqs.back().length;
  const int C = c.hidden_size, F = c.intermediate_size;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim();
  const int QD = H * D, KVD = Hkv * D;
  const float eps = static_cast<float>(c.rms_norm_eps);
  grow(dxn_, static_cast<size_t>(N) * C);
  grow(dh_, static_cast<size_t>(N) * F);
  grow(dup_, static_cast<size_t>(N) * F);
  grow(datt_, static_cast<size_t>(N) * QD);
  grow(dq_, static_cast<size_t>(N) * QD);
  grow(dk_, static_cast<size_t>(N) * KVD);
  grow(dv_, static_cast<size_t>(N) * KVD);
  grow(xn_, std::max(static_cast<size_t>(N) * C, static_cast<size_t>(N) * F));
  grow(rows_, static_cast<size_t>(N) * C);

  // MLP: x += down(silu(gate(xn)) · up(xn)), xn = norm(x_mid). The LoRA inputs h and xn are
  // recomputed, and only for the modules that have LoRA.
  auto has_lora = [&](LoraModule m) { return adapter_->at(l, m) != nullptr; };
  float* h = xn_.data();     // silu(gate)·up [N, F]
  float* xn = rows_.data();  // norm(x_mid) [N, C]
  if (has_lora(LoraModule::kDown)) ops::swiglu_forward(h, a.gate, a.up, static_cast<long>(N) * F);
  ops::linear_backward(dh_.data(), dx_.data(), lw.w_down, N, false);
  lora_backward(l, LoraModule::kDown, a, dh_.data(), dx_.data(), h, N, dropout);
  ops::swiglu_backward(dh_.data(), dup_.data(), dh_.data(), a.gate, a.up, static_cast<long>(N) * F);
  if (has_lora(LoraModule::kGate) || has_lora(LoraModule::kUp))
    ops::rmsnorm_forward(xn, nullptr, a.x_mid.data(), lw.post_norm, N, C, eps);
  ops::linear_backward(dxn_.data(), dh_.data(), lw.w_gate, N, false);
  ops::linear_backward(dxn_.data(), dup_.data(), lw.w_up, N, true);
  lora_backward(l, LoraModule::kGate, a, dxn_.data(), dh_.data(), xn, N, dropout);
  lora_backward(l, LoraModule::kUp, a, dxn_.data(), dup_.data(), xn, N, dropout);
  ops::rmsnorm_backward(dx_.data(), dxn_.data(), a.rstd2.data(), a.x_mid.data(), lw.post_norm, N,
                        C);

  // Attention: x_mid = x_in + o(attn(rope(q(xn)), rope(k(xn)), v(xn))), xn = norm(x_in)
  const float* att = a.att.widened(att_);
  ops::linear_backward(datt_.data(), dx_.data(), lw.wo, N, false);
  lora_backward(l, LoraModule::kO, a, datt_.data(), dx_.data(), att, N, dropout);
  spans_.resize(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i)
    spans_[i] = {seqs[i].start, seqs[i].length, 0, nullptr, nullptr};
  ops::attention_backward(dq_.data(), dk_.data(), dv_.data(), datt_.data(), att, a.lse.data(),
                          a.q.widened(q_), a.k.widened(k_), a.v.widened(v_), spans_.data(),
                          static_cast<int>(spans_.size()), H, Hkv, D, config_.sliding_window);
  ops::rope_backward(dq_.data(), pos_.data(), inv_freq_.data(), N, H, D);
  ops::rope_backward(dk_.data(), pos_.data(), inv_freq_.data(), N, Hkv, D);
  if (lw.q_norm) {  // through Qwen3's per-head norms, into dq_/dk_ again
    dq_pre_.assign(static_cast<size_t>(N) * QD, 0.0f);
    dk_pre_.assign(static_cast<size_t>(N) * KVD, 0.0f);
    ops::rmsnorm_backward(dq_pre_.data(), dq_.data(), a.rstd_q.data(), a.q_pre.data(), lw.q_norm,
                          N * H, D);
    ops::rmsnorm_backward(dk_pre_.data(), dk_.data(), a.rstd_k.data(), a.k_pre.data(), lw.k_norm,
                          N * Hkv, D);
    std::swap(dq_, dq_pre_);
    std::swap(dk_, dk_pre_);
  }
  if (has_lora(LoraModule::kQ) || has_lora(LoraModule::kK) || has_lora(LoraModule::kV))
    ops::rmsnorm_forward(xn, nullptr, a.x_in.data(), lw.input_norm, N, C, eps);
  float* dxn = lower_lora ? dxn_.data() : nullptr;
  if (lower_lora) {
    ops::linear_backward(dxn, dq_.data(), lw.wq, N, false);
    ops::linear_backward(dxn, dk_.data(), lw.wk, N, true);
    ops::linear_backward(dxn, dv_.data(), lw.wv, N, true);
  }
  lora_backward(l, LoraModule::kQ, a, dxn, dq_.data(), xn, N, dropout);
  lora_backward(l, LoraModule::kK, a, dxn, dk_.data(), xn, N, dropout);
  lora_backward(l, LoraModule::kV, a, dxn, dv_.data(), xn, N, dropout);
  if (lower_lora)
    ops::rmsnorm_backward(dx_.data(), dxn, a.rstd1.data(), a.x_in.data(), lw.input_norm, N, C);
}

LossSum Transformer::group_pass(const std::vector<int>& tokens,
                                const std::vector<SequenceSpan>& seqs,
                                const std::vector<int>& labels, float grad_scale,
                                const Dropout& dropout, bool backward) {
  const ModelConfig& c = config_;
  const int N = static_cast<int>(tokens.size()), C = c.hidden_size;
  const int L = c.num_hidden_layers;
  embed(tokens, seqs, nullptr);
  // Only the backward needs every layer's activations; evaluation reuses one set.
  acts_.resize(std::max<size_t>(acts_.size(), backward ? L : 1));
  for (int l = 0; l < L; ++l)
    layer_forward(l, acts_[backward ? l : 0], seqs, nullptr, dropout, backward);

  // Rows with a label: position t predicts labels[t + 1] of the same sequence.
  loss_rows_.clear();
  loss_targets_.clear();
  for (const SequenceSpan& s : seqs)
    for (int t = 0; t + 1 < s.length; ++t) {
      const int label = labels[s.start + t + 1];
      if (label == -100) continue;
      loss_rows_.push_back(s.start + t);
      loss_targets_.push_back(label);
    }
  const int R = static_cast<int>(loss_rows_.size());
  const float eps = static_cast<float>(c.rms_norm_eps);
  grow(rows_, static_cast<size_t>(R) * C);  // final residual of the labelled rows [R, C]
  grow(dxn_, static_cast<size_t>(R) * C);   // normed [R, C], then its gradient
  grow(dh_, static_cast<size_t>(R) * C);
  grow(rstd_final_, static_cast<size_t>(R));
  grow(loss_scratch_, ops::cross_entropy_scratch_floats(weights_->lm_head, kLossChunk));
  for (int r = 0; r < R; ++r)
    std::memcpy(&rows_[static_cast<size_t>(r) * C], &x_[static_cast<size_t>(loss_rows_[r]) * C],
                C * sizeof(float));
  ops::rmsnorm_forward(dxn_.data(), rstd_final_.data(), rows_.data(), weights_->final_norm, R, C,
                       eps);
  LossSum loss;
  loss.count = R;
  loss.sum = ops::cross_entropy_forward_backward(backward ? dh_.data() : nullptr, dxn_.data(),
                                                 weights_->lm_head, loss_targets_.data(), R,
                                                 grad_scale, loss_scratch_.data(), kLossChunk);
  if (!backward) return loss;
  std::fill(dxn_.begin(), dxn_.begin() + static_cast<size_t>(R) * C, 0.0f);
  ops::rmsnorm_backward(dxn_.data(), dh_.data(), rstd_final_.data(), rows_.data(),
                        weights_->final_norm, R, C);
  grow(dx_, static_cast<size_t>(N) * C);
  std::fill(dx_.begin(), dx_.begin() + static_cast<size_t>(N) * C, 0.0f);
  for (int r = 0; r < R; ++r)
    std::memcpy(&dx_[static_cast<size_t>(loss_rows_[r]) * C], &dxn_[static_cast<size_t>(r) * C],
                C * sizeof(float));

  int lowest = L;  // lowest layer with LoRA: nothing below it needs a backward
  for (int l = 0; l < L && lowest == L; ++l)
    for (int m = 0; m < kNumLoraModules; ++m)
      if (adapter_->at(l, static_cast<LoraModule>(m))) lowest = l;
  for (int l = L - 1; l >= lowest; --l) layer_backward(l, acts_[l], seqs, dropout, l > lowest);
  return loss;
}

LossSum Transformer::run_groups(const std::vector<int>& tokens,
                                const std::vector<SequenceSpan>& seqs,
                                const std::vector<int>& labels, float grad_scale,
                                const Dropout& dropout, int max_group_tokens, bool backward) {
  check_inputs(tokens, seqs, nullptr);
  if (labels.size() != tokens.size()) throw Error("labels and tokens differ in length");
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] != -100 && (labels[i] < 0 || labels[i] >= config_.vocab_size))
      throw Error("label " + std::to_string(labels[i]) + " out of range",
                  "position " + std::to_string(i));
  LossSum total;
  size_t first = 0;
  while (first < seqs.size()) {
    // A group: consecutive whole sequences up to max_group_tokens (at least one sequence).
    size_t last = first + 1;
    int n = seqs[first].length;
    while (last < seqs.size() && n + seqs[last].length <= max_group_tokens)
      n += seqs[last++].length;
    const int start = seqs[first].start;
    std::vector<int> group_tokens(tokens.begin() + start, tokens.begin() + start + n);
    std::vector<int> group_labels(labels.begin() + start, labels.begin() + start + n);
    std::vector<SequenceSpan> group_seqs;
    for (size_t i = first; i < last; ++i)
      group_seqs.push_back({seqs[i].start - start, seqs[i].length, 0});
    Dropout d = dropout;
    d.token_offset = dropout.token_offset + start;
    if (n > 0) {
      LossSum part = group_pass(group_tokens, group_seqs, group_labels, grad_scale, d, backward);
      total.sum += part.sum;
      total.count += part.count;
    }
    first = last;
  }
  return total;
}

LossSum Transformer::forward_backward(const std::vector<int>& tokens,
                                      const std::vector<SequenceSpan>& seqs,
                                      const std::vector<int>& labels, float grad_scale,
                                      const Dropout& dropout, int max_group_tokens) {
  if (!adapter_) throw Error("training needs a LoRA adapter");
  for (const SequenceSpan& s : seqs)
    if (s.adapter) throw Error("training takes the model's adapter, not one per sequence");
  return run_groups(tokens, seqs, labels, grad_scale, dropout, max_group_tokens, true);
}

LossSum Transformer::loss(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                          const std::vector<int>& labels, int max_group_tokens) {
  // A forward-only pass keeps one layer's activations instead of every layer's: the same
  // memory holds num_hidden_layers times as many tokens, and bigger passes run faster.
  const long cap = static_cast<long>(max_group_tokens) * config_.num_hidden_layers;
  return run_groups(tokens, seqs, labels, 0.0f, Dropout{},
                    static_cast<int>(std::min<long>(cap, std::numeric_limits<int>::max())), false);
}

}  // namespace loratune
