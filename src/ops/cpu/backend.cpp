#include "ops/backend.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "core/bf16_dot_rate.h"
#include "core/cpu_features.h"
#include "ops/cpu/amx_rows_kernel.h"
#include "ops/cpu/bf16_groups_kernel.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

Backend& current() {
  static Backend b = choose_backend(Precision::kF32);
  return b;
}

// Whether oneDNN has a bf16 matmul for this CPU (none below AVX-512 in 2.6): a small one is
// made once to see.
bool onednn_has_bf16() {
  static const bool has = [] {
    cap_onednn_isa();
    if (!cpu_features().avx512()) return false;
    try {
      using dnnl::memory;
      const memory::desc a({4, 32}, memory::data_type::bf16, memory::format_tag::ab);
      const memory::desc b({32, 16}, memory::data_type::bf16, memory::format_tag::ab);
      const memory::desc c({4, 16}, memory::data_type::f32, memory::format_tag::ab);
      dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c),
                                   dnnl::engine(dnnl::engine::kind::cpu, 0));
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return has;
}

}  // namespace

void cap_onednn_isa() {
  static const bool capped = [] {
    const std::string& cap = cpu_features().cap;
    if (cap == "avx2") dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx2);
    if (cap == "avx512") dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx512_core);
    if (cap == "avx512_bf16") dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx512_core_bf16);
    return true;
  }();
  (void)capped;
}

Backend choose_backend(Precision precision, KernelUse use) {
  if (precision == Precision::kBF16) {
    // Generation: AMX reads the rows as they are (amx_rows_kernel.h); vdpbf16ps at full rate
    // streams groups; elsewhere the own FMA kernels widen bf16 blocks in registers.
    if (use == KernelUse::kRowInvariant && !amx_rows_kernel_available())
      return {precision, bf16_groups_kernel_available() && bf16_dot_rate().dot_outruns_fma()
                             ? WeightFormat::kGroupsBF16
                             : WeightFormat::kBlocksBF16Widened};
    // Training's products (and generation's on AMX CPUs, whose own AMX kernel reads the rows):
    // bf16 rows multiplied by oneDNN's bf16 matmul where the CPU's bf16 arithmetic outruns its
    // FMAs, else widened a slice at a time for its fp32 matmul (also on CPUs without AVX-512,
    // where oneDNN 2.6 has no bf16 matmul).
    const bool bf16_arithmetic =
        onednn_has_bf16() && (amx_rows_kernel_available() || bf16_dot_rate().dot_outruns_fma());
    return {precision, use == KernelUse::kFastest && !bf16_arithmetic
                           ? WeightFormat::kRowsBF16Widened
                           : WeightFormat::kRowsBF16};
  }
  const bool onednn = cpu_features().avx512() && use == KernelUse::kFastest;
  return {precision, onednn ? WeightFormat::kRowsF32 : WeightFormat::kBlocksF32};
}

thread_local bool t_one_kernel_per_shape = false;

OneKernelPerShape::OneKernelPerShape() : previous_(t_one_kernel_per_shape) {
  t_one_kernel_per_shape = true;
}
OneKernelPerShape::~OneKernelPerShape() {
  t_one_kernel_per_shape = previous_;
}
bool one_kernel_per_shape() {
  return t_one_kernel_per_shape;
}

void set_backend(const Backend& backend) {
  current() = backend;
}

const Backend& backend() {
  return current();
}

std::vector<WeightFormat> available_formats() {
  std::vector<WeightFormat> formats = {backend().format};
  for (WeightFormat f : {WeightFormat::kBlocksF32, WeightFormat::kRowsF32, WeightFormat::kRowsBF16,
                         WeightFormat::kRowsBF16Widened, WeightFormat::kBlocksBF16,
                         WeightFormat::kGroupsBF16, WeightFormat::kBlocksBF16Widened})
    if (f != backend().format && (f != WeightFormat::kRowsBF16 || onednn_has_bf16()) &&
        (f != WeightFormat::kGroupsBF16 || bf16_groups_kernel_available()))
      formats.push_back(f);
  return formats;
}

const char* generation_kernel_name(WeightFormat format) {
  if (format == WeightFormat::kRowsBF16 && amx_rows_kernel_available()) return "own-amx-bf16";
  return format_name(format);
}

const char* format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBlocksF32:
      return "own-avx2-f32";
    case WeightFormat::kRowsF32:
      return "onednn-f32";
    case WeightFormat::kRowsBF16:
      return "onednn-bf16";
    case WeightFormat::kRowsBF16Widened:
      return "onednn-f32-widened";
    case WeightFormat::kBlocksBF16:
      return "own-avx2-bf16-emulated";
    case WeightFormat::kGroupsBF16:
      return "own-avx512bf16";
    case WeightFormat::kBlocksBF16Widened:
      return "own-bf16-widened";
  }
  return "?";
}

std::string onednn_isa() {
  cap_onednn_isa();
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
