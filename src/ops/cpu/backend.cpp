#include "ops/backend.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "core/cpu_features.h"

namespace loratune::ops {

namespace {

Backend& current() {
  static Backend b = choose_backend(Precision::kF32);
  return b;
}

}  // namespace

Backend choose_backend(Precision precision) {
  if (precision == Precision::kBF16) return {precision, WeightFormat::kRowsBF16};
  return {precision, cpu_features().avx512() ? WeightFormat::kRowsF32 : WeightFormat::kBlocksF32};
}

void set_backend(const Backend& backend) {
  current() = backend;
}

const Backend& backend() {
  return current();
}

std::vector<WeightFormat> available_formats() {
  std::vector<WeightFormat> formats = {backend().format};
  for (WeightFormat f : {WeightFormat::kBlocksF32, WeightFormat::kRowsF32, WeightFormat::kRowsBF16})
    if (f != backend().format) formats.push_back(f);
  return formats;
}

const char* format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBlocksF32:
      return "own-avx2-f32";
    case WeightFormat::kRowsF32:
      return "onednn-f32";
    case WeightFormat::kRowsBF16:
      return "onednn-bf16";
  }
  return "?";
}

std::string onednn_isa() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41:
      return "sse41";
    case isa::avx:
      return "avx";
    case isa::avx2:
      return "avx2";
    case isa::avx2_vnni:
      return "avx2_vnni";
    case isa::avx512_core:
      return "avx512_core";
    case isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other";
  }
}

}  // namespace loratune::ops
