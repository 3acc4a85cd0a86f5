#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cpu/bf16_groups_kernel.h"
#include "ops/cpu/bf16_round.h"
#include "ops/cpu/blocks_kernel.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/cpu/step_clock.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

using blocks::kMaxProducts;
using onednn::Product;

// The input as w's blocks kernel multiplies it: x itself, or in bf16 a copy rounded to bf16.
const float* emulated_input(const float* x, size_t n, const PackedWeight& w) {
  if (!is_bf16(w.format())) return x;
  return bf16_precision_copy(x, static_cast<long>(n));
}

// The flops of n products of one input x[N, in].
template <typename Out>
int64_t product_flops(const Out* outs, int n, int N) {
  int64_t flops = 0;
  for (int j = 0; j < n; ++j) flops += int64_t{2} * N * outs[j].w->in() * outs[j].w->out();
  return flops;
}

// kGroupsBF16's products of one input x[N, in], rounded to bf16 once for all.
void groups_forward(const GroupsProduct* ps, int n, const float* x, int N, bool c_bf16) {
  const int in = ps[0].w->in();
  bf16_groups_forward(ps, n, bf16_copy(x, static_cast<long>(N) * in), in, N, c_bf16);
}

}  // namespace

void linear_forward(float* y, const float* x, const PackedWeight& w, const float* b, int N) {
  const LinearOut out{y, &w, b};
  linear_forward_shared(&out, 1, x, N);
}

void linear_forward_shared(const LinearOut* outs, int n, const float* x, int N) {
  if (n < 1 || n > kMaxProducts)
    throw std::invalid_argument("linear_forward_shared takes 1 to 3 outputs");
  for (int j = 1; j < n; ++j)
    if (outs[j].w->in() != outs[0].w->in() || outs[j].w->format() != outs[0].w->format())
      throw std::invalid_argument("linear_forward_shared: the weights differ in size or format");
  const StepClock clock(StepWork::kProduct, product_flops(outs, n, N));
  Product ps[kMaxProducts];
  for (int j = 0; j < n; ++j) {
    const LinearOut& o = outs[j];
    if (o.b)
      for (int r = 0; r < N; ++r)
        std::memcpy(o.y + static_cast<long>(r) * o.w->out(), o.b, o.w->out() * sizeof(float));
    ps[j] = {o.y, o.w, o.b != nullptr};
  }
  if (is_blocks(outs[0].w->format()))
    return blocks::forward(
        ps, n, emulated_input(x, static_cast<size_t>(N) * outs[0].w->in(), *outs[0].w), N);
  if (outs[0].w->format() == WeightFormat::kGroupsBF16) {
    GroupsProduct gs[kMaxProducts];
    for (int j = 0; j < n; ++j) gs[j] = {ps[j].y, ps[j].w, ps[j].accumulate};
    return groups_forward(gs, n, x, N, false);
  }
  onednn::forward(ps, n, x, N);
}

void linear_accumulate(float* y, const float* x, const PackedWeight& w, int N) {
  const StepClock clock(StepWork::kProduct, int64_t{2} * N * w.in() * w.out());
  const Product p{y, &w, true};
  if (w.format() == WeightFormat::kGroupsBF16) {
    const GroupsProduct g{y, &w, true};
    return groups_forward(&g, 1, x, N, false);
  }
  if (!is_blocks(w.format())) return onednn::forward(&p, 1, x, N);
  blocks::forward(&p, 1, emulated_input(x, static_cast<size_t>(N) * w.in(), w), N);
}

void linear_forward_to_bf16(const LinearOutBF16* outs, int n, const float* x, int N) {
  if (n < 1 || n > kMaxProducts)
    throw std::invalid_argument("linear_forward_to_bf16 takes 1 to 3 outputs");
  const PackedWeight& w0 = *outs[0].w;
  for (int j = 1; j < n; ++j)
    if (outs[j].w->in() != w0.in() || outs[j].w->format() != w0.format())
      throw std::invalid_argument("linear_forward_to_bf16: the weights differ in size or format");
  const StepClock clock(StepWork::kProduct, product_flops(outs, n, N));
  if (is_bf16_rows(w0.format())) {
    onednn::ProductBF16 ps[kMaxProducts];
    for (int j = 0; j < n; ++j) ps[j] = {outs[j].y, outs[j].w};
    return onednn::forward_to_bf16(ps, n, x, N);
  }
  if (w0.format() == WeightFormat::kGroupsBF16) {
    GroupsProduct gs[kMaxProducts];
    for (int j = 0; j < n; ++j) gs[j] = {outs[j].y, outs[j].w, false};
    return groups_forward(gs, n, x, N, true);
  }
  if (!is_blocks(w0.format()) || !is_bf16(w0.format()))
    throw std::invalid_argument("linear_forward_to_bf16 needs a bf16 weight format");
  // The emulation: the own kernels' fp32 products of the rounded input, then rounded.
  const float* xr = emulated_input(x, static_cast<size_t>(N) * w0.in(), w0);
  thread_local std::vector<float> y32;  // grown to the largest call, then reused
  for (int j = 0; j < n; ++j) {
    const size_t size = static_cast<size_t>(N) * outs[j].w->out();
    if (y32.size() < size) y32.resize(size);
    const Product p{y32.data(), outs[j].w, false};
    blocks::forward(&p, 1, xr, N);
    round_to_bf16(outs[j].y, y32.data(), static_cast<long>(size));
  }
}

void linear_backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
  if (!has_backward(w.format()))
    throw std::invalid_argument(std::string("linear_backward: ") + format_name(w.format()) +
                                " weights are for generation only");
  const StepClock clock(StepWork::kProduct, int64_t{2} * N * w.in() * w.out());
  if (!is_blocks(w.format())) return onednn::backward(dx, dy, w, N, accumulate);
  blocks::backward(dx, emulated_input(dy, static_cast<size_t>(N) * w.out(), w), w, N, accumulate);
}

}  // namespace loratune::ops
