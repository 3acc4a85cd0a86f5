// Every op's backward, two ways: the scalar reference in double against central finite
// differences of the reference forward (each loss is Σ g·y for a fixed random probe g = dy),
// and the fast fp32 kernel against the reference in float. Odd sizes throughout. Outputs the
// contract marks += start from non-zero buffers, outputs it marks = start from garbage.
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "ops/ops.h"
#include "ops/ref/attention.h"
#include "ops/ref/cross_entropy.h"
#include "ops/ref/linear.h"
#include "ops/ref/rmsnorm.h"
#include "ops/ref/rope.h"
#include "ops/ref/swiglu.h"
#include "test_util.h"

namespace loratune {
namespace {

template <typename T = double>
std::vector<T> random_vec(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(rng.normal() * scale);
  return v;
}

template <typename T>
double dot(const std::vector<T>& a, const std::vector<T>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// Central differences of loss() in every element of x against the analytic gradient:
// |fd − grad| ≤ rtol·max(|fd|, |grad|) + atol. In double with h = 1e-5 the truncation error
// (h²·f‴/6 ≈ 1e-11) and the rounding error (ε·|loss|/h ≈ 1e-10) sit far below the tolerance.
// The gradient must not vanish, or the check would prove nothing.
template <typename F>
void expect_fd(std::vector<double>& x, const std::vector<double>& grad, F&& loss,
               const std::string& what, double rtol = 1e-6, double atol = 1e-9) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  const double h = 1e-5;
  double gmax = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double lp = loss();
    x[i] = saved - h;
    const double lm = loss();
    x[i] = saved;
    const double fd = (lp - lm) / (2 * h);
    gmax = std::max(gmax, std::fabs(grad[i]));
    ASSERT_LE(std::fabs(fd - grad[i]), rtol * std::max(std::fabs(fd), std::fabs(grad[i])) + atol)
        << what << " element " << i << ": analytic " << grad[i] << ", finite differences " << fd;
  }
  EXPECT_GT(gmax, 1e-3) << what << ": gradient vanishes";
}

// Fast against reference in float: |a − b| ≤ rtol·|b| + atol·max|b|.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, const std::string& what,
                  double rtol = 1e-4, double atol = 1e-5) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double bmax = 0;
  for (float v : b) bmax = std::max(bmax, std::fabs(static_cast<double>(v)));
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_LE(std::fabs(static_cast<double>(a[i]) - b[i]), rtol * std::fabs(b[i]) + atol * bmax)
        << what << " element " << i << ": fast " << a[i] << ", reference " << b[i];
}

constexpr float kGarbage = 1e3f;  // what write-only outputs hold before the call

// ---- linear -------------------------------------------------------------------------------

TEST(OpsBackward, LinearRefMatchesFiniteDifferences) {
  const int N = 5, in = 7, out = 6;
  auto x = random_vec(N * in, 1), w = random_vec(out * in, 2), b = random_vec(out, 3);
  auto g = random_vec(N * out, 4);
  std::vector<double> y(N * out);
  auto loss = [&] {
    ref::linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
    return dot(g, y);
  };
  std::vector<double> dx(N * in, kGarbage);
  ref::linear_backward(dx.data(), g.data(), w.data(), N, in, out, false);
  expect_fd(x, dx, loss, "linear dx");
  // accumulate = true adds the same gradient onto what is there.
  const auto dx0 = random_vec(N * in, 5);
  std::vector<double> acc = dx0;
  ref::linear_backward(acc.data(), g.data(), w.data(), N, in, out, true);
  expect_fd(x, minus(acc, dx0), loss, "linear dx (accumulate)");
}

