// Qwen2 models and their LoRA adapters as GGUF files for llama.cpp (architecture `qwen2`):
// llama.cpp's tensor names and dims (innermost first: an HF [out, in] matrix is ne [in, out]),
// the hyper-parameters, and the tokenizer (gpt2 BPE with the qwen2 pre-tokenizer).
#pragma once

#include <string>

#include "io/gguf.h"
#include "lora/adapter.h"
#include "model/gguf_model.h"

namespace loratune {

// f32, f16, bf16, q8_0 or q4_0 (throws UsageError otherwise).
GgmlType parse_export_type(const std::string& name);

// The model of `model_dir` (with `adapter` merged in when given) as `out`. Matrices take
// `type` (those whose rows are not whole blocks of a quantised type take f16); norms and
// biases stay f32, as llama.cpp reads them.
void export_model_gguf(const std::string& model_dir, const LoraAdapter* adapter, GgmlType type,
                       const std::string& out);

// The adapter alone as llama.cpp's LoRA GGUF (general.type "adapter", adapter.type "lora",
// adapter.lora.alpha; "<tensor>.lora_a" [in, r] and ".lora_b" [r, out] in f32).
void export_lora_gguf(const LoraAdapter& adapter, const ModelConfig& config,
                      const std::string& out);

}  // namespace loratune
