// loratune generate: greedy or sampled generation with a KV cache, streamed as it goes.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "cli/adapter_option.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "cli/options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/template.h"
#include "generate/generator.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/json_file.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "generate",
    "--model DIR (--prompt TEXT | --instruction TEXT [--input TEXT] | --prompt-ids IDS) [options]",
    "Generates up to --max-new-tokens tokens after the prompt and streams them as text (as ids\n"
    "when the model folder has no tokenizer), stopping at an eos id of generation_config.json /\n"
    "config.json / the tokenizer. Greedy unless --do-sample (or the model's\n"
    "generation_config.json) asks for sampling. Text prompts go through --template.",
    {
        {"--model", "DIR", "Hugging Face model folder"},
        {"--adapter", "DIR", "PEFT LoRA adapter folder, applied unmerged"},
        {"--merge", "", "fold the adapter into the weights at load (same output)"},
        {"--prompt", "TEXT", "the instruction (or, with --template raw, the whole prompt)"},
        {"--instruction", "TEXT", "same as --prompt"},
        {"--input", "TEXT", "the record's input field (seed/chatml templates)"},
        {"--template", "NAME", "seed (Instruction: ...\\nOutput: ), alpaca, chatml, llama3 or raw",
         "seed"},
        {"--system", "TEXT", "system prompt for chatml", "You are a helpful assistant."},
        {"--prompt-ids", "IDS", "prompt as comma-separated token ids (no template)"},
        {"--chat", "", "interactive: read one instruction per line from stdin, keep the turns"},
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
        {"--ids-out", "FILE", "also write the generated ids as a JSON array (not with --chat)"},
        bf16_option("auto"),
        device_option(),
    }};

bool has_tokenizer(const std::string& dir) {
  return is_gguf_file(dir) || file_exists(dir + "/tokenizer.json") ||
         (file_exists(dir + "/vocab.json") && file_exists(dir + "/merges.txt"));
}

// The prompt text: the instruction (after the earlier turns of a chat) in the chosen template,
// or the raw text.
std::string prompt_text(const ParsedArgs& a, const std::string& instruction,
                        const std::vector<std::pair<std::string, std::string>>& history) {
  const std::string name = a.str("--template", "seed");
  if (name == "raw") {
    if (a.has("--input")) throw UsageError("--input needs the seed, alpaca or chatml template");
    return instruction;
  }
  data::Example ex;
  ex.instruction = instruction;
  ex.input = a.str("--input");
  ex.system = a.str("--system");
  return data::apply_template_with_history(data::parse_template_kind(name), ex, history).prompt;
}

}  // namespace

int run_generate(const Args& args) {
  ParsedArgs a = parse_args(kSpec, args);
  const std::string model_dir = a.required("--model");
  const int sources =
      a.has("--prompt") + a.has("--instruction") + a.has("--prompt-ids") + a.flag("--chat");
  if (sources != 1)
    throw UsageError("give exactly one of --prompt, --instruction, --prompt-ids and --chat");
  set_num_threads(static_cast<int>(a.integer("--threads", 0)));
  select_device(a);
  select_precision(a, "auto", ops::KernelUse::kRowInvariant);  // as serve: the same answers
  if (isatty(2)) announce_backend();  // scripts that read the output get the text alone
  Transformer model(model_dir);
  const auto adapter = load_adapter_option(a, model, a.flag("--merge"));
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

  std::optional<tokenizer::Tokenizer> tok;
  if (has_tokenizer(model_dir)) tok = tokenizer::Tokenizer::load(model_dir);
  // Generates after `prompt`, streaming text (or ids without a tokenizer); returns the text.
  const std::string ids_out = a.str("--ids-out", "");
  if (!ids_out.empty() && a.flag("--chat")) throw UsageError("--ids-out does not go with --chat");
  auto stream = [&](const std::vector<int>& prompt) {
    std::string text;
    Json ids = Json::array();
    if (tok) {
      tokenizer::StreamDecoder decoder(*tok, /*skip_special=*/true);
      generate(model, prompt, opt, [&](int token) {
        ids.push_back(token);
        const std::string piece = decoder.push(token);
        text += piece;
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      });
      const std::string tail = decoder.finish();
      text += tail;
      std::fputs(tail.c_str(), stdout);
    } else {
      bool first = true;
      generate(model, prompt, opt, [&](int token) {
        ids.push_back(token);
        std::printf(first ? "%d" : ",%d", token);
        first = false;
        std::fflush(stdout);
      });
    }
    std::printf("\n");
    std::fflush(stdout);
    if (!ids_out.empty()) write_file_atomic(ids_out, ids.dump() + "\n");
    return text;
  };
  if (a.has("--prompt-ids")) {
    std::vector<int> prompt;
    for (long long id : parse_int_list(a.str("--prompt-ids"), "--prompt-ids")) {
      if (id < 0 || id >= model.config().vocab_size)
        throw UsageError("prompt token id " + std::to_string(id) + " out of range [0, " +
                         std::to_string(model.config().vocab_size) + ")");
      prompt.push_back(static_cast<int>(id));
    }
    stream(prompt);
    return 0;
  }
  if (!tok)
    throw Error("the model folder has no tokenizer", model_dir,
                "add tokenizer.json (init-model --tokenizer DIR) or use --prompt-ids");
  for (int32_t id : tok->stop_ids()) opt.eos_token_ids.push_back(id);
  if (const std::string name = a.str("--template", "seed"); name != "raw") {
    const data::TemplateKind kind = data::parse_template_kind(name);
    if (data::template_has_end_token(kind))
      if (auto end = tok->token_id(data::template_end_token(kind)))
        opt.eos_token_ids.push_back(*end);
  }
  auto encode = [&](const std::string& text) {
    std::vector<int32_t> ids;
    tok->encode_prompt_into(text, ids);
    return std::vector<int>(ids.begin(), ids.end());
  };
  if (!a.flag("--chat")) {
    stream(
        encode(prompt_text(a, a.has("--prompt") ? a.str("--prompt") : a.str("--instruction"), {})));
    return 0;
  }
  // Interactive: one instruction per line; earlier turns stay in the prompt (not with raw).
  std::vector<std::pair<std::string, std::string>> history;
  const bool tty = isatty(0);
  for (std::string line;;) {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    const std::string answer = stream(encode(prompt_text(a, line, history)));
    history.emplace_back(line, answer);
  }
  return 0;
}

}  // namespace loratune::cli
