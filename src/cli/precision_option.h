// --bf16 [auto|true|false], HF TrainingArguments' bf16: the run's precision, chosen before the
// model loads (its matrices are packed for that precision's kernels).
#pragma once

#include <string>

#include "cli/options.h"
#include "ops/backend.h"

namespace loratune::cli {

// The option as commands list it; `fallback` is its default ("auto" or "false").
Option bf16_option(const std::string& fallback);

// Resolves --bf16 (auto: bf16 where the CPU has AVX512-BF16 or AMX, fp32 elsewhere) and sets
// the run's backend for `use`.
ops::Precision select_precision(const ParsedArgs& a, const std::string& fallback,
                                ops::KernelUse use = ops::KernelUse::kFastest);

// "bf16 mixed precision (matrix kernels onednn-bf16, oneDNN ISA avx512_core_amx)": the
// current backend.
std::string describe_backend();
// One line on stderr: the mode, the CPU, and a hint where the other mode suits it better.
void announce_backend();
// "bf16" or "fp32".
const char* precision_name();

}  // namespace loratune::cli
