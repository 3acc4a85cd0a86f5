#include "ops/packed_weight.h"

#include <immintrin.h>
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
// value(o, i) (zero past `out`), a block's output j at slot(j). whole(dst, o0) may lay out the
// first inputs of a whole block (outputs o0 ..) faster and returns how many it did.
template <typename T, typename Value, typename Slot, typename Whole>
void fill_blocks(T* data, int out, int in, long stride, Value value, Slot slot, Whole whole) {
  constexpr int kWidth = PackedWeight::kWidth;
  const int blocks = (out + kWidth - 1) / kWidth;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks; ++b) {
    T* dst = data + b * stride;
    const int rows = std::min(kWidth, out - b * kWidth);  // the rest is padding
    const int first = rows == kWidth ? whole(dst, b * kWidth) : 0;
    for (int i = first; i < in; ++i)
      for (int j = 0; j < kWidth; ++j)
        dst[static_cast<size_t>(i) * kWidth + slot(j)] = j < rows ? value(b * kWidth + j, i) : T{0};
  }
}

// dst[k][..] for k < 8 = the 8 × 8 bf16 values r[j][k] (rows given), transposed in registers:
// output j's four-value groups go to slot(j) (the slots keep groups of four together).
template <typename Slot>
void transpose8x8_bf16(uint16_t* dst, const __m128i r[8], int j0, Slot slot) {
  const __m128i t0 = _mm_unpacklo_epi16(r[0], r[1]), t1 = _mm_unpackhi_epi16(r[0], r[1]);
  const __m128i t2 = _mm_unpacklo_epi16(r[2], r[3]), t3 = _mm_unpackhi_epi16(r[2], r[3]);
  const __m128i t4 = _mm_unpacklo_epi16(r[4], r[5]), t5 = _mm_unpackhi_epi16(r[4], r[5]);
  const __m128i t6 = _mm_unpacklo_epi16(r[6], r[7]), t7 = _mm_unpackhi_epi16(r[6], r[7]);
  const __m128i u[8] = {_mm_unpacklo_epi32(t0, t2), _mm_unpackhi_epi32(t0, t2),
                        _mm_unpacklo_epi32(t1, t3), _mm_unpackhi_epi32(t1, t3),
                        _mm_unpacklo_epi32(t4, t6), _mm_unpackhi_epi32(t4, t6),
                        _mm_unpacklo_epi32(t5, t7), _mm_unpackhi_epi32(t5, t7)};
  for (int k = 0; k < 8; ++k) {  // u[k / 2] holds inputs k, k + 1 of rows 0-3; u[4 + k / 2] of 4-7
    const __m128i v = k % 2 == 0 ? _mm_unpacklo_epi64(u[k / 2], u[4 + k / 2])
                                 : _mm_unpackhi_epi64(u[k / 2], u[4 + k / 2]);
    uint16_t* row = dst + k * PackedWeight::kWidth;
    _mm_storel_epi64(reinterpret_cast<__m128i*>(row + slot(j0)), v);
    _mm_storeh_pd(reinterpret_cast<double*>(row + slot(j0 + 4)), _mm_castsi128_pd(v));
  }
}

}  // namespace

void PackedWeight::fill_blocks_bf16(const void* rows) {
  const char* src = static_cast<const char*>(rows);  // any alignment, as a file maps them
  const auto at = [&](int o, int i) { return src + (static_cast<size_t>(o) * in_ + i) * 2; };
  const auto slot = [](int j) { return widened_slot(j); };
  fill_blocks(
      static_cast<uint16_t*>(data_.get()), out_, in_, block_stride(),
      [&](int o, int i) {
        uint16_t v;
        std::memcpy(&v, at(o, i), sizeof(v));
        return v;
      },
      slot,
      // Whole blocks 8 inputs of 8 rows at a time (one by one, loading the 0.5B shape took 2.3x
      // the CPU time).
      [&](uint16_t* dst, int o0) {
        int i = 0;
        for (; i + 8 <= in_; i += 8)
          for (int j0 = 0; j0 < kWidth; j0 += 8) {
            __m128i r[8];
            for (int j = 0; j < 8; ++j)
              r[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at(o0 + j0 + j, i)));
            transpose8x8_bf16(dst + static_cast<size_t>(i) * kWidth, r, j0, slot);
          }
        return i;
      });
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
      [](int j) { return j; }, [](float*, int) { return 0; });
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
