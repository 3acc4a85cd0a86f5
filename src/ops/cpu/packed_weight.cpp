#include "ops/packed_weight.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "ops/cpu/bf16_groups_kernel.h"
#include "ops/cpu/bf16_round.h"

namespace loratune::ops {

PackedWeight::PackedWeight(int out, int in, WeightFormat format)
    : in_(in), out_(out), format_(format) {
  if (is_blocks(format) && (!cpu_features().avx2 || !cpu_features().fma))
    throw Error("this CPU lacks AVX2 or FMA", "",
                "loratune's matrix kernels need an x86-64-v3 CPU");
  if (format == WeightFormat::kGroupsBF16 && !bf16_groups_kernel_available())
    throw Error("this CPU lacks AVX512-BF16, which reads weights in the own-avx512bf16 format");
  const size_t rows = static_cast<size_t>(out) * in;
  const size_t raw = is_blocks(format) ? static_cast<size_t>(blocks()) * block_stride() *
                                             (holds_bf16(format) ? 2 : sizeof(float))
                     : format == WeightFormat::kRowsF32 ? rows * sizeof(float)
                     : format == WeightFormat::kGroupsBF16
                         ? static_cast<size_t>(groups()) * group_size() * 2
                         : rows * sizeof(uint16_t);
  // Big matrices start on a huge page and ask for huge pages (all but the tail, so no memory
  // is wasted): the kernels read a matrix row by row, a page or more apart, and with 4 KB
  // pages those reads kept missing the TLB. Small ones are cache-line aligned, as the kernels
  // load whole vectors.
  constexpr size_t kHugePage = size_t{2} << 20;
  bytes_ = (raw + 63) / 64 * 64;
  void* p = nullptr;
  if (posix_memalign(&p, bytes_ >= kHugePage ? kHugePage : 64, bytes_) != 0) throw std::bad_alloc();
  data_.reset(p);
  rows_ = p;
  // A hint: where the system has huge pages off, the call fails and nothing changes.
  if (bytes_ >= kHugePage) madvise(p, bytes_ / kHugePage * kHugePage, MADV_HUGEPAGE);
}

void PackedWeight::fill_groups(const void* rows) {
  const char* src = static_cast<const char*>(rows);
  uint16_t* data = static_cast<uint16_t*>(data_.get());
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups(); ++g)
    for (int s = 0; s < group_steps(); ++s)
      for (int j = 0; j < kGroupRows; ++j) {
        uint16_t* dst = data + g * group_size() + (s * kGroupRows + j) * kGroupStep;
        const int o = g * kGroupRows + j, k0 = s * kGroupStep;
        const int n = o < out_ ? std::min(kGroupStep, in_ - k0) : 0;
        std::memcpy(dst, src + (static_cast<size_t>(o) * in_ + k0) * sizeof(uint16_t),
                    n * sizeof(uint16_t));
        std::fill(dst + n, dst + kGroupStep, uint16_t{0});
      }
}

namespace {

// Blocks of kWidth outputs, each [in][kWidth], `stride` values apart: output o's input i is
// value(o, i) (zero past `out`), a block's output j at slot(j).
template <typename T, typename Value, typename Slot>
void fill_blocks(T* data, int out, int in, long stride, Value value, Slot slot) {
  constexpr int kWidth = PackedWeight::kWidth;
  const int blocks = (out + kWidth - 1) / kWidth;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks; ++b) {
    T* dst = data + b * stride;
    for (int j = 0; j < kWidth; ++j) {
      const int o = b * kWidth + j;
      for (int i = 0; i < in; ++i)
        dst[static_cast<size_t>(i) * kWidth + slot(j)] = o < out ? value(o, i) : T{0};
    }
  }
}

}  // namespace

void PackedWeight::fill_blocks_bf16(const void* rows) {
  const char* src = static_cast<const char*>(rows);
  fill_blocks(
      static_cast<uint16_t*>(data_.get()), out_, in_, block_stride(),
      [&](int o, int i) {
        uint16_t v;  // any alignment, as a file maps them
        std::memcpy(&v, src + (static_cast<size_t>(o) * in_ + i) * sizeof(v), sizeof(v));
        return v;
      },
      widened_slot);
}

