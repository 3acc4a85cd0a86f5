// The fast fp32 kernels against their scalar references, on odd sizes.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "core/half.h"
#include "core/rng.h"
#include "ops/cpu/amx_rows_kernel.h"
#include "ops/cpu/attention_products.h"
#include "ops/cpu/bf16_groups_kernel.h"
#include "ops/cpu/fast_exp.h"
#include "ops/cpu/small_gemm.h"
#include "ops/ops.h"
#include "ops/ref/attention.h"
#include "ops/ref/linear.h"
#include "ops/ref/rmsnorm.h"
#include "ops/ref/rope.h"
#include "ops/ref/swiglu.h"
#include "test_util.h"

namespace loratune {
namespace {

std::vector<float> random_vec(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal()) * scale;
  return v;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol) << "at " << i;
}

TEST(OpsForward, Linear) {
  // N < 4: the matrix-vector path; 7 and 200: full 6-row tiles and a row tail; 301: two token
  // blocks (156 and 145 rows); in = 13, 37 and 1100 (two reduction slices of 550): rows packed
  // eight features at a time, then a tail one by one; out = 11 and 40: a partial weight block,
  // 300: two slices of onednn-f32-widened's rows. Every matrix kernel this CPU runs: the own
  // AVX2 one, oneDNN fp32 and bf16, and the others of generation or bf16.
  struct Shape {
    int N, in, out;
  };
  for (const ops::WeightFormat format : ops::available_formats())
    for (const Shape s :
         {Shape{1, 13, 11}, Shape{3, 13, 40}, Shape{7, 13, 11}, Shape{7, 1100, 40},
          Shape{200, 37, 32}, Shape{301, 37, 32}, Shape{9, 37, 300}, Shape{9, 40, 16500}}) {
      const int N = s.N, in = s.in, out = s.out;
      const std::string name = std::string(ops::format_name(format)) + " " + std::to_string(N) +
                               "x" + std::to_string(in) + "x" + std::to_string(out);
      auto x = random_vec(N * in, 1), w = random_vec(out * in, 2), b = random_vec(out, 3);
      const ops::PackedWeight packed(w.data(), out, in, format);
      const auto xr = test::bf16_operands(x, format), wr = test::bf16_operands(w, format);
      ASSERT_EQ(packed.at(out - 1, in - 1), wr.back()) << name;
      // A write-only output must not read what was there before.
      std::vector<float> y(N * out, std::numeric_limits<float>::quiet_NaN()), y_ref(N * out);
      ops::linear_forward(y.data(), x.data(), packed, b.data(), N);
      ref::linear_forward(y_ref.data(), xr.data(), wr.data(), b.data(), N, in, out);
      expect_close(y, y_ref, 1e-4f * std::sqrt(in));
      std::fill(y.begin(), y.end(), std::numeric_limits<float>::quiet_NaN());
      ops::linear_forward(y.data(), x.data(), packed, nullptr, N);
      ref::linear_forward(y_ref.data(), xr.data(), wr.data(), static_cast<const float*>(nullptr), N,
                          in, out);
      expect_close(y, y_ref, 1e-4f * std::sqrt(in));
      std::vector<float> acc = y;
      ops::linear_accumulate(acc.data(), x.data(), packed, N);
      for (size_t i = 0; i < acc.size(); ++i)
        ASSERT_NEAR(acc[i], 2 * y_ref[i], 2e-4f * std::sqrt(in)) << name;
      if (!ops::is_bf16(format)) continue;
      // Written rounded to bf16 (two outputs of one input): within half a bf16 step (2^-9
      // relative) of the exact product.
      std::vector<uint16_t> y16(N * out), z16(N * out);
      const ops::LinearOutBF16 outs16[] = {{y16.data(), &packed}, {z16.data(), &packed}};
      ops::linear_forward_to_bf16(outs16, 2, x.data(), N);
      for (size_t i = 0; i < y16.size(); ++i) {
        ASSERT_NEAR(bf16_to_float(y16[i]), y_ref[i],
                    std::fabs(y_ref[i]) / 256 + 1e-4f * std::sqrt(in))
            << name;
        ASSERT_EQ(z16[i], y16[i]) << name;
      }
    }
}

