// An activation that the forward keeps for the backward, in the run's precision: fp32, or in
// bf16 mode bf16, as autocast keeps the bf16 outputs of its matrix products (the MLP's
// gate/up pair [N, F] ×2 is the largest part of training memory; q/k/v and the attention
// output follow). The forward writes fp32 (write()), uses it, then keep() stores it; the
// backward reads it through the ops that take a SavedActivation, or widened().
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace loratune::ops {

class SavedActivation {
 public:
  // Room for n fp32 values: the store itself in fp32 mode, `scratch` (grown to n) in bf16.
  float* write(size_t n, std::vector<float>& scratch);
  // After write(): in bf16 mode, rounds what was written into the store.
  void keep();
  // Room for n values written straight in bf16 (a product's rounded output): the store.
  uint16_t* write_bf16(size_t n);

  // The kept values in fp32: the store itself, or widened into `scratch` (grown to fit).
  const float* widened(std::vector<float>& scratch) const;

  bool is_bf16() const { return bf16_; }
  const float* f32() const { return f32_.data(); }
  const uint16_t* bf16() const { return bf16_store_.data(); }

 private:
  std::vector<float> f32_;
  std::vector<uint16_t> bf16_store_;
  const float* written_ = nullptr;
  size_t n_ = 0;
  bool bf16_ = false;
};

}  // namespace loratune::ops
