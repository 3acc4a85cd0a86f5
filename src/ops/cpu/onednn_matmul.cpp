#include "ops/cpu/onednn_matmul.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/half.h"

namespace loratune::ops::onednn {

namespace {

using dnnl::memory;
using Dt = memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// One product a[M, K] · b[K, Nout] = c[M, Nout] with M given per call; b is the weight's
// rows [out, in] read either transposed (forward: K = in) or as they are (input gradient).
struct Key {
  int in, out;
  bool backward, accumulate, bf16;
  auto tie() const { return std::tie(in, out, backward, accumulate, bf16); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

struct Primitive {
  dnnl::matmul matmul;
  memory::desc weights;
  size_t scratchpad_bytes;
};

const Primitive& primitive(const Key& k) {
  static std::mutex mutex;
  static std::map<Key, Primitive> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(k); it != cache.end()) return it->second;
  const memory::dim K = k.backward ? k.out : k.in, Nout = k.backward ? k.in : k.out;
  const Dt dt = k.bf16 ? Dt::bf16 : Dt::f32;
  const memory::desc a({DNNL_RUNTIME_DIM_VAL, K}, dt, {K, 1});
  const memory::desc b({K, Nout}, dt, k.backward ? memory::dims{Nout, 1} : memory::dims{1, K});
  const memory::desc c({DNNL_RUNTIME_DIM_VAL, Nout}, Dt::f32, {Nout, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (k.accumulate) {
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine());
  return cache[k] = {dnnl::matmul(pd), b, pd.scratchpad_desc().get_size()};
}

// dst[n] = src[n] rounded to bf16, as float_to_bf16 does.
void round_to_bf16(uint16_t* dst, const float* src, long n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (long i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

// c[N, Nout] (+)= a[N, K] · b for the weight w (see Key).
void run(float* c, const float* a, const PackedWeight& w, int N, bool accumulate, bool backward) {
  if (N == 0) return;
  const bool bf16 = w.format() == WeightFormat::kRowsBF16;
  const Primitive& p = primitive({w.in(), w.out(), backward, accumulate, bf16});
  const memory::dim K = backward ? w.out() : w.in(), Nout = backward ? w.in() : w.out();
  // Buffers of the calling thread, grown to the largest call and then reused.
  thread_local std::vector<uint16_t> a_bf16;
  thread_local std::vector<char> scratchpad;
  const void* a_data = a;
  if (bf16) {
    const size_t n = static_cast<size_t>(N) * K;
    if (a_bf16.size() < n) a_bf16.resize(n);
    round_to_bf16(a_bf16.data(), a, static_cast<long>(n));
    a_data = a_bf16.data();
  }
  if (scratchpad.size() < p.scratchpad_bytes) scratchpad.resize(p.scratchpad_bytes);
  const Dt dt = bf16 ? Dt::bf16 : Dt::f32;
  const void* w_data = bf16 ? static_cast<const void*>(w.rows_bf16()) : w.rows_f32();
  // oneDNN takes non-const handles; it only reads a and the weights.
  memory a_mem({{N, K}, dt, {K, 1}}, engine(), const_cast<void*>(a_data));
  memory b_mem(p.weights, engine(), const_cast<void*>(w_data));
  memory c_mem({{N, Nout}, Dt::f32, {Nout, 1}}, engine(), c);
  memory s_mem({{static_cast<memory::dim>(p.scratchpad_bytes)}, Dt::u8, {1}}, engine(),
               scratchpad.data());
  thread_local dnnl::stream stream(engine());
  p.matmul.execute(stream, {{DNNL_ARG_SRC, a_mem},
                            {DNNL_ARG_WEIGHTS, b_mem},
                            {DNNL_ARG_DST, c_mem},
                            {DNNL_ARG_SCRATCHPAD, s_mem}});
  stream.wait();
}

}  // namespace

void forward(float* y, const float* x, const PackedWeight& w, int N, bool accumulate) {
  run(y, x, w, N, accumulate, false);
}

void backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
  run(dx, dy, w, N, accumulate, true);
}

}  // namespace loratune::ops::onednn