TEST(OpsBackward, LinearFastMatchesRef) {
  // 1 and 3 rows, 7 (a partial 16-token panel), 150 (ten panels), 530 (34 panels: two panel
  // groups); in = 13 and 20 leave a tile of fewer than 6 features; out = 11 pads the last
  // weight block, 300 is one output slice and 1100 (more than 1024) several.
  struct Shape {
    int N, in, out;
  };
  for (const ops::WeightFormat format : ops::available_formats()) {
    if (!ops::has_backward(format)) continue;  // generation's
    for (const Shape s :
         {Shape{1, 13, 11}, Shape{3, 13, 11}, Shape{7, 13, 11}, Shape{7, 20, 300},
          Shape{7, 20, 1100}, Shape{150, 20, 40}, Shape{530, 8, 40}, Shape{7, 40, 16500}}) {
      const int N = s.N, in = s.in, out = s.out;
      const std::string name = std::string(ops::format_name(format)) + " " + std::to_string(N) +
                               "x" + std::to_string(in) + "x" + std::to_string(out);
      auto dy = random_vec<float>(N * out, 6), w = random_vec<float>(out * in, 7);
      const ops::PackedWeight packed(w.data(), out, in, format);
      // bf16 kernels round dy and w; the reference takes the rounded values.
      const auto dyr = test::bf16_operands(dy, format), wr = test::bf16_operands(w, format);
      std::vector<float> dx(N * in, kGarbage), dx_ref(N * in, -kGarbage);
      ops::linear_backward(dx.data(), dy.data(), packed, N, false);
      ref::linear_backward(dx_ref.data(), dyr.data(), wr.data(), N, in, out, false);
      expect_close(dx, dx_ref, "linear dx " + name);
      dx = dx_ref = random_vec<float>(N * in, 8);
      ops::linear_backward(dx.data(), dy.data(), packed, N, true);
      ref::linear_backward(dx_ref.data(), dyr.data(), wr.data(), N, in, out, true);
      expect_close(dx, dx_ref, "linear dx (accumulate) " + name);
    }
  }
}

// ---- LoRA ---------------------------------------------------------------------------------

TEST(OpsBackward, LoraRefForwardAccumulatesAndSavesU) {
  const int N = 5, in = 7, out = 6, r = 3;
  const double s = 1.7;
  auto x = random_vec(N * in, 10), A = random_vec(r * in, 11), B = random_vec(out * r, 12);
  auto y0 = random_vec(N * out, 13);
  std::vector<double> y = y0, y_zero(N * out, 0.0), u(N * r, kGarbage), u2(N * r);
  ref::lora_forward(y.data(), u.data(), x.data(), {}, A.data(), B.data(), s, N, in, out, r);
  ref::lora_forward(y_zero.data(), u2.data(), x.data(), {}, A.data(), B.data(), s, N, in, out, r);
  std::vector<double> xa(N * r), ub(N * out);
  ref::linear_forward(xa.data(), x.data(), A.data(), static_cast<const double*>(nullptr), N, in, r);
  ref::linear_forward(ub.data(), xa.data(), B.data(), static_cast<const double*>(nullptr), N, r,
                      out);
  for (int i = 0; i < N * r; ++i) EXPECT_NEAR(u[i], xa[i], 1e-12);
  for (int i = 0; i < N * out; ++i) {
    EXPECT_NEAR(y_zero[i], s * ub[i], 1e-12);
    EXPECT_NEAR(y[i], y0[i] + s * ub[i], 1e-12);
  }
}

// A dropout mask of N rows of `in` features that keeps about three in four, times `scale`.
struct RandomKeep {
  std::vector<uint64_t> bits;
  ops::KeepMask keep;
  RandomKeep(int N, int in, uint64_t seed, float scale) {
    Rng rng(seed);
    bits.resize(static_cast<size_t>(N) * ops::lora_keep_words(in));
    for (uint64_t& word : bits) word = rng.next_u64() | rng.next_u64();
    keep = {bits.data(), scale};
  }
};

