#include "ops/saved_activation.h"

#include "ops/backend.h"
#include "ops/cpu/bf16_round.h"

namespace loratune::ops {

float* SavedActivation::write(size_t n, std::vector<float>& scratch) {
  bf16_ = backend().precision == Precision::kBF16;
  std::vector<float>& room = bf16_ ? scratch : f32_;
  if (room.size() < n) room.resize(n);
  written_ = room.data();
  n_ = n;
  return room.data();
}

const float* SavedActivation::widened(std::vector<float>& scratch) const {
  if (!bf16_) return f32_.data();
  if (scratch.size() < n_) scratch.resize(n_);
  widen_bf16(scratch.data(), bf16_store_.data(), static_cast<long>(n_));
  return scratch.data();
}

uint16_t* SavedActivation::write_bf16(size_t n) {
  bf16_ = true;
  if (bf16_store_.size() < n) bf16_store_.resize(n);
  written_ = nullptr;
  n_ = n;
  return bf16_store_.data();
}

void SavedActivation::keep() {
  if (!bf16_ || !written_) return;
  if (bf16_store_.size() < n_) bf16_store_.resize(n_);
  round_to_bf16(bf16_store_.data(), written_, static_cast<long>(n_));
}

}  // namespace loratune::ops
