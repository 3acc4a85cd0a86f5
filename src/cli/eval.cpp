// loratune eval: eval loss and perplexity on a dataset, through the training data pipeline.
#include <cstdio>
#include <memory>

#include "cli/adapter_option.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "cli/options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "core/threads.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "eval",
    "--model DIR [--adapter DIR] --data FILE [--json] [options]",
    "Token-weighted loss and perplexity over every record of the data (the same template,\n"
    "truncation and answer-only labels as training).",
    {
        {"--model", "DIR", "Hugging Face model folder"},
        {"--adapter", "DIR", "PEFT LoRA adapter folder, applied unmerged"},
        {"--data", "FILE", "JSON array or JSONL", "", true},
        {"--json", "", "print one JSON object instead of text"},
        {"--template", "NAME", "seed, alpaca, chatml or llama3", "seed"},
        {"--max-length", "N", "truncate examples to N tokens", "512"},
        {"--train-on-prompt", "", "score the prompt tokens too"},
        {"--per-device-eval-batch-size", "N", "examples per batch", "8"},
        {"--skip-bad-records", "", "skip malformed records instead of stopping"},
        {"--threads", "N", "threads", "all cores"},
        bf16_option("auto"),
        device_option(),
    }};

}  // namespace

int run_eval(const Args& args) {
  ParsedArgs a = parse_args(kSpec, args);
  const std::string model_dir = a.required("--model");
  const std::vector<std::string> files = a.all("--data");
  if (files.empty()) throw UsageError("missing --data");
  set_num_threads(static_cast<int>(a.integer("--threads", 0)));
  select_device(a);
  select_precision(a, "auto");
  Transformer model(model_dir);
  const auto adapter = load_adapter_option(a, model);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(model_dir);
  data::ReadStats read_stats;
  std::vector<data::Record> records;
  for (const std::string& f : files) {
    auto part = data::read_records(f, a.flag("--skip-bad-records"), &read_stats);
    records.insert(records.end(), part.begin(), part.end());
  }
  data::TokenizeOptions opt;
  opt.kind = data::parse_template_kind(a.str("--template", "seed"));
  opt.max_length = static_cast<int>(a.integer("--max-length", 512));
  if (opt.max_length < 2) throw UsageError("--max-length must be at least 2");
  opt.train_on_prompt = a.flag("--train-on-prompt");
  data::TokenizeStats tok_stats;
  const auto examples = data::tokenize_records(records, tok, opt, &tok_stats);
  const int batch = static_cast<int>(a.integer("--per-device-eval-batch-size", 8));
  if (batch <= 0) throw UsageError("--per-device-eval-batch-size must be positive");
  EvalResult r = evaluate(model, examples, batch, 512);
  if (a.flag("--json")) {
    std::printf("%s\n", Json{{"eval_loss", r.loss},
                             {"eval_perplexity", r.perplexity},
                             {"eval_tokens", r.tokens},
                             {"examples", examples.size()},
                             {"precision", precision_name()}}
                            .dump()
                            .c_str());
  } else {
    std::printf("eval_loss %.6f  perplexity %.4f  (%lld labelled tokens, %zu examples, %s)\n",
                r.loss, r.perplexity, static_cast<long long>(r.tokens), examples.size(),
                precision_name());
  }
  return 0;
}

}  // namespace loratune::cli