TEST(OpsBackward, LoraRefMatchesFiniteDifferences) {
  const int N = 5, in = 7, out = 6, r = 3;
  const double s = 1.7;
  const RandomKeep masked(N, in, 28, 1.25f);
  for (const ops::KeepMask& keep : {ops::KeepMask{}, masked.keep}) {
    auto x = random_vec(N * in, 20), A = random_vec(r * in, 21), B = random_vec(out * r, 22);
    auto y0 = random_vec(N * out, 23), g = random_vec(N * out, 24);
    std::vector<double> y(N * out), u(N * r);
    auto loss = [&] {
      y = y0;
      ref::lora_forward(y.data(), u.data(), x.data(), keep, A.data(), B.data(), s, N, in, out, r);
      return dot(g, y);
    };
    loss();  // saves u
    const auto dx0 = random_vec(N * in, 25), dA0 = random_vec(r * in, 26);
    const auto dB0 = random_vec(out * r, 27);
    std::vector<double> dx = dx0, dA = dA0, dB = dB0, du(N * r, kGarbage);
    ref::lora_backward(dx.data(), dA.data(), dB.data(), du.data(), g.data(), u.data(), x.data(),
                       keep, A.data(), B.data(), s, N, in, out, r);
    expect_fd(x, minus(dx, dx0), loss, "lora dx");
    expect_fd(A, minus(dA, dA0), loss, "lora dA");
    expect_fd(B, minus(dB, dB0), loss, "lora dB");
    // du is the gradient with respect to the saved u: loss(u) = Σ g·(y0 + s·u·Bᵀ).
    auto loss_u = [&] {
      std::vector<double> z(N * out);
      ref::linear_forward(z.data(), u.data(), B.data(), static_cast<const double*>(nullptr), N, r,
                          out);
      double l = dot(g, y0);
      for (int i = 0; i < N * out; ++i) l += g[i] * s * z[i];
      return l;
    };
    expect_fd(u, du, loss_u, "lora du");
    // dx = null: the parameter gradients are the same.
    std::vector<double> dA2 = dA0, dB2 = dB0, du2(N * r, kGarbage);
    ref::lora_backward(static_cast<double*>(nullptr), dA2.data(), dB2.data(), du2.data(), g.data(),
                       u.data(), x.data(), keep, A.data(), B.data(), s, N, in, out, r);
    for (size_t i = 0; i < dA.size(); ++i) EXPECT_EQ(dA2[i], dA[i]);
    for (size_t i = 0; i < dB.size(); ++i) EXPECT_EQ(dB2[i], dB[i]);
  }
}

// Shapes with and without whole vectors of features and whole groups of eight ranks, the
// dropout mask on and off.
TEST(OpsBackward, LoraFastMatchesRef) {
  const float s = 0.75f;
  for (const auto& [N, in, out, r] : {std::tuple{7, 13, 11, 3}, std::tuple{40, 64, 24, 8},
                                      std::tuple{33, 197, 20, 11}, std::tuple{3, 5, 4, 1}})
    for (bool masked : {false, true}) {
      const std::string name = std::to_string(N) + "x" + std::to_string(in) + "x" +
                               std::to_string(out) + " r" + std::to_string(r) +
                               (masked ? " masked" : "");
      const RandomKeep random_keep(N, in, 38, 1.25f);
      const ops::KeepMask keep = masked ? random_keep.keep : ops::KeepMask{};
      auto x = random_vec<float>(N * in, 30), A = random_vec<float>(r * in, 31);
      auto B = random_vec<float>(out * r, 32), y0 = random_vec<float>(N * out, 33);
      auto dy = random_vec<float>(N * out, 34);
      std::vector<float> y = y0, y_ref = y0, u(N * r, kGarbage), u_ref(N * r, -kGarbage);
      ops::lora_forward(y.data(), u.data(), x.data(), keep, A.data(), B.data(), s, N, in, out, r);
      ref::lora_forward(y_ref.data(), u_ref.data(), x.data(), keep, A.data(), B.data(), s, N, in,
                        out, r);
      expect_close(u, u_ref, "lora u " + name);
      expect_close(y, y_ref, "lora y " + name);
      for (bool with_dx : {true, false}) {
        const auto dx0 = random_vec<float>(N * in, 35), dA0 = random_vec<float>(r * in, 36);
        const auto dB0 = random_vec<float>(out * r, 37);
        std::vector<float> dx = dx0, dA = dA0, dB = dB0, du(N * r, kGarbage);
        std::vector<float> dx_ref = dx0, dA_ref = dA0, dB_ref = dB0, du_ref(N * r, -kGarbage);
        ops::lora_backward(with_dx ? dx.data() : nullptr, dA.data(), dB.data(), du.data(),
                           dy.data(), u.data(), x.data(), keep, A.data(), B.data(), s, N, in, out,
                           r);
        ref::lora_backward(with_dx ? dx_ref.data() : nullptr, dA_ref.data(), dB_ref.data(),
                           du_ref.data(), dy.data(), u_ref.data(), x.data(), keep, A.data(),
                           B.data(), s, N, in, out, r);
        expect_close(du, du_ref, "lora du " + name);
        expect_close(dA, dA_ref, "lora dA " + name);
        expect_close(dB, dB_ref, "lora dB " + name);
        expect_close(dx, dx_ref, "lora dx " + name);
      }
    }
}

