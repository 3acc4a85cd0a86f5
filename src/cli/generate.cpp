// loratune generate: greedy or sampled generation with a KV cache, streamed as it goes.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "core/threads.h"
#include "generate/generator.h"
#include "lora/adapter.h"
#include "model/transformer.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "generate",
    "--model DIR --prompt-ids IDS [options]",
    "Generates up to --max-new-tokens tokens after the prompt, stopping at an eos id of\n"
    "generation_config.json / config.json. Greedy unless --do-sample (or the model's\n"
    "generation_config.json) asks for sampling.",
    {
        {"--model", "DIR", "Hugging Face model folder"},
        {"--adapter", "DIR", "PEFT LoRA adapter folder, applied unmerged"},
        {"--prompt-ids", "IDS", "prompt as comma-separated token ids"},
        {"--max-new-tokens", "N", "most tokens to generate", "200"},
        {"--do-sample", "", "sample instead of greedy decoding"},
        {"--greedy", "", "greedy decoding even if generation_config.json samples"},
        {"--temperature", "X", "sampling temperature", "generation_config or 1.0"},
        {"--top-k", "N", "keep the N most likely tokens (0: all)", "generation_config or 50"},
        {"--top-p", "X", "nucleus sampling threshold", "generation_config or 1.0"},
        {"--repetition-penalty", "X", "penalty for tokens already present",
         "generation_config or 1.0"},
        {"--seed", "S", "sampling seed", "0"},
        {"--threads", "N", "threads", "all cores"},
    }};

}  // namespace

int run_generate(const Args& args) {
  ParsedArgs a = parse_args(kSpec, args);
  const std::string model_dir = a.required("--model");
  const std::vector<long long> ids = parse_int_list(a.required("--prompt-ids"), "--prompt-ids");
  set_num_threads(static_cast<int>(a.integer("--threads", 0)));
  Transformer model(model_dir);
  std::unique_ptr<LoraAdapter> adapter;
  if (a.has("--adapter")) {
    adapter = std::make_unique<LoraAdapter>(LoraAdapter::load(a.str("--adapter"), model.config()));
    model.set_adapter(adapter.get());
  }
  const GenerationConfig& gc = model.config().generation;

  GenerateOptions opt;
  opt.max_new_tokens = static_cast<int>(a.integer("--max-new-tokens", 200));
  opt.eos_token_ids = gc.eos_token_ids;
  SamplingOptions& s = opt.sampling;
  s.do_sample = (gc.do_sample || a.flag("--do-sample")) && !a.flag("--greedy");
  s.temperature = static_cast<float>(a.number("--temperature", gc.temperature));
  s.top_k = static_cast<int>(a.integer("--top-k", gc.top_k));
  s.top_p = static_cast<float>(a.number("--top-p", gc.top_p));
  s.repetition_penalty =
      static_cast<float>(a.number("--repetition-penalty", gc.repetition_penalty));
  s.seed = static_cast<uint64_t>(a.integer("--seed", 0));

  std::vector<int> prompt;
  for (long long id : ids) {
    if (id < 0 || id >= model.config().vocab_size)
      throw UsageError("prompt token id " + std::to_string(id) + " out of range [0, " +
                       std::to_string(model.config().vocab_size) + ")");
    prompt.push_back(static_cast<int>(id));
  }
  bool first = true;
  generate(model, prompt, opt, [&](int token) {
    std::printf(first ? "%d" : ",%d", token);
    first = false;
    std::fflush(stdout);
  });
  std::printf("\n");
  return 0;
}

}  // namespace loratune::cli