TEST(OpsForward, LinearOverManyRowCounts) {
  // Row counts change from step to step with packed sequences: each count from 1 to 400 in
  // turn, then the first ones again, goes through the primitives made per row count and
  // their eviction, and every product must still be right.
  const int in = 24, out = 20, max_rows = 400;
  auto x = random_vec(max_rows * in, 4), w = random_vec(out * in, 5);
  for (const ops::WeightFormat format : ops::available_formats()) {
    const ops::PackedWeight packed(w.data(), out, in, format);
    const auto xr = test::bf16_operands(x, format), wr = test::bf16_operands(w, format);
    std::vector<float> y(max_rows * out), y_ref(max_rows * out);
    for (int pass = 0; pass < 2; ++pass)
      for (int N = 1; N <= (pass == 0 ? max_rows : 40); ++N) {
        ops::linear_forward(y.data(), x.data(), packed, nullptr, N);
        ref::linear_forward(y_ref.data(), xr.data(), wr.data(), static_cast<const float*>(nullptr),
                            N, in, out);
        for (int i = 0; i < N * out; ++i)
          ASSERT_NEAR(y[i], y_ref[i], 1e-4f * std::sqrt(in))
              << ops::format_name(format) << " rows " << N << " at " << i;
      }
  }
}

TEST(OpsForward, PackedWeightFromBf16KeepsTheFileValues) {
  const int out = 19, in = 7;
  std::vector<uint16_t> w16(out * in);
  Rng rng(40);
  for (auto& h : w16) h = float_to_bf16(static_cast<float>(rng.normal()));
  for (const ops::WeightFormat format : ops::available_formats()) {
    const auto packed = ops::PackedWeight::from_bf16(w16.data(), out, in, format);
    std::vector<float> back(out * in);
    packed.unpack(back.data());
    for (int i = 0; i < out * in; ++i)
      ASSERT_EQ(back[i], bf16_to_float(w16[i])) << ops::format_name(format) << " at " << i;
    if (ops::holds_bf16(format)) {  // held as 2 bytes a value (padded as laid out), not widened
      const size_t values = format == ops::WeightFormat::kGroupsBF16
                                ? static_cast<size_t>(packed.groups()) * packed.group_size()
                            : ops::is_blocks(format)
                                ? static_cast<size_t>(packed.blocks()) * packed.block_stride()
                                : static_cast<size_t>(out) * in;
      EXPECT_LE(packed.bytes(), (values * sizeof(uint16_t) + 63) / 64 * 64);
    }
  }
}

TEST(OpsForward, LinearSharedInputEqualsSeparateProducts) {
  // Three weights of one input size with other output sizes (a partial block each, as k/v
  // beside q), with and without a bias; 2 rows: the matrix-vector path; 301 rows and 1100
  // inputs: two token blocks and two reduction slices.
  const int outs[] = {40, 11, 24};
  for (const ops::WeightFormat format : ops::available_formats())
    for (const int N : {2, 7, 301})
      for (const int in : {37, 1100}) {
        auto x = random_vec(static_cast<size_t>(N) * in, 11);
        std::vector<ops::PackedWeight> packed;
        std::vector<std::vector<float>> bias, y, y_alone;
        for (int j = 0; j < 3; ++j) {
          const auto w = random_vec(static_cast<size_t>(outs[j]) * in, 12 + j);
          packed.emplace_back(w.data(), outs[j], in, format);
          bias.push_back(random_vec(outs[j], 20 + j));
          y.emplace_back(static_cast<size_t>(N) * outs[j], std::numeric_limits<float>::quiet_NaN());
          y_alone.emplace_back(static_cast<size_t>(N) * outs[j]);
        }
        const ops::LinearOut shared[] = {{y[0].data(), &packed[0], bias[0].data()},
                                         {y[1].data(), &packed[1], nullptr},
                                         {y[2].data(), &packed[2], bias[2].data()}};
        ops::linear_forward_shared(shared, 3, x.data(), N);
        for (int j = 0; j < 3; ++j) {
          ops::linear_forward(y_alone[j].data(), x.data(), packed[j], shared[j].b, N);
          EXPECT_EQ(y[j], y_alone[j])
              << ops::format_name(format) << " N " << N << ", in " << in << ", output " << j;
        }
      }
  const auto w = random_vec(8 * 5, 30), w2 = random_vec(8 * 6, 31);
  const ops::PackedWeight a(w.data(), 8, 5), b(w2.data(), 8, 6);
  std::vector<float> x(6 * 6), y(8 * 6);
  const ops::LinearOut mixed[] = {{y.data(), &a, nullptr}, {y.data(), &b, nullptr}};
  EXPECT_THROW(ops::linear_forward_shared(mixed, 2, x.data(), 6), std::invalid_argument);
}

