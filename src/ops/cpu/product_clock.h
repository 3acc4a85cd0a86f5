// Times one product with a frozen weight for ops::product_totals (ops.h): from its start to
// the end of the scope, with its 2·N·in·out flops. Only the outermost calls hold one.
#pragma once

#include <chrono>
#include <cstdint>

namespace loratune::ops {

class ProductClock {
 public:
  explicit ProductClock(int64_t flops) : flops_(flops), start_(std::chrono::steady_clock::now()) {}
  ~ProductClock();
  ProductClock(const ProductClock&) = delete;
  ProductClock& operator=(const ProductClock&) = delete;

 private:
  int64_t flops_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace loratune::ops
