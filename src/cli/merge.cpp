// loratune merge: a full Hugging Face folder with the adapter folded into the weights.
#include <algorithm>
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "io/json_file.h"
#include "lora/adapter.h"
#include "model/model_folder.h"
#include "model/weights.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "merge",
    "--model DIR --adapter DIR --out DIR [--dtype bf16|f32]",
    "Writes a Hugging Face model folder (config.json, generation_config.json, model.safetensors\n"
    "and the tokenizer files) whose weights are W + s·B·A: its logits equal the base model's\n"
    "with the adapter applied unmerged.",
    {
        {"--model", "DIR", "base model folder"},
        {"--adapter", "DIR", "PEFT LoRA adapter folder"},
        {"--out", "DIR", "folder to write (must not be the base model's)"},
        {"--dtype", "bf16|f32", "weight dtype of the merged file", "f32"},
    }};

}  // namespace

int run_merge(const Args& args) {
  ParsedArgs a = parse_args(kSpec, args);
  const std::string model_dir = a.required("--model");
  const std::string out = a.required("--out");
  const std::string dtype = a.str("--dtype", "f32");
  if (dtype != "f32" && dtype != "bf16") throw UsageError("--dtype must be f32 or bf16");
  ModelConfig config = load_model_config(model_dir);
  ModelWeights weights(model_dir, config);
  LoraAdapter adapter = LoraAdapter::load(a.required("--adapter"), config);
  weights.merge_lora(adapter, config);
  const std::vector<std::string> tok_files = tokenizer_files(model_dir);
  const std::vector<const float*> tensors = weights.tensors();
  const std::vector<TensorSpec> specs = model_tensor_specs(config);
  write_model_folder(
      out, config,
      [&](size_t i, float* values) {
        std::copy_n(tensors[i], shape_numel(specs[i].shape), values);
      },
      dtype == "f32" ? DType::F32 : DType::BF16);
  copy_files(model_dir, out, tok_files);
  std::printf("wrote %s: %s merged with scale %g\n", out.c_str(), model_dir.c_str(),
              adapter.scale());
  return 0;
}

}  // namespace loratune::cli