TEST(OpsForward, RmsNorm) {
  const int N = 5, C = 37;
  auto x = random_vec(N * C, 4), w = random_vec(C, 5);
  std::vector<float> y(N * C), y_ref(N * C), r(N), r_ref(N);
  ops::rmsnorm_forward(y.data(), r.data(), x.data(), w.data(), N, C, 1e-6f);
  ref::rmsnorm_forward(y_ref.data(), r_ref.data(), x.data(), w.data(), N, C, 1e-6f);
  expect_close(y, y_ref, 1e-5f);
  expect_close(r, r_ref, 1e-5f);
}

TEST(OpsForward, Rope) {
  const int N = 6, heads = 3, D = 10;
  auto x = random_vec(N * heads * D, 6);
  std::vector<int> pos = {0, 1, 2, 7, 100, 4095};
  std::vector<float> inv_freq(D / 2);
  ops::rope_inv_freq(inv_freq.data(), D, 1e6);
  auto y = x, y_ref = x;
  ops::rope_forward(y.data(), pos.data(), inv_freq.data(), N, heads, D);
  ref::rope_forward(y_ref.data(), pos.data(), N, heads, D, 1e6);
  expect_close(y, y_ref, 1e-5f);
}

TEST(OpsForward, AttentionPackedAndWithPast) {
  const int H = 6, Hkv = 2, D = 8, QD = H * D, KVD = Hkv * D;
  // Two sequences packed: lengths 130 and 70 (over row blocks of 64); the second continues a
  // past of 4 positions.
  const int len0 = 130, len1 = 70, past1 = 4;
  auto q = random_vec((len0 + len1) * QD, 7);
  auto k0 = random_vec(len0 * KVD, 8), v0 = random_vec(len0 * KVD, 9);
  auto k1 = random_vec((past1 + len1) * KVD, 10), v1 = random_vec((past1 + len1) * KVD, 11);
  std::vector<ops::AttentionSpan> spans = {{0, len0, 0, k0.data(), v0.data()},
                                           {len0, len1, past1, k1.data(), v1.data()}};
  // Without a window, and sliding windows within a row block, across blocks, and across the past.
  for (int window : {0, 5, 80, 3}) {
    std::vector<float> out((len0 + len1) * QD), out_ref((len0 + len1) * QD);
    ops::attention_forward(out.data(), nullptr, q.data(), spans.data(), 2, H, Hkv, D, KVD, window);
    ref::attention_forward(out_ref.data(), q.data(), k0.data(), v0.data(), len0, 0, H, Hkv, D,
                           window);
    ref::attention_forward(out_ref.data() + len0 * QD, q.data() + len0 * QD, k1.data(), v1.data(),
                           len1, past1, H, Hkv, D, window);
    expect_close(out, out_ref, 1e-5f);
  }
}