PackedWeight::PackedWeight(const float* w, int out, int in, WeightFormat format)
    : PackedWeight(out, in, format) {
  fill_from(w);
}

PackedWeight PackedWeight::from_bf16(const void* w, int out, int in, WeightFormat format) {
  PackedWeight p(out, in, format);
  const size_t n = static_cast<size_t>(out) * in;
  if (is_bf16_rows(format)) {
    std::memcpy(p.data_.get(), w, n * sizeof(uint16_t));
  } else if (format == WeightFormat::kGroupsBF16) {
    p.fill_groups(w);
  } else if (format == WeightFormat::kBlocksBF16Widened) {
    p.fill_blocks_bf16(w);
  } else if (format == WeightFormat::kRowsF32) {
    widen_bf16(static_cast<float*>(p.data_.get()), w, static_cast<long>(n));
  } else {
    std::vector<float> widened(n);
    widen_bf16(widened.data(), w, static_cast<long>(n));
    p.fill_from(widened.data());
  }
  return p;
}

PackedWeight PackedWeight::view_rows(const void* w, int out, int in, WeightFormat format) {
  if (!is_rows(format)) throw Error("only rows can be used in place");
  PackedWeight p;
  p.in_ = in;
  p.out_ = out;
  p.format_ = format;
  p.rows_ = w;
  p.bytes_ = static_cast<size_t>(out) * in *
             (format == WeightFormat::kRowsF32 ? sizeof(float) : sizeof(uint16_t));
  return p;
}

void PackedWeight::fill_from(const float* w) {
  const size_t n = static_cast<size_t>(out_) * in_;
  switch (format_) {
    case WeightFormat::kRowsF32:
      std::memcpy(data_.get(), w, n * sizeof(float));
      return;
    case WeightFormat::kRowsBF16:
    case WeightFormat::kRowsBF16Widened: {
      uint16_t* dst = static_cast<uint16_t*>(data_.get());
#pragma omp parallel for schedule(static)
      for (size_t i = 0; i < n; ++i) dst[i] = float_to_bf16(w[i]);
      return;
    }
    case WeightFormat::kGroupsBF16:
    case WeightFormat::kBlocksBF16Widened: {
      std::vector<uint16_t> rounded(n);
#pragma omp parallel for schedule(static)
      for (size_t i = 0; i < n; ++i) rounded[i] = float_to_bf16(w[i]);
      if (format_ == WeightFormat::kGroupsBF16)
        fill_groups(rounded.data());
      else
        fill_blocks_bf16(rounded.data());
      return;
    }
    case WeightFormat::kBlocksF32:
    case WeightFormat::kBlocksBF16:
      break;
  }
  const bool round = format_ == WeightFormat::kBlocksBF16;
  fill_blocks(
      static_cast<float*>(data_.get()), out_, in_, block_stride(),
      [&](int o, int i) {
        const float v = w[static_cast<size_t>(o) * in_ + i];
        return round ? bf16_to_float(float_to_bf16(v)) : v;
      },
      [](int j) { return j; });
}

float PackedWeight::at(int o, int i) const {
  const size_t row = static_cast<size_t>(o) * in_ + i;
  switch (format_) {
    case WeightFormat::kRowsF32:
      return rows_f32()[row];
    case WeightFormat::kRowsBF16:
    case WeightFormat::kRowsBF16Widened:
      return bf16_to_float(rows_bf16()[row]);
    case WeightFormat::kGroupsBF16:
      return bf16_to_float(
          group(o / kGroupRows)[(static_cast<long>(i / kGroupStep) * kGroupRows + o % kGroupRows) *
                                    kGroupStep +
                                i % kGroupStep]);
    case WeightFormat::kBlocksBF16Widened:
      return bf16_to_float(
          block_bf16(o / kWidth)[static_cast<size_t>(i) * kWidth + widened_slot(o % kWidth)]);
    case WeightFormat::kBlocksF32:
    case WeightFormat::kBlocksBF16:
      break;
  }
  return block(o / kWidth)[static_cast<size_t>(i) * kWidth + o % kWidth];
}

void PackedWeight::unpack(float* w) const {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out_; ++o)
    for (int i = 0; i < in_; ++i) w[static_cast<size_t>(o) * in_ + i] = at(o, i);
}

}  // namespace loratune::ops
