// A frozen weight w[out, in] laid out once, at load, for the kernel that the run's backend
// (ops/backend.h) multiplies with:
// - kBlocksF32, for ops/cpu/blocks_kernel.h: blocks of kWidth output rows, each block stored
//   [in][kWidth] (the output index fastest), the last block zero-padded. The forward (x·wᵀ)
//   loads kWidth outputs of one input feature as two vectors; the input gradient (dy·w)
//   broadcasts single elements. Neither repacks the weight, which a general sgemm does on
//   every call. kBlocksBF16: the same layout holding bf16-rounded values (bf16 emulated where
//   oneDNN has no bf16 kernel). kBlocksBF16Widened: the same values held as bf16 (half the
//   bytes), each block row's 16 outputs in widened_slot order, widened in registers.
// - kRowsF32 / kRowsBF16 / kRowsBF16Widened, for oneDNN: the rows [out, in] as the file holds
//   them, in fp32 or bf16 (rounded to nearest even); the same rows serve x·wᵀ and dy·w.
// - kGroupsBF16, for ops/cpu/bf16_groups_kernel.cpp: groups of kGroupRows output rows, each
//   [steps][kGroupRows][kGroupStep] bf16 with steps = ⌈in / kGroupStep⌉, zeros past `in` and
//   `out`: a group's vdpbf16ps operands lie in the order the kernel reads them, one stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "ops/backend.h"

namespace loratune::ops {

class PackedWeight {
 public:
  static constexpr int kWidth = 16;
  static constexpr int kGroupRows = 16, kGroupStep = 32;

  PackedWeight() = default;
  // From fp32 rows w[out, in], in `format` (the run's by default).
  PackedWeight(const float* w, int out, int in, WeightFormat format = backend().format);
  // From bf16 rows (any alignment, as a file maps them): kept as they are in the bf16 rows
  // formats and kGroupsBF16, widened exactly otherwise.
  static PackedWeight from_bf16(const void* w, int out, int in,
                                WeightFormat format = backend().format);
  // Rows in a kRows format used where they lie (a mapped file, which must outlive this):
  // processes that map the same file share its pages. `w` is aligned to its element.
  static PackedWeight view_rows(const void* w, int out, int in, WeightFormat format);

  WeightFormat format() const { return format_; }
  int in() const { return in_; }
  int out() const { return out_; }
  // Bytes the matrix takes in memory, from memory() on, whatever the format.
  size_t bytes() const { return bytes_; }
  const void* memory() const { return rows_; }

  // The blocks formats only.
  int blocks() const { return (out_ + kWidth - 1) / kWidth; }
  // Floats from one block to the next: the block plus one cache line, so that the same row of
  // consecutive blocks falls in different cache sets (the input gradient reads down a column
  // of blocks; at a stride of whole pages those rows would evict each other from L1).
  long block_stride() const { return static_cast<long>(in_) * kWidth + kWidth; }
  // Block b: [in][kWidth], w[b·kWidth + j, i] at [i·kWidth + j] (kBlocksF32 / kBlocksBF16).
  const float* block(int b) const {
    return static_cast<const float*>(data_.get()) + b * block_stride();
  }
  // kBlocksBF16Widened's block b, w[b·kWidth + j, i] at [i·kWidth + widened_slot(j)]: outputs
  // 0-3, 8-11, 4-7, 12-15, so that one interleave with zeros (AVX2) or one byte shuffle
  // (AVX-512) widens 8 or 16 outputs in order (ops/cpu/blocks_forward.cpp). The stride is
  // block_stride() values of 2 bytes.
  const uint16_t* block_bf16(int b) const {
    return static_cast<const uint16_t*>(data_.get()) + b * block_stride();
  }
  static int widened_slot(int j) { return (j & 3) | (j & 4) << 1 | (j & 8) >> 1; }
  // kRowsF32 / the bf16 rows formats: w[out, in].
  const float* rows_f32() const { return static_cast<const float*>(rows_); }
  const uint16_t* rows_bf16() const { return static_cast<const uint16_t*>(rows_); }
  // kGroupsBF16: group g, with w[g·kGroupRows + j, s·kGroupStep + i] at
  // [(s·kGroupRows + j)·kGroupStep + i].
  int groups() const { return (out_ + kGroupRows - 1) / kGroupRows; }
  int group_steps() const { return (in_ + kGroupStep - 1) / kGroupStep; }
  long group_size() const { return static_cast<long>(group_steps()) * kGroupRows * kGroupStep; }
  const uint16_t* group(int g) const {
    return static_cast<const uint16_t*>(rows_) + g * group_size();
  }

  // The matrix back in its [out, in] layout, in fp32.
  void unpack(float* w) const;
  float at(int o, int i) const;

 private:
  PackedWeight(int out, int in, WeightFormat format);  // allocates, contents undefined
  void fill_from(const float* w);                      // fp32 rows into this format
  void fill_groups(const void* rows);                  // kGroupsBF16 from bf16 rows
  void fill_blocks_bf16(const void* rows);             // kBlocksBF16Widened from bf16 rows

  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;  // null for a view
  const void* rows_ = nullptr;        // data_, or the viewed rows
  size_t bytes_ = 0;
  int in_ = 0, out_ = 0;
  WeightFormat format_ = WeightFormat::kBlocksF32;
};

}  // namespace loratune::ops