// Single-query sequences (decode) take their own path, a task per kv head over blocks of 64
// keys: against the reference at pasts within one block, on a block's edge and across blocks,
// with a head size that is not a multiple of the vector (D = 20), windows, the log-sum-exp,
// and the same bits alone as beside a prefill.
TEST(OpsForward, AttentionSingleQueryPerKvHead) {
  const int H = 6, Hkv = 2, D = 20, QD = H * D, KVD = Hkv * D;
  const int prefill = 70;
  for (int past : {0, 5, 63, 64, 150}) {
    auto q = random_vec((prefill + 1) * QD, 20 + past);
    auto k0 = random_vec(prefill * KVD, 21), v0 = random_vec(prefill * KVD, 22);
    auto k1 = random_vec((past + 1) * KVD, 23), v1 = random_vec((past + 1) * KVD, 24);
    const std::vector<ops::AttentionSpan> spans = {{0, prefill, 0, k0.data(), v0.data()},
                                                   {prefill, 1, past, k1.data(), v1.data()}};
    for (int window : {0, 3, 100}) {
      std::vector<float> out((prefill + 1) * QD), lse((prefill + 1) * H);
      ops::attention_forward(out.data(), lse.data(), q.data(), spans.data(), 2, H, Hkv, D, KVD,
                             window);
      std::vector<float> out_ref(QD), lse_ref(H);
      ref::attention_forward(out_ref.data(), lse_ref.data(), q.data() + prefill * QD, k1.data(),
                             v1.data(), 1, past, H, Hkv, D, window);
      const std::vector<float> decoded(out.begin() + prefill * QD, out.end());
      expect_close(decoded, out_ref, 1e-5f);
      expect_close(std::vector<float>(lse.begin() + prefill * H, lse.end()), lse_ref, 1e-5f);

      ops::AttentionSpan alone = spans[1];
      alone.q_start = 0;
      std::vector<float> out_alone(QD);
      ops::attention_forward(out_alone.data(), nullptr, q.data() + prefill * QD, &alone, 1, H, Hkv,
                             D, KVD, window);
      EXPECT_EQ(out_alone, decoded) << "past " << past << ", window " << window;
    }
  }
}

// One-row products (decode's attention) take a direct loop instead of BLAS: against a scalar
// product, with both layouts of b, odd sizes and both betas.
TEST(OpsForward, RowSgemm) {
  for (const auto& [N, K] : {std::pair{1, 1}, {13, 20}, {64, 64}, {70, 131}, {200, 8}}) {
    const auto a = random_vec(K, 30), b = random_vec(static_cast<size_t>(N) * K, 31);
    const auto c0 = random_vec(N, 32);
    for (bool trans_b : {false, true})
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> c = c0, c_ref(N);
        ops::row_sgemm(trans_b, N, K, 0.5f, a.data(), b.data(), trans_b ? K : N, beta, c.data());
        for (int j = 0; j < N; ++j) {
          double sum = 0;
          for (int k = 0; k < K; ++k)
            sum += static_cast<double>(a[k]) * (trans_b ? b[static_cast<size_t>(j) * K + k]
                                                        : b[static_cast<size_t>(k) * N + j]);
          c_ref[j] = static_cast<float>(0.5 * sum + beta * c0[j]);
        }
        expect_close(c, c_ref, 1e-4f * std::sqrt(static_cast<float>(K)));
      }
  }
}