// ---- RMSNorm ------------------------------------------------------------------------------

TEST(OpsBackward, RmsNormRefMatchesFiniteDifferences) {
  const int N = 5, C = 7;
  for (double eps : {1e-6, 0.3}) {  // a large eps makes its share of rstd visible
    auto x = random_vec(N * C, 40), w = random_vec(C, 41), g = random_vec(N * C, 42);
    std::vector<double> y(N * C), rstd(N);
    auto loss = [&] {
      ref::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
      return dot(g, y);
    };
    loss();
    const auto dx0 = random_vec(N * C, 43);
    std::vector<double> dx = dx0;
    ref::rmsnorm_backward(dx.data(), g.data(), rstd.data(), x.data(), w.data(), N, C);
    expect_fd(x, minus(dx, dx0), loss, "rmsnorm dx, eps " + std::to_string(eps));
  }
}

TEST(OpsBackward, RmsNormFastMatchesRef) {
  const int N = 5, C = 37;
  auto x = random_vec<float>(N * C, 44), w = random_vec<float>(C, 45);
  auto dy = random_vec<float>(N * C, 46), dx0 = random_vec<float>(N * C, 47);
  std::vector<float> y(N * C), rstd(N), rstd_ref(N);
  ops::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
  ref::rmsnorm_forward(y.data(), rstd_ref.data(), x.data(), w.data(), N, C, 1e-6f);
  std::vector<float> dx = dx0, dx_ref = dx0;
  ops::rmsnorm_backward(dx.data(), dy.data(), rstd.data(), x.data(), w.data(), N, C);
  ref::rmsnorm_backward(dx_ref.data(), dy.data(), rstd_ref.data(), x.data(), w.data(), N, C);
  expect_close(dx, dx_ref, "rmsnorm dx (accumulate)");
}

// ---- RoPE ---------------------------------------------------------------------------------

TEST(OpsBackward, RopeRefMatchesFiniteDifferences) {
  const int N = 6, heads = 3, D = 6;
  const std::vector<int> pos = {0, 1, 2, 7, 4095, 100000};
  for (double theta : {1e4, 1e6}) {
    auto x = random_vec(N * heads * D, 50), g = random_vec(N * heads * D, 51);
    auto loss = [&] {
      std::vector<double> y = x;
      ref::rope_forward(y.data(), pos.data(), N, heads, D, theta);
      return dot(g, y);
    };
    std::vector<double> dx = g;
    ref::rope_backward(dx.data(), pos.data(), N, heads, D, theta);
    expect_fd(x, dx, loss, "rope dx, theta " + std::to_string(theta));
  }
}

TEST(OpsBackward, RopeFastMatchesRef) {
  const int N = 6, heads = 3, D = 10;
  const std::vector<int> pos = {0, 1, 2, 7, 4095, 100000};
  std::vector<float> inv_freq(D / 2);
  ops::rope_inv_freq(inv_freq.data(), D, 1e6);
  auto dx = random_vec<float>(N * heads * D, 52), dx_ref = dx;
  ops::rope_backward(dx.data(), pos.data(), inv_freq.data(), N, heads, D);
  ref::rope_backward(dx_ref.data(), pos.data(), N, heads, D, 1e6);
  expect_close(dx, dx_ref, "rope dx", 1e-5, 1e-6);
}

