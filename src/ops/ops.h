// Op contracts: the fast fp32 kernels (ops/cpu) and their scalar references (ops/ref) share
// names and argument order: outputs, saved state, inputs, weights, sizes. Shapes use
// N tokens, C hidden, H/Hkv heads, D head dim, F intermediate, V vocab.
// Nothing here knows about configs, files or the CLI. Frozen weight matrices come packed
// (PackedWeight: w[out, in] with its sizes) where the references take w, in and out.
#pragma once

#include <cstdint>

#include "ops/packed_weight.h"
#include "ops/saved_activation.h"

namespace loratune::ops {

// y[N, out] = x[N, in] · w[out, in]ᵀ + b[out] (b may be null).
void linear_forward(float* y, const float* x, const PackedWeight& w, const float* b, int N);
// The projections of one input (q/k/v, gate/up): y_j = x · w_jᵀ + b_j for 1 to 3 outputs of
// the same `in`, as linear_forward gives each, x packed once for all.
struct LinearOut {
  float* y;
  const PackedWeight* w;
  const float* b;  // may be null
};
void linear_forward_shared(const LinearOut* outs, int n, const float* x, int N);
// y[N, out] += x[N, in] · w[out, in]ᵀ: the residual stream accumulates projections.
void linear_accumulate(float* y, const float* x, const PackedWeight& w, int N);
// y_j[N, out] = x · w_jᵀ rounded to bf16 for 1 to 3 outputs of the same `in`, x rounded once
// for all, for the bf16 formats: products whose bf16 values are all that is kept (autocast's
// bf16 outputs).
struct LinearOutBF16 {
  uint16_t* y;
  const PackedWeight* w;
};
void linear_forward_to_bf16(const LinearOutBF16* outs, int n, const float* x, int N);
// dx[N, in] = dy[N, out] · w[out, in] (+= when accumulate). Frozen weights: no dw.
void linear_backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate);

// While one lives on a thread, that thread's products with frozen weights use one kernel at
// every row count: no switch to the fixed-row-count kernels at 32 rows, and a single row goes
// through the kernel of many (oneDNN's gemv rounds otherwise). With oneDNN's bf16 kernels and
// the own ones a row's value then does not depend on the other rows of its product (oneDNN's
// fp32 kernels still round a row differently at some row counts: KernelUse in backend.h).
class OneKernelPerShape {
 public:
  OneKernelPerShape();
  ~OneKernelPerShape();
  OneKernelPerShape(const OneKernelPerShape&) = delete;
  OneKernelPerShape& operator=(const OneKernelPerShape&) = delete;

 private:
  bool previous_;
};
bool one_kernel_per_shape();

// Where the steps since the last reset went, over every thread: the products with frozen
// weights above (and the loss's lm_head), their input rounding and widening included, with
// their 2·N·in·out flops; and attention_forward / attention_backward. Wall times. The bench
// splits a training step into them and the rest.
struct StepTotals {
  double product_seconds = 0.0;
  double product_flops = 0.0;
  double attention_seconds = 0.0;
};
StepTotals step_totals();
void reset_step_totals();

// Dropout on a LoRA branch's input: feature i of row n is kept, times `scale`, where bit i % 64
// of bits[n · lora_keep_words(in) + i / 64] is set, and is 0 elsewhere; without bits every
// feature is kept as it is.
inline int lora_keep_words(int in) {
  return (in + 63) / 64;
}
struct KeepMask {
  const uint64_t* bits = nullptr;
  float scale = 1.0f;
  // Row n's bits (null without a mask).
  const uint64_t* row(long n, int in) const { return bits ? bits + n * lora_keep_words(in) : bits; }
};
// The factor of feature i from a row's mask bits: scale or 0.
inline float kept_factor(const uint64_t* row_bits, int i, float scale) {
  return (row_bits[i / 64] >> (i % 64)) & 1 ? scale : 0.0f;
}

// LoRA branch of a linear layer: u[N, r] = keep(x) · Aᵀ (saved), y[N, out] += s · u · Bᵀ,
// with keep(x) the branch input x under the dropout mask. A row's values do not depend on the
// other rows under OneKernelPerShape.
void lora_forward(float* y, float* u, const float* x, const KeepMask& keep, const float* A,
                  const float* B, float scale, int N, int in, int out, int r);
