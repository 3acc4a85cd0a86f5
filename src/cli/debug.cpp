// loratune debug ...: tools for comparing loratune with other implementations.
#include <cstdio>
#include <cstring>
#include <memory>

#include "cli/adapter_option.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
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
        {"--adapter", "DIR", "PEFT LoRA adapter folder, applied unmerged"},
        {"--ids", "IDS", "token ids, e.g. 1,2,3 or 1,2,3;4,5 for a batch"},
        {"--out", "FILE", "output safetensors file"},
        {"--threads", "N", "threads", "all cores"},
        bf16_option("false"),
    }};

const CommandSpec kGradsSpec = {
    "debug grads",
    "--model DIR --adapter DIR --ids IDS [--labels LABELS] --out FILE",
    "Runs one training pass (dropout off) and writes the mean loss (tensor \"loss\") and the\n"
    "gradient of every LoRA tensor under its PEFT name. Sequences are separated by ';' and\n"
    "run packed; labels default to the ids (-100 ignores a position).",
    {
        {"--model", "DIR", "Hugging Face model folder"},
        {"--adapter", "DIR", "PEFT LoRA adapter folder"},
        {"--ids", "IDS", "token ids, e.g. 1,2,3;4,5"},
        {"--labels", "LABELS", "labels with the same shape as --ids", "the ids"},
        {"--out", "FILE", "output safetensors file"},
        {"--threads", "N", "threads", "all cores"},
        bf16_option("false"),
    }};

const CommandSpec kInitAdapterSpec = {
    "debug init-adapter",
    "--model DIR --out DIR [options]",
    "Writes a PEFT LoRA adapter for the model: A kaiming-uniform, B zero (or N(0, b_std^2)\n"
    "with --b-std, so that every gradient flows).",
    {
        {"--model", "DIR", "Hugging Face model folder"},
        {"--out", "DIR", "adapter folder to write"},
        {"--lora-r", "N", "rank", "8"},
        {"--lora-alpha", "X", "alpha", "16"},
        {"--lora-dropout", "P", "dropout recorded in the config", "0.05"},
        {"--target-modules", "LIST",
         "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all-linear", "q_proj,v_proj"},
        {"--use-rslora", "", "scale alpha/sqrt(r) instead of alpha/r"},
        {"--seed", "S", "random seed", "0"},
        {"--b-std", "X", "standard deviation of B (0 keeps PEFT's zero init)", "0"},
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
  select_precision(a, "false");
  Transformer model(model_dir);
  const auto adapter = load_adapter_option(a, model);

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

int run_grads(const Args& args) {
  ParsedArgs a = parse_args(kGradsSpec, args);
  const std::string model_dir = a.required("--model");
  const std::string adapter_dir = a.required("--adapter");
  const auto seqs = parse_sequences(a.required("--ids"), "--ids");
  const auto label_seqs = a.has("--labels") ? parse_sequences(a.str("--labels"), "--labels") : seqs;
  const std::string out = a.required("--out");
  if (label_seqs.size() != seqs.size())
    throw UsageError("--labels has " + std::to_string(label_seqs.size()) + " sequences, --ids " +
                     std::to_string(seqs.size()));
  set_num_threads(static_cast<int>(a.integer("--threads", 0)));
  select_precision(a, "false");
  Transformer model(model_dir);
  LoraAdapter adapter = LoraAdapter::load(adapter_dir, model.config());
  model.set_adapter(&adapter);

  std::vector<int> tokens, labels;
  std::vector<SequenceSpan> spans;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (label_seqs[i].size() != seqs[i].size())
      throw UsageError("labels of sequence " + std::to_string(i) +
                       " differ in length from its ids");
    spans.push_back({static_cast<int>(tokens.size()), static_cast<int>(seqs[i].size()), 0});
    tokens.insert(tokens.end(), seqs[i].begin(), seqs[i].end());
    labels.insert(labels.end(), label_seqs[i].begin(), label_seqs[i].end());
  }
  const int64_t count = count_loss_targets(labels, spans);
  if (count == 0)
    throw UsageError("no position has a label", "", "labels of -100 everywhere give no loss");
  LossSum loss = model.forward_backward(tokens, spans, labels, 1.0f / static_cast<float>(count));
  const float mean_loss = static_cast<float>(loss.sum / static_cast<double>(loss.count));
  std::vector<TensorToWrite> tensors = {{"loss", DType::F32, {}, &mean_loss}};
  for (const LoraParam& p : adapter.parameters())
    tensors.push_back({p.name, DType::F32, p.shape, p.grad});
  write_safetensors(out, tensors, {{"format", "pt"}});
  std::printf("loss %.6f over %lld labelled positions\n", mean_loss, static_cast<long long>(count));
  return 0;
}

int run_init_adapter(const Args& args) {
  ParsedArgs a = parse_args(kInitAdapterSpec, args);
  const std::string model_dir = a.required("--model");
  const std::string out = a.required("--out");
  ModelConfig config = load_model_config(model_dir);
  LoraConfig lc;
  lc.r = static_cast<int>(a.integer("--lora-r", 8));
  lc.lora_alpha = a.number("--lora-alpha", 16);
  lc.lora_dropout = a.number("--lora-dropout", 0.05);
  lc.use_rslora = a.flag("--use-rslora");
  lc.target_modules = parse_target_modules(a.str("--target-modules", "q_proj,v_proj"));
  lc.base_model_name_or_path = model_dir;
  const double b_std = a.number("--b-std", 0.0);
  if (b_std < 0) throw UsageError("--b-std must be >= 0");
  LoraAdapter adapter(config, lc, static_cast<uint64_t>(a.integer("--seed", 0)), b_std);
  adapter.save(out);
  std::printf("wrote %s: %zu LoRA tensors\n", out.c_str(), adapter.parameters().size());
  return 0;
}

struct Subcommand {
  const char* name;
  int (*run)(const Args&);
};

const Subcommand kSubcommands[] = {
    {"logits", run_logits}, {"grads", run_grads}, {"init-adapter", run_init_adapter}};

}  // namespace

int run_debug(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf("usage: loratune debug <logits|grads|init-adapter> [options]\n");
    return args.empty() ? 2 : 0;
  }
  for (const Subcommand& s : kSubcommands)
    if (args[0] == s.name) return s.run(Args(args.begin() + 1, args.end()));
  throw UsageError("unknown debug command '" + args[0] + "'", "",
                   "available: logits, grads, init-adapter");
}

}  // namespace loratune::cli