// Attention's products against a double-precision sum over each row's band: A row-major and
// transposed, sizes that leave partial tiles of rows and partial vectors of columns, bands of
// k and of columns, writing and accumulating. As the contract lets a tile of rows (up to 16)
// sum its rows' union of bands, A is zero outside a row's band but within 15 rows' reach,
// and a poison value beyond, which no tile may read; columns past a row's n_to may hold its
// value or the old one, columns past N (C's padding) only the old one.
TEST(OpsForward, BandProduct) {
  constexpr int kAll = ops::BandProduct::kAll, kReach = 15;
  struct Band {
    int k_from, k_to, n_to;
  };
  for (const auto& [M, N, K] :
       {std::tuple{1, 1, 1}, {7, 37, 5}, {13, 64, 64}, {64, 130, 64}, {70, 64, 131}, {6, 16, 0}})
    for (const Band band :
         {Band{-kAll, kAll, kAll}, Band{-kAll, 3, kAll}, Band{-2, kAll, kAll}, Band{-4, 9, 2}})
      for (bool transposed : {false, true})
        for (bool accumulate : {false, true}) {
          const std::string name =
              std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + " band " +
              std::to_string(band.k_from) + "," + std::to_string(band.k_to) + "," +
              std::to_string(band.n_to) + (transposed ? " At" : " A") + (accumulate ? " +=" : " =");
          auto a = random_vec(static_cast<size_t>(M) * K + 1, 40);
          const auto b = random_vec(static_cast<size_t>(K) * N + 1, 41);
          const int ldc = N + 3;
          const auto c0 = random_vec(static_cast<size_t>(M) * ldc, 42);
          auto at = [&](int i, int k) -> float& {
            return a[transposed ? static_cast<size_t>(k) * M + i : static_cast<size_t>(i) * K + k];
          };
          auto in_band = [&](int i, int k) {
            return k >= i + static_cast<long>(band.k_from) && k <= i + static_cast<long>(band.k_to);
          };
          auto reachable = [&](int i, int k) {
            return k >= i - kReach + static_cast<long>(band.k_from) &&
                   k <= i + kReach + static_cast<long>(band.k_to);
          };
          for (int i = 0; i < M; ++i)
            for (int k = 0; k < K; ++k)
              if (!in_band(i, k)) at(i, k) = reachable(i, k) ? 0.0f : 1e30f;
          std::vector<float> c = c0;
          ops::band_product({.M = M,
                             .N = N,
                             .K = K,
                             .alpha = 0.5f,
                             .a = a.data(),
                             .a_row = transposed ? 1 : K,
                             .a_col = transposed ? M : 1,
                             .b = b.data(),
                             .ldb = N,
                             .c = c.data(),
                             .ldc = ldc,
                             .accumulate = accumulate,
                             .k_from = band.k_from,
                             .k_to = band.k_to,
                             .n_to = band.n_to});
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < ldc; ++j) {
              const size_t at_c = static_cast<size_t>(i) * ldc + j;
              if (j >= N) {
                ASSERT_EQ(c[at_c], c0[at_c]) << name << " wrote padding at " << i << "," << j;
                continue;
              }
              double sum = 0;
              for (int k = 0; k < K; ++k)
                if (in_band(i, k)) sum += static_cast<double>(at(i, k)) * b[k * N + j];
              const double want = 0.5 * sum + (accumulate ? c0[at_c] : 0.0);
              const double tol = 1e-4 * std::sqrt(K + 1.0);
              if (j > i + static_cast<long>(band.n_to) && c[at_c] == c0[at_c]) continue;
              ASSERT_NEAR(c[at_c], want, tol) << name << " at " << i << "," << j;
            }
        }
}

// Generation's bf16 kernels (vdpbf16ps, AMX): fp32 sums of bf16 products (to fp32 rounding),
// and a row's values bit for bit the same whatever the other rows of the call. K = 200 has a
// partial last step; 37 outputs a partial last block; 40 rows more than two tiles of them.
// `forward(c, c_bf16, a, N, accumulate)` multiplies by the weight rows w[out, K] it is given.
using RowsForward = std::function<void(void*, bool, const uint16_t*, int, bool)>;
void expect_exact_and_row_invariant(
    const std::function<RowsForward(const std::vector<uint16_t>&)>& kernel_for, int K, int out,
    int N) {
  std::vector<uint16_t> w(out * K), a(N * K);
  const auto wf = random_vec(out * K, 40), af = random_vec(N * K, 41);
  for (int i = 0; i < out * K; ++i) w[i] = float_to_bf16(wf[i]);
  for (int i = 0; i < N * K; ++i) a[i] = float_to_bf16(af[i]);
  const RowsForward forward = kernel_for(w);
  std::vector<float> all(N * out);
  forward(all.data(), false, a.data(), N, false);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) {
      double exact = 0, scale = 0;
      for (int k = 0; k < K; ++k) {
        const double p = double(bf16_to_float(a[n * K + k])) * bf16_to_float(w[o * K + k]);
        exact += p;
        scale += std::fabs(p);
      }
      ASSERT_NEAR(all[n * out + o], exact, 1e-6 * scale) << n << ", " << o;
    }
  // Row n alone, and among the rows from `first` on, as fp32, accumulated and bf16.
  for (int first = 0; first < N; ++first)
    for (int n = first; n < N; ++n) {
      const int rows = N - first;
      std::vector<float> some(rows * out), one(out);
      forward(some.data(), false, a.data() + first * K, rows, false);
      forward(one.data(), false, a.data() + n * K, 1, false);
      for (int o = 0; o < out; ++o) {
        ASSERT_EQ(some[(n - first) * out + o], all[n * out + o]) << first << " " << n << " " << o;
        ASSERT_EQ(one[o], all[n * out + o]) << n << " " << o;
      }
    }
  std::vector<float> acc(N * out, 0.5f);
  forward(acc.data(), false, a.data(), N, true);
  std::vector<uint16_t> rounded(N * out);
  forward(rounded.data(), true, a.data(), N, false);
  for (int i = 0; i < N * out; ++i) {
    ASSERT_EQ(acc[i], 0.5f + all[i]);
    ASSERT_EQ(rounded[i], float_to_bf16(all[i]));
  }
}

