// Which implementation multiplies by the frozen weight matrices, chosen once per run from
// the precision asked for and what the CPU has (model/ and train/ never branch on it):
//   fp32, CPU without AVX-512: loratune's own AVX2 kernels (ops/cpu/blocks_kernel.h);
//   fp32, CPU with AVX-512: oneDNN's fp32 matmul (it JITs AVX-512 code; on such a CPU it
//        ran 1.9-3x the own kernel on the Qwen2-0.5B shapes: docs/performance.md);
//   bf16, CPU with AVX-512 whose bf16 hardware outruns its fp32 FMAs (AMX, or vdpbf16ps at
//        full rate as on AMD Zen 4/5): oneDNN's bf16 matmul with fp32 accumulation;
//   bf16, any other CPU (vdpbf16ps at half the FMA rate, as on Intel Xeons without AMX, or
//        none; without AVX-512 oneDNN 2.6 has no bf16 matmul): the weights kept as bf16 rows,
//        widened a slice at a time for oneDNN's fp32 matmul on bf16-rounded inputs, the same
//        arithmetic (a product of two bf16 values is exact in fp32) at fp32 speed in bf16's
//        memory (bf16_dot_rate.h measures the two rates at start). The own AVX2 kernels on
//        bf16-rounded values held in fp32 (kBlocksBF16) emulate the same arithmetic: the
//        reference of the widened blocks' bits, in the tests and the bench.
// Generation and serving ask for row-invariant kernels (KernelUse::kRowInvariant): a row's
// values must not depend on the other rows of its product, so that a sequence decodes the same
// alone and in any batch. oneDNN's fp32 matmul rounds a row differently at other row counts,
// so fp32 then takes the own kernels on every CPU (on AVX-512 CPUs their forward runs two
// weight blocks per AVX-512 tile, each output the AVX2 tile's FMA chain); the others are
// row-invariant under OneKernelPerShape (ops.h). In bf16: on a CPU with AMX the own AMX kernel
// on the rows; where vdpbf16ps outruns the FMAs (AMD Zen 4/5) the own vdpbf16ps kernel on
// weights regrouped so that they stream from memory faster than rows (kGroupsBF16); on any
// other CPU the own FMA kernels on bf16 blocks widened in registers (kBlocksBF16Widened): bf16's
// bytes (decode is bound by them) at the FMAs' rate, with kBlocksBF16's bits.
#pragma once

#include <string>
#include <vector>

namespace loratune::ops {

enum class Precision { kF32, kBF16 };

// How a PackedWeight holds its matrix w[out, in], which names the kernel that reads it.
enum class WeightFormat {
  kBlocksF32,          // fp32 blocks of 16 output rows for the own AVX2 kernels
  kRowsF32,            // fp32 rows [out, in] for oneDNN
  kRowsBF16,           // bf16 rows [out, in] for oneDNN (inputs rounded to bf16, fp32 accumulation)
  kRowsBF16Widened,    // kRowsBF16's rows, widened per slice for oneDNN's fp32 matmul
  kBlocksBF16,         // kBlocksF32 holding bf16-rounded values; inputs rounded too (bf16 emulated)
  kGroupsBF16,         // bf16 groups of output rows for the own AVX512-BF16 kernel; forward only
  kBlocksBF16Widened,  // kBlocksBF16's blocks held as bf16, widened in registers; forward only
};

// Whether a format holds bf16 rows [out, in] as a file does; whether it multiplies in bf16
// (rounds its inputs); whether it holds the weights as bf16 values (2 bytes each); whether it
// is the own AVX2 kernels' blocks, or rows that oneDNN reads; whether its weights take input
// gradients.
inline bool is_bf16_rows(WeightFormat f) {
  return f == WeightFormat::kRowsBF16 || f == WeightFormat::kRowsBF16Widened;
}
inline bool is_bf16(WeightFormat f) {
  return is_bf16_rows(f) || f == WeightFormat::kBlocksBF16 || f == WeightFormat::kGroupsBF16 ||
         f == WeightFormat::kBlocksBF16Widened;
}
inline bool holds_bf16(WeightFormat f) {
  return is_bf16_rows(f) || f == WeightFormat::kGroupsBF16 || f == WeightFormat::kBlocksBF16Widened;
}
inline bool is_blocks(WeightFormat f) {
  return f == WeightFormat::kBlocksF32 || f == WeightFormat::kBlocksBF16 ||
         f == WeightFormat::kBlocksBF16Widened;
}
inline bool is_rows(WeightFormat f) {
  return f == WeightFormat::kRowsF32 || is_bf16_rows(f);
}
inline bool has_backward(WeightFormat f) {
  return f != WeightFormat::kGroupsBF16 && f != WeightFormat::kBlocksBF16Widened;
}

struct Backend {
  Precision precision = Precision::kF32;
  WeightFormat format = WeightFormat::kBlocksF32;
};

enum class KernelUse { kFastest, kRowInvariant };

// The table above, for this CPU.
Backend choose_backend(Precision precision, KernelUse use = KernelUse::kFastest);
// Sets the run's choice (before any weight is loaded); the default is choose_backend(kF32).
void set_backend(const Backend& backend);
const Backend& backend();

// Every format that runs on this CPU, the run's own first: tests and the bench try each.
std::vector<WeightFormat> available_formats();
// "own-avx2-f32", "onednn-f32", "onednn-bf16", "onednn-f32-widened", "own-avx2-bf16-emulated",
// "own-avx512bf16", "own-bf16-widened".
const char* format_name(WeightFormat format);
// The kernel that multiplies by weights of `format` under OneKernelPerShape (generation and
// serving): format_name's, except kRowsBF16 on a CPU with AMX, where the own row-invariant
// AMX kernel takes over from oneDNN ("own-amx-bf16").
const char* generation_kernel_name(WeightFormat format);
// The instruction set oneDNN's JIT targets on this CPU ("avx512_core_amx", "avx2", ...).
std::string onednn_isa();
// Caps oneDNN's JIT at LORATUNE_MAX_ISA's level (core/cpu_features.h), once. oneDNN fixes its
// ISA at its first kernel, so each way into oneDNN calls this before it.
void cap_onednn_isa();

}  // namespace loratune::ops