// dB[out, r] += s · dyᵀ · u; du[N, r] = s · dy · B (scratch); dA[r, in] += duᵀ · keep(x);
// dx[N, in] += keep(du · A) (dx may be null when nothing needs it).
void lora_backward(float* dx, float* dA, float* dB, float* du, const float* dy, const float* u,
                   const float* x, const KeepMask& keep, const float* A, const float* B,
                   float scale, int N, int in, int out, int r);
// w[out, in] += s · B[out, r] · A[r, in]: the branch folded into its frozen weight.
void lora_merge(float* w, const float* A, const float* B, float scale, int in, int out, int r);

// y[N, C] = x · rsqrt(mean(x²) + eps) · w, in fp32; rstd[N] saved (may be null).
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int N, int C,
                     float eps);
// dx[N, C] += ∂/∂x of the above (frozen w): dx = rstd·g − rstd³·x·mean(g·x), g = dy·w.
void rmsnorm_backward(float* dx, const float* dy, const float* rstd, const float* x, const float* w,
                      int N, int C);

// inv_freq[D/2] = 1 / θ^(2i/D), computed in fp32 as the reference does.
void rope_inv_freq(float* inv_freq, int D, double theta);
// In place on x[N, heads·D] (HF rotate_half layout); token n sits at position pos[n].
void rope_forward(float* x, const int* pos, const float* inv_freq, int N, int heads, int D);
// In place on dx[N, heads·D]: the transpose of the rotation (rotate by −angle).
void rope_backward(float* dx, const int* pos, const float* inv_freq, int N, int heads, int D);

// One sequence's share of a packed attention call: queries q_start..q_start+q_len−1 of the
// packed q, at positions past..past+q_len−1; k and v point at that sequence's position 0,
// rows kv_stride floats apart, and hold past+q_len rows.
struct AttentionSpan {
  int q_start;
  int q_len;
  int past;
  const float* k;
  const float* v;
};

// Causal grouped-query attention for every span: out[N, H·D] from q[N, H·D].
// Scale 1/sqrt(D), softmax in fp32, query head h reads kv head h / (H / Hkv).
// lse[N, H] (may be null) saves each row's log-sum-exp for the backward.
// window > 0: the query at position i sees only keys i−window+1..i (Mistral's sliding window).
void attention_forward(float* out, float* lse, const float* q, const AttentionSpan* spans,
                       int n_spans, int H, int Hkv, int D, int kv_stride, int window);
// Backward of packed training attention (every span has past = 0 and its keys/values at
// rows q_start.. of k and v [N, Hkv·D]; the span's k/v pointers are not read). Recomputes
// the probabilities from q, k and lse instead of storing [T, T] per head.
// Writes dq [N, H·D], dk and dv [N, Hkv·D].
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const AttentionSpan* spans, int n_spans, int H, int Hkv, int D, int window);

// h[n] = silu(gate[n]) · up[n]
void swiglu_forward(float* h, const float* gate, const float* up, long n);
// dgate, dup from dh (dgate may alias gate and dup may alias up: elementwise in place).
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up,
                     long n);
// The same from the forward's saved gate and up (fp32 or bf16).
void swiglu_forward(float* h, const SavedActivation& gate, const SavedActivation& up, long n);
void swiglu_backward(float* dgate, float* dup, const float* dh, const SavedActivation& gate,
                     const SavedActivation& up, long n);

// Fused lm_head + softmax + cross-entropy and its backward, `chunk` rows at a time so that
// [R, V] logits never exist: for rows h[R, C] with targets[R], returns Σ −log p(target) and
// writes dh[R, C] = grad_scale · (softmax − onehot) · w (skipped when dh is null: loss only).
// scratch holds cross_entropy_scratch_floats(w, chunk) floats. C = w.in(), V = w.out().
// With a bf16 weight the logits are rounded to bf16 before the softmax, as under autocast.
size_t cross_entropy_scratch_floats(const PackedWeight& w, int chunk);
double cross_entropy_forward_backward(float* dh, const float* h, const PackedWeight& w,
                                      const int* targets, int R, float grad_scale, float* scratch,
                                      int chunk);

}  // namespace loratune::ops