// ---- attention ----------------------------------------------------------------------------

struct AttentionShape {
  int Nq, past, H, Hkv, D;
  int window = 0;  // sliding window; 0: none
};

TEST(OpsBackward, AttentionRefMatchesFiniteDifferences) {
  for (const AttentionShape& sh :
       {AttentionShape{5, 0, 3, 1, 6}, AttentionShape{5, 0, 4, 2, 6}, AttentionShape{4, 3, 4, 2, 6},
        AttentionShape{6, 0, 4, 2, 6, 3}, AttentionShape{4, 3, 4, 2, 6, 2}}) {
    const int Nq = sh.Nq, n_all = sh.past + sh.Nq, H = sh.H, Hkv = sh.Hkv, D = sh.D;
    const std::string name = "attention H=" + std::to_string(H) + " Hkv=" + std::to_string(Hkv) +
                             " past=" + std::to_string(sh.past) +
                             " window=" + std::to_string(sh.window);
    auto q = random_vec(Nq * H * D, 60), k = random_vec(n_all * Hkv * D, 61);
    auto v = random_vec(n_all * Hkv * D, 62), g = random_vec(Nq * H * D, 63);
    std::vector<double> out(Nq * H * D);
    auto loss = [&] {
      ref::attention_forward(out.data(), q.data(), k.data(), v.data(), Nq, sh.past, H, Hkv, D,
                             sh.window);
      return dot(g, out);
    };
    std::vector<double> dq(q.size(), kGarbage), dk(k.size(), kGarbage), dv(v.size(), kGarbage);
    ref::attention_backward(dq.data(), dk.data(), dv.data(), g.data(), q.data(), k.data(), v.data(),
                            Nq, sh.past, H, Hkv, D, sh.window);
    expect_fd(q, dq, loss, name + " dq");
    expect_fd(k, dk, loss, name + " dk");
    expect_fd(v, dv, loss, name + " dv");
  }
}

// The mask on its own: a gradient on the first query only reaches the first key and value,
// and a query that sees a single key gets no gradient (its softmax is constant). Under a
// sliding window of 2, the last query reaches only the last two keys.
TEST(OpsBackward, AttentionRefIsCausal) {
  const int Nq = 5, H = 4, Hkv = 2, D = 6;
  auto q = random_vec(Nq * H * D, 64), k = random_vec(Nq * Hkv * D, 65);
  auto v = random_vec(Nq * Hkv * D, 66);
  std::vector<double> g(Nq * H * D, 0.0);
  for (int d = 0; d < H * D; ++d) g[d] = 1.0 + d;
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  ref::attention_backward(dq.data(), dk.data(), dv.data(), g.data(), q.data(), k.data(), v.data(),
                          Nq, 0, H, Hkv, D);
  for (double x : dq) EXPECT_EQ(x, 0.0);
  for (size_t i = 0; i < dk.size(); ++i) EXPECT_EQ(dk[i], 0.0);
  for (size_t i = 0; i < dv.size(); ++i) {
    if (i < static_cast<size_t>(Hkv * D))
      EXPECT_NE(dv[i], 0.0);
    else
      EXPECT_EQ(dv[i], 0.0) << i;
  }
  std::fill(g.begin(), g.end(), 0.0);
  for (int d = 0; d < H * D; ++d) g[(Nq - 1) * H * D + d] = 1.0 + d;
  ref::attention_backward(dq.data(), dk.data(), dv.data(), g.data(), q.data(), k.data(), v.data(),
                          Nq, 0, H, Hkv, D, 2);
  for (size_t i = 0; i < dk.size(); ++i) {
    const bool seen = i >= static_cast<size_t>((Nq - 2) * Hkv * D);
    EXPECT_EQ(dk[i] != 0.0, seen) << i;
    EXPECT_EQ(dv[i] != 0.0, seen) << i;
  }
}

