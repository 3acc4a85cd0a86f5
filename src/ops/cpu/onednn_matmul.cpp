#include "ops/cpu/onednn_matmul.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/threads.h"
#include "ops/cpu/amx_rows_kernel.h"
#include "ops/cpu/bf16_round.h"
#include "ops/ops.h"

namespace loratune::ops::onednn {

namespace {

using dnnl::memory;
using Dt = memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e = [] {
    cap_onednn_isa();
    return dnnl::engine(dnnl::engine::kind::cpu, 0);
  }();
  return e;
}

// One product a[M, K] · b[K, Nout] = c[M, Nout]; b is rows [out, in] of a weight read
// either transposed (forward: K = in) or as they are (input gradient).
struct Key {
  int in, out;
  bool backward, accumulate, bf16;
  long lda, ldc;  // values from one row of a (of c) to the next
  int rows;       // M, or 0: given per call
  bool c_bf16;    // c rounded to bf16 (else fp32)
  auto tie() const { return std::tie(in, out, backward, accumulate, bf16, lda, ldc, rows, c_bf16); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

// bf16 products of at least kFixedRowsMin rows get a primitive made for their row count:
// there oneDNN 2.6 runs its brgemm kernels (AMX), 1.3-1.4x its run-time-M gemm on the
// model's shapes; below it (decode) the run-time-M gemm streams the weight faster, and so it
// does on a reduction longer than kFixedRowsMaxK (the lm_head's input gradient sums over the
// vocabulary: 78 against 107 ms for 256 rows of Qwen2). fp32 products are as fast with M at
// run time.
constexpr int kFixedRowsMin = 32;
constexpr long kFixedRowsMaxK = 16384;
// Row counts vary from step to step with packed sequences: the least recently used fixed-M
// primitives go beyond this many (making one takes about a millisecond).
constexpr size_t kCacheCapacity = 256;

struct Primitive {
  dnnl::matmul matmul;
  memory::desc weights;
  size_t scratchpad_bytes;
  mutable uint64_t last_use = 0;
};

std::shared_ptr<const Primitive> make_primitive(const Key& k) {
  const memory::dim K = k.backward ? k.out : k.in, Nout = k.backward ? k.in : k.out;
  const memory::dim M = k.rows > 0 ? k.rows : DNNL_RUNTIME_DIM_VAL;
  const Dt dt = k.bf16 ? Dt::bf16 : Dt::f32;
  const memory::desc a({M, K}, dt, {k.lda, 1});
  const memory::desc b({K, Nout}, dt, k.backward ? memory::dims{Nout, 1} : memory::dims{1, K});
  const memory::desc c({M, Nout}, k.c_bf16 ? Dt::bf16 : Dt::f32, {k.ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (k.accumulate) {
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine());
  return std::make_shared<const Primitive>(
      Primitive{dnnl::matmul(pd), b, pd.scratchpad_desc().get_size()});
}

// The cached primitive for k; shared, so that an eviction never frees one in use.
std::shared_ptr<const Primitive> primitive(const Key& k) {
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const Primitive>> cache;
  static uint64_t clock = 0;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(k);
  if (it == cache.end()) {
    if (cache.size() >= kCacheCapacity) {
      auto oldest = cache.end();
      for (auto c = cache.begin(); c != cache.end(); ++c)
        if (c->first.rows > 0 &&
            (oldest == cache.end() || c->second->last_use < oldest->second->last_use))
          oldest = c;
      if (oldest != cache.end()) cache.erase(oldest);
    }
    it = cache.emplace(k, make_primitive(k)).first;
  }
  it->second->last_use = ++clock;
  return it->second;
}

// c[N, Nout] (+)= a[N, K] · b for the rows b of a weight [out, in] (see Key); a and b are
// bf16 or fp32, c fp32 or (c_bf16) bf16.
void matmul(void* c, long ldc, const void* a, long lda, const void* b, int in, int out, int N,
            bool accumulate, bool backward, bool bf16, bool c_bf16) {
  const memory::dim K = backward ? out : in, Nout = backward ? in : out;
  const bool fixed_rows = bf16 && N >= kFixedRowsMin && K <= kFixedRowsMaxK;
  const int rows = fixed_rows ? N : 0;
  const std::shared_ptr<const Primitive> held =
      primitive({in, out, backward, accumulate, bf16, lda, ldc, rows, c_bf16});
  const Primitive& p = *held;
  thread_local std::vector<char> scratchpad;  // grown once, then reused
  if (scratchpad.size() < p.scratchpad_bytes) scratchpad.resize(p.scratchpad_bytes);
  const Dt dt = bf16 ? Dt::bf16 : Dt::f32;
  // oneDNN takes non-const handles; it only reads a and the weights.
  memory a_mem({{N, K}, dt, {lda, 1}}, engine(), const_cast<void*>(a));
  memory b_mem(p.weights, engine(), const_cast<void*>(b));
  memory c_mem({{N, Nout}, c_bf16 ? Dt::bf16 : Dt::f32, {ldc, 1}}, engine(), c);
  memory s_mem({{static_cast<memory::dim>(p.scratchpad_bytes)}, Dt::u8, {1}}, engine(),
               scratchpad.data());
  thread_local dnnl::stream stream(engine());
  p.matmul.execute(stream, {{DNNL_ARG_SRC, a_mem},
                            {DNNL_ARG_WEIGHTS, b_mem},
                            {DNNL_ARG_DST, c_mem},
                            {DNNL_ARG_SCRATCHPAD, s_mem}});
  stream.wait();
}

// The rows of a kRowsBF16Widened weight are widened kWidenRows at a time into an fp32 slice
// (0.9 MB for Qwen2-0.5B's 896 inputs), each slice one fp32 product.
constexpr int kWidenRows = 256;
// Up to this many slices a product's slices are widened and multiplied by the whole team, one
// after the other. A weight of more (Qwen2's lm_head: 594) is dealt out instead: each thread
// widens and multiplies a share of its own in single-threaded products, with no barrier per
// slice (the loss of a 4×128 bf16 step 1.35–1.49 → 1.19–1.24 s on the Xeon model 207). The
// layers' weights (at most 19 slices) are not: down_proj's 4864-long rows make a thread's slice
// overflow its L2, 9 % slower.
constexpr int kTeamSlicesMost = 64;

// body(n0, n1) over the N rows of a slice's operand: on the team where it holds more than 65536
// values, else (and inside a parallel region) on the calling thread.
template <typename Body>
void over_rows(int N, int rows, Body&& body) {
  parallel_ranges(N, N * static_cast<long>(rows) > 65536 ? 2 : N + 1, body);
}

// One slice's forward: c[:, r0 .. r0 + rows) (+)= a · sliceᵀ, written to bf16 through the fp32
// tile where c_bf16.
void forward_slice(void* c, bool c_bf16, const void* a, long lda, const float* slice, int in,
                   int out, int r0, int rows, int N, bool accumulate, float* c_tile) {
  float* c32 = c_bf16 ? c_tile : static_cast<float*>(c) + r0;
  const long ldc = c_bf16 ? rows : out;
  matmul(c32, ldc, a, lda, slice, in, rows, N, accumulate, false, false, false);
  if (!c_bf16) return;
  over_rows(N, rows, [&](long n0, long n1) {
    for (long n = n0; n < n1; ++n)
      round_to_bf16(static_cast<uint16_t*>(c) + n * out + r0, c32 + n * rows, rows);
  });
}

// One slice's input gradient: c[:, cols) (+)= a[:, r0 .. r0 + rows) · slice, the slice being
// rows [r0, r0 + rows) of w and `cols` of its columns; a bf16 `a` (the lm_head's logits
// gradient) is widened into a_cols first.
void gradient_slice(float* c, long ldc, const void* a, bool a_bf16, long lda, const float* slice,
                    int cols, int r0, int rows, int N, bool accumulate, float* a_cols) {
  const float* a_slice = static_cast<const float*>(a) + r0;
  long ld_slice = lda;
  if (a_bf16) {
    const uint16_t* a16 = static_cast<const uint16_t*>(a) + r0;
    over_rows(N, rows, [&](long n0, long n1) {
      for (long n = n0; n < n1; ++n) widen_bf16(a_cols + n * rows, a16 + n * lda, rows);
    });
    a_slice = a_cols;
    ld_slice = rows;
  }
  matmul(c, ldc, a_slice, ld_slice, slice, cols, rows, N, accumulate, true, false, false);
}

// The calling thread's buffers for run_widened, grown to the largest call and reused.
struct WidenBuffers {
  std::vector<float> slice, a_cols, c_tile;
  void grow(size_t slice_values, size_t a_values, size_t c_values) {
    if (slice.size() < slice_values) slice.resize(slice_values);
    if (a_cols.size() < a_values) a_cols.resize(a_values);
    if (c_tile.size() < c_values) c_tile.resize(c_values);
  }
};

// run() for kRowsBF16Widened, the team on each slice in turn. Forward: c = a · wᵀ a slice of
// outputs at a time. Input gradient: c (+)= a · w, the slices summed into c in turn.
void run_widened_by_team(void* c, bool c_bf16, const void* a, bool a_bf16, long lda,
                         const PackedWeight& w, int N, bool accumulate, bool backward) {
  const int in = w.in(), out = w.out();
  thread_local WidenBuffers buf;
  buf.grow(static_cast<size_t>(kWidenRows) * in, a_bf16 ? static_cast<size_t>(N) * kWidenRows : 0,
           c_bf16 ? static_cast<size_t>(N) * kWidenRows : 0);
  for (int r0 = 0; r0 < out; r0 += kWidenRows) {
    const int rows = std::min(kWidenRows, out - r0);
    widen_bf16(buf.slice.data(), w.rows_bf16() + static_cast<long>(r0) * in,
               static_cast<long>(rows) * in);
    if (backward)
      gradient_slice(static_cast<float*>(c), in, a, a_bf16, lda, buf.slice.data(), in, r0, rows, N,
                     accumulate || r0 > 0, buf.a_cols.data());
    else
      forward_slice(c, c_bf16, a, lda, buf.slice.data(), in, out, r0, rows, N, accumulate,
                    buf.c_tile.data());
  }
}

// run() for kRowsBF16Widened, each thread on a share of its own (see kTeamSlicesMost).
// Forward: the thread's outputs, in slices of half the team's rows (the same bytes per thread
// in the cache). Input gradient: the thread's columns of c, each slice the thread's part of
// kWidenRows rows of w, summed in the order run_widened_by_team sums them (a bf16 `a` is then
// widened by every thread, each needing all of its rows). oneDNN, called inside the parallel
// region, runs each product on the calling thread.
void run_widened_by_thread(void* c, bool c_bf16, const void* a, bool a_bf16, long lda,
                           const PackedWeight& w, int N, bool accumulate, bool backward) {
  const int in = w.in(), out = w.out();
  const int step = backward ? kWidenRows : kWidenRows / 2;
#pragma omp parallel
  {
    // Shares in whole vectors of 16 outputs or columns.
    const long t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int n = backward ? in : out;
    const int begin = static_cast<int>(n * t / nt / 16 * 16);
    const int end = t + 1 == nt ? n : static_cast<int>(n * (t + 1) / nt / 16 * 16);
    const int width = backward ? end - begin : in;  // values of a slice row
    thread_local WidenBuffers buf;
    buf.grow(static_cast<size_t>(step) * width, a_bf16 ? static_cast<size_t>(N) * step : 0,
             c_bf16 ? static_cast<size_t>(N) * step : 0);
    const int first = backward ? 0 : begin, last = backward ? out : end;
    for (int r0 = first; r0 < last && begin < end; r0 += step) {
      const int rows = std::min(step, last - r0);
      for (int r = 0; r < rows; ++r)
        widen_bf16(buf.slice.data() + static_cast<long>(r) * width,
                   w.rows_bf16() + static_cast<long>(r0 + r) * in + (backward ? begin : 0), width);
      if (backward)
        gradient_slice(static_cast<float*>(c) + begin, in, a, a_bf16, lda, buf.slice.data(), width,
                       r0, rows, N, accumulate || r0 > 0, buf.a_cols.data());
      else
        forward_slice(c, c_bf16, a, lda, buf.slice.data(), in, out, r0, rows, N, accumulate,
                      buf.c_tile.data());
    }
  }
}

void run_widened(void* c, bool c_bf16, const void* a, bool a_bf16, long lda, const PackedWeight& w,
                 int N, bool accumulate, bool backward) {
  const int slices = (w.out() + kWidenRows - 1) / kWidenRows;
  (slices > kTeamSlicesMost ? run_widened_by_thread : run_widened_by_team)(
      c, c_bf16, a, a_bf16, lda, w, N, accumulate, backward);
}

// c[N, Nout] (+)= a[N, K] · b for the weight w (see Key); a is in w's precision (bf16, or for
// kRowsBF16Widened its values in fp32, unless a_bf16), c fp32 or (c_bf16) bf16.
void run(void* c, const void* a, const PackedWeight& w, int N, bool accumulate, bool backward,
         long lda = 0, bool c_bf16 = false, bool a_bf16 = false) {
  const memory::dim K = backward ? w.out() : w.in(), Nout = backward ? w.in() : w.out();
  if (lda == 0) lda = K;
  if (w.format() == WeightFormat::kRowsBF16Widened)
    return run_widened(c, c_bf16, a, a_bf16, lda, w, N, accumulate, backward);
  const bool bf16 = w.format() == WeightFormat::kRowsBF16;
  if (bf16 && !backward && one_kernel_per_shape() && amx_rows_kernel_available()) {
    amx_rows_forward(c, c_bf16, static_cast<const uint16_t*>(a), lda, w.rows_bf16(), N,
                     static_cast<int>(K), static_cast<int>(Nout), accumulate);
    return;
  }
  const void* b = bf16 ? static_cast<const void*>(w.rows_bf16()) : w.rows_f32();
  matmul(c, Nout, a, lda, b, w.in(), w.out(), N, accumulate, backward, bf16, c_bf16);
}

// a[n] as the weight's kernel reads it: itself (fp32), its bf16 copy, or for
// kRowsBF16Widened its copy rounded to bf16 in fp32.
const void* operand(const float* a, size_t n, const PackedWeight& w) {
  if (w.format() == WeightFormat::kRowsBF16Widened)
    return bf16_precision_copy(a, static_cast<long>(n));
  return w.format() == WeightFormat::kRowsBF16
             ? static_cast<const void*>(bf16_copy(a, static_cast<long>(n)))
             : a;
}

}  // namespace

void forward(const Product* ps, int n, const float* x, int N) {
  if (N == 0) return;
  const void* a = operand(x, static_cast<size_t>(N) * ps[0].w->in(), *ps[0].w);
  for (int j = 0; j < n; ++j) run(ps[j].y, a, *ps[j].w, N, ps[j].accumulate, false);
}

void forward_to_bf16(const ProductBF16* ps, int n, const float* x, int N) {
  if (N == 0) return;
  const void* a = operand(x, static_cast<size_t>(N) * ps[0].w->in(), *ps[0].w);
  for (int j = 0; j < n; ++j) run(ps[j].y, a, *ps[j].w, N, false, false, 0, true);
}

void backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
  if (N == 0) return;
  run(dx, operand(dy, static_cast<size_t>(N) * w.out(), w), w, N, accumulate, true);
}

void backward_bf16(float* dx, const uint16_t* dy, long ld_dy, const PackedWeight& w, int N,
                   bool accumulate) {
  if (N > 0) run(dx, dy, w, N, accumulate, true, ld_dy, false, true);
}

}  // namespace loratune::ops::onednn
