#include "cli/precision_option.h"

#include <cstdio>

#include "cli/device_option.h"
#include "core/cpu_features.h"
#include "core/error.h"

namespace loratune::cli {

namespace {
// What select_precision chose the kernels for, which announce_backend's hints depend on.
ops::KernelUse g_use = ops::KernelUse::kFastest;
}  // namespace

Option bf16_option(const std::string& fallback) {
  return {"--bf16", "[auto|true|false]",
          "bf16 mixed precision: bf16 weights and matrix-product inputs, fp32 accumulation, "
          "fp32 norms, softmax, loss, LoRA and optimizer (auto: where the CPU has AVX512-BF16 "
          "or AMX)",
          fallback};
}

ops::Precision select_precision(const ParsedArgs& a, const std::string& fallback,
                                ops::KernelUse use) {
  const std::string v = a.has("--bf16") ? a.str("--bf16") : fallback;
  bool bf16;
  if (v == "auto")
    bf16 = cpu_features().bf16();
  else if (v == "true" || v == "1")
    bf16 = true;
  else if (v == "false" || v == "0")
    bf16 = false;
  else
    throw UsageError("--bf16 takes auto, true or false, not '" + v + "'");
  const ops::Precision p = bf16 ? ops::Precision::kBF16 : ops::Precision::kF32;
  ops::set_backend(ops::choose_backend(p, use));
  g_use = use;
  return p;
}

void announce_backend() {
  const bool bf16 = ops::backend().precision == ops::Precision::kBF16;
  // Where vdpbf16ps runs at half the FMA rate, or there is no bf16 hardware, bf16 training's
  // products widen to fp32 (ops/backend.h): the modes then differ in memory and numerics more
  // than in speed. The widening and rounding cost about 10 % of a step beside oneDNN's
  // AVX-512 fp32 kernels, 1-3 % beside the own AVX2 ones (docs/performance.md).
  const bool widened = ops::choose_backend(ops::Precision::kBF16, g_use).format ==
                       ops::WeightFormat::kRowsBF16Widened;
  const bool widening_costs = widened && cpu_features().avx512();
  std::string hint;
  if (bf16 && (widened || !cpu_features().bf16()))
    hint = std::string(cpu_features().bf16()
                           ? "; this CPU's bf16 dot products run at half its fp32 rate, so the "
                             "bf16 products widen to fp32"
                           : "; this CPU has no bf16 hardware: the products widen the bf16 "
                             "weights to fp32 (half fp32's memory and bytes read)") +
           (widening_costs ? "; --bf16 false trains about 10 % faster in twice the memory" : "");
  else if (!bf16 && widened)
    hint = std::string("; --bf16 true holds the weights in half the memory") +
           (widening_costs ? ", trains about 10 % slower" : "");
  else if (!bf16 && cpu_features().bf16())
    hint = "; this CPU has bf16 hardware: --bf16 true is faster";
  std::fprintf(stderr, "loratune: %s on %s, device %s%s\n", describe_backend().c_str(),
               cpu_features().model.c_str(), describe_device().c_str(), hint.c_str());
}

const char* precision_name() {
  return ops::backend().precision == ops::Precision::kBF16 ? "bf16" : "fp32";
}

std::string describe_backend() {
  const ops::Backend& b = ops::backend();
  const std::string mode = b.precision == ops::Precision::kBF16 ? "bf16 mixed precision" : "fp32";
  const bool onednn = ops::is_rows(b.format);
  return mode + " (matrix kernels " + ops::format_name(b.format) +
         (onednn ? ", oneDNN ISA " + ops::onednn_isa() : "") + ")";
}

}  // namespace loratune::cli