TEST(OpsBackward, AttentionFastMatchesRef) {
  for (const AttentionShape& sh :
       {AttentionShape{0, 0, 3, 1, 6}, AttentionShape{0, 0, 4, 2, 6}, AttentionShape{0, 0, 6, 2, 8},
        AttentionShape{0, 0, 4, 2, 6, 3}, AttentionShape{0, 0, 4, 2, 6, 70}}) {
    const int H = sh.H, Hkv = sh.Hkv, D = sh.D, QD = H * D, KVD = Hkv * D;
    const std::string name = "attention H=" + std::to_string(H) + " Hkv=" + std::to_string(Hkv) +
                             " window=" + std::to_string(sh.window);
    // Packed sequences of lengths 5, 0, 1, 3 and 150 (over two row blocks of 64); keys and
    // values sit at the query rows.
    const std::vector<int> lens = {5, 0, 1, 3, 150};
    std::vector<ops::AttentionSpan> spans;
    int N = 0;
    for (int len : lens) {
      spans.push_back({N, len, 0, nullptr, nullptr});
      N += len;
    }
    auto q = random_vec<float>(N * QD, 70), k = random_vec<float>(N * KVD, 71);
    auto v = random_vec<float>(N * KVD, 72), dout = random_vec<float>(N * QD, 73);
    for (auto& sp : spans) {
      sp.k = k.data() + sp.q_start * KVD;
      sp.v = v.data() + sp.q_start * KVD;
    }
    std::vector<float> out(N * QD), lse(N * H), out_ref(N * QD), lse_ref(N * H);
    ops::attention_forward(out.data(), lse.data(), q.data(), spans.data(),
                           static_cast<int>(spans.size()), H, Hkv, D, KVD, sh.window);
    std::vector<float> dq(N * QD, kGarbage), dk(N * KVD, kGarbage), dv(N * KVD, kGarbage);
    ops::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                            q.data(), k.data(), v.data(), spans.data(),
                            static_cast<int>(spans.size()), H, Hkv, D, sh.window);
    std::vector<float> dq_ref(N * QD), dk_ref(N * KVD), dv_ref(N * KVD);
    for (const auto& sp : spans) {
      if (sp.q_len == 0) continue;
      const long qo = static_cast<long>(sp.q_start) * QD, ko = static_cast<long>(sp.q_start) * KVD;
      ref::attention_forward(out_ref.data() + qo, lse_ref.data() + sp.q_start * H, q.data() + qo,
                             k.data() + ko, v.data() + ko, sp.q_len, 0, H, Hkv, D, sh.window);
      ref::attention_backward(dq_ref.data() + qo, dk_ref.data() + ko, dv_ref.data() + ko,
                              dout.data() + qo, q.data() + qo, k.data() + ko, v.data() + ko,
                              sp.q_len, 0, H, Hkv, D, sh.window);
    }
    expect_close(out, out_ref, name + " out");
    expect_close(lse, lse_ref, name + " lse");
    expect_close(dq, dq_ref, name + " dq");
    expect_close(dk, dk_ref, name + " dk");
    expect_close(dv, dv_ref, name + " dv");
  }
}

// ---- SwiGLU -------------------------------------------------------------------------------

TEST(OpsBackward, SwiGluRefMatchesFiniteDifferences) {
  const long n = 13;
  auto gate = random_vec(n, 80, 3.0), up = random_vec(n, 81), g = random_vec(n, 82);
  std::vector<double> h(n);
  auto loss = [&] {
    ref::swiglu_forward(h.data(), gate.data(), up.data(), n);
    return dot(g, h);
  };
  std::vector<double> dgate(n, kGarbage), dup(n, kGarbage);
  ref::swiglu_backward(dgate.data(), dup.data(), g.data(), gate.data(), up.data(), n);
  expect_fd(gate, dgate, loss, "swiglu dgate");
  expect_fd(up, dup, loss, "swiglu dup");
}

