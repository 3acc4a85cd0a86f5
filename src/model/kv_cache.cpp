#include "model/kv_cache.h"

#include <algorithm>

namespace loratune {

KVCache::KVCache(const ModelConfig& config, int slots, int capacity)
    : capacity_(capacity), kv_dim_(config.kv_dim()), lengths_(slots, 0) {
  const size_t n = static_cast<size_t>(config.num_hidden_layers) * slots * capacity * kv_dim_;
  k_.resize(n);
  v_.resize(n);
}

void KVCache::clear() {
  std::fill(lengths_.begin(), lengths_.end(), 0);
}

}  // namespace loratune
