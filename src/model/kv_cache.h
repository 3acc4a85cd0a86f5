// Keys and values of past positions, per layer and per sequence slot, for decoding.
#pragma once

#include <vector>

#include "model/config.h"

namespace loratune {

class KVCache {
 public:
  // `slots` sequences, each up to `capacity` positions.
  KVCache(const ModelConfig& config, int slots, int capacity);

  // [capacity, Hkv·D] rows of one layer and slot.
  float* keys(int layer, int slot) { return k_.data() + offset(layer, slot); }
  float* values(int layer, int slot) { return v_.data() + offset(layer, slot); }
  int length(int slot) const { return lengths_[slot]; }
  void set_length(int slot, int length) { lengths_[slot] = length; }
  int slots() const { return static_cast<int>(lengths_.size()); }
  int capacity() const { return capacity_; }
  void clear();

 private:
  size_t offset(int layer, int slot) const {
    return (static_cast<size_t>(layer) * lengths_.size() + slot) * capacity_ * kv_dim_;
  }
  int capacity_;
  int kv_dim_;
  std::vector<int> lengths_;
  std::vector<float> k_, v_;  // [L, slots, capacity, Hkv·D]
};

}  // namespace loratune
