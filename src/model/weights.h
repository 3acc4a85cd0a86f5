// The frozen Qwen2 weights under Hugging Face tensor names. Vectors (norms, biases) are fp32:
// used in place from the memory map for F32 files, converted once at load otherwise. The
// matrices are packed for the run's kernels (ops::PackedWeight: fp32, or bf16 in bf16 mode,
// where a BF16 file's matrices are copied as they are); their file pages are then released,
// so the process holds each matrix once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/config.h"
#include "ops/packed_weight.h"

namespace loratune {

// One layer as the kernels read it: norms and biases in place, matrices packed. A bias the
// config does not have is nullptr.
struct LayerWeights {
  const float* input_norm = nullptr;  // [C]
  ops::PackedWeight wq;               // [H*D, C]
  const float* bq = nullptr;          // [H*D]
  ops::PackedWeight wk;               // [Hkv*D, C]
  const float* bk = nullptr;          // [Hkv*D]
  ops::PackedWeight wv;               // [Hkv*D, C]
  const float* bv = nullptr;          // [Hkv*D]
  const float* q_norm = nullptr;      // [D] Qwen3: RMSNorm weight of each query head
  const float* k_norm = nullptr;      // [D] ... and of each key head
  ops::PackedWeight wo;               // [C, H*D]
  const float* bo = nullptr;          // [C]
  const float* post_norm = nullptr;   // [C]
  ops::PackedWeight w_gate;           // [F, C]
  const float* b_gate = nullptr;      // [F]
  ops::PackedWeight w_up;             // [F, C]
  const float* b_up = nullptr;        // [F]
  ops::PackedWeight w_down;           // [C, F]
  const float* b_down = nullptr;      // [C]
};

// One tensor of the model's layout: its HF name and shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a checkpoint of this config holds, in a stable order (biases as the config has
// them, lm_head only when untied).
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c);
int64_t model_parameter_count(const ModelConfig& c);

class ModelWeights {
 public:
  // Loads DIR's safetensors and checks every tensor against the config.
  // `share_file_pages`: matrices whose file rows are already in the kernels' format (oneDNN:
  // bf16 rows in bf16 mode, f32 rows in fp32) are used in place in the memory map, so that
  // processes on one host that map the same file (the ranks of a job) hold them once.
  // Otherwise every matrix is copied to memory of its own, on huge pages where the system
  // has them, which the products read faster (a 4×128 bf16 step about 6 % faster).
  ModelWeights(const std::string& dir, const ModelConfig& config, bool share_file_pages = false);
  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  const float* final_norm = nullptr;  // [C]
  ops::PackedWeight lm_head;          // [V, C]; the embedding when tied
  std::vector<LayerWeights> layers;

  // Replaces every weight the adapter targets by W + s·B·A (owned copies; the file is not
  // touched). The merged model computes what the base model with the adapter unmerged does.
  void merge_lora(const LoraAdapter& adapter, const ModelConfig& config);
  // Row `token` of the embedding into out[C]. Tied models read it from the packed lm_head,
  // so the embedding's file pages (0.5 GB for Qwen2) need not be resident as well.
  void embedding_row(int token, float* out) const;
  // Every tensor of model_tensor_specs(config), in that order, in the file's layout (matrices
  // held only packed are unpacked into copies).
  std::vector<const float*> tensors();
  int64_t parameter_count() const { return parameter_count_; }

 private:
  // A tensor by HF name: its F32 data (nullptr for a converted matrix held only packed) and
  // its packed form, if any.
  struct Entry {
    std::string name;
    const float* data;
    const ops::PackedWeight* packed;
  };
  Entry& entry(const std::string& name);
  const float* find(const std::string& name) const;  // an entry's data (nullptr if unknown)

  std::unique_ptr<TensorStore> store_;
  std::vector<std::unique_ptr<float[]>> owned_;  // converted or merged tensors
  std::vector<Entry> entries_;
  int64_t parameter_count_ = 0;
  const float* embed_ = nullptr;  // [V, C], in the file's layout
  bool tied_ = false;
};

}  // namespace loratune