// The AVX512-BF16 kernel over the weight regrouped (kGroupsBF16).
RowsForward groups_forward(const std::vector<uint16_t>& w, int K, int out) {
  auto packed = std::make_shared<ops::PackedWeight>(
      ops::PackedWeight::from_bf16(w.data(), out, K, ops::WeightFormat::kGroupsBF16));
  return [packed, K](void* c, bool c_bf16, const uint16_t* a, int N, bool accumulate) {
    const ops::GroupsProduct p{c, packed.get(), accumulate};
    ops::bf16_groups_forward(&p, 1, a, K, N, c_bf16);
  };
}

TEST(OpsForward, Bf16GroupsKernelIsExactToRoundingAndRowInvariant) {
  if (!ops::bf16_groups_kernel_available()) GTEST_SKIP() << "the CPU has no AVX512-BF16";
  // 9 rows and their tails, 8 to 1 rows, take every tile shape; 41 outputs a partial group.
  expect_exact_and_row_invariant([](const auto& w) { return groups_forward(w, 200, 41); }, 200, 41,
                                 9);
}

TEST(OpsForward, AmxRowsKernelIsExactToRoundingAndRowInvariant) {
  if (!ops::amx_rows_kernel_available()) GTEST_SKIP() << "the CPU (or the OS) gives no AMX-BF16";
  // The rows are read in place: `w` outlives the returned function.
  auto amx = [](int K, int out) {
    return [K, out](const std::vector<uint16_t>& w) -> RowsForward {
      return [&w, K, out](void* c, bool c_bf16, const uint16_t* a, int N, bool accumulate) {
        ops::amx_rows_forward(c, c_bf16, a, K, w.data(), N, K, out, accumulate);
      };
    };
  };
  expect_exact_and_row_invariant(amx(200, 37), 200, 37, 40);
  expect_exact_and_row_invariant(amx(128, 64), 128, 64, 33);  // tiles read in place
}