TEST(OpsBackward, SwiGluFastMatchesRef) {
  const long n = 5003;  // past the kernel's threading threshold
  auto gate = random_vec<float>(n, 83, 3.0), up = random_vec<float>(n, 84);
  auto dh = random_vec<float>(n, 85);
  std::vector<float> dgate_ref(n), dup_ref(n);
  ref::swiglu_backward(dgate_ref.data(), dup_ref.data(), dh.data(), gate.data(), up.data(), n);
  std::vector<float> dgate(n, kGarbage), dup(n, kGarbage);
  ops::swiglu_backward(dgate.data(), dup.data(), dh.data(), gate.data(), up.data(), n);
  expect_close(dgate, dgate_ref, "swiglu dgate", 1e-5, 1e-6);
  expect_close(dup, dup_ref, "swiglu dup", 1e-5, 1e-6);
  // In place as the model calls it: dgate over dh; and dgate over gate, dup over up.
  std::vector<float> buf = dh, up2 = up;
  ops::swiglu_backward(buf.data(), up2.data(), buf.data(), gate.data(), up.data(), n);
  expect_close(buf, dgate_ref, "swiglu dgate aliasing dh", 1e-5, 1e-6);
  std::vector<float> g3 = gate, u3 = up;
  ops::swiglu_backward(g3.data(), u3.data(), dh.data(), g3.data(), u3.data(), n);
  expect_close(g3, dgate_ref, "swiglu dgate aliasing gate", 1e-5, 1e-6);
  expect_close(u3, dup_ref, "swiglu dup aliasing up", 1e-5, 1e-6);
}

// ---- cross-entropy ------------------------------------------------------------------------

TEST(OpsBackward, CrossEntropyRefMatchesFiniteDifferences) {
  const int R = 5, C = 7, V = 11;
  const std::vector<int> targets = {3, 0, 10, 3, 7};
  // The loss is a sum; the gradient is scaled by 1/count of the whole accumulation window,
  // here larger than R.
  const int count = 9;
  auto h = random_vec(R * C, 90), w = random_vec(V * C, 91);
  std::vector<double> dh(R * C, kGarbage);
  const double loss = ref::cross_entropy_forward_backward(dh.data(), h.data(), w.data(),
                                                          targets.data(), R, C, V, 1.0 / count);
  EXPECT_NEAR(loss, ref::cross_entropy_forward(h.data(), w.data(), targets.data(), R, C, V), 1e-12);
  // Σ −log p(target) by hand for one row: logsumexp − target logit.
  double lse_sum = 0, max_l = -1e300;
  std::vector<double> logits(V);
  for (int j = 0; j < V; ++j) {
    for (int c = 0; c < C; ++c) logits[j] += h[c] * w[j * C + c];
    max_l = std::max(max_l, logits[j]);
  }
  for (int j = 0; j < V; ++j) lse_sum += std::exp(logits[j] - max_l);
  EXPECT_NEAR(ref::cross_entropy_forward(h.data(), w.data(), targets.data(), 1, C, V),
              max_l + std::log(lse_sum) - logits[targets[0]], 1e-12);
  auto scaled_loss = [&] {
    return ref::cross_entropy_forward(h.data(), w.data(), targets.data(), R, C, V) / count;
  };
  expect_fd(h, dh, scaled_loss, "cross-entropy dh");
}

TEST(OpsBackward, CrossEntropyFastMatchesRef) {
  const int R = 7, C = 13, V = 37;
  const std::vector<int> targets = {0, 36, 5, 5, 17, 2, 30};
  for (double h_scale : {1.0, 30.0})  // 30: logits far from 0, the max shift matters
    for (int chunk : {2, 7, 64}) {
      const std::string name =
          "cross-entropy chunk " + std::to_string(chunk) + " scale " + std::to_string(h_scale);
      auto h = random_vec<float>(R * C, 92, h_scale), w = random_vec<float>(V * C, 93);
      const float grad_scale = 1.0f / 11;
      std::vector<float> dh(R * C, kGarbage), dh_ref(R * C, -kGarbage);
      std::vector<float> scratch(static_cast<size_t>(chunk) * V);
      for (const ops::WeightFormat format : test::kF32Formats) {
        const ops::PackedWeight packed(w.data(), V, C, format);
        const double loss = ops::cross_entropy_forward_backward(
            dh.data(), h.data(), packed, targets.data(), R, grad_scale, scratch.data(), chunk);
        const double loss_ref = ref::cross_entropy_forward_backward(
            dh_ref.data(), h.data(), w.data(), targets.data(), R, C, V, grad_scale);
        EXPECT_NEAR(loss, loss_ref, 1e-5 * std::max(1.0, std::fabs(loss_ref))) << name;
        EXPECT_GT(loss, 0.0) << name;
        expect_close(dh, dh_ref, name + " dh " + ops::format_name(format));
      }
    }
}

