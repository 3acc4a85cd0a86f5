// loratune debug ...: tools for comparing loratune with other implementations.
#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace loratune::cli {

namespace {

const CommandSpec kLogitsSpec = {
    "debug logits",
    "--model DIR --ids IDS --out FILE",
    "Runs the model on the ids and writes the float32 logits [T, V] as the safetensors tensor\n"
    "\"logits\". Several sequences separated by ';' run packed in one batch; their rows follow\n"
    "each other in the output.",
    {
        {"--model", "DIR", "Hugging Face model folder"},
        {"--ids", "IDS", "token ids, e.g. 1,2,3 or 1,2,3;4,5 for a batch"},
        {"--out", "FILE", "output safetensors file"},
        {"--threads", "N", "threads", "all cores"},
    }};

// "1,2;3,4,5" -> {{1,2},{3,4,5}}
std::vector<std::vector<int>> parse_sequences(const std::string& text, const std::string& what) {
  std::vector<std::vector<int>> seqs;
  size_t start = 0;
  while (start <= text.size()) {
    size_t semi = text.find(';', start);
    if (semi == std::string::npos) semi = text.size();
    std::vector<int> seq;
    for (long long id : parse_int_list(text.substr(start, semi - start), what)) {
      if (id < INT32_MIN || id > INT32_MAX) throw UsageError("id out of range", what);
      seq.push_back(static_cast<int>(id));
    }
    seqs.push_back(std::move(seq));
    start = semi + 1;
  }
  return seqs;
}

int run_logits(const Args& args) {
  ParsedArgs a = parse_args(kLogitsSpec, args);
  const std::string model_dir = a.required("--model");
  const auto seqs = parse_sequences(a.required("--ids"), "--ids");
  const std::string out = a.required("--out");
  set_num_threads(static_cast<int>(a.integer("--threads", 0)));
  Transformer model(model_dir);

  std::vector<int> tokens;
  std::vector<SequenceSpan> spans;
  for (const auto& s : seqs) {
    spans.push_back({static_cast<int>(tokens.size()), static_cast<int>(s.size()), 0});
    tokens.insert(tokens.end(), s.begin(), s.end());
  }
  std::vector<int> rows(tokens.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int>(i);
  const int64_t V = model.config().vocab_size;
  std::vector<float> logits(rows.size() * V);
  model.forward(tokens, spans, nullptr, rows, logits.data());
  write_safetensors(out,
                    {{"logits", DType::F32, {static_cast<int64_t>(rows.size()), V}, logits.data()}},
                    {{"format", "pt"}});
  return 0;
}

struct Subcommand {
  const char* name;
  int (*run)(const Args&);
};

const Subcommand kSubcommands[] = {{"logits", run_logits}};

}  // namespace

int run_debug(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf("usage: loratune debug <logits> [options]\n");
    return args.empty() ? 2 : 0;
  }
  for (const Subcommand& s : kSubcommands)
    if (args[0] == s.name) return s.run(Args(args.begin() + 1, args.end()));
  throw UsageError("unknown debug command '" + args[0] + "'", "", "available: logits");
}

}  // namespace loratune::cli