// Generation's own blocks kernels (also on AVX-512 CPUs, where whole pairs of blocks go through
// a tile of twice the width): a row's values bit for bit the same at every row count, from one
// row (the few-row path) to tiles of six and their edges. 1,100 inputs take two reduction
// slices; 72 outputs four whole blocks and a half one. The bf16 weights held as bf16 give the
// bits of the same values held as fp32: widening is exact, and the FMA chains are the same.
TEST(OpsForward, OwnKernelsAreRowInvariant) {
  const ops::OneKernelPerShape one_kernel;
  for (const ops::WeightFormat format :
       {ops::WeightFormat::kBlocksF32, ops::WeightFormat::kBlocksBF16,
        ops::WeightFormat::kBlocksBF16Widened}) {
    for (const auto& [in, out] : {std::pair{200, 72}, std::pair{1100, 40}}) {
      const int N = 20;
      const auto x = random_vec(N * in, 60), w = random_vec(out * in, 61);
      const ops::PackedWeight packed(w.data(), out, in, format);
      std::vector<float> all(N * out);
      ops::linear_forward(all.data(), x.data(), packed, nullptr, N);
      if (format == ops::WeightFormat::kBlocksBF16Widened) {
        const ops::PackedWeight as_f32(w.data(), out, in, ops::WeightFormat::kBlocksBF16);
        std::vector<float> all_f32(N * out);
        ops::linear_forward(all_f32.data(), x.data(), as_f32, nullptr, N);
        ASSERT_EQ(all, all_f32) << in;
      }
      for (int first = 0; first < N; ++first)
        for (int rows : {1, 2, 3, 4, 7, N - first}) {
          if (first + rows > N) continue;
          std::vector<float> some(rows * out);
          ops::linear_forward(some.data(), x.data() + first * in, packed, nullptr, rows);
          for (int i = 0; i < rows * out; ++i)
            ASSERT_EQ(some[i], all[first * out + i])
                << ops::format_name(format) << " " << in << ": rows " << first << " + " << rows;
        }
    }
  }
}

// Generation and serving batch the rows of every sequence with the same adapter into one LoRA
// product: under OneKernelPerShape a row's branch must come out bit for bit the same at every
// row count (BLAS products round rows differently at some counts), and match the reference.
TEST(OpsForward, LoraBranchIsRowInvariantUnderOneKernelPerShape) {
  const ops::OneKernelPerShape one_kernel;
  for (const auto& [in, out, r] : {std::tuple{896, 128, 8}, std::tuple{200, 37, 5}}) {
    const int N = 40;
    const float s = 2.0f;
    const auto x = random_vec(N * in, 50), A = random_vec(r * in, 51, 0.05f);
    const auto B = random_vec(out * r, 52), y0 = random_vec(N * out, 53);
    std::vector<float> all = y0, u(N * r), y_ref = y0, u_ref(N * r);
    ops::lora_forward(all.data(), u.data(), x.data(), {}, A.data(), B.data(), s, N, in, out, r);
    ref::lora_forward(y_ref.data(), u_ref.data(), x.data(), {}, A.data(), B.data(), s, N, in, out,
                      r);
    expect_close(all, y_ref, 1e-4f * std::sqrt(static_cast<float>(in)));
    for (int first = 0; first < N; ++first) {
      const int rows = N - first;
      std::vector<float> some(y0.begin() + first * out, y0.end());
      ops::lora_forward(some.data(), u.data(), x.data() + first * in, {}, A.data(), B.data(), s,
                        rows, in, out, r);
      for (int i = 0; i < rows * out; ++i)
        ASSERT_EQ(some[i], all[first * out + i]) << in << ": rows " << first << ".." << N - 1;
    }
  }
}

TEST(OpsForward, FastExpWithinTwoUlp) {
  // Floats from −87 to 88 in steps of about 0.001, which visit every binade many times.
  double worst = 0.0;
  for (float x = -87.0f; x <= 88.0f; x += 0.00097f) {
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(ops::fast_exp(x) - exact) / exact);
  }
  EXPECT_LT(worst, 2.0 * 5.97e-8);  // 2 ulp (2⁻²⁴ relative)
  EXPECT_EQ(ops::fast_exp(0.0f), 1.0f);
  EXPECT_EQ(ops::fast_exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(ops::fast_exp(-100.0f), 0.0f);
  EXPECT_EQ(ops::fast_exp(100.0f), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(ops::fast_exp(std::numeric_limits<float>::quiet_NaN())));
}

TEST(OpsForward, SwiGlu) {
  const long n = 1001;
  auto g = random_vec(n, 12, 3.0f), u = random_vec(n, 13);
  std::vector<float> h(n), h_ref(n);
  ops::swiglu_forward(h.data(), g.data(), u.data(), n);
  ref::swiglu_forward(h_ref.data(), g.data(), u.data(), n);
  expect_close(h, h_ref, 1e-5f);
}

}  // namespace
}  // namespace loratune