// The bf16 lm_head: logits from bf16 operands with fp32 accumulation (as the reference on the
// rounded h and w), its input gradient from the softmax gradient rounded to bf16 in place, so
// dh is checked to bf16's precision.
TEST(OpsBackward, CrossEntropyBf16MatchesRefOnRoundedOperands) {
  // V = 300: onednn-f32-widened's lm_head takes two slices of its rows; V = 16500 more than
  // its team takes in turn (each thread then widens and multiplies a share of its own).
  const int R = 7;
  const std::vector<int> targets = {0, 299, 5, 5, 270, 2, 30};
  // bf16_off: the most the gradient may differ from fp32's (2^-8 per value; more over a longer
  // softmax, the same in every bf16 format).
  struct Case {
    int C, V;
    double bf16_off;
  };
  for (const Case& c : {Case{13, 300, 8e-3}, Case{40, 16500, 1.6e-2}})
    for (const ops::WeightFormat format : ops::available_formats())
      for (int chunk : {2, 7}) {
        const int C = c.C, V = c.V;
        if (!ops::is_bf16(format) || !ops::has_backward(format)) continue;
        const auto h = test::bf16_operands(random_vec<float>(R * C, 94), format);
        const auto w = test::bf16_operands(random_vec<float>(V * C, 95), format);
        std::vector<float> dh(R * C, kGarbage), dh_ref(R * C),
            scratch(static_cast<size_t>(chunk) * V);
        const ops::PackedWeight packed(w.data(), V, C, format);
        const double loss = ops::cross_entropy_forward_backward(
            dh.data(), h.data(), packed, targets.data(), R, 0.5f, scratch.data(), chunk);
        // The reference rounds the logits and their gradient to bf16 as the kernels do: what is
        // left is fp32 summation order, and a value that it moves across a bf16 rounding boundary.
        const double loss_ref = ref::cross_entropy_forward_backward(
            dh_ref.data(), h.data(), w.data(), targets.data(), R, C, V, 0.5f, test::bf16_round);
        const std::string name = std::string(ops::format_name(format)) + " V " + std::to_string(V) +
                                 " chunk " + std::to_string(chunk);
        EXPECT_NEAR(loss, loss_ref, 1e-5 * std::fabs(loss_ref)) << name;
        double diff = 0, norm = 0;
        for (int i = 0; i < R * C; ++i) {
          diff += (dh[i] - dh_ref[i]) * double(dh[i] - dh_ref[i]);
          norm += dh_ref[i] * double(dh_ref[i]);
        }
        EXPECT_LT(std::sqrt(diff / norm), 1e-3) << name;
        // Against fp32 logits and gradients the difference is bf16's (2^-8 per value).
        std::vector<float> dh_fp32(R * C);
        ref::cross_entropy_forward_backward(dh_fp32.data(), h.data(), w.data(), targets.data(), R,
                                            C, V, 0.5f);
        double diff_fp32 = 0;
        for (int i = 0; i < R * C; ++i)
          diff_fp32 += (dh[i] - dh_fp32[i]) * double(dh[i] - dh_fp32[i]);
        EXPECT_LT(std::sqrt(diff_fp32 / norm), c.bf16_off) << name;
        EXPECT_GT(std::sqrt(diff_fp32 / norm), 0.0) << "the gradient went through bf16: " << name;
      }
}

}  // namespace
}  // namespace loratune
