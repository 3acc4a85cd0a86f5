// loratune export-gguf: a model (optionally with its adapter merged) or an adapter alone as a
// GGUF file for llama.cpp, Ollama and LM Studio.
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "export/gguf_export.h"
#include "io/json_file.h"
#include "model/config.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "export-gguf",
    "--model DIR [--adapter DIR] --out FILE.gguf [--type T]\n"
    "       loratune export-gguf --adapter DIR --lora-only --out FILE.gguf",
    "Writes the model (with the adapter merged in, when given) as a GGUF v3 file that llama.cpp\n"
    "loads as architecture qwen2, with its hyper-parameters and tokenizer; or, with\n"
    "--lora-only, the adapter alone as llama.cpp's LoRA adapter GGUF (llama-cli --lora,\n"
    "Ollama's ADAPTER).",
    {
        {"--model", "DIR",
         "base model folder (with --lora-only: default the adapter's base model)"},
        {"--adapter", "DIR", "PEFT LoRA adapter folder"},
        {"--out", "FILE", "GGUF file to write"},
        {"--type", "f32|f16|bf16|q8_0|q4_0", "type of the weight matrices", "f16"},
        {"--lora-only", "", "write the adapter alone"},
    }};

}  // namespace

int run_export_gguf(const Args& args) {
  ParsedArgs a = parse_args(kSpec, args);
  const std::string out = a.required("--out");
  if (a.flag("--lora-only")) {
    const std::string adapter_dir = a.required("--adapter");
    std::string model_dir = a.str("--model", "");
    if (model_dir.empty()) {
      const Json j = read_json_file(adapter_dir + "/adapter_config.json");
      model_dir = j.value("base_model_name_or_path", "");
      if (model_dir.empty() || !file_exists(model_dir + "/config.json"))
        throw UsageError("the adapter's base model is not a folder here", adapter_dir,
                         "pass --model DIR");
    }
    const ModelConfig config = load_model_config(model_dir);
    export_lora_gguf(LoraAdapter::load(adapter_dir, config), config, out);
    std::printf("wrote %s: the adapter %s as a LoRA GGUF\n", out.c_str(), adapter_dir.c_str());
    return 0;
  }
  const std::string model_dir = a.required("--model");
  const GgmlType type = parse_export_type(a.str("--type", "f16"));
  std::unique_ptr<LoraAdapter> adapter;
  if (a.has("--adapter"))
    adapter = std::make_unique<LoraAdapter>(
        LoraAdapter::load(a.str("--adapter", ""), load_model_config(model_dir)));
  export_model_gguf(model_dir, adapter.get(), type, out);
  std::printf("wrote %s: %s%s, matrices %s\n", out.c_str(), model_dir.c_str(),
              adapter ? " with the adapter merged" : "", ggml_type_name(type));
  return 0;
}

}  // namespace loratune::cli
