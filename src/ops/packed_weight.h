// A frozen weight w[out, in] laid out once, at load, for the matrix kernels of
// ops/cpu/linear.cpp: blocks of kWidth output rows, each block stored [in][kWidth] (the output
// index fastest), the last block zero-padded. The forward (x·wᵀ) loads kWidth outputs of one
// input feature as two vectors; the input gradient (dy·w) broadcasts single elements. Neither
// repacks the weight, which a general sgemm does on every call.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace loratune::ops {

class PackedWeight {
 public:
  static constexpr int kWidth = 16;

  PackedWeight() = default;
  PackedWeight(const float* w, int out, int in);

  int in() const { return in_; }
  int out() const { return out_; }
  int blocks() const { return (out_ + kWidth - 1) / kWidth; }
  // Floats from one block to the next: the block plus one cache line, so that the same row of
  // consecutive blocks falls in different cache sets (the input gradient reads down a column
  // of blocks; at a stride of whole pages those rows would evict each other from L1).
  long block_stride() const { return static_cast<long>(in_) * kWidth + kWidth; }
  // Block b: [in][kWidth], w[b·kWidth + j, i] at [i·kWidth + j].
  const float* block(int b) const { return data_.get() + b * block_stride(); }
  // The matrix back in its [out, in] layout.
  void unpack(float* w) const;
  float at(int o, int i) const {
    return block(o / kWidth)[static_cast<size_t>(i) * kWidth + o % kWidth];
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float[], Free> data_;
  int in_ = 0, out_ = 0;
};

}  // namespace loratune::ops
