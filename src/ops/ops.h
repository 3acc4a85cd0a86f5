// Op contracts: the fast fp32 kernels (ops/cpu) and their scalar references (ops/ref) share
// names and argument order: outputs, saved state, inputs, weights, sizes. Shapes use
// N tokens, C hidden, H/Hkv heads, D head dim, F intermediate, V vocab.
// Nothing here knows about configs, files or the CLI.
#pragma once

namespace loratune::ops {

// y[N, out] = x[N, in] · w[out, in]ᵀ + b[out] (b may be null). One sgemm.
void linear_forward(float* y, const float* x, const float* w, const float* b, int N, int in,
                    int out);
// y[N, out] += x[N, in] · w[out, in]ᵀ: the residual stream accumulates projections.
void linear_accumulate(float* y, const float* x, const float* w, int N, int in, int out);

// y[N, C] = x · rsqrt(mean(x²) + eps) · w, in fp32; rstd[N] saved (may be null).
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int N, int C,
                     float eps);

// inv_freq[D/2] = 1 / θ^(2i/D), computed in fp32 as the reference does.
void rope_inv_freq(float* inv_freq, int D, double theta);
// In place on x[N, heads·D] (HF rotate_half layout); token n sits at position pos[n].
void rope_forward(float* x, const int* pos, const float* inv_freq, int N, int heads, int D);

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
void attention_forward(float* out, const float* q, const AttentionSpan* spans, int n_spans, int H,
                       int Hkv, int D, int kv_stride);

// h[n] = silu(gate[n]) · up[n]
void swiglu_forward(float* h, const float* gate, const float* up, long n);

}  // namespace loratune::ops
